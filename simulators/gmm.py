"""The toy Gaussian-mixture simulator of the paper's controlled experiment.

By default two classes of 2-D points; class ``c`` is drawn with probability
``balance[c]`` and its points from N(centre_c, std² I).  ``classes`` and ``dims`` widen
it into a larger synthetic search problem (``classes=3, dims=3``: nine centre
coordinates, the spread and a three-way balance, twelve coordinates to search) with
the same kinds of element.  The batch has ``features`` (N×dims) and ``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Batch, PointwiseSimulator
from .errors import UserError
from .space import Continuous, ParamSpace, Proportions

__all__ = ["GaussianMixtureSimulator"]

_AXES = "xyz"


class GaussianMixtureSimulator(PointwiseSimulator):
    """``classes`` Gaussian classes in ``dims`` dimensions; ψ sets their centres, a
    shared spread and the class balance."""

    name = "gmm"

    def __init__(self, classes: int = 2, dims: int = 2) -> None:
        if classes < 2:
            raise UserError(f"sim gmm: classes must be >= 2, got {classes}")
        if dims < 1:
            raise UserError(f"sim gmm: dims must be >= 1, got {dims}")
        self.classes, self.dims = int(classes), int(dims)
        axes = list(_AXES[:dims]) if dims <= len(_AXES) else [str(d) for d in range(dims)]
        elements: dict[str, Any] = {}
        for c in range(self.classes):
            for a in axes:
                elements[f"c{c}_{a}"] = Continuous(-4.0, 4.0, doc=f"{a} of class {c}'s centre")
        self._centre_names = [[f"c{c}_{a}" for a in axes] for c in range(self.classes)]
        elements["std"] = Continuous(0.1, 3.0, doc="standard deviation of every class")
        elements["balance"] = Proportions(tuple(f"c{c}" for c in range(self.classes)), doc="class proportions")
        # every element changes the labelled points: the warm-up may match them all
        self.param_space = ParamSpace(elements)
        self.param_space.contents(*elements)

    def _draw(self, ps: Sequence[dict[str, Any]], seed: int) -> Batch:
        rng = np.random.default_rng(seed)
        n = len(ps)
        names = [f"c{c}" for c in range(self.classes)]
        if self.classes == 2:  # the original draw, kept bit for bit
            labels = (rng.random(n) < np.array([p["balance"]["c1"] for p in ps])).astype(np.int64)
        else:
            labels = self.draw_classes(ps, "balance", names, rng)
        centres = np.array([[p[k] for k in self._centre_names[c]] for p, c in zip(ps, labels)], dtype=np.float64)
        std = np.array([p["std"] for p in ps])[:, None]
        points = centres.reshape(n, self.dims) + std * rng.standard_normal((n, self.dims))
        return self.points_batch(points, labels, "balance", names)
