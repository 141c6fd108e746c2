"""``python -m lts.compare``: the command line is `lts.cli.compare`; called as a function, this is the Python API's `lts.api.compare`."""

from lts.cli import command_module

command_module(__name__, api="compare")
