"""``python -m lts.bench_ray``: the command line is `lts.cli.bench_ray`."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # what the command line's module holds (``from lts.bench_ray import main``), imported on first use
    return getattr(importlib.import_module("lts.cli.bench_ray"), name)
