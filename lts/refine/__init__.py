"""``python -m lts.refine``: the command line is `lts.cli.refine`."""

from lts.cli import command_module

command_module(__name__)
