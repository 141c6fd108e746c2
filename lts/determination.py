"""What a run's answer is sure of: for each element of ψ, whether the target, the reward, or
nothing determined it (``summary.json``'s ``determined``, `lts.inspect`'s marks).

Read from the run's own history, at no extra evaluation:

- **target**: the warm-up held it at its fit to the target (``held``, where the run
  records it; otherwise read off the rows: the search never moved it, the warm-up did).
  An element the warm-up fitted (its match reward depends on it) and the search moved
  without the reward telling it apart is ``target`` too: its value is the fit's, drifted.
  Held in part (``"hold": "part"``: only what the target can tell), the rest is the
  search's: ``reward`` if the reward depends on the element, else ``target`` with
  ``part``, the rest free.  A fit the run did not hold (``"hold": "none"``) counts for nothing.
- **reward**: the search on the task's reward moved it, and the rewards of its draws depend
  on it: a partial F-test of the element's terms (each coordinate, linear and squared:
  near an optimum the slope is zero) in a least-squares fit of the rewards on every moved
  element's terms and one intercept per iteration (the draws of an iteration share their
  data and training seeds, and the rewards drift as the search improves).  The tests of a
  run (the task's, and the warm-up's below) are one family at level `ALPHA` (Holm): the
  chance that any element comes out determined when no reward sees it stays within it.
- **free**: nothing determined it: the search could not move it, or the rewards do not
  measurably depend on it, or there were too few draws to tell.  Its value is where it
  started or where the noise left it; it must not be read as learned.

Coordinates: a number in its range scaled to [0, 1]; a mix its first k − 1 probabilities;
a categorical choice one-hot (k − 1 columns, no squares).  docs/experiments.md (2026-12-07,
"What the answer is sure of") measures it on real runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ALPHA", "dependence", "determine", "element_coords", "holm", "mark"]

#: the family-wise level of a run's tests (Holm's step-down: it does not loosen with the number of
#: elements).  Nominal only: a search's draws depend on the noise of its earlier rewards.  Measured
#: on model rewards (docs/experiments.md, 2026-12-07), the share of runs in which an element no
#: reward sees comes out determined: 0-7 % (median 2.5 %) at 0.02; 1-12 % (median 6 %) at 0.05
ALPHA = 0.02
#: residual degrees of freedom the test needs (fewer: too few draws to tell)
MIN_DF = 4


Draw = tuple[Any, dict[str, list[float]], float]  # (iteration, {element: coordinates}, reward)


def element_coords(spec: Mapping[str, Any], value: Any) -> list[float]:
    """``value``'s coordinates under its ``policy.json`` spec."""
    kind = spec["kind"]
    if kind in ("continuous", "integer"):
        span = float(spec["high"]) - float(spec["low"]) or 1.0
        return [(float(value) - float(spec["low"])) / span]
    choices = list(spec["choices"])
    if kind == "proportions":
        return [float(value.get(c, 0.0)) for c in choices[:-1]]
    return [float(value == c) for c in choices[1:]]  # categorical: one-hot


def _squared(spec: Mapping[str, Any]) -> int:
    """How many of an element's coordinates (the first ones) also take a squared term."""
    kind = spec["kind"]
    if kind in ("continuous", "integer"):
        return 1
    return len(spec["choices"]) - 1 if kind == "proportions" else 0


def _draws(rows: Iterable[Mapping[str, Any]], names: Sequence[str], specs: Mapping[str, Any]) -> list[Draw]:
    """Each finite draw of ``rows``."""
    out = []
    for row in rows:
        params, rewards = row.get("params") or [], row.get("rewards") or []
        if len(params) != len(rewards):  # rows whose rewards are not one per draw (the moments' residuals)
            continue
        for psi, r in zip(params, rewards):
            if not psi or not isinstance(r, (int, float)) or not math.isfinite(float(r)):
                continue
            if any(n not in psi for n in names):
                continue
            out.append((row.get("iteration", 0), {n: element_coords(specs[n], psi[n]) for n in names}, float(r)))
    return out


def _moved(draws: Sequence[Draw], name: str) -> bool:
    if len(draws) < 2:
        return False
    x = np.array([d[1][name] for d in draws], dtype=float)
    return bool((x.max(axis=0) - x.min(axis=0)).max() > 1e-9)


