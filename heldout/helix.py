"""A second held-out plug-in simulator with every element kind: three classes of 3-D points.

The classes' centres follow a ``pattern`` (``Categorical``: stacked along z, fanned in a
plane, one on each axis, or two close and one far); ``gap`` (``Continuous``) sizes it and
``tilt`` (``Continuous``, degrees) turns it about the x axis; each class is ``lumps``
(``Integer``) blobs strung along y, each of spread ``spread`` (``Continuous``); ``mix``
(``Proportions``) is the class balance. Written on 2026-12-07 and not used to choose any
default: its two targets were first run with the defaults as kept (docs/experiments.md, "A
screened generation told as drawn").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from simulators.base import Batch, PointwiseSimulator
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = ["HelixSimulator"]

_CLASSES = ("c0", "c1", "c2")
_PATTERNS = {
    "stack": [(0.0, 0.0, -1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)],
    "fan": [(1.0, 0.0, 0.0), (-0.5, 0.0, 0.87), (-0.5, 0.0, -0.87)],
    "corner": [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)],
    "pair": [(-0.3, 0.0, 0.0), (0.3, 0.0, 0.0), (0.0, 0.0, 1.5)],
}


class HelixSimulator(PointwiseSimulator):
    """Three classes of 3-D points on a pattern (see the module docstring)."""

    name = "helix"

    def __init__(self) -> None:
        elements: dict[str, Any] = {
            "pattern": Categorical(tuple(_PATTERNS), doc="where the three class centres sit"),
            "gap": Continuous(0.3, 3.0, doc="the pattern's size"),
            "tilt": Continuous(-60.0, 60.0, doc="the pattern's turn about the x axis, degrees"),
            "spread": Continuous(0.1, 1.2, doc="each lump's spread"),
            "lumps": Integer(1, 4, doc="blobs per class, strung along y"),
            "mix": Proportions(_CLASSES, doc="class proportions"),
        }
        self.param_space = ParamSpace(elements)
        self.param_space.contents(*elements)

    def _draw(self, ps: Sequence[dict[str, Any]], seed: int) -> Batch:
        rng = np.random.default_rng(seed)
        n = len(ps)
        labels = self.draw_classes(ps, "mix", _CLASSES, rng)
        col = functools.partial(self.column, ps)
        centres = np.array([_PATTERNS[p["pattern"]][c] for p, c in zip(ps, labels)]) * col("gap")[:, None]
        lumps = col("lumps")
        lump = np.floor(rng.random(n) * lumps)  # which of its class's lumps a point belongs to
        centres[:, 1] += 0.8 * (lump - (lumps - 1) / 2)
        t = np.radians(col("tilt"))
        y, z = centres[:, 1].copy(), centres[:, 2].copy()
        centres[:, 1], centres[:, 2] = np.cos(t) * y - np.sin(t) * z, np.sin(t) * y + np.cos(t) * z
        points = centres + col("spread")[:, None] * rng.standard_normal((n, 3))
        return self.points_batch(points, labels, "mix", _CLASSES)
