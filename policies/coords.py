"""ψ as flat coordinates, for searchers that work on numbers (Optuna, CMA-ES, surrogates).

- ``continuous(low, high)`` and ``integer(low, high)``: one coordinate, the value;
- ``categorical(choices)``: one coordinate, the choice;
- ``proportions(c_1 … c_k)``: k − 1 coordinates ``NAME:c_1 … NAME:c_{k-1}`` in [0, 1],
  mapped to the simplex by *stick breaking*: choice i takes the fraction
  b_i = 1 − (1 − u_i)^(1/(k−1−i)) of what is left, the last choice the rest.  The map is
  a bijection between the open cube and the open simplex, and a uniform point of the
  cube gives a uniform point of the simplex (Dirichlet(1, …, 1), as `ParamSpace.sample`),
  so a searcher's uniform prior is the space's own and no coordinate is redundant.

`unit_vector` / `from_unit` put the numeric coordinates in [0, 1]^d (categorical
elements are left out; they travel beside the vector).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = [
    "stick_keys",
    "coordinate_names",
    "stick_break",
    "unbreak",
    "coords_to_params",
    "params_to_coords",
    "unit_names",
    "unit_vector",
    "from_unit",
    "tilted_probs",
]


def stick_keys(name: str, el: Proportions) -> list[str]:
    return [f"{name}:{c}" for c in el.choices[:-1]]


def coordinate_names(space: ParamSpace) -> list[str]:
    """The flat coordinate names of ``space``, in order."""
    out: list[str] = []
    for name, el in space.items():
        out.extend(stick_keys(name, el) if isinstance(el, Proportions) else [name])
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


def coords_to_params(space: ParamSpace, coords: Mapping[str, Any]) -> dict[str, Any]:
    """A valid ψ from flat coordinates (values clipped into range, extra keys ignored)."""
    psi: dict[str, Any] = {}
    for name, el in space.items():
        if isinstance(el, Continuous):
            psi[name] = float(np.clip(float(coords[name]), el.low, el.high))
        elif isinstance(el, Integer):
            psi[name] = int(np.clip(int(round(float(coords[name]))), el.low, el.high))
        elif isinstance(el, Categorical):
            psi[name] = str(coords[name])
        else:
            u = np.array([float(coords[k]) for k in stick_keys(name, el)])
            psi[name] = {c: float(x) for c, x in zip(el.choices, stick_break(u))}
    return space.validate(psi)


def params_to_coords(space: ParamSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The coordinates of a valid ψ (the inverse of `coords_to_params`)."""
    psi = space.validate(params)
    out: dict[str, Any] = {}
    for name, el in space.items():
        if isinstance(el, Proportions):
            u = unbreak(el.vector(psi[name]))
            out.update({k: float(x) for k, x in zip(stick_keys(name, el), u)})
        else:
            out[name] = psi[name]
    return out


def unit_names(space: ParamSpace) -> list[str]:
    """The numeric coordinates (every element but the categorical ones), in order."""
    return [c for c in coordinate_names(space) if not isinstance(space[c.split(":")[0]], Categorical)]


def unit_vector(space: ParamSpace, params: Mapping[str, Any]) -> np.ndarray:
    """ψ's numeric coordinates scaled to [0, 1] (`unit_names` order)."""
    coords = params_to_coords(space, params)
    out = []
    for c in unit_names(space):
        el = space[c.split(":")[0]]
        v = float(coords[c])
        out.append((v - el.low) / (el.high - el.low) if isinstance(el, (Continuous, Integer)) else v)
    return np.array(out, dtype=np.float64)


def from_unit(space: ParamSpace, x: np.ndarray, categorical: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ψ at unit coordinates ``x`` (clipped to [0, 1]); categorical elements from
    ``categorical`` (default: each one's first choice)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    coords: dict[str, Any] = {}
    for c, v in zip(unit_names(space), x):
        el = space[c.split(":")[0]]
        coords[c] = el.low + v * (el.high - el.low) if isinstance(el, (Continuous, Integer)) else v
    for name, el in space.items():
        if isinstance(el, Categorical):
            coords[name] = (categorical or {}).get(name, el.choices[0])
    return coords_to_params(space, coords)


def tilted_probs(el: Categorical, choice: str | None) -> np.ndarray:
    """Starting probabilities of a categorical element: uniform, or, given a ``choice`` (a
    warm-up's), halfway from uniform to that choice alone (3 choices: 2/3, 1/6, 1/6).  Not
    all the way: a search started from a wrong choice must still draw the others."""
    k = len(el.choices)
    p = np.full(k, 1.0 / k)
    if choice is not None:
        p = 0.5 * p + 0.5 * (np.arange(k) == el.choices.index(choice))
    return p
