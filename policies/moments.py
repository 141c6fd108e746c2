"""The moments: mixes solved from each choice rendered alone.

A mix (a proportions element) needs no search: features averaged over many scenes are
linear in the mix (each scene takes choice c with probability p_c), so the mean features
of each choice rendered on its own, fitted to the target's mean features over the simplex
(`mix_fit`), recover it.  Behind ask/tell: ``ask`` hands out each choice of each mix alone
(the k-th ψ asked is the k-th choice in turn, round and round), ``tell`` takes each ψ's
`Moment` per signal, and ``recommend`` is ``init`` with the fitted mixes.

A fit holds only what the target determines (`Moments.verdict`, from the standard errors a
`Moment` carries): choices whose features the target cannot tell apart (car types that the
target's labels fold into "car") are held as one total, the split within them left to the
search (`policies.partial.HeldInPart`); a fit whose residual is far above its noise and a
sizeable part of the choices' spread says that no mix reproduces the target (a domain gap:
a real camera's colour and tone), and that mix is not held.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from simulators.errors import UserError
from simulators.space import Proportions

from .base import Strategy

__all__ = ["Moment", "Moments", "mix_fit", "scaled_fit", "simplex_lstsq", "separable_groups", "split_groups"]


class Moment(NamedTuple):
    """What a render tells the moments for one signal: its mean features, the target's,
    whether the fit may scale the mix (features that grow with what a mix does not set),
    and the standard errors of the two means (None: unknown), from which the fit tells
    which choices the target can separate and whether any mix reproduces it."""

    mean: torch.Tensor
    target: torch.Tensor
    scale_free: bool = False
    se: torch.Tensor | None = None
    target_se: torch.Tensor | None = None


# What the fit may hold (docs/experiments.md, 2026-12-07, "A warm-up that holds only what the
# target determines"):
#: two choices whose mean features differ by at most this many standard errors of the
#: difference are one to the fit (car types that labels fold into "car")
GROUP_Z = 3.0
#: a fit whose residual is above this many standard errors of the noise it would have ...
GAP_Z = 2.0
#: ... and above this fraction of the choices' spread (their largest distance from their
#: centre) is a domain gap: no mix reproduces the target (clean targets measured 0.4–1.1
#: standard errors and 0.03–0.08 of the spread, a camera model's look 3.4–5.0 and 0.18–0.30)
GAP_SPREAD = 0.1


def separable_groups(columns: torch.Tensor, se: torch.Tensor | None, z: float = GROUP_Z) -> list[list[int]]:
    """The choices (columns of D × k ``columns``) in groups the features cannot tell apart:
    two choices whose columns differ by at most ``z`` standard errors of the difference (per
    column ``se``, D × k; None: only equal columns) are in one group, and groups are joined
    transitively.  Each group sorted, the groups by their first choice."""
    k = columns.shape[1]
    parent = list(range(k))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    scale = float(columns.abs().max()) or 1.0
    for i in range(k):
        for j in range(i + 1, k):
            d = float((columns[:, i] - columns[:, j]).norm())
            noise = 0.0 if se is None else float((se[:, i].square() + se[:, j].square()).sum().sqrt())
            if d <= max(z * noise, 1e-9 * scale):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(k):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The point of the probability simplex nearest to ``v`` (Euclidean; by sorting)."""
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1.0
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp(min=0.0)


def mix_fit(m: torch.Tensor, t: torch.Tensor, *, scale: bool = False, steps: int = 5000) -> tuple[torch.Tensor, float]:
    """`simplex_lstsq`'s mix and the fit's residual ‖m q − t‖ (q: the mix, scaled as fitted)."""
    q, residual = scaled_fit(m, t, scale=scale, steps=steps)
    return _normalised(q), residual


def _normalised(q: torch.Tensor) -> torch.Tensor:
    """``q`` / Σ q (the uniform mix where Σ q is 0)."""
    total = float(q.sum())
    return q / total if total > 0 else torch.full_like(q, 1.0 / len(q))


