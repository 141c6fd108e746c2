"""``python -m lts.bench``: the command line is `lts.cli.bench`."""

from lts.cli import command_module

command_module(__name__)
