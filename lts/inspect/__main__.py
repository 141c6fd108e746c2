"""``python -m lts.inspect``: runs `lts.cli.inspect` as the main module."""

import runpy

runpy.run_module("lts.cli.inspect", run_name="__main__", alter_sys=True)
