"""``python -m lts.optimize``: runs `lts.cli.optimize` as the main module."""

import runpy

runpy.run_module("lts.cli.optimize", run_name="__main__", alter_sys=True)
