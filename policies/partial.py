"""A mix held in part: each group's total fixed, the split within a group searched.

When a warm-up's fit can tell only groups of a mix's choices apart (labels that fold
sedan, hatchback, SUV and van into "car"), it determines each group's total and nothing
within a group (`policies.moments.Moments.verdict`).  `HeldInPart` runs any strategy on a
space where such a mix is replaced by one proportions element per group of two or more
choices (``name~k``: the split within group k), and maps each ψ it asks back to the whole
mix (each group at its total, split as the inner strategy says).  The caller sees the
original space: ask, tell, recommend and describe speak of the whole mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.space import ParamSpace, Proportions

from .base import Strategy

__all__ = ["HeldInPart", "part_space", "searched_groups"]


def _part(name: str, k: int) -> str:
    return f"{name}~{k}"


def searched_groups(spec: Mapping[str, Any]) -> list[tuple[int, list[str]]]:
    """The groups of a mix held in part whose split is searched, with their index: two or
    more choices with a total above nothing (a group held at 0 has no split to search)."""
    return [(k, list(g)) for k, (g, t) in enumerate(zip(spec["groups"], spec["totals"])) if len(g) > 1 and t > 1e-9]


def part_space(space: ParamSpace, parts: Mapping[str, Mapping[str, Any]]) -> ParamSpace:
    """``space`` with each mix of ``parts`` ({name: {"groups", "totals"}}) replaced by a
    proportions element per group of two or more choices, in the mix's place."""
    elements: dict[str, Any] = {}
    for name, el in space.items():
        if name not in parts:
            elements[name] = el
            continue
        for k, group in searched_groups(parts[name]):
            elements[_part(name, k)] = Proportions(tuple(group), doc=f"the split of {name} within {', '.join(group)}")
    return ParamSpace(elements)


class HeldInPart:
    """``inner`` (a strategy built on `part_space`) seen on the whole ``space``; see the
    module docstring.  Everything it does not map is the inner strategy's."""

    def __init__(self, inner: Strategy, space: ParamSpace, parts: Mapping[str, Mapping[str, Any]]) -> None:
        self.inner, self.space = inner, space
        self.parts: dict[str, dict[str, list[Any]]] = {
            n: {"groups": [list(g) for g in v["groups"]], "totals": [float(t) for t in v["totals"]]}
            for n, v in parts.items()
        }
        self._asked: dict[str, dict[str, Any]] = {}  # a whole ψ asked (as JSON) → the inner ψ it came from

    def __getattr__(self, attr: str) -> Any:  # name, fixed, baseline, last_stats, last_row, …
        if attr == "inner":  # not yet set (unpickling)
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def whole(self, psi: Mapping[str, Any]) -> dict[str, Any]:
        """The whole ψ of an inner ψ: each held-in-part mix at its groups' totals."""
        out = {n: v for n, v in psi.items() if "~" not in n or n.split("~")[0] not in self.parts}
        for name, spec in self.parts.items():
            mix: dict[str, float] = {}
            searched = dict(searched_groups(spec))
            for k, (group, total) in enumerate(zip(spec["groups"], spec["totals"])):
                split = psi[_part(name, k)] if k in searched else {c: 1.0 / len(group) for c in group}
                mix.update({c: total * float(split[c]) for c in group})
            out[name] = mix
        return self.space.validate({n: out[n] for n in self.space})

    def ask(self, n: int) -> list[dict[str, Any]]:
        inner = self.inner.ask(n)
        out = [self.whole(p) for p in inner]
        self._asked = {json.dumps(w, sort_keys=True): p for w, p in zip(out, inner)}
        return out

    def tell(self, params: Sequence[Mapping[str, Any]], rewards: Sequence[Any]) -> None:
        try:
            inner = [self._asked[json.dumps(dict(p), sort_keys=True)] for p in params]
        except KeyError:
            raise ValueError("tell() got a ψ that ask() did not hand out") from None
        self.inner.tell(inner, rewards)

    def recommend(self) -> dict[str, Any]:
        return self.whole(self.inner.recommend())

    def describe(self) -> dict[str, Any]:
        """The inner strategy's ``policy.json`` form, each held-in-part mix as the whole mix
        (its ``mean``), with the groups whose totals are held (``held_totals``)."""
        d = self.inner.describe()
        rec = self.recommend()
        params: dict[str, Any] = {}
        for name, el in self.space.items():
            if name in self.parts:
                assert isinstance(el, Proportions)
                spec = self.parts[name]
                params[name] = {
                    "kind": "proportions",
                    "choices": list(el.choices),
                    "mean": [float(rec[name][c]) for c in el.choices],
                    "held_totals": [{"choices": g, "total": t} for g, t in zip(spec["groups"], spec["totals"])],
                }
            else:
                params[name] = d["params"][name]
        out = {**d, "params": params}
        if "unmoved" in d:
            out["unmoved"] = {n.split("~")[0]: why for n, why in d["unmoved"].items()}
        return out

    def unmoved(self) -> dict[str, str]:
        return {n.split("~")[0]: why for n, why in self.inner.unmoved().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "asked": self._asked}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self._asked = dict(state.get("asked", {}))
