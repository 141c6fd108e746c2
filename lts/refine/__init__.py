"""``python -m lts.refine``: the command line is `lts.cli.refine`."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # what the command line's module holds (``from lts.refine import main``), imported on first use
    return getattr(importlib.import_module("lts.cli.refine"), name)
