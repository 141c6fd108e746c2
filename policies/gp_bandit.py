"""Bayesian optimisation for noisy rewards with common random numbers in a batch.

A Gaussian process over unit coordinates (`policies.coords`) models the reward as

    R_i = f(x_i) + β_batch(i) + ε_i,
    f ~ GP(m, s² Matérn-5/2 with a length scale per coordinate),
    β ~ N(0, σ_b²) per batch,  ε ~ N(0, σ_n²),

so the luck that the draws of one batch share (their common data and training seeds
in the loop) is a term of its own, learnt from the data, and comparisons inside a batch
count for what they are worth.  Hyperparameters maximise the marginal likelihood.

- a batch is drawn by Thompson sampling: ``K`` joint draws of f on a candidate set
  (uniform points and perturbations of the best points so far), each contributing
  its argmax;
- the hand-over is the evaluated ψ with the highest ``μ − κ·σ`` of f: the posterior
  mean pools every evaluation, which the best single reward seen (Optuna's hand-over)
  cannot, and the ``κ·σ`` prefers ψ whose neighbourhood was evaluated often.

The GP sees the rewards' normal scores (`normal_scores`), not the rewards.

Categorical elements stay at ``init``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize

from simulators.errors import UserError
from simulators.space import Categorical, ParamSpace

from .base import Strategy, failed, rng_for
from .coords import from_unit, unit_names, unit_vector

__all__ = ["GpBandit", "BatchGP"]

_SQRT5 = np.sqrt(5.0)


def _matern52(a: np.ndarray, b: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) / lengths) ** 2, 0).sum(-1))
    return (1 + _SQRT5 * d + 5.0 / 3.0 * d**2) * np.exp(-_SQRT5 * d)


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Rewards → standard normal quantiles of their ranks (ties share a rank).

    Rewards are heavy-tailed (a poor ψ can score ten times worse than a fair one): on the
    raw values the GP spends itself on the bad region and cannot resolve the top; on
    the scores the top is as well resolved as the rest."""
    from scipy.stats import norm, rankdata

    return norm.ppf((rankdata(y) - 0.5) / len(y))


