"""CMA-ES that hands over its *mean*, with learning-rate adaptation for noisy rewards.

Optuna's CMA-ES (`policies.optuna_search.CmaEs`) hands over the best ψ seen, which on a
noisy reward is the luckiest draw (the winner's curse).  The mean of the search
distribution averages over the whole population instead.  This strategy drives the
``cmaes`` package directly in unit coordinates (`policies.coords`), one generation per
batch: CMA-ES only ranks a generation's rewards, so the common data and training seeds
that the draws of a batch share in the loop cancel.  The hand-over is the average of
the means over the generations whose rewards cannot be told apart from the best one's, and
the last ``average`` (the mean wanders with each generation's noisy ranking).  ``lr_adapt`` turns on LRA-CMA-ES (Nomura et al., GECCO
2023), which lowers the mean and covariance learning rates when the signal-to-noise
ratio of the updates falls; on the Gaussian-mixture benchmarks (20 generations of 8) it
measured worse, so it is off by default.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simulators.errors import UserError
from simulators.space import Categorical, ParamSpace

from .base import Strategy, asked_index, failed
from .coords import from_unit, unit_names, unit_vector

__all__ = ["CmaMean"]


class CmaMean(Strategy):
    """CMA-ES in unit coordinates, a generation per batch; hands over the mean.
    Categorical elements stay at ``init``."""

    name = "cma-mean"

    def __init__(
        self, space: ParamSpace, *, sigma0: float = 0.2, lr_adapt: bool = False, average: int = 4, **common: Any
    ) -> None:
        super().__init__(space, **common)
        import cmaes  # a base dependency; imported here so that importing policies stays light

        if not sigma0 > 0:
            raise UserError(f"search cma-mean: sigma0 must be > 0, got {sigma0}")
        self.searched = ParamSpace({n: el for n, el in self.free.items() if not isinstance(el, Categorical)})
        if not len(self.searched):
            raise UserError("search cma-mean: no numeric element left to search")
        if average < 1:
            raise UserError(f"search cma-mean: average must be >= 1, got {average}")
        self.sigma0, self.lr_adapt, self.average = float(sigma0), bool(lr_adapt), int(average)
        dim = len(unit_names(self.searched))
        mean = np.clip(unit_vector(self.searched, {n: self.init[n] for n in self.searched}), 1e-3, 1 - 1e-3)
        self.popsize = max(int(self.batch or 8), 2)
        self.es = cmaes.CMA(
            mean=mean,
            sigma=self.sigma0,
            bounds=np.tile([0.0, 1.0], (dim, 1)),
            seed=self.seed & 0x7FFFFFFF,
            population_size=self.popsize,
            lr_adapt=self.lr_adapt,
        )
        self._pending: list[tuple[np.ndarray, dict[str, Any]]] = []
        self._told: list[tuple[np.ndarray, float]] = []
        self.start = np.clip(self.es.mean, 0.0, 1.0)  # where the search starts (the warm-up's ψ)
        self.means: list[np.ndarray] = []  # the mean after each generation
        self.gen_rewards: list[float] = []  # each generation's mean reward (failures left out)

    def _psi(self, x: np.ndarray) -> dict[str, Any]:
        searched = from_unit(self.searched, x)
        return self.complete({**{n: self.init[n] for n in self.free if n not in self.searched}, **searched})

    def ask(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            x = self.es.ask()
            psi = self._psi(x)
            self._pending.append((x, psi))
            out.append(psi)
        return out

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        for p, r in zip(params, rewards):
            x, _ = self._pending.pop(asked_index([q for _, q in self._pending], p))
            # cmaes minimises; a failed draw ranks below every finite one of its generation
            self._told.append((x, float("inf") if failed(r) else -float(r)))
        while len(self._told) >= self.popsize:
            gen, self._told = self._told[: self.popsize], self._told[self.popsize :]
            finite = [v for _, v in gen if np.isfinite(v)]
            worst = max(finite) + 1.0 if finite else 0.0
            self.es.tell([(x, v if np.isfinite(v) else worst) for x, v in gen])
            self.means.append(np.clip(self.es.mean, 0.0, 1.0))
            self.gen_rewards.append(-float(np.mean(finite)) if finite else float("nan"))

    def handover_generations(self) -> list[int]:
        """The generations whose means the hand-over averages: the last ``average``, and every
        generation whose mean reward cannot be told apart from the best one's (within two
        standard deviations of a difference, estimated from successive generations)."""
        n = len(self.means)
        last = list(range(max(n - self.average, 0), n))
        rewards = np.array(self.gen_rewards, dtype=float)
        if len(rewards) != n or n <= self.average or not np.isfinite(rewards).all():
            return last  # a failed generation, or a checkpoint from before the rewards were kept
        # successive generations differ by noise (and by a trend, which only widens this)
        spread = float(np.sqrt(np.mean(np.diff(rewards) ** 2)))  # sd of a difference of two generations
        tied = np.flatnonzero(rewards >= rewards.max() - 2 * spread)
        return sorted(set(last) | {int(i) for i in tied})

    def recommend(self) -> dict[str, Any]:
        if not self.means:
            return self._psi(self.start)
        # The mean wanders with the noise of each generation's ranking, and keeps wandering
        # along a ridge the reward cannot tell apart. Averaged over the generations whose
        # rewards cannot be told apart from the best, the wander shrinks and the hand-over
        # stays where the evaluations support it (docs/experiments.md, 2026-12-07).
        return self._psi(np.mean([self.means[i] for i in self.handover_generations()], axis=0))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sigma": float(self.es._sigma)}

    def state_dict(self) -> dict[str, Any]:
        if self._pending:
            raise RuntimeError("state_dict() between ask() and tell()")
        # the attributes themselves: the cmaes package's pickle leaves out its generator and
        # stores the covariance compressed, so a resumed run would ask other points
        # (pickled: a checkpoint holds plain data, and the optimiser's arrays and generator are not)
        state = {
            "es": vars(self.es),
            "told": list(self._told),
            "start": self.start,
            "means": list(self.means),
            "gen_rewards": list(self.gen_rewards),
        }
        return {"pickle": pickle.dumps(state)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = pickle.loads(state["pickle"])
        es = object.__new__(type(self.es))
        vars(es).update(state["es"])
        self.es = es
        self._told = list(state["told"])
        self.means = [np.array(m) for m in state["means"]]
        self.gen_rewards = [float(r) for r in state.get("gen_rewards", [])]
        self.start = np.array(state["start"]) if "start" in state else self.start
        self._pending = []