def scaled_fit(
    m: torch.Tensor, t: torch.Tensor, *, scale: bool = False, steps: int = 5000
) -> tuple[torch.Tensor, float]:
    """`mix_fit`'s q before it is made a mix (Σ q = 1 without ``scale``; with it, the fitted
    scale), and the residual ‖m q − t‖."""
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
    return q, float((m @ q - t).norm())


def _pad(v: torch.Tensor, width: int) -> torch.Tensor:
    """``v`` with zeros appended up to ``width``."""
    return torch.cat([v, v.new_zeros(width - len(v))]) if len(v) < width else v


def split_groups(
    init: Mapping[str, float], groups: Sequence[Sequence[str]], totals: Sequence[float]
) -> dict[str, float]:
    """A mix with each group of choices at its total, split within the group as ``init``
    splits it (evenly where ``init`` gives the group nothing)."""
    out: dict[str, float] = {}
    for group, total in zip(groups, totals):
        mass = sum(float(init[c]) for c in group)
        for c in group:
            out[c] = float(total) * (float(init[c]) / mass if mass > 0 else 1.0 / len(group))
    return out


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
        #: each choice's summed squared standard errors (None: a render told none)
        self.sq: dict[str, list[torch.Tensor | None]] = {n: [None] * len(c) for n, c in self.choices.items()}
        self.targets: dict[str, tuple[torch.Tensor, bool]] = {}  # mix → (the target's mean features, scale_free)
        self.target_se: dict[str, torch.Tensor | None] = {}
        self.solved: dict[str, dict[str, float]] = {}
        #: each mix's fit residual ‖m q − t‖ after the last tell
        self.residual: dict[str, float] = {}
        #: what the fit may hold of each mix (`verdict`): {"hold": "all" | "part" | "none", "why", …}
        self.verdicts: dict[str, dict[str, Any]] = {}
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
            se, sq = moment.se, self.sq[name][j]
            if se is not None and (sq is not None or self.counts[name][j] == 0):
                self.sq[name][j] = se.detach().cpu().double().square() + (0.0 if sq is None else sq)
            else:
                self.sq[name][j] = None  # a render told no standard error: unknown from now on
            self.counts[name][j] += 1
            self.targets[name] = (torch.as_tensor(moment.target).cpu().double(), bool(moment.scale_free))
            tse = moment.target_se
            self.target_se[name] = None if tse is None else torch.as_tensor(tse).cpu().double()
        self._fit()

    def _fit(self) -> None:
        """Fit every mix whose choices have all been told."""
        for name in self.mixes:
            counts = self.counts[name]
            if name not in self.targets or min(counts) == 0:
                continue
            target, scale_free = self.targets[name]
            means = [s / c for s, c in zip(self.sums[name], counts) if s is not None]
            width = max([len(target), *(len(m) for m in means)])  # features may differ in length: pad with 0
            columns = torch.stack([_pad(m, width) for m in means], 1)
            target = _pad(target, width)
            try:
                q, self.residual[name] = scaled_fit(columns, target, scale=scale_free)
            except ValueError:
                raise UserError(f"the moments: {name}'s frames gave non-finite features") from None
            self.solved[name] = {c: float(x) for c, x in zip(self.choices[name], _normalised(q))}
            sq, tse = self.sq[name], self.target_se.get(name)
            se: tuple[torch.Tensor, torch.Tensor] | None = None  # the columns' and the target's
            if tse is not None and all(v is not None for v in sq):
                cols_se = torch.stack([_pad(v.sqrt() / c, width) for v, c in zip(sq, counts)], 1)  # type: ignore[union-attr]
                se = (cols_se, _pad(tse, width))
            self.verdicts[name] = self.verdict(name, columns, q, self.residual[name], se)
        if self.residual:
            self.last_row = {
                "rewards": [-r for r in self.residual.values()],  # −the fit's distance, one per mix
                "reward_mean": -sum(self.residual.values()) / len(self.residual),
                "residuals": dict(self.residual),
            }

    def verdict(
        self,
        name: str,
        columns: torch.Tensor,
        q: torch.Tensor,
        residual: float,
        se: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> dict[str, Any]:
        """What the fit of mix ``name`` may hold: ``"all"`` (every choice told apart, a mix
        reproduces the target), ``"part"`` (``groups`` of choices the features cannot tell
        apart: only each group's total is determined, ``totals``), or ``"none"`` (a domain gap:
        no mix reproduces the target; or no two choices told apart).  With ``why``, in words,
        and the numbers: the residual in standard errors (``residual_se``) and as a fraction of
        the choices' spread (``residual_spread``).  ``q``: the fit (scaled as fitted) and
        ``residual`` its distance (`scaled_fit`); ``se``: the standard errors of ``columns``
        and of the target's features (None: unknown)."""
        choices = self.choices[name]
        signal = self.mixes[name] or "features"
        noise = 0.0
        if se is not None:
            noise = float((se[1].square().sum() + (se[0].square() @ q.square()).sum()).sqrt())
        cols = float(q.sum()) * columns  # the choices as far apart as the fit scaled them
        spread = float((cols - cols.mean(1, keepdim=True)).norm(dim=0).max())
        out: dict[str, Any] = {
            "residual_se": residual / noise if noise > 0 else None,
            "residual_spread": residual / spread if spread > 0 else None,
        }
        words = f"residual {residual / noise:.1f} standard errors" if noise > 0 else f"residual {residual:.3g}"
        if spread > 0 and residual > GAP_SPREAD * spread and (noise == 0 or residual > GAP_Z * noise):
            return {
                **out,
                "hold": "none",
                "why": f"no mix reproduces the target's {signal} ({words}, {residual / spread:.0%} of the choices' "
                "spread): a domain gap; the search moves it from where it started",
            }
        groups = separable_groups(columns, None if se is None else se[0])
        if len(groups) == 1 and len(choices) > 1:
            return {
                **out,
                "hold": "none",
                "why": f"the target's {signal} cannot tell its choices apart; the search moves it",
            }
        if all(len(g) == 1 for g in groups):
            return {**out, "hold": "all", "why": f"fit to the target's {signal} ({words})"}
        named = [[choices[i] for i in g] for g in groups]
        p = _normalised(q)
        totals = [float(sum(p[i] for i in g)) for g in groups]
        folded = "; ".join(f"{', '.join(g)} (together {t:.2f})" for g, t in zip(named, totals) if len(g) > 1)
        return {
            **out,
            "hold": "part",
            "groups": named,
            "totals": totals,
            "why": f"the target's {signal} cannot tell apart {folded}: each group's total is held, the split within "
            f"it is left to the search ({words})",
        }

    def recommend(self) -> dict[str, Any]:
        """``init`` with each mix as its fit determines it: fitted (held all), the groups'
        totals split within each group as ``init`` splits it (held in part), or ``init`` (a
        domain gap, or nothing told apart)."""
        out: dict[str, Any] = {}
        for name, mix in self.solved.items():
            v = self.verdicts.get(name, {"hold": "all"})
            if v["hold"] == "all":
                out[name] = mix
            elif v["hold"] == "part":
                out[name] = split_groups(self.init[name], v["groups"], v["totals"])
        return self.space.validate({**self.init, **out})

    def state_dict(self) -> dict[str, Any]:
        return {
            "asks": self.asks,
            "sums": {n: [None if s is None else s.tolist() for s in v] for n, v in self.sums.items()},
            "counts": {n: list(v) for n, v in self.counts.items()},
            "targets": {n: (t.tolist(), scale) for n, (t, scale) in self.targets.items()},
            "solved": self.solved,
            "residual": self.residual,
            "sq": {n: [None if v is None else v.tolist() for v in vs] for n, vs in self.sq.items()},
            "target_se": {n: None if t is None else t.tolist() for n, t in self.target_se.items()},
            "verdicts": self.verdicts,
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
        for n, vs in state.get("sq", {}).items():
            self.sq[n] = [None if v is None else torch.tensor(v, dtype=torch.float64) for v in vs]
        for n, t in state.get("target_se", {}).items():
            self.target_se[n] = None if t is None else torch.tensor(t, dtype=torch.float64)
        # a checkpoint from before the verdicts: its fits were held whole
        self.verdicts = {n: dict(v) for n, v in state.get("verdicts", {}).items()}
