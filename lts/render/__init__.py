"""``python -m lts.render``: the command line is `lts.cli.render`."""

from lts.cli import command_module

command_module(__name__)
