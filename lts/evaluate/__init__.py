"""``python -m lts.evaluate``: the command line is `lts.cli.evaluate`; called as a function, this is the Python API's `lts.api.evaluate`."""

from lts.cli import command_module

command_module(__name__, api="evaluate")
