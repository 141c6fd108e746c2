"""``python -m lts.bench_ray``: runs `lts.cli.bench_ray` as the main module."""

import runpy

runpy.run_module("lts.cli.bench_ray", run_name="__main__", alter_sys=True)
