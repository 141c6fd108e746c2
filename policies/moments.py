"""The moments: mixes solved from each choice rendered alone.

A mix (a proportions element) needs no search: features averaged over many scenes are
linear in the mix (each scene takes choice c with probability p_c), so the mean features
of each choice rendered on its own, fitted to the target's mean features over the simplex
(`mix_fit`), recover it.  Behind ask/tell: ``ask`` hands out each choice of each mix alone
(the k-th ψ asked is the k-th choice in turn, round and round), ``tell`` takes each ψ's
`Moment` per signal, and ``recommend`` is ``init`` with the fitted mixes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from simulators.errors import UserError
from simulators.space import Proportions

from .base import Strategy

__all__ = ["Moment", "Moments", "mix_fit", "simplex_lstsq"]


class Moment(NamedTuple):
    """What a render tells the moments for one signal: its mean features, the target's,
    and whether the fit may scale the mix (features that grow with what a mix does not set)."""

    mean: torch.Tensor
    target: torch.Tensor
    scale_free: bool = False


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The point of the probability simplex nearest to ``v`` (Euclidean; by sorting)."""
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1.0
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp(min=0.0)


def mix_fit(m: torch.Tensor, t: torch.Tensor, *, scale: bool = False, steps: int = 5000) -> tuple[torch.Tensor, float]:
    """`simplex_lstsq`'s mix and the fit's residual ‖m q − t‖ (q: the mix, scaled as fitted)."""
    m, t = m.double(), t.double()
    if not (torch.isfinite(m).all() and torch.isfinite(t).all()):
        raise ValueError("simplex_lstsq: the features hold NaN or infinite values")
    k = m.shape[1]
    a, b = m.T @ m, m.T @ t
    lipschitz = float(torch.linalg.eigvalsh(a).max()) or 1.0
    q = y = torch.full((k,), 1.0 / k, dtype=torch.float64)
    momentum = 1.0
    project = (lambda v: v.clamp(min=0.0)) if scale else _project_simplex
    for _ in range(steps):
        nxt = project(y - (a @ y - b) / lipschitz)
        momentum, prev = (1.0 + math.sqrt(1.0 + 4.0 * momentum**2)) / 2.0, momentum
        y = nxt + (prev - 1.0) / momentum * (nxt - q)
        q = nxt
    residual = float((m @ q - t).norm())
    total = float(q.sum())
    return (q / total if total > 0 else torch.full((k,), 1.0 / k, dtype=torch.float64)), residual


def simplex_lstsq(m: torch.Tensor, t: torch.Tensor, *, scale: bool = False, steps: int = 5000) -> torch.Tensor:
    """argmin ‖m p − t‖² over mixes p (p ≥ 0, Σ p = 1): D × k ``m``, D ``t``, k-vector out.
    With ``scale`` the fit may scale the mix too (argmin ‖m q − t‖² over q ≥ 0, p = q / Σ q):
    for features that grow with something the mix does not set (car counts with the
    number of cars), so that a target busier than the renders does not tilt the mix.

    Accelerated projected gradient (FISTA) from the uniform mix; the problem is convex,
    so it converges to the minimum (to within 1e-6 here, far below the features' noise)."""
    return mix_fit(m, t, scale=scale, steps=steps)[0]


