"""``python -m lts.inspect``: the command line is `lts.cli.inspect`."""

from lts.cli import command_module

command_module(__name__)
