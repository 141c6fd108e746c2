"""``python -m lts.evaluate``: runs `lts.cli.evaluate` as the main module."""

import runpy

runpy.run_module("lts.cli.evaluate", run_name="__main__", alter_sys=True)
