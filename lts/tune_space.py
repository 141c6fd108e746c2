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

from typing import Any

from policies.coords import coordinate_names, coords_to_params, params_to_coords, stick_break, unbreak
from policies.coords import stick_keys as _stick_keys
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = ["tune_search_space", "coords_to_params", "params_to_coords", "coordinate_names", "stick_break", "unbreak"]


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
