"""A held-out plug-in simulator with every element kind: four classes of 2-D points.

The classes' centres sit on a ``shape`` (``Categorical``: a square, a cross, a row or a T),
which decides which classes neighbour which; ``scale`` and ``shift`` (``Continuous``) size and
move it; each class spreads by ``noise`` (``Continuous``) with Student-t tails of ``tails``
degrees of freedom (``Integer``: 1 is Cauchy-heavy, 5 is near-Gaussian); ``mix``
(``Proportions``) is the class balance. Written after lts's defaults were fixed and not used
to choose them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from simulators.base import Batch, PointwiseSimulator
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = ["BlobsSimulator"]

_CLASSES = ("c0", "c1", "c2", "c3")
_SHAPES = {
    "square": [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)],  # neighbours around the square
    "cross": [(-1.0, -1.0), (1.0, 1.0), (1.0, -1.0), (-1.0, 1.0)],  # c0 and c1 on a diagonal
    "row": [(-1.5, 0.0), (-0.5, 0.0), (0.5, 0.0), (1.5, 0.0)],
    "tee": [(-1.0, 1.0), (0.0, 1.0), (1.0, 1.0), (0.0, -1.0)],
}


class BlobsSimulator(PointwiseSimulator):
    """Four classes of 2-D points on a shape (see the module docstring)."""

    name = "blobs"

    def __init__(self) -> None:
        elements: dict[str, Any] = {
            "shape": Categorical(tuple(_SHAPES), doc="where the four class centres sit"),
            "scale": Continuous(0.5, 3.0, doc="the shape's size"),
            "shift": Continuous(-2.0, 2.0, doc="the shape's move along x"),
            "noise": Continuous(0.1, 1.5, doc="each class's spread"),
            "tails": Integer(1, 5, doc="degrees of freedom of the spread's Student-t tails"),
            "mix": Proportions(_CLASSES, doc="class proportions"),
        }
        self.param_space = ParamSpace(elements)
        self.param_space.contents(*elements)

    def _draw(self, ps: Sequence[dict[str, Any]], seed: int) -> Batch:
        rng = np.random.default_rng(seed)
        n = len(ps)
        labels = self.draw_classes(ps, "mix", _CLASSES, rng)
        col = functools.partial(self.column, ps)
        centres = np.array([_SHAPES[p["shape"]][c] for p, c in zip(ps, labels)])
        noise = rng.standard_t(col("tails")[:, None], size=(n, 2))
        points = col("scale")[:, None] * centres + col("noise")[:, None] * noise
        points[:, 0] += col("shift")
        return self.points_batch(points, labels, "mix", _CLASSES)
