"""``python -m lts.render``: runs `lts.cli.render` as the main module."""

import runpy

runpy.run_module("lts.cli.render", run_name="__main__", alter_sys=True)
