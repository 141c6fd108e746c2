"""A test simulator whose data do not depend on ψ: every ψ trains equally well, so the
search's rewards are flat up to their seed noise (the stopper's test case)."""

from __future__ import annotations

import numpy as np
import torch

from simulators import Batch, Continuous, ParamSpace, Simulator


class FlatSim(Simulator):
    name = "flat"

    def __init__(self) -> None:
        self.param_space = ParamSpace(a=Continuous(0.0, 1.0, doc="ignored"), b=Continuous(0.0, 1.0, doc="ignored"))

    def generate(self, params, n, *, seed):  # type: ignore[no-untyped-def]
        self.param_space.validate(params)
        rng = np.random.default_rng(seed)
        labels = (rng.random(n) < 0.5).astype(np.int64)
        x = np.stack([labels * 1.0, labels * 0.5], axis=1) + 0.8 * rng.standard_normal((n, 2))
        return Batch(features=torch.tensor(x, dtype=torch.float32), labels=torch.from_numpy(labels))
