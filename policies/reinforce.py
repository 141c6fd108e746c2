"""The REINFORCE update with a moving-average baseline, as a small function.

    advantage_k = R_k − b
    loss        = −mean_k(advantage_k · log π(ψ_k)) − β · H(π)

The baseline is an exponential moving average of the mean reward; on the first
iteration it starts at that iteration's mean reward so the first step is centred.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .distribution import Policy, PolicySample

__all__ = ["UpdateStats", "reinforce_update", "moving_average"]


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
