"""Strategies by name (``--search NAME``), built with their options checked."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.errors import UnknownNameError, UserError, did_you_mean
from simulators.space import ParamSpace

from .base import Strategy

__all__ = ["STRATEGIES", "make_strategy", "strategy_class", "strategy_options"]

#: name → (module:Class, one line for --help)
STRATEGIES: dict[str, tuple[str, str]] = {
    "reinforce": (
        "policies.reinforce:ReinforceStrategy",
        "REINFORCE on a distribution over ψ (the paper's); hands over its mean",
    ),
    "random": (
        "policies.random_search:RandomSearch",
        "random search, ψ uniform over the space; hands over the best ψ seen",
    ),
    "tpe": ("policies.optuna_search:TPE", "Optuna's TPE (multivariate); hands over the best ψ seen"),
    "cmaes": (
        "policies.optuna_search:CmaEs",
        "Optuna's CMA-ES, a generation per iteration; hands over the best ψ seen",
    ),
    "gp": ("policies.optuna_search:GP", "Optuna's Gaussian-process BO; hands over the best ψ seen"),
    "ppo": (
        "policies.ppo:PpoStrategy",
        "REINFORCE reusing the last batches' draws by clipped importance weights (PPO); hands over its mean",
    ),
    "cma-mean": (
        "policies.cma_mean:CmaMean",
        "CMA-ES in unit coordinates, a generation per batch; hands over its mean (averaged)",
    ),
    "moments": (
        "policies.moments:Moments",
        "the mixes fitted from each choice rendered alone (told mean features: the warm-up's); hands over the fit",
    ),
}
_COMMON = ("space", "seed", "budget", "batch", "init", "fixed", "common", "self")


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise UnknownNameError(
            f"unknown search {name!r}: expected one of {', '.join(STRATEGIES)}" + did_you_mean(name, STRATEGIES)
        )
    module, cls = STRATEGIES[name][0].split(":")
    klass: type[Strategy] = getattr(importlib.import_module(module), cls)
    return klass


def strategy_options(name: str) -> dict[str, Any]:
    """The options a strategy takes (``search_options``) with their defaults."""
    cls = strategy_class(name)
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
            if p.name not in _COMMON and p.kind is p.KEYWORD_ONLY and p.name not in out:
                out[p.name] = p.default
    return out


def make_strategy(
    name: str,
    space: ParamSpace,
    *,
    seed: int,
    budget: int | None = None,
    batch: int | None = None,
    init: Mapping[str, Any] | None = None,
    fixed: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
) -> Strategy:
    """Build strategy ``name``; an unknown option or a bad value is a one-line `UserError`."""
    cls = strategy_class(name)
    known = strategy_options(name)
    for key in options or {}:
        if key not in known:
            raise UserError(
                f"search {name}: unknown option {key!r} (options: {', '.join(known) or 'none'})"
                + did_you_mean(key, known)
            )
    try:
        return cls(space, seed=seed, budget=budget, batch=batch, init=init, fixed=fixed, **dict(options or {}))
    except TypeError as e:  # a value of the wrong type reaching a constructor
        raise UserError(f"search {name}: {e}") from None
