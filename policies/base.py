"""The search-strategy interface: ask for ψ, tell their rewards.

Every strategy lives behind `Strategy`, as optimisers do in Optuna, Nevergrad and
``cma``: the caller evaluates, so evaluations can run anywhere (threads, Ray) and a run
can be checkpointed between ask and tell.  A strategy is built from a parameter space
and a seed; ``budget`` (evaluations planned) and ``batch`` (ψ asked at once) are hints a
strategy may use (a learning-rate schedule, a population size).

``init`` is a ψ to start from (a warm-up stage's result) and ``fixed`` names elements
that stay at ``init``'s value: a strategy searches the other elements only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from simulators.errors import UserError
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

__all__ = ["Strategy", "point_json", "failed", "best_index", "asked_index"]


class Strategy(ABC):
    """Ask/tell search over a `ParamSpace` (see the module docstring)."""

    #: registry name (``--search NAME``)
    name: ClassVar[str] = ""

    def __init__(
        self,
        space: ParamSpace,
        *,
        seed: int,
        budget: int | None = None,
        batch: int | None = None,
        init: Mapping[str, Any] | None = None,
        fixed: Sequence[str] = (),
    ) -> None:
        self.space = space
        self.seed = int(seed)
        self.budget = budget
        self.batch = batch
        self.init: dict[str, Any] = space.validate(init, fill_defaults=True) if init is not None else space.default()
        self.has_init = init is not None
        self.fixed = tuple(space.element_names(tuple(fixed), "fixed"))
        if len(self.fixed) == len(space):
            raise UserError(f"search {self.name}: every element is fixed ({', '.join(self.fixed)}); nothing to search")
        self.free = ParamSpace({n: space[n] for n in space if n not in self.fixed})

    # -- the interface ---------------------------------------------------------------
    @abstractmethod
    def ask(self, n: int) -> list[dict[str, Any]]:
        """``n`` ψ to evaluate next (plain dicts, valid in the space)."""

    @abstractmethod
    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        """The rewards of ψ from the last `ask` (NaN: the evaluation failed)."""

    @abstractmethod
    def recommend(self) -> dict[str, Any]:
        """The ψ this strategy would hand a user now."""

    def describe(self) -> dict[str, Any]:
        """The ``policy.json`` form: what the strategy holds now (a point strategy: its
        recommendation, with std 0 and one-hot probabilities)."""
        out = {"strategy": self.name, "params": point_json(self.space, self.recommend())["params"]}
        unmoved = self.unmoved()
        return {**out, "unmoved": unmoved} if unmoved else out

    def unmoved(self) -> dict[str, str]:
        """The free elements this strategy cannot search, each with why (``policy.json``'s
        ``unmoved``, the plan line): every strategy searches every element kind it is given,
        or says so."""
        return {}

    def spread(self) -> dict[str, float]:
        """The search distribution's standard deviation now, per unit coordinate it moves
        (`policies.coords.unit_names`): how well it has pinned each, which a next phase may
        take as its first step (``steps``). Empty where the strategy has no such spread."""
        return {}

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (pickleable)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    # -- helpers for subclasses --------------------------------------------------------
    def complete(self, free: Mapping[str, Any]) -> dict[str, Any]:
        """A full ψ: the free elements given, the fixed ones at ``init``."""
        return self.space.validate({**{n: self.init[n] for n in self.fixed}, **free})


def failed(reward: Any) -> bool:
    """A failed evaluation: None or non-finite (with one reward per signal, any of them)."""
    if isinstance(reward, Mapping):
        return any(failed(v) for v in reward.values())
    return reward is None or not math.isfinite(float(reward))


def asked_index(asked: Sequence[Mapping[str, Any]], psi: Mapping[str, Any]) -> int:
    """Where ``psi`` is among the ψ an `ask` handed out (tell may pass them in any order)."""
    for j, q in enumerate(asked):
        if q == psi:
            return j
    raise ValueError("tell() got a ψ that ask() did not hand out")


def best_index(rewards: Sequence[float]) -> int | None:
    """Index of the highest finite reward (the first among ties), or None."""
    finite = [(float(r), -i) for i, r in enumerate(rewards) if not failed(r)]
    return -max(finite)[1] if finite else None


def point_json(space: ParamSpace, psi: Mapping[str, Any]) -> dict[str, Any]:
    """A single ψ in the ``policy.json`` form (docs/design.md, contract 4)."""
    params: dict[str, Any] = {}
    for name, el in space.items():
        v = psi[name]
        if isinstance(el, Proportions):
            params[name] = {
                "kind": "proportions",
                "choices": list(el.choices),
                "mean": [float(v[c]) for c in el.choices],
            }
        elif isinstance(el, Categorical):
            probs = [1.0 if c == v else 0.0 for c in el.choices]
            params[name] = {"kind": "categorical", "choices": list(el.choices), "probs": probs}
        elif isinstance(el, (Continuous, Integer)):
            params[name] = {"kind": el.kind, "low": el.low, "high": el.high, "mean": float(v), "std": 0.0}
    return {"params": params}


def rng_for(seed: int, *indices: int) -> np.random.Generator:
    """A numpy generator for (seed, indices): the same key gives the same draws."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *(int(i) for i in indices)]))
