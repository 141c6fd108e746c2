"""The task interface: what is trained on a rendered batch and scored on the target."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from simulators import Batch

__all__ = ["Task", "reward_of"]


@runtime_checkable
class Task(Protocol):
    """A downstream task.

    ``fit`` trains a fresh model on a batch (or continues from ``init``, the state a
    previous ``fit`` returned through ``state_of``); ``score`` returns metrics on the
    target batch.  ``metric`` names the metric that is the reward; if
    ``higher_is_better`` is false the reward is its negation (errors enter negated).
    Everything random in ``fit`` comes from ``seed``.
    """

    name: ClassVar[str]
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def fit(self, batch: Batch, *, seed: int, init: dict[str, Any] | None = None) -> Any: ...

    def score(self, model: Any, target: Batch) -> dict[str, float]: ...

    def check_target(self, target: Batch) -> None:
        """Raise `UserError` if ``target`` lacks the labels this task needs."""
        ...

    def state_of(self, model: Any) -> dict[str, Any]:
        """The model's weights, for warm starts and checkpoints."""
        ...


def reward_of(task: Task, metrics: dict[str, float]) -> float:
    """The reward (higher is better) in a task's metrics."""
    v = float(metrics[task.metric])
    return v if task.higher_is_better else -v
