"""Simulator plug-ins for the Ray tests; Ray workers import them as ``ray_helpers:Class``
(the tests put this directory on the workers' PYTHONPATH)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from simulators.base import Batch
from simulators.gmm import GaussianMixtureSimulator


class FailingGmm(GaussianMixtureSimulator):
    """The toy simulator, except that it fails whenever class 0's centre is right of ``limit``."""

    def __init__(self, limit: float = 1.0) -> None:
        super().__init__()
        self.limit = limit

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        if params["c0_x"] > self.limit:
            raise ValueError(f"c0_x={params['c0_x']:.3f} is beyond this simulator's limit {self.limit}")
        return super().generate(params, n, seed=seed)


class SlowGmm(GaussianMixtureSimulator):
    """The toy simulator taking ``delay`` seconds per batch (results do not depend on it)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        time.sleep(self.delay)
        return super().generate(params, n, seed=seed)


class ExitingGmm(GaussianMixtureSimulator):
    """The toy simulator whose process dies (as if killed) whenever class 0's centre is right of 0."""

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        if params["c0_x"] > 0:
            import os

            os._exit(3)
        return super().generate(params, n, seed=seed)