class BatchGP:
    """A GP with a per-batch random offset; ``fit`` learns its hyperparameters."""

    def __init__(self, dim: int) -> None:
        # log of: signal variance, length scales (dim), batch variance, noise variance
        self.theta = np.concatenate([[0.0], np.full(dim, np.log(0.3)), [np.log(0.1)], [np.log(0.3)]])
        self.dim = dim

    def _bounds(self) -> list[tuple[float, float]]:
        return [(-3.0, 3.0)] + [(np.log(0.03), np.log(3.0))] * self.dim + [(-9.0, 1.0), (-7.0, 1.0)]

    def _unpack(self, theta: np.ndarray) -> tuple[float, np.ndarray, float, float]:
        return (
            float(np.exp(theta[0])),
            np.exp(theta[1 : 1 + self.dim]),
            float(np.exp(theta[-2])),
            float(np.exp(theta[-1])),
        )

    def _cov(self, theta: np.ndarray, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        s2, ls, b2, n2 = self._unpack(theta)
        return s2 * _matern52(x, x, ls) + b2 * (g[:, None] == g[None, :]) + (n2 + 1e-8) * np.eye(len(x))

    def _nll(self, theta: np.ndarray, x: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
        try:
            c = cho_factor(self._cov(theta, x, g), lower=True)
        except np.linalg.LinAlgError:
            return 1e10
        alpha = cho_solve(c, y)
        # a weak prior on the length scales (log-normal around 0.3) keeps short data sets
        # from choosing needle-thin or flat functions
        prior = 0.5 * np.sum((theta[1 : 1 + self.dim] - np.log(0.3)) ** 2) / 1.0**2
        return float(0.5 * y @ alpha + np.log(np.diag(c[0])).sum() + prior)

    def condition(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        """The posterior given the data, at the current hyperparameters."""
        self.x, self.g = np.asarray(x, dtype=np.float64), np.asarray(groups)
        self.mu, self.sd = 0.0, 1.0
        self.y = normal_scores(np.asarray(y, dtype=np.float64))
        self.chol = cho_factor(self._cov(self.theta, self.x, self.g), lower=True)
        self.alpha = cho_solve(self.chol, self.y)

    def fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        """Maximum-likelihood hyperparameters (warm-started), then `condition`."""
        self.condition(x, y, groups)
        best = self.theta
        starts = [self.theta, BatchGP(self.dim).theta]
        for t0 in starts:
            res = minimize(
                self._nll,
                t0,
                args=(self.x, self.y, self.g),
                method="L-BFGS-B",
                bounds=self._bounds(),
                options={"maxiter": 60},
            )
            if res.fun < self._nll(best, self.x, self.y, self.g):
                best = res.x
        self.theta = np.asarray(best, dtype=np.float64)
        self.condition(x, y, groups)

    def predict(self, xs: np.ndarray, *, full_cov: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd (or covariance) of f at ``xs``, in normal-score units."""
        s2, ls, _, _ = self._unpack(self.theta)
        ks = s2 * _matern52(xs, self.x, ls)
        mean = ks @ self.alpha
        v = solve_triangular(self.chol[0], ks.T, lower=True)
        if full_cov:
            cov = s2 * _matern52(xs, xs, ls) - v.T @ v
            return self.mu + self.sd * mean, self.sd**2 * cov
        var = np.maximum(s2 - (v**2).sum(0), 1e-12)
        return self.mu + self.sd * mean, self.sd * np.sqrt(var)


class GpBandit(Strategy):
    """Batch Thompson sampling on a GP that models each batch's shared luck; hands over
    the posterior's best (see the module docstring)."""

    name = "bo"

    def __init__(
        self,
        space: ParamSpace,
        *,
        seed: int,
        budget: int | None = None,
        batch: int | None = None,
        init: Mapping[str, Any] | None = None,
        fixed: Sequence[str] = (),
        n_startup: int = 8,
        candidates: int = 1000,
        local: float = 0.05,
        kappa: float = 1.0,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, batch=batch, init=init, fixed=fixed)
        self.searched = ParamSpace({n: el for n, el in self.free.items() if not isinstance(el, Categorical)})
        if not len(self.searched):
            raise UserError("search bo: no numeric element left to search")
        if n_startup < 1 or candidates < 10 or not local > 0 or kappa < 0:
            raise UserError(
                f"search bo: need n_startup >= 1, candidates >= 10, local > 0, kappa >= 0; got {n_startup}, "
                f"{candidates}, {local}, {kappa}"
            )
        self.n_startup, self.candidates, self.local, self.kappa = (
            int(n_startup),
            int(candidates),
            float(local),
            float(kappa),
        )
        self.dim = len(unit_names(self.searched))
        self.start = unit_vector(self.searched, {n: self.init[n] for n in self.searched})
        self.gp = BatchGP(self.dim)
        self.x: list[np.ndarray] = []
        self.y: list[float] = []
        self.groups: list[int] = []
        self.asks = 0
        self.best = self.start.copy()
        self._pending: list[np.ndarray] | None = None

    def _psi(self, x: np.ndarray) -> dict[str, Any]:
        searched = from_unit(self.searched, x)
        return self.complete({**{n: self.init[n] for n in self.free if n not in self.searched}, **searched})

    def _around(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` perturbations of the evaluated points with the highest posterior mean."""
        mean, _ = self.gp.predict(np.stack(self.x))
        top = np.stack(self.x)[np.argsort(-mean)[:5]]
        base = top[rng.integers(len(top), size=n)]
        scale = self.local * np.exp(rng.uniform(np.log(0.2), np.log(4.0), size=(n, 1)))
        return np.clip(base + scale * rng.standard_normal((n, self.dim)), 0, 1)

    def ask(self, n: int) -> list[dict[str, Any]]:
        rng = rng_for(self.seed, self.asks)
        self.asks += 1
        if len(self.y) < self.n_startup:
            xs = rng.random((n, self.dim))
            if not self.x and not self.has_init:
                xs[0] = self.start
        else:
            half = self.candidates // 2
            cand = np.concatenate([rng.random((self.candidates - half, self.dim)), self._around(rng, half)])
            mean, cov = self.gp.predict(cand, full_cov=True)
            try:
                root = np.linalg.cholesky(cov + 1e-6 * np.eye(len(cand)))
            except np.linalg.LinAlgError:
                w, v = np.linalg.eigh(cov)
                root = v * np.sqrt(np.maximum(w, 0))
            draws = mean[:, None] + root @ rng.standard_normal((len(cand), n))
            picks: list[int] = []
            for j in range(n):
                order = np.argsort(-draws[:, j])
                picks.append(next(int(i) for i in order if int(i) not in picks))
            xs = cand[picks]
        self._pending = [np.asarray(x, dtype=np.float64) for x in xs]
        return [self._psi(x) for x in self._pending]

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        if self._pending is None:
            raise RuntimeError("tell() without a pending ask()")
        xs, self._pending = self._pending, None
        asked = [self._psi(x) for x in xs]
        for p, r in zip(params, rewards):
            j = next((i for i, q in enumerate(asked) if q == p), None)
            if j is None:
                raise ValueError("tell() got a ψ that the last ask() did not hand out")
            if not failed(r):
                self.x.append(xs[j])
                self.y.append(float(r))
                self.groups.append(self.asks - 1)
        if len(self.y) >= 2:
            self.gp.fit(np.stack(self.x), np.array(self.y), np.array(self.groups))
            cand = np.stack(self.x)
            mean, sd = self.gp.predict(cand)
            self.best = cand[int(np.argmax(mean - self.kappa * sd))]

    def recommend(self) -> dict[str, Any]:
        return self._psi(self.best)

    def state_dict(self) -> dict[str, Any]:
        return {
            "x": [x.copy() for x in self.x],
            "y": list(self.y),
            "groups": list(self.groups),
            "theta": self.gp.theta.copy(),
            "asks": self.asks,
            "best": self.best.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.x = [np.array(x, dtype=np.float64) for x in state["x"]]
        self.y = [float(v) for v in state["y"]]
        self.groups = [int(g) for g in state["groups"]]
        self.asks = int(state["asks"])
        self.best = np.array(state["best"], dtype=np.float64)
        self.gp = BatchGP(self.dim)
        self.gp.theta = np.array(state["theta"], dtype=np.float64)
        if len(self.y) >= 2:  # the posterior as it was after the last tell
            self.gp.condition(np.stack(self.x), np.array(self.y), np.array(self.groups))
        self._pending = None