class Moments(Strategy):
    """Each mix fitted from its choices rendered alone (see the module docstring).

    ``signals`` maps a signal (the key of the `Moment` a render is told by) to the mixes its
    features fit; default: every free proportions element, by the first signal told.  The
    other elements stay at ``init``: the moments determine the mixes only."""

    name = "moments"

    def __init__(self, space: Any, *, signals: Mapping[str, Sequence[str]] | None = None, **common: Any) -> None:
        super().__init__(space, **common)
        free_mixes = [n for n in self.free if isinstance(space[n], Proportions)]
        if signals is None:
            self.mixes: dict[str, str | None] = {n: None for n in free_mixes}
        else:
            self.mixes = {n: k for k, names in signals.items() for n in names if n in free_mixes}
        if not self.mixes:
            raise UserError("search moments: no free mix (proportions element) to fit")
        #: each mix's choices, and the ψ asked in turn: every choice of every mix alone
        self.choices: dict[str, tuple[str, ...]] = {n: tuple(space[n].choices) for n in self.mixes}
        self.cycle = [(n, c) for n in self.mixes for c in self.choices[n]]
        self.asks = 0
        self.sums: dict[str, list[torch.Tensor | None]] = {n: [None] * len(c) for n, c in self.choices.items()}
        self.counts: dict[str, list[int]] = {n: [0] * len(c) for n, c in self.choices.items()}
        self.targets: dict[str, tuple[torch.Tensor, bool]] = {}  # mix → (the target's mean features, scale_free)
        self.solved: dict[str, dict[str, float]] = {}
        #: each mix's fit residual ‖m q − t‖ after the last tell
        self.residual: dict[str, float] = {}
        self.last_row: dict[str, Any] | None = None

    def unmoved(self) -> dict[str, str]:
        return {
            n: "the moments fit mixes by their mean features; this element stays where it starts"
            for n in self.free
            if n not in self.mixes
        }

    @property
    def renders(self) -> int:
        """ψ in one round: one per choice of each mix."""
        return len(self.cycle)

    def alone(self, name: str, choice: str) -> dict[str, Any]:
        """``init`` with mix ``name`` all ``choice``."""
        return self.space.validate({**self.init, name: {c: float(c == choice) for c in self.choices[name]}})

    def ask(self, n: int) -> list[dict[str, Any]]:
        out = [self.alone(*self.cycle[(self.asks + k) % len(self.cycle)]) for k in range(n)]
        self.asks += n
        return out

    def which(self, psi: Mapping[str, Any]) -> tuple[str, str] | None:
        """(mix, choice) that ``psi`` renders alone, if one of the asked ψ."""
        for name, choice in self.cycle:
            if psi == self.alone(name, choice):
                return name, choice
        return None

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[Any]) -> None:
        for psi, told in zip(params, rewards):
            if not isinstance(told, Mapping):
                if isinstance(told, float) and math.isnan(told):
                    continue  # a failed render: that choice is asked again in the next round
                raise UserError(
                    "search moments is told mean features (a Moment per signal, the warm-up's), "
                    f"not a reward ({told!r})"
                )
            hit = self.which(psi)
            if hit is None:
                raise ValueError("tell() got a ψ that ask() did not hand out")
            name, choice = hit
            signal = self.mixes[name]
            moment = told[signal] if signal is not None else next(iter(told.values()))
            j = self.choices[name].index(choice)
            mean = moment.mean.detach().cpu().double()
            prev = self.sums[name][j]
            self.sums[name][j] = mean if prev is None else prev + mean
            self.counts[name][j] += 1
            self.targets[name] = (torch.as_tensor(moment.target).cpu().double(), bool(moment.scale_free))
        self._fit()

    def _fit(self) -> None:
        """Fit every mix whose choices have all been told."""
        for name in self.mixes:
            counts = self.counts[name]
            if name not in self.targets or min(counts) == 0:
                continue
            columns = torch.stack([s / c for s, c in zip(self.sums[name], counts) if s is not None], 1)
            target, scale_free = self.targets[name]
            try:
                p, self.residual[name] = mix_fit(columns, target, scale=scale_free)
            except ValueError:
                raise UserError(f"the moments: {name}'s frames gave non-finite features") from None
            self.solved[name] = {c: float(x) for c, x in zip(self.choices[name], p)}
        if self.residual:
            self.last_row = {
                "rewards": [-r for r in self.residual.values()],  # −the fit's distance, one per mix
                "reward_mean": -sum(self.residual.values()) / len(self.residual),
                "residuals": dict(self.residual),
            }

    def recommend(self) -> dict[str, Any]:
        return self.space.validate({**self.init, **self.solved})

    def state_dict(self) -> dict[str, Any]:
        return {
            "asks": self.asks,
            "sums": {n: [None if s is None else s.tolist() for s in v] for n, v in self.sums.items()},
            "counts": {n: list(v) for n, v in self.counts.items()},
            "targets": {n: (t.tolist(), scale) for n, (t, scale) in self.targets.items()},
            "solved": self.solved,
            "residual": self.residual,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.asks = int(state["asks"])
        for n, v in state.get("sums", {}).items():
            self.sums[n] = [None if s is None else torch.tensor(s, dtype=torch.float64) for s in v]
        for n, v in state.get("counts", {}).items():
            self.counts[n] = list(v)
        for n, (t, scale) in state.get("targets", {}).items():
            self.targets[n] = (torch.tensor(t, dtype=torch.float64), bool(scale))
        self.solved = {k: dict(v) for k, v in state["solved"].items()}
        self.residual = dict(state.get("residual", {}))
