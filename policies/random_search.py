"""Random search: ψ drawn uniformly over the space; it hands over the best ψ seen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .base import Strategy, best_index, rng_for

__all__ = ["RandomSearch"]


class RandomSearch(Strategy):
    """Uniform draws over the free elements (`ParamSpace.sample`); the fixed ones stay."""

    name = "random"

    def __init__(self, space: Any, **common: Any) -> None:
        super().__init__(space, **common)
        self.asks = 0
        self.best: dict[str, Any] | None = None
        self.best_reward: float | None = None

    def ask(self, n: int) -> list[dict[str, Any]]:
        rng = rng_for(self.seed, self.asks)
        self.asks += 1
        return [self.complete(self.free.sample(rng)) for _ in range(n)]

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[float]) -> None:
        i = best_index(rewards)
        if i is not None and (self.best_reward is None or float(rewards[i]) > self.best_reward):
            self.best, self.best_reward = dict(params[i]), float(rewards[i])

    def recommend(self) -> dict[str, Any]:
        return self.space.validate(self.best) if self.best is not None else dict(self.init)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "best_reward": self.best_reward}

    def state_dict(self) -> dict[str, Any]:
        return {"asks": self.asks, "best": self.best, "best_reward": self.best_reward}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.asks, self.best, self.best_reward = int(state["asks"]), state["best"], state["best_reward"]
