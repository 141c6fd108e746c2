"""The toy Gaussian-mixture simulator of the paper's controlled experiment.

Two classes of 2-D points; class ``c`` is drawn with probability ``balance[c]`` and its
points from N((cc_x, cc_y), std² I).  The batch has ``features`` (N×2) and ``labels``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import Batch, Simulator
from .space import Continuous, ParamSpace, Proportions

__all__ = ["GaussianMixtureSimulator"]


class GaussianMixtureSimulator(Simulator):
    """Two 2-D Gaussian classes; ψ sets their centres, spread and class balance."""

    name = "gmm"

    def __init__(self) -> None:
        self.param_space = ParamSpace(
            c0_x=Continuous(-4.0, 4.0, doc="x of class 0's centre"),
            c0_y=Continuous(-4.0, 4.0, doc="y of class 0's centre"),
            c1_x=Continuous(-4.0, 4.0, doc="x of class 1's centre"),
            c1_y=Continuous(-4.0, 4.0, doc="y of class 1's centre"),
            std=Continuous(0.1, 3.0, doc="standard deviation of both classes"),
            balance=Proportions(("c0", "c1"), doc="class proportions"),
        )

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        p = self.param_space.validate(params)
        return self._draw([p] * n, seed)

    def generate_per_scene(self, params: Sequence[Mapping[str, Any]], *, seed: int) -> Batch:
        return self._draw([self.param_space.validate(p) for p in params], seed)

    def _draw(self, ps: Sequence[dict[str, Any]], seed: int) -> Batch:
        rng = np.random.default_rng(seed)
        n = len(ps)
        p1 = np.array([p["balance"]["c1"] for p in ps])
        labels = (rng.random(n) < p1).astype(np.int64)
        centres = np.array([[(p["c0_x"], p["c0_y"]), (p["c1_x"], p["c1_y"])][c] for p, c in zip(ps, labels)])
        std = np.array([p["std"] for p in ps])[:, None]
        points = centres.reshape(n, 2) + std * rng.standard_normal((n, 2))
        return Batch(
            features=torch.from_numpy(points.astype(np.float32)),
            labels=torch.from_numpy(labels),
            attributes={"balance": ["c1" if c else "c0" for c in labels]},
        )
