"""``python -m lts.refine``: runs `lts.cli.refine` as the main module."""

import runpy

runpy.run_module("lts.cli.refine", run_name="__main__", alter_sys=True)
