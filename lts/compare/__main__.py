"""``python -m lts.compare``: runs `lts.cli.compare` as the main module."""

import runpy

runpy.run_module("lts.cli.compare", run_name="__main__", alter_sys=True)