def _columns(draws: Sequence[Draw], names: Sequence[str], specs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each element's design columns: its coordinates and the squares of the numeric ones,
    centred on the draws' mean and scaled to unit spread."""
    cols: dict[str, np.ndarray] = {}
    for n in names:
        x = np.array([d[1][n] for d in draws], dtype=float)
        nsq = _squared(specs[n])
        xc = x - x.mean(axis=0)
        c = np.concatenate([xc, xc[:, :nsq] ** 2], axis=1)
        c = c - c.mean(axis=0)
        sd = c.std(axis=0)
        keep = sd > 1e-12
        cols[n] = c[:, keep] / sd[keep]
    return cols


def _rss(a: np.ndarray, y: np.ndarray) -> tuple[float, int, np.ndarray]:
    coef, _, rank, _ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    return float(resid @ resid), int(rank), coef


def dependence(
    draws: Sequence[Draw],
    names: Sequence[str],
    specs: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """For each element of ``names`` (each moved by these draws): the partial F-test of its
    terms, ``{"p", "F", "draws", "df", "effect", "noise"}`` (``p`` None: too few draws);
    ``effect`` is the spread (sd over the draws) of the reward its terms explain, ``noise`` the
    residual sd, both in the reward's units."""
    n = len(draws)
    its = sorted({d[0] for d in draws})
    if n == 0:
        return {}
    y = np.array([d[2] for d in draws], dtype=float)
    dummies = np.array([[float(d[0] == t) for t in its] for d in draws])
    cols = _columns(draws, names, specs)
    full = np.concatenate([dummies, *cols.values()], axis=1)
    rss_f, rank_f, coef = _rss(full, y)
    df_den = n - rank_f
    out: dict[str, dict[str, Any]] = {}
    start = dummies.shape[1]
    for name in names:
        c = cols[name]
        k = c.shape[1]
        effect = float(np.std(c @ coef[start : start + k])) if k else 0.0
        reduced = np.concatenate([dummies, *(v for m, v in cols.items() if m != name)], axis=1)
        rss_r, rank_r, _ = _rss(reduced, y)
        df_num = rank_f - rank_r
        start += k
        res: dict[str, Any] = {"draws": n, "df": [df_num, df_den], "effect": effect, "p": None, "F": None}
        if df_num <= 0 or df_den < MIN_DF:
            res["noise"] = res["effect"] = None  # a fit this short explains anything
            out[name] = res
            continue
        noise = math.sqrt(rss_f / df_den) if rss_f > 0 else 0.0
        res["noise"] = noise
        if rss_f <= 1e-300:
            f_stat, p = (math.inf, 0.0) if rss_r > 1e-300 else (0.0, 1.0)
        else:
            from scipy.stats import f as f_dist

            f_stat = max((rss_r - rss_f) / df_num, 0.0) / (rss_f / df_den)
            p = float(f_dist.sf(f_stat, df_num, df_den))
        res["F"], res["p"] = float(f_stat), p
        out[name] = res
    return out


def holm(tests: Mapping[Any, Mapping[str, Any]], alpha: float) -> set[Any]:
    """The keys whose tests reject at family-wise level ``alpha`` (Holm's step-down)."""
    ps = sorted(((t["p"], n) for n, t in tests.items() if t.get("p") is not None), key=lambda x: x[0])
    out: set[Any] = set()
    for i, (p, n) in enumerate(ps):
        if p > alpha / (len(ps) - i):
            break
        out.add(n)
    return out


def _held(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None) -> dict[str, tuple[str, str]]:
    """What the run says the warm-up held of each element, and why: ``held`` in the summary or
    the rows, ``{name: {"hold": "all" | "part" | "none", "why": …}}`` (or a plain reason: held whole);
    the summary's, the latest, wins."""
    held: dict[str, tuple[str, str]] = {}
    for src in [*rows, summary or {}]:
        h = src.get("held")
        if isinstance(h, Mapping):
            for k, v in h.items():
                if isinstance(v, Mapping):
                    held[str(k)] = (str(v.get("hold", "all")), str(v.get("why") or ""))
                else:
                    held[str(k)] = ("all", "" if v is None else str(v))
    return held


def determine(
    rows: Sequence[Mapping[str, Any]],
    policy: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
    *,
    alpha: float = ALPHA,
) -> dict[str, dict[str, Any]]:
    """Each element of ``policy`` (``policy.json``): ``{"by": "target"|"reward"|"free",
    "why": a short phrase, ...evidence}`` from the run's metrics rows (the module docstring)."""
    specs = policy["params"]
    names = list(specs)
    task_rows = [r for r in rows if r.get("phase", "task") != "match"]
    match_rows = [r for r in rows if r.get("phase") == "match"]
    verdicts = _held(rows, summary)
    held = {n: why for n, (hold, why) in verdicts.items() if hold == "all"}
    part = {n: why for n, (hold, why) in verdicts.items() if hold == "part"}
    let_go = {n: why for n, (hold, why) in verdicts.items() if hold not in ("all", "part")}  # a fit not held
    unmoved: dict[str, str] = {}
    for src in [*(r.get("policy") or {} for r in task_rows[-1:]), policy]:
        unmoved.update(src.get("unmoved") or {})
    task = _draws(task_rows, names, specs)
    match = _draws(match_rows, names, specs)
    # the match rows' params also hold the moments' renders (one choice alone), whose rewards
    # are not one per draw: an element those moved is seen in the rows' params alone
    match_params = [
        (0, {n: element_coords(specs[n], p[n]) for n in names}, 0.0)
        for r in match_rows
        for p in (r.get("params") or [])
        if p and all(n in p for n in names)
    ]
    moved_task = [n for n in names if _moved(task, n)]
    moved_match = [n for n in names if _moved(match_params, n)]
    dep = dependence(task, moved_task, specs) if moved_task else {}
    fit_moved = [n for n in names if _moved(match, n)]
    fit = dependence(match, fit_moved, specs) if fit_moved else {}
    # one family: the task's tests and the warm-up's, so that the chance of any element marked
    # determined when neither reward sees it stays within alpha (a held element's tests decide nothing)
    inferred = [n for n in names if n not in moved_task and n in moved_match and n not in unmoved and n not in verdicts]
    tests = {("reward", n): t for n, t in dep.items() if n not in held}
    tests.update({("target", n): t for n, t in fit.items() if n not in verdicts and n not in inferred})
    sure = holm(tests, alpha)
    by_reward, by_fit = {n for k, n in sure if k == "reward"}, {n for k, n in sure if k == "target"}
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        d = dep.get(n)
        f = fit.get(n)
        ev: dict[str, Any] = {}
        if d is not None:
            ev.update({"p": d["p"], "draws": d["draws"], "effect": d["effect"], "noise": d["noise"]})
        if f is not None and f["p"] is not None:
            ev["p_target"] = f["p"]
        if n in held:
            why = "held at the warm-up's fit to the target" + (f": {held[n]}" if held[n] else "")
            out[n] = {"by": "target", "why": why, **ev}
        elif n in part:  # the identifiable part held; the search moved the rest
            head = "held in part at the warm-up's fit to the target" + (f" ({part[n]})" if part[n] else "")
            if d is not None and n in by_reward:
                out[n] = {"by": "reward", "why": f"{head}; the reward moves the rest: {_p(d)}", "part": True, **ev}
            else:
                rest = "not moved" if d is None else _p(d)
                out[n] = {"by": "target", "why": f"{head}; the rest is free ({rest})", "part": True, **ev}
        elif d is not None and n in by_reward:
            out[n] = {"by": "reward", "why": f"the reward depends on it: {_p(d)}", **ev}
        elif n in inferred:
            out[n] = {"by": "target", "why": "held at the warm-up's fit to the target", **ev}
        elif f is not None and n in by_fit:
            tail = "; the search did not move it" if d is None else f"; no effect on the reward shown ({_p(d)})"
            out[n] = {"by": "target", "why": f"fitted to the target by the warm-up (p = {f['p']:.2g}){tail}", **ev}
        elif d is None:
            why = unmoved.get(n) or "nothing moved it: it stays where it started"
            out[n] = {"by": "free", "why": f"not determined: {why}", **ev}
        elif n in let_go:
            why = "the warm-up's fit was not held" + (f" ({let_go[n]})" if let_go[n] else "")
            out[n] = {"by": "free", "why": f"not determined: {why}; no effect on the reward shown: {_p(d)}", **ev}
        elif d["p"] is None:
            out[n] = {"by": "free", "why": f"not determined: {_p(d)}", **ev}
        else:
            out[n] = {"by": "free", "why": f"not determined: no effect on the reward shown: {_p(d)}", **ev}
    return out


def _p(d: Mapping[str, Any]) -> str:
    """A test's evidence in words."""
    if d["p"] is None:
        return f"{d['draws']} draws, too few to tell"
    return f"p = {d['p']:.2g} over {d['draws']} draws"


def mark(entry: Mapping[str, Any] | None) -> str:
    """The mark `lts.inspect` puts beside an element: ``[target]``, ``[reward]``, ``[free: not
    determined]``, or ``[target in part; the rest free]``."""
    if not entry:
        return ""
    by = entry.get("by")
    if by == "target" and entry.get("part"):
        return "[target in part; the rest free]"
    return "[free: not determined]" if by == "free" else f"[{by}]"
