"""REINFORCE that reuses past evaluations: importance-weighted, clipped-surrogate updates
(PPO, Schulman et al. 2017) over the draws of the last few batches.

Each tell adds the batch's draws (raw policy coordinates, their log-probability under
the policy that drew them, their rewards) to a buffer of the last ``reuse`` batches,
then takes ``epochs`` Adam steps on

    L = −mean_i min(ρ_i A_i, clip(ρ_i, 1 − ε, 1 + ε) A_i),   ρ_i = π(ψ_i) / π_old(ψ_i)

so one evaluation informs several updates while the clip keeps the policy near the
ones that drew the buffer.  On-policy (ρ = 1) the gradient is REINFORCE's.

The advantage of a draw is its reward minus the mean of its own batch (``baseline="batch"``):
a batch's draws share data and training seeds, so the batch mean removes the luck they
share, which a moving average (``"ema"``, the paper's) cannot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from simulators.errors import UserError
from simulators.space import ParamSpace

from .distribution import PolicySample
from .reinforce import ReinforceStrategy, anneal, moving_average

__all__ = ["clipped_surrogate", "PpoStrategy"]


def clipped_surrogate(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor, clip: float
) -> torch.Tensor:
    """The PPO loss −mean(min(ρA, clip(ρ, 1 − ε, 1 + ε)A)), ρ = exp(log π − log π_old)."""
    ratio = (log_prob - old_log_prob).exp()
    return -torch.min(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage).mean()


class PpoStrategy(ReinforceStrategy):
    """REINFORCE's distribution moved by clipped importance-weighted updates over the
    last ``reuse`` batches (see the module docstring); hands over the policy's mean."""

    name = "ppo"

    def __init__(
        self,
        space: ParamSpace,
        *,
        reuse: int = 4,
        epochs: int = 4,
        clip: float = 0.2,
        baseline: str = "batch",
        normalize: bool = True,
        **options: Any,
    ) -> None:
        if options.get("signals") is not None:
            raise UserError("search ppo: signals are not supported (use reinforce for the warm-up)")
        super().__init__(space, **options)
        if reuse < 1 or epochs < 1:
            raise UserError(f"search ppo: reuse and epochs must be >= 1, got {reuse}, {epochs}")
        if not clip > 0:
            raise UserError(f"search ppo: clip must be > 0, got {clip}")
        if baseline not in ("batch", "ema"):
            raise UserError(f"search ppo: baseline must be 'batch' or 'ema', got {baseline!r}")
        self.reuse, self.epochs, self.clip = int(reuse), int(epochs), float(clip)
        self.baseline_kind, self.normalize = baseline, bool(normalize)
        # (raw draws, log π_old, advantages) of the last `reuse` batches
        self.buffer: list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] = []

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[Any]) -> None:
        sample, told = self._take_pending(params, rewards)
        ok = [(j, float(r)) for j, r in told]
        if not ok:
            return
        idx = [j for j, _ in ok]
        raw = {n: v[idx].detach().clone() for n, v in sample.raw.items()}
        r = torch.tensor([v for _, v in ok], dtype=torch.float64)
        b = self.baselines[""]
        if self.baseline_kind == "batch":
            adv = r - r.mean()
        else:
            adv = r - (float(r.mean()) if b is None else b)
        self.baselines[""] = moving_average(b, r, self.baseline_decay)
        with torch.no_grad():
            old = self.policy.log_prob(PolicySample(raw=raw, params=[])).detach()
        self.buffer = (self.buffer + [(raw, old, adv)])[-self.reuse :]
        opt = self.optimizers[""]
        anneal(opt, self.updates - 1, self.iterations, self.lr_floor)
        raw_all = {n: torch.cat([bf[0][n] for bf in self.buffer]) for n in raw}
        old_all = torch.cat([bf[1] for bf in self.buffer])
        adv_all = torch.cat([bf[2] for bf in self.buffer])
        if self.normalize and len(adv_all) > 1 and float(adv_all.std()) > 0:
            adv_all = adv_all / adv_all.std()
        params_ = [p for g in opt.param_groups for p in g["params"]]
        for _ in range(self.epochs):
            self.policy.zero_grad(set_to_none=True)
            loss = clipped_surrogate(self.policy.log_prob(raw_all), old_all, adv_all, self.clip)
            loss = loss - self.entropy_coef * self.policy.entropy()
            loss.backward()
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params_, self.max_grad_norm)
            opt.step()
            self.policy.project_()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "buffer": [(dict(r), o.clone(), a.clone()) for r, o, a in self.buffer]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer = [(dict(r), o.clone(), a.clone()) for r, o, a in state["buffer"]]
