"""Downstream tasks: what is trained on rendered data and scored on the target.

Built-ins: ``classify`` (the toy Gaussian-mixture experiment), ``counting`` (cars per
type), ``segmentation`` (semantic labels).  ``make(name, **options)`` builds one.
"""

from __future__ import annotations

import importlib
from typing import Any

from simulators.errors import UnknownNameError, UserError, did_you_mean

from .base import Task, reward_of

__all__ = ["Task", "reward_of", "make", "available", "run_sizes"]

_BUILTIN = {
    "classify": "lts.tasks.classify:ClassifyTask",
    "counting": "lts.tasks.counting:CountingTask",
    "segmentation": "lts.tasks.segmentation:SegmentationTask",
}


def available() -> list[str]:
    return sorted(_BUILTIN)


def _class(name: str) -> Any:
    path = name if ":" in name else _BUILTIN.get(name)
    if path is None:
        raise UnknownNameError(f"unknown task {name!r}; known: {', '.join(available())}" + did_you_mean(name, _BUILTIN))
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_sizes(name: str) -> dict[str, int]:
    """The run sizes (``samples``, ``scenes``, ``target_size``, …) a task asks for where the
    config names none: its class's ``sizes``, or none. A task that cannot be found has none
    here; `make` says why."""
    try:
        return dict(getattr(_class(name), "sizes", {}))
    except (UserError, ImportError, AttributeError):  # `make` reports it, with the task's name
        return {}


def make(name: str, **options: Any) -> Task:
    """Build a task by name (or ``package.module:Class``) with its options."""
    cls = _class(name)
    try:
        return cls(**options)
    except TypeError as e:
        raise UserError(f"task {name!r}: {e}") from None
