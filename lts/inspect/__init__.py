"""``python -m lts.inspect``: the command line is `lts.cli.inspect`."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    # what the command line's module holds (``from lts.inspect import main``), imported on first use
    return getattr(importlib.import_module("lts.cli.inspect"), name)
