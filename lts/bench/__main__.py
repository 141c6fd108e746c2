"""``python -m lts.bench``: runs `lts.cli.bench` as the main module."""

import runpy

runpy.run_module("lts.cli.bench", run_name="__main__", alter_sys=True)
