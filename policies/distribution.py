"""A distribution over ψ built from a parameter space.

- continuous / integer elements: a Gaussian over the element's range rescaled to
  [0, 1]; a draw is clipped to the range (and rounded for integers);
- proportions: a diagonal Gaussian over logits, ψ = softmax(logits) (the paper's
  multivariate Gaussian policy);
- categorical: a categorical distribution over the choices (uniform, or leaning toward
  ``init``'s choice when given: `policies.coords.tilted_probs`).

An iteration's draws are independent, or laid out in sign-balanced orthogonal blocks
(``sample(k, design="orthogonal")``) so that each element's gradient estimate is not
blurred by the others' effects on the reward.

The learnable tensors live in one ``nn.Module``; torch distributions are rebuilt
from them on every call, so there is no hidden state to set first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal

from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

from .coords import tilted_probs

__all__ = ["DESIGNS", "Policy", "PolicySample", "column_order", "orthogonal_signs"]

_MEAN_DRAWS = 4096  # Monte Carlo draws for the expected ψ of nonlinear elements
#: How `Policy.sample` lays out the draws of one iteration.
DESIGNS = ("orthogonal", "independent")


def orthogonal_signs(size: int) -> torch.Tensor:
    """``size × (size − 1)`` columns of ±1 (``size`` a power of two) that each sum to zero
    and are mutually orthogonal: Sylvester's Hadamard matrix without its first column."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"size must be a power of two, got {size}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return h[:, 1:]


def column_order(size: int) -> list[int]:
    """The columns of ``orthogonal_signs(size)``, as indices, in the order elements get them.

    In Sylvester's order the product of columns ``a`` and ``b`` (counting from 1) is
    column ``a XOR b``.  The generating columns (1, 2, 4, …) come first, then any column
    that is not the product of two already handed out (7 in a block of eight), then the
    rest.  So a block of ``P ≥ 8`` draws lays out up to ``P / 2`` elements with no
    element's column the product of two others': a reward term in two elements together
    cannot reach a third element's gradient.  (A block of four has no such room: each of
    its columns is the product of the other two.)
    """
    rest = sorted(range(1, size), key=lambda c: (bin(c).count("1"), c))
    order: list[int] = []
    while rest:
        products = {a ^ b for a in order for b in order}
        pick = next((c for c in rest if c not in products), rest[0])
        order.append(pick)
        rest.remove(pick)
    return [c - 1 for c in order]


def _blocks(k: int, elements: int) -> list[int]:
    """``k`` draws as blocks of powers of two, largest first, none larger than needed to
    give each of ``elements`` a column of its own (k = 6, 5 elements → [4, 2])."""
    cap = 2
    while cap - 1 < elements:
        cap *= 2
    out = []
    while k:
        size = min(1 << (k.bit_length() - 1), cap)
        out.append(size)
        k -= size
    return out


def _clipped_normal_mean(m: float, s: float) -> float:
    """E[clip(X, 0, 1)] for X ~ N(m, s²), exactly."""
    a, b = (0.0 - m) / s, (1.0 - m) / s
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    pdf = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # noqa: E731
    return (1.0 - cdf(b)) + m * (cdf(b) - cdf(a)) + s * (pdf(a) - pdf(b))


@dataclass
class PolicySample:
    """``k`` draws: the raw policy coordinates (what ``log_prob`` needs) and the ψ dicts."""

    raw: dict[str, torch.Tensor]
    params: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.params)


