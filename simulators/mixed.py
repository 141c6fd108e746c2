"""A small simulator with every element kind: the benchmark for mixed parameter spaces.

Three classes of 2-D points.  Their centres sit on a layout (``Categorical``: a ring, a
line or an arc) of a given ``radius``, turned by ``rotation`` (``Continuous``); each
class's points spread around its centre by ``spread``, ``stretch`` times wider along the
layout's turned x-axis than across it (``Integer``); ``mix`` (``Proportions``) is the
class balance.  The layout changes which classes neighbour which, so a classifier trained
on the wrong layout is wrong wherever two classes' neighbours differ: no continuous
element can make up for it.  Base install only (numpy, torch); the batch has
``features`` (N×2) and ``labels``, like the ``gmm`` simulator's.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Batch, PointwiseSimulator
from .space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = ["RingsSimulator"]

_CLASSES = ("c0", "c1", "c2")


def _layout(name: str) -> np.ndarray:
    """The three centres of a layout of radius 1, before rotation (3 × 2)."""
    if name == "ring":  # an equilateral triangle: every class neighbours both others
        a = np.deg2rad([90.0, 210.0, 330.0])
    elif name == "arc":  # a quarter of a ring: c1 between c0 and c2, the ends close
        a = np.deg2rad([45.0, 90.0, 135.0])
    else:  # "line": c1 in the middle, c0 and c2 far apart
        return np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    return np.stack([np.cos(a), np.sin(a)], 1)


class RingsSimulator(PointwiseSimulator):
    """Three classes of 2-D points on a ring, a line or an arc (see the module docstring)."""

    name = "rings"

    def __init__(self) -> None:
        elements: dict[str, Any] = {
            "layout": Categorical(("ring", "line", "arc"), doc="where the three class centres sit"),
            "rotation": Continuous(-90.0, 90.0, doc="the layout's turn, in degrees"),
            "radius": Continuous(0.5, 4.0, doc="the layout's size"),
            "spread": Continuous(0.1, 2.0, doc="standard deviation of every class across the layout"),
            "stretch": Integer(1, 4, doc="how many times wider each class spreads along the layout"),
            "mix": Proportions(_CLASSES, doc="class proportions"),
        }
        # every element changes the labelled points: the warm-up may match them all
        self.param_space = ParamSpace(elements)
        self.param_space.contents(*elements)

    def _draw(self, ps: Sequence[dict[str, Any]], seed: int) -> Batch:
        rng = np.random.default_rng(seed)
        n = len(ps)
        labels = self.draw_classes(ps, "mix", _CLASSES, rng)
        noise = rng.standard_normal((n, 2))
        col = functools.partial(self.column, ps)
        centres = np.stack([_layout(p["layout"])[c] for p, c in zip(ps, labels)])
        local = col("radius")[:, None] * centres + col("spread")[:, None] * noise * np.stack(
            [col("stretch"), np.ones(n)], 1
        )
        t = np.deg2rad(col("rotation"))
        cos, sin = np.cos(t), np.sin(t)
        points = np.stack([cos * local[:, 0] - sin * local[:, 1], sin * local[:, 0] + cos * local[:, 1]], 1)
        return self.points_batch(points, labels, "mix", _CLASSES)
