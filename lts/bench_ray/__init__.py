"""``python -m lts.bench_ray``: the command line is `lts.cli.bench_ray`."""

from lts.cli import command_module

command_module(__name__)
