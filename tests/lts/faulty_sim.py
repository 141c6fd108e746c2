"""A plug-in that fails the way renderers do, for the fault-injection tests: loaded as
``faulty_sim:FaultyGmm`` (the tests' directory is on the path, and on Ray workers' PYTHONPATH).

The toy simulator, except that a render hit by a fault (chosen by a hash of ψ and the seed
at rate ``rate``, or by the seed being in ``seeds``) crashes (``crash``), returns one NaN
feature (``nan``), one row too few (``short``), labels outside the label space
(``labels``), or sleeps ``delay`` seconds first (``sleep``).  ``per_scene``: only
domain-randomized renders (the final ``random`` row) are hit; seeds in ``spare`` never are
(a run's target seeds).  ``crash_first``: the first render in a process crashes (the run's
target).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.base import Batch
from simulators.gmm import GaussianMixtureSimulator

MODES = ("crash", "nan", "short", "labels", "sleep")


class FaultyGmm(GaussianMixtureSimulator):
    def __init__(
        self,
        mode: str = "crash",
        rate: float = 0.0,
        seeds: Sequence[int] = (),
        delay: float = 30.0,
        per_scene: bool = False,
        crash_first: bool = False,
        spare: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {MODES}")
        self.mode, self.rate, self.seeds, self.delay = mode, float(rate), {int(s) for s in seeds}, float(delay)
        self.per_scene, self.crash_first = bool(per_scene), bool(crash_first)
        self.spare = {int(s) for s in spare}
        self.renders = 0

    def hit(self, params: Mapping[str, Any] | None, seed: int) -> bool:
        """Whether a render of ψ ``params`` (None: per scene) with ``seed`` is faulty."""
        if seed in self.spare:
            return False
        if seed in self.seeds:
            return True
        key = json.dumps(params, sort_keys=True) + f"/{seed}"
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 < self.rate

    def _render(self, params: Mapping[str, Any] | None, seed: int, draw: Any) -> Batch:
        self.renders += 1
        if self.crash_first and self.renders == 1:
            raise RuntimeError("lost the connection to the renderer")
        if (params is None) != self.per_scene or not self.hit(params, seed):
            return draw()
        if self.mode == "crash":
            raise RuntimeError(f"renderer crashed on seed {seed}")
        if self.mode == "sleep":
            time.sleep(self.delay)
            return draw()
        batch = draw()
        assert batch.features is not None and batch.labels is not None
        if self.mode == "nan":
            batch.features[len(batch) // 2, 0] = float("nan")
        elif self.mode == "labels":
            batch.labels[0] = -1
        else:  # short: one row too few
            batch = batch.subset(slice(0, len(batch) - 1))
        return batch

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        return self._render(dict(params), seed, lambda: super(FaultyGmm, self).generate(params, n, seed=seed))

    def generate_per_scene(self, params: Sequence[Mapping[str, Any]], *, seed: int) -> Batch:
        return self._render(None, seed, lambda: super(FaultyGmm, self).generate_per_scene(params, seed=seed))
