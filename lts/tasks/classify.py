"""Task ``classify``: a small MLP on a simulator's labelled points (the toy experiment).

Reward = the negated log-likelihood (NLL) on the target set by default; ``metric: accuracy``
is the paper's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from simulators import Batch
from simulators.errors import UserError

from .counting import build_seeded

__all__ = ["ClassifyTask"]


@contextmanager
def _one_thread() -> Iterator[None]:
    # A 2-D MLP is far too small for intra-op parallelism: on a busy 2-core machine
    # the thread pool makes it 10–40× slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class ClassifyTask:
    """Train an MLP with full-batch Adam for ``steps`` steps; score accuracy and NLL.

    The reward is the negated ``nll``, which sees the classes' spread and separation;
    ``metric="accuracy"`` (the paper's) sees only the decision boundary, so it cannot tell two
    centres apart from two centres further apart in the same direction, and its oracle band
    holds ψ far from ψ* (docs/experiments.md, 2026-12-07, "The plain config").
    """

    name: ClassVar[str] = "classify"
    label_field: ClassVar[str] = "labels"  # the `Batch` field of its labels (the warm-up compares points and labels)
    # points are cheap: the run's sizes where the config names none (`lts.config.load_config`). With
    # the image tasks' K = 4, M = 256 and 256 target points the NLL's noise hid ψ* (same entry)
    sizes: ClassVar[dict[str, int]] = {"samples": 8, "scenes": 400, "target_size": 1000, "test_size": 1000}
    metric: str = "nll"
    higher_is_better: bool = False

    def __init__(
        self, steps: int = 100, lr: float = 0.03, hidden: int = 32, device: str = "cpu", metric: str = "nll"
    ) -> None:
        if steps < 1:
            raise UserError(f"task classify: steps must be >= 1, got {steps}")
        if metric not in ("accuracy", "nll"):
            raise UserError(f"task classify: metric must be 'accuracy' or 'nll', got {metric!r}")
        self.metric, self.higher_is_better = metric, metric == "accuracy"
        self.steps, self.lr, self.hidden, self.device = int(steps), float(lr), int(hidden), device

    def _points(self, batch: Batch, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's features and labels; a batch without them is a `UserError`."""
        if batch.features is None or batch.labels is None:
            raise UserError(f"task classify needs points with class labels; the {what} has none")
        return batch.features, batch.labels

    def check_target(self, target: Batch) -> None:
        self._points(target, "target")

    def _net(self, dim: int, classes: int, seed: int) -> nn.Module:
        return build_seeded(
            lambda: nn.Sequential(
                nn.Linear(dim, self.hidden),
                nn.Tanh(),
                nn.Linear(self.hidden, self.hidden),
                nn.Tanh(),
                nn.Linear(self.hidden, classes),
            ),
            seed,
        ).to(self.device)

    def fit(self, batch: Batch, *, seed: int, init: dict[str, Any] | None = None) -> nn.Module:
        features, labels = self._points(batch, "training batch")
        x = features.to(self.device).float()
        y = labels.to(self.device).long()
        # as many classes as the labels show (at least two); `score` treats a class the
        # training batch never showed as one the net gives no probability to
        net = self._net(x.shape[1], max(2, int(y.max()) + 1), seed)
        if init is not None:
            net.load_state_dict(init)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        with _one_thread():
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        return net.eval()

    @torch.no_grad()
    def score(self, model: nn.Module, target: Batch) -> dict[str, float]:
        features, labels = self._points(target, "target")
        with _one_thread():
            logits = model(features.to(self.device).float()).cpu()
        y = labels.cpu().long()
        missing = int(y.max()) + 1 - logits.shape[1]
        if missing > 0:
            logits = torch.cat([logits, torch.full((len(logits), missing), -30.0)], 1)
        return {
            "accuracy": float((logits.argmax(1) == y).float().mean()),
            "nll": float(nn.functional.cross_entropy(logits, y)),
        }

    def state_of(self, model: nn.Module) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
