"""The REINFORCE update with a moving-average baseline, as a small function.

    advantage_k = R_k − b
    loss        = −mean_k(advantage_k · log π(ψ_k)) − β · H(π)

The baseline is an exponential moving average of the mean reward; on the first
iteration it starts at that iteration's mean reward so the first step is centred.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from simulators.errors import UserError
from simulators.space import Integer, ParamSpace

from .base import Strategy, asked_index, failed, point_json, rng_for
from .distribution import DESIGNS, Policy, PolicySample

__all__ = ["UpdateStats", "reinforce_update", "moving_average", "anneal", "ReinforceStrategy"]


@dataclass(frozen=True)
class UpdateStats:
    loss: float
    grad_norm: float
    entropy: float
    advantage_mean: float


def moving_average(baseline: float | None, rewards: torch.Tensor, decay: float) -> float:
    """The next baseline: ``decay · b + (1 − decay) · mean(R)`` (``mean(R)`` when ``b`` is None)."""
    m = float(rewards.mean())
    return m if baseline is None else decay * baseline + (1.0 - decay) * m


def reinforce_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    sample: PolicySample,
    rewards: torch.Tensor,
    baseline: float,
    *,
    entropy_coef: float = 0.0,
    max_grad_norm: float | None = 1.0,
) -> UpdateStats:
    """One policy-gradient step on the draws in ``sample`` with their ``rewards``.

    ``rewards`` has one finite value per draw (drop failed evaluations first).
    """
    if rewards.numel() != len(sample):
        raise ValueError(f"{rewards.numel()} rewards for {len(sample)} draws")
    advantage = rewards.to(torch.float64) - baseline
    policy.zero_grad(set_to_none=True)  # elements outside ``optimizer`` too: a later update starts clean
    entropy = policy.entropy()
    loss = -(advantage * policy.log_prob(sample)).mean() - entropy_coef * entropy
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    moved = {id(p) for p in params}
    policy.project_([n for n in policy.loc if id(policy.loc[n]) in moved or id(policy.log_std[n]) in moved])
    return UpdateStats(
        loss=loss.item(),
        grad_norm=float(norm),
        entropy=entropy.item(),
        advantage_mean=advantage.mean().item(),
    )


def anneal(optimizer: torch.optim.Optimizer, it: int, iterations: int, floor: float) -> None:
    """Iteration ``it`` of ``iterations``: each group's learning rate on a cosine from its
    initial value (first iteration) to ``floor`` times it (last iteration)."""
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * it / max(iterations - 1, 1))))


class ReinforceStrategy(Strategy):
    """The paper's search: a distribution over ψ (`Policy`) moved by REINFORCE with a
    moving-average baseline, one Adam step per batch of rewards.

    ``signals`` (used by the warm-up stage) gives several rewards per draw, each moving
    its own elements with an optimiser and baseline of its own: ``tell`` then takes one
    mapping {signal: reward} per ψ.  The learning rates fall on a cosine to ``lr_floor``
    of their value over ``budget / batch`` updates.
    """

    name = "reinforce"

    def __init__(
        self,
        space: ParamSpace,
        *,
        lr: float = 0.05,
        logit_lr: float = 0.15,
        init_std: float = 0.1,
        init_logit_std: float = 1.0,
        min_std: float = 0.02,
        sampling: str = "orthogonal",
        lr_floor: float = 0.1,
        entropy_coef: float = 0.0,
        baseline_decay: float = 0.7,
        max_grad_norm: float = 1.0,
        signals: Mapping[str, Sequence[str]] | None = None,
        **common: Any,
    ) -> None:
        super().__init__(space, **common)
        _check(lr > 0 and logit_lr > 0, f"lr and logit_lr must be > 0, got {lr} and {logit_lr}")
        _check(init_std > 0 and init_logit_std > 0, f"init stds must be > 0, got {init_std}, {init_logit_std}")
        _check(0 < min_std <= 1, f"min_std must be in (0, 1], got {min_std}")
        _check(0 < lr_floor <= 1, f"lr_floor must be in (0, 1], got {lr_floor}")
        _check(0 <= baseline_decay < 1, f"baseline_decay must be in [0, 1), got {baseline_decay}")
        _check(max_grad_norm >= 0, f"max_grad_norm must be >= 0, got {max_grad_norm}")
        _check(sampling in DESIGNS, f"sampling must be one of {', '.join(DESIGNS)}, got {sampling!r}")
        self.sampling, self.lr_floor, self.entropy_coef = sampling, lr_floor, entropy_coef
        self.baseline_decay, self.max_grad_norm = baseline_decay, max_grad_norm
        self.policy = Policy(
            self.free,
            init_std=init_std,
            init_logit_std=init_logit_std,
            min_std=min_std,
            # without an init the distribution starts at the space's defaults, with no choice favoured
            init={n: self.init[n] for n in self.free} if self.has_init else None,
        )
        self.columns = self.free.column_names([n for n in space.priority if n in self.free], "priority")
        groups = {"": list(self.free)} if signals is None else {k: list(v) for k, v in signals.items()}
        self.signals = signals is not None
        self.optimizers = {
            k: torch.optim.Adam(self.policy.param_groups(lr, logit_lr, names)) for k, names in groups.items()
        }
        self.baselines: dict[str, float | None] = {k: None for k in groups}
        self.updates = 0  # tells so far (the learning-rate schedule's step)
        self.asks = 0
        self._pending: PolicySample | None = None
        self.last_stats: dict[str, UpdateStats] = {}

    @property
    def baseline(self) -> float | None:
        """The baseline of the reward (with signals: the sum of theirs)."""
        values = list(self.baselines.values())
        return None if any(b is None for b in values) else float(sum(values))  # type: ignore[arg-type]

    def ask(self, n: int) -> list[dict[str, Any]]:
        gen = torch.Generator().manual_seed(int(rng_for(self.seed, self.asks).integers(2**62)))
        self.asks += 1
        self._pending = self.policy.sample(n, gen, design=self.sampling, columns=self.columns)
        return [self.complete(p) for p in self._pending.params]

    @property
    def iterations(self) -> int:
        """The updates the budget allows (the learning-rate schedule's length)."""
        return max(1, (self.budget or 0) // max(self.batch or 1, 1))

    def _take_pending(
        self, params: Sequence[Mapping[str, Any]], rewards: Sequence[Any]
    ) -> tuple[PolicySample, list[tuple[int, Any]]]:
        """The last ask's draws, and (draw index, reward) of those told a reward; counts the update."""
        if self._pending is None:
            raise RuntimeError("tell() without a pending ask()")
        sample, self._pending = self._pending, None
        asked = [self.complete(p) for p in sample.params]
        self.updates += 1
        return sample, [(asked_index(asked, p), r) for p, r in zip(params, rewards) if not failed(r)]

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[Any]) -> None:
        sample, ok = self._take_pending(params, rewards)
        if not ok:
            return
        sub = PolicySample(
            raw={n: v[[j for j, _ in ok]] for n, v in sample.raw.items()}, params=[sample.params[j] for j, _ in ok]
        )
        self.last_stats = {}
        for k, opt in self.optimizers.items():
            anneal(opt, self.updates - 1, self.iterations, self.lr_floor)
            values = [r[k] if self.signals else r for _, r in ok]
            r = torch.tensor([float(v) for v in values], dtype=torch.float64)
            b = self.baselines[k]
            self.last_stats[k] = reinforce_update(
                self.policy,
                opt,
                sub,
                r,
                float(r.mean()) if b is None else b,
                entropy_coef=self.entropy_coef,
                max_grad_norm=self.max_grad_norm or None,
            )
            self.baselines[k] = moving_average(b, r, self.baseline_decay)

    def recommend(self) -> dict[str, Any]:
        mean = self.policy.mean()
        for name, el in self.free.items():
            if isinstance(el, Integer):
                mean[name] = int(round(mean[name]))
        return self.complete(mean)

    def describe(self) -> dict[str, Any]:
        # the distribution over the free elements; the fixed ones as the points they are
        fixed = ParamSpace({n: self.space[n] for n in self.fixed}) if self.fixed else None
        params = self.policy.to_json()["params"]
        if fixed is not None:
            params.update(point_json(fixed, self.init)["params"])
        return {"strategy": self.name, "params": {n: params[n] for n in self.space}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "baselines": dict(self.baselines),
            "updates": self.updates,
            "asks": self.asks,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.baselines = dict(state["baselines"])
        self.updates, self.asks = int(state["updates"]), int(state["asks"])


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise UserError(f"search reinforce: {msg}")
