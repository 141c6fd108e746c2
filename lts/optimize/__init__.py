"""``python -m lts.optimize``: the command line is `lts.cli.optimize`; called as a function, this is the Python API's `lts.api.optimize`."""

from lts.cli import command_module

command_module(__name__, api="optimize")