class Policy(nn.Module):
    """A distribution over a `ParamSpace` with ``sample``, ``log_prob``, ``entropy``, ``mean``."""

    def __init__(
        self,
        space: ParamSpace,
        *,
        init_std: float = 0.1,
        init_logit_std: float = 1.0,
        min_std: float = 0.02,
        max_std: float = 1.0,
        init: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.space = space
        self.min_log_std, self.max_log_std = math.log(min_std), math.log(max_std)
        start = space.validate(init, fill_defaults=True) if init is not None else space.default()
        self.loc = nn.ParameterDict()
        self.log_std = nn.ParameterDict()
        self.logits = nn.ParameterDict()
        for name, el in space.items():
            if isinstance(el, (Continuous, Integer)):
                u = (float(start[name]) - el.low) / (el.high - el.low)
                self.loc[name] = nn.Parameter(torch.tensor([u], dtype=torch.float64))
                self.log_std[name] = nn.Parameter(torch.full((1,), math.log(init_std), dtype=torch.float64))
            elif isinstance(el, Proportions):
                p = torch.tensor([start[name][c] for c in el.choices], dtype=torch.float64).clamp_min(1e-6)
                self.loc[name] = nn.Parameter(p.log() - p.log().mean())
                self.log_std[name] = nn.Parameter(
                    torch.full((len(el.choices),), math.log(init_logit_std), dtype=torch.float64)
                )
            elif isinstance(el, Categorical):
                # as a mix starts at its init: uniform without one, else leaning toward its choice
                p = torch.from_numpy(tilted_probs(el, start[name] if init is not None else None))
                self.logits[name] = nn.Parameter(p.log() - p.log().mean())
            else:  # pragma: no cover - the space only builds the four kinds
                raise TypeError(f"unsupported element {el!r}")

    # -- the distributions, rebuilt from the parameters on each call -----------------
    def _normal(self, name: str) -> Normal:
        return Normal(self.loc[name], self.log_std[name].exp())

    def _categorical(self, name: str) -> TorchCategorical:
        return TorchCategorical(logits=self.logits[name])

    def _to_value(self, name: str, raw: torch.Tensor) -> Any:
        el = self.space[name]
        if isinstance(el, Continuous):
            return el.low + float(raw.clamp(0, 1)) * (el.high - el.low)
        if isinstance(el, Integer):
            return int(round(el.low + float(raw.clamp(0, 1)) * (el.high - el.low)))
        if isinstance(el, Proportions):
            p = torch.softmax(raw, -1)
            return {c: float(x) for c, x in zip(el.choices, p)}
        return el.choices[int(raw)]

    @torch.no_grad()
    def sample(
        self,
        k: int,
        generator: torch.Generator | None = None,
        *,
        design: str = "independent",
        columns: Sequence[str] = (),
    ) -> PolicySample:
        """Draw ``k`` ψ.  Pass a seeded generator for reproducible draws.

        ``design="orthogonal"`` draws the Gaussian elements in sign-balanced blocks: in a
        block of ``P`` draws (a power of two, `orthogonal_signs`) each of the first
        ``P − 1`` elements moves along one random direction, ``loc ± std · ε``, its signs
        following a column of its own.  Each draw is still distributed exactly as the
        policy, so the REINFORCE estimate stays unbiased; but in the average over a block
        any reward term that depends on one such element alone cancels from every other
        element's gradient.  A term in two elements together reaches the element whose
        column is the product of theirs: the columns are handed out in `column_order`,
        so that in a block of eight or more no element among the first ``P / 2`` holds
        such a product (in a block of four each column is the product of the other two).
        Blocks hold up to the smallest power of two that gives every Gaussian element a
        column (8 for five to seven elements); with fewer draws the first ``P − 1``
        elements get them, those named in ``columns`` first and then the others in space
        order, and the rest share the last column handed out (so their gradients see
        that element's effect alone, amplified, in place of every column element's; with
        ``P = 2`` every element shares the one column).  Categorical elements are drawn
        independently.  A block of one draw has no column.  A block's draws share ``|ε|``, so
        the log-std gradient sees one value per block; a draw dropped from the update
        (a failed evaluation) unbalances its block.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {', '.join(DESIGNS)}; got {design!r}")
        noise = self._orthogonal_noise(k, generator, columns) if design == "orthogonal" else {}
        raw: dict[str, torch.Tensor] = {}
        for name in self.space:
            if name in self.logits:
                probs = torch.softmax(self.logits[name], -1)
                raw[name] = torch.multinomial(probs, k, replacement=True, generator=generator).to(torch.float64)
            else:
                loc, std = self.loc[name], self.log_std[name].exp()
                eps = noise.get(name)
                if eps is None:
                    eps = torch.randn((k, loc.numel()), generator=generator, dtype=torch.float64)
                raw[name] = loc + std * eps
        params = [{name: self._to_value(name, raw[name][i]) for name in self.space} for i in range(k)]
        return PolicySample(raw=raw, params=params)

    def _orthogonal_noise(
        self, k: int, generator: torch.Generator | None, columns: Sequence[str] = ()
    ) -> dict[str, torch.Tensor]:
        """Standard-normal noise (k × dim) of the Gaussian elements in sign-balanced blocks;
        ``columns`` names the elements served first (the rest follow in space order)."""
        gaussian = [name for name in self.space if name not in self.logits]
        first = [n for n in dict.fromkeys(columns) if n in gaussian]  # once each, in the order named
        gaussian = first + [n for n in gaussian if n not in first]
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in gaussian}
        for size in _blocks(k, len(gaussian)):
            signs, order = orthogonal_signs(size), column_order(size)
            for i, name in enumerate(gaussian):
                dim = self.loc[name].numel()
                if order:  # its own column, or the last one shared (see `sample`)
                    c = order[min(i, len(order) - 1)]
                    eps = torch.randn((1, dim), generator=generator, dtype=torch.float64)
                    parts[name].append(signs[:, c : c + 1] * eps)
                else:  # a block of one draw has no column
                    parts[name].append(torch.randn((size, dim), generator=generator, dtype=torch.float64))
        return {name: torch.cat(p) for name, p in parts.items()}

    def log_prob(self, sample: PolicySample | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Log-density of each draw (one value per draw), differentiable in the parameters."""
        raw = sample.raw if isinstance(sample, PolicySample) else sample
        total: torch.Tensor | float = 0.0
        for name in self.space:
            x = raw[name]
            if name in self.logits:
                total = total + self._categorical(name).log_prob(x.long())
            else:
                total = total + self._normal(name).log_prob(x).sum(-1)
        return total  # type: ignore[return-value]

    def entropy(self) -> torch.Tensor:
        """Entropy of the policy over its raw coordinates."""
        parts = [self._categorical(n).entropy() for n in self.logits]
        parts += [self._normal(n).entropy().sum() for n in self.loc]
        return torch.stack([p.reshape(()) for p in parts]).sum()

    @torch.no_grad()
    def mean(self) -> dict[str, Any]:
        """The expected ψ (for categorical elements, the most likely choice).

        Clipping and softmax are nonlinear, so the expectation is taken over a fixed
        set of draws: the same parameters always give the same mean.
        """
        gen = torch.Generator().manual_seed(0)
        out: dict[str, Any] = {}
        for name, el in self.space.items():
            if isinstance(el, Categorical):
                out[name] = el.choices[int(self.logits[name].argmax())]
                continue
            loc, std = self.loc[name], self.log_std[name].exp()
            if isinstance(el, Proportions):
                # Antithetic draws halve the Monte Carlo error of E[softmax(z)].
                eps = torch.randn((_MEAN_DRAWS // 2, loc.numel()), generator=gen, dtype=torch.float64)
                z = loc + std * torch.cat([eps, -eps])
                p = torch.softmax(z, -1).mean(0)
                out[name] = {c: float(x) for c, x in zip(el.choices, p)}
            else:
                u = _clipped_normal_mean(float(loc), float(std))
                v = el.low + u * (el.high - el.low)
                out[name] = v if isinstance(el, Continuous) else float(v)
        return out

    @torch.no_grad()
    def project_(self, names: Iterable[str] | None = None) -> None:
        """Keep parameters where they mean something (called after each update); only
        the elements in ``names`` when given (re-centring logits that did not move would
        still shift them in the last bit)."""
        keep = set(self.loc) if names is None else set(names)
        for name in (n for n in self.loc if n in keep):
            if isinstance(self.space[name], (Continuous, Integer)):
                self.loc[name].clamp_(0.0, 1.0)
            else:
                # softmax ignores a shift of all logits: keep them centred.
                self.loc[name].sub_(self.loc[name].mean())
            self.log_std[name].clamp_(self.min_log_std, self.max_log_std)

    @torch.no_grad()
    def to_json(self) -> dict[str, Any]:
        """The ``policy.json`` form (docs/design.md, contract 4)."""
        mean = self.mean()
        params: dict[str, Any] = {}
        for name, el in self.space.items():
            if isinstance(el, Proportions):
                params[name] = {
                    "kind": "proportions",
                    "choices": list(el.choices),
                    "mean": [mean[name][c] for c in el.choices],
                }
            elif isinstance(el, Categorical):
                probs = torch.softmax(self.logits[name], -1)
                params[name] = {"kind": "categorical", "choices": list(el.choices), "probs": probs.tolist()}
            else:
                scale = el.high - el.low
                params[name] = {
                    "kind": el.kind,
                    "low": el.low,
                    "high": el.high,
                    "mean": mean[name],
                    "std": float(self.log_std[name].exp()) * scale,
                }
        return {"params": params}

    def param_groups(self, lr: float, logit_lr: float, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Optimizer groups: range-scaled Gaussians at ``lr``, logits at ``logit_lr``; only
        the elements in ``names`` when given (the others stay where they are)."""
        keep = set(self.space) if names is None else set(names)
        numeric = [n for n in self.loc if n in keep and isinstance(self.space[n], (Continuous, Integer))]
        mixes = [n for n in self.loc if n in keep and isinstance(self.space[n], Proportions)]
        cont = [self.loc[n] for n in numeric] + [self.log_std[n] for n in numeric]
        logit = [self.loc[n] for n in mixes] + [self.log_std[n] for n in mixes]
        logit += [p for n, p in self.logits.items() if n in keep]
        return [g for g in ({"params": cont, "lr": lr}, {"params": logit, "lr": logit_lr}) if g["params"]]
