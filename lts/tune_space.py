"""A simulator's parameter space as a Ray Tune search space, and back: the one place
where ψ meets Tune's coordinates.

Each element becomes flat coordinates a searcher can propose:

- ``continuous(low, high)`` → ``tune.uniform(low, high)`` under its own name;
- ``integer(low, high)``    → ``tune.randint(low, high + 1)`` (Tune's upper end is exclusive);
- ``categorical(choices)``  → ``tune.choice(choices)``;
- ``proportions(c_1 … c_k)`` → k − 1 coordinates ``NAME:c_1 … NAME:c_{k-1}``, each
  ``tune.uniform(0, 1)``, mapped to the simplex by *stick breaking*: choice i takes the
  fraction b_i = 1 − (1 − u_i)^(1/(k−1−i)) of what is left, the last choice the rest.
  The map is a bijection between the open cube and the open simplex, and a uniform
  point of the cube gives a uniform point of the simplex (Dirichlet(1, …, 1), the same
  distribution as `ParamSpace.sample`), so a searcher's uniform prior is the space's own
  and no coordinate is redundant (normalising k free weights would add a direction
  that changes nothing).

`coords_to_params` turns any proposal into a valid ψ; `params_to_coords` inverts it
(for seeding a searcher with known points).  Only `tune_search_space` needs Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = ["tune_search_space", "coords_to_params", "params_to_coords", "coordinate_names", "stick_break", "unbreak"]


def _stick_keys(name: str, el: Proportions) -> list[str]:
    return [f"{name}:{c}" for c in el.choices[:-1]]


def coordinate_names(space: ParamSpace) -> list[str]:
    """The flat coordinate names of ``space``, in order."""
    out: list[str] = []
    for name, el in space.items():
        out.extend(_stick_keys(name, el) if isinstance(el, Proportions) else [name])
    return out


def stick_break(u: np.ndarray) -> np.ndarray:
    """k − 1 numbers in [0, 1] → k probabilities (uniform in, uniform on the simplex out)."""
    u = np.clip(np.asarray(u, dtype=np.float64), 0.0, 1.0)
    k = len(u) + 1
    p = np.empty(k)
    rest = 1.0
    for i, ui in enumerate(u):
        b = 1.0 - (1.0 - ui) ** (1.0 / (k - 1 - i))  # inverse CDF of Beta(1, k − 1 − i)
        p[i] = rest * b
        rest -= p[i]
    p[-1] = max(rest, 0.0)
    return p / p.sum()


def unbreak(p: np.ndarray) -> np.ndarray:
    """The inverse of `stick_break`: k probabilities → k − 1 numbers in [0, 1]."""
    p = np.asarray(p, dtype=np.float64)
    k = len(p)
    u = np.empty(k - 1)
    rest = 1.0
    for i in range(k - 1):
        b = 1.0 if rest <= 1e-15 else min(max(p[i] / rest, 0.0), 1.0)
        u[i] = 1.0 - (1.0 - b) ** (k - 1 - i)
        rest -= p[i]
    return u


def tune_search_space(space: ParamSpace) -> dict[str, Any]:
    """Tune search-space domains for every coordinate of ``space``."""
    from .ray_exec import import_ray

    import_ray()
    from ray import tune

    out: dict[str, Any] = {}
    for name, el in space.items():
        if isinstance(el, Continuous):
            out[name] = tune.uniform(el.low, el.high)
        elif isinstance(el, Integer):
            out[name] = tune.randint(el.low, el.high + 1)
        elif isinstance(el, Categorical):
            out[name] = tune.choice(list(el.choices))
        elif isinstance(el, Proportions):
            for key in _stick_keys(name, el):
                out[key] = tune.uniform(0.0, 1.0)
        else:  # pragma: no cover - the four kinds are all there is
            raise TypeError(f"parameter {name!r}: unsupported element {el!r}")
    return out


def coords_to_params(space: ParamSpace, coords: Mapping[str, Any]) -> dict[str, Any]:
    """A valid ψ from a searcher's proposal (values clipped into range, extra keys ignored)."""
    psi: dict[str, Any] = {}
    for name, el in space.items():
        if isinstance(el, Continuous):
            psi[name] = float(np.clip(float(coords[name]), el.low, el.high))
        elif isinstance(el, Integer):
            psi[name] = int(np.clip(int(round(float(coords[name]))), el.low, el.high))
        elif isinstance(el, Categorical):
            psi[name] = str(coords[name])
        else:
            u = np.array([float(coords[k]) for k in _stick_keys(name, el)])
            psi[name] = {c: float(x) for c, x in zip(el.choices, stick_break(u))}
    return space.validate(psi)


def params_to_coords(space: ParamSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The coordinates of a valid ψ (the inverse of `coords_to_params`)."""
    psi = space.validate(params)
    out: dict[str, Any] = {}
    for name, el in space.items():
        if isinstance(el, Proportions):
            u = unbreak(el.vector(psi[name]))
            out.update({k: float(x) for k, x in zip(_stick_keys(name, el), u)})
        else:
            out[name] = psi[name]
    return out
