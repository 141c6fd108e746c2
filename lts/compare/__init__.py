"""``python -m lts.compare``: the command line is `lts.cli.compare`; called as a function, this is the Python API's `lts.api.compare`."""

from __future__ import annotations

import importlib
from typing import Any

from lts.cli import callable_module


def __getattr__(name: str) -> Any:
    # what the command line's module holds (``from lts.compare import main``), imported on first use
    return getattr(importlib.import_module("lts.cli.compare"), name)


def _api(*args: Any, **kwargs: Any) -> Any:
    from lts.api import compare as api

    return api(*args, **kwargs)


_api.__doc__ = "The Python API: `lts.api.compare`."
callable_module(__name__, _api)
