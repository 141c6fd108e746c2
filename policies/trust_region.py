"""A surrogate-gradient trust-region search (in the spirit of AutoSimulate, Behl et al.,
ECCV 2020, with TuRBO's grow-on-success / shrink-on-failure radius).

The search holds one point, the *centre* c in unit coordinates (`policies.coords`), and
a radius Δ.  Each batch of K evaluations is laid out as

- the centre itself;
- ``line`` candidates along the model's ascent direction, at ``steps`` · Δ from c;
- the rest as antithetic probes c ± Δ·v along random orthonormal directions v.

A batch's draws share their data and training seeds in the loop (common random
numbers), so *differences* within a batch are far less noisy than the rewards
themselves.  The local model therefore has one intercept per batch (a fixed effect that
absorbs the batch's luck) and a shared gradient (and optionally a diagonal curvature)
fitted by least squares on the last ``window`` batches:

    R_i ≈ α_batch(i) + gᵀ(x_i − c) + ½ Σ_j h_j (x_ij − c_j)²

The centre moves to the best of the batch's centre and line candidates by their paired
(same-batch) rewards; the radius grows when the longest step wins and shrinks when
the centre wins.  It hands over the centre.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from simulators.errors import UserError
from simulators.space import Categorical, ParamSpace

from .base import Strategy, failed, rng_for
from .coords import from_unit, unit_names, unit_vector

__all__ = ["TrustRegion", "fit_local_model", "LocalModel"]


class LocalModel:
    """A fitted local model: per-batch intercepts, gradient and diagonal curvature at c."""

    def __init__(self, intercepts: np.ndarray, gradient: np.ndarray, curvature: np.ndarray | None) -> None:
        self.intercepts, self.gradient, self.curvature = intercepts, gradient, curvature


def fit_local_model(
    x: np.ndarray,
    rewards: np.ndarray,
    groups: np.ndarray,
    centre: np.ndarray,
    *,
    quadratic: bool = False,
    ridge: float = 1e-6,
) -> LocalModel:
    """Least squares R_i ≈ α_{groups_i} + gᵀ(x_i − c) [+ ½ Σ h_j (x_ij − c_j)²].

    ``groups`` labels the batch of each point (points of one batch share their noise).
    """
    x = np.asarray(x, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    labels, gidx = np.unique(np.asarray(groups), return_inverse=True)
    d = x - centre
    cols = [np.eye(len(labels))[gidx], d]
    if quadratic:
        cols.append(0.5 * d**2)
    a = np.concatenate(cols, axis=1)
    # a small ridge on the slopes only keeps an under-determined fit finite
    pen = np.concatenate([np.zeros(len(labels)), np.full(a.shape[1] - len(labels), ridge)])
    coef = np.linalg.solve(a.T @ a + np.diag(pen), a.T @ rewards)
    dim = x.shape[1]
    g = coef[len(labels) : len(labels) + dim]
    h = coef[len(labels) + dim :] if quadratic else None
    return LocalModel(coef[: len(labels)], g, h)


class TrustRegion(Strategy):
    """Trust-region steps on a local least-squares model fitted within common-seed batches
    (see the module docstring).  Categorical elements stay at ``init``."""

    name = "trust"

    def __init__(
        self,
        space: ParamSpace,
        *,
        seed: int,
        budget: int | None = None,
        batch: int | None = None,
        init: Mapping[str, Any] | None = None,
        fixed: Sequence[str] = (),
        radius: float = 0.2,
        min_radius: float = 0.01,
        max_radius: float = 0.5,
        probe: float = 1.0,
        min_probe: float = 0.03,
        steps: Sequence[float] = (0.5, 1.0, 2.0),
        grow: float = 1.5,
        shrink: float = 0.6,
        window: int = 3,
        quadratic: bool = False,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget, batch=batch, init=init, fixed=fixed)
        self.searched = ParamSpace({n: el for n, el in self.free.items() if not isinstance(el, Categorical)})
        if not len(self.searched):
            raise UserError("search trust: no numeric element left to search")
        _check(
            0 < min_radius <= radius <= max_radius,
            f"need 0 < min_radius <= radius <= max_radius, got {min_radius}, {radius}, {max_radius}",
        )
        _check(probe > 0 and min_probe > 0, f"probe and min_probe must be > 0, got {probe}, {min_probe}")
        _check(all(s > 0 for s in steps) and len(steps) >= 1, f"steps must be positive numbers, got {list(steps)}")
        _check(grow >= 1 and 0 < shrink < 1, f"need grow >= 1 and 0 < shrink < 1, got {grow}, {shrink}")
        _check(window >= 1, f"window must be >= 1, got {window}")
        self.radius0, self.min_radius, self.max_radius = float(radius), float(min_radius), float(max_radius)
        self.probe, self.min_probe = float(probe), float(min_probe)
        self.steps = tuple(sorted(float(s) for s in steps))
        self.grow, self.shrink, self.window, self.quadratic = float(grow), float(shrink), int(window), bool(quadratic)
        self.dim = len(unit_names(self.searched))
        self.centre = unit_vector(self.searched, {n: self.init[n] for n in self.searched})
        self.radius = self.radius0
        self.direction: np.ndarray | None = None  # unit ascent direction of the last fit
        self.history: list[tuple[int, np.ndarray, float]] = []  # (batch, x, reward)
        self.asks = 0
        self._pending: list[tuple[str, float, np.ndarray]] | None = None  # (role, step, x)

    # -- ψ ↔ unit coordinates -----------------------------------------------------------
    def _psi(self, x: np.ndarray) -> dict[str, Any]:
        searched = from_unit(self.searched, x)
        return self.complete({**{n: self.init[n] for n in self.free if n not in self.searched}, **searched})

    def ask(self, n: int) -> list[dict[str, Any]]:
        rng = rng_for(self.seed, self.asks)
        self.asks += 1
        layout: list[tuple[str, float, np.ndarray]] = [("centre", 0.0, self.centre.copy())]
        if self.direction is not None:
            for s in self.steps[: max(n - 1, 0)]:
                layout.append(("line", s, np.clip(self.centre + s * self.radius * self.direction, 0, 1)))
        rest = n - len(layout)
        if rest > 0:
            pairs = (rest + 1) // 2
            v = np.linalg.qr(rng.standard_normal((self.dim, max(pairs, 1))))[0] if pairs <= self.dim else None
            if v is None:
                v = rng.standard_normal((self.dim, pairs))
                v /= np.linalg.norm(v, axis=0, keepdims=True)
            h = max(self.probe * self.radius, self.min_probe)
            for j in range(pairs):
                for sign in (1.0, -1.0):
                    if len(layout) < n:
                        layout.append(("probe", 0.0, np.clip(self.centre + sign * h * v[:, j], 0, 1)))
        layout = layout[:n]
        self._pending = layout
        return [self._psi(x) for _, _, x in layout]

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        if self._pending is None:
            raise RuntimeError("tell() without a pending ask()")
        layout, self._pending = self._pending, None
        asked = [self._psi(x) for _, _, x in layout]
        got: dict[int, float] = {}
        for p, r in zip(params, rewards):
            j = next((i for i, q in enumerate(asked) if q == p and i not in got), None)
            if j is None:
                raise ValueError("tell() got a ψ that the last ask() did not hand out")
            got[j] = float(r) if not failed(r) else float("nan")
        b = self.asks - 1
        for j, (_, _, x) in enumerate(layout):
            if j in got and np.isfinite(got[j]):
                self.history.append((b, x, got[j]))
        # move: the best of the centre and the line candidates, compared within the batch
        roles = [(j, layout[j]) for j in got if layout[j][0] in ("centre", "line") and np.isfinite(got[j])]
        if roles and any(role == "centre" for _, (role, _, _) in roles):
            j, (role, step, x) = max(roles, key=lambda t: got[t[0]])
            if role == "line":
                self.centre = x.copy()
                if step >= self.steps[-1]:
                    self.radius = min(self.radius * self.grow, self.max_radius)
                elif step < 1.0:
                    self.radius = max(self.radius * max(step, self.shrink), self.min_radius)
            elif self.direction is not None:
                self.radius = max(self.radius * self.shrink, self.min_radius)
        self.history = [h for h in self.history if h[0] > b - self.window]
        self.direction = self._direction()

    def _direction(self) -> np.ndarray | None:
        if len(self.history) < 2:
            return None
        groups = np.array([h[0] for h in self.history])
        x = np.stack([h[1] for h in self.history])
        r = np.array([h[2] for h in self.history])
        model = fit_local_model(x, r, groups, self.centre, quadratic=self.quadratic)
        g = model.gradient
        norm = float(np.linalg.norm(g))
        return None if norm == 0 or not np.isfinite(norm) else g / norm

    def recommend(self) -> dict[str, Any]:
        return self._psi(self.centre)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "radius": self.radius}

    def state_dict(self) -> dict[str, Any]:
        return {
            "centre": self.centre.copy(),
            "radius": self.radius,
            "direction": None if self.direction is None else self.direction.copy(),
            "history": [(b, x.copy(), r) for b, x, r in self.history],
            "asks": self.asks,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.centre = np.array(state["centre"], dtype=np.float64)
        self.radius = float(state["radius"])
        self.direction = None if state["direction"] is None else np.array(state["direction"], dtype=np.float64)
        self.history = [(int(b), np.array(x, dtype=np.float64), float(r)) for b, x, r in state["history"]]
        self.asks = int(state["asks"])
        self._pending = None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(f"search trust: {msg}")
