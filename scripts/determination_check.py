"""How well `lts.determination` tells the elements a reward sees from those it does not
(docs/experiments.md, 2026-12-07, "What the answer is sure of").

cma-mean searches a space of five elements on a model reward that only element ``a`` moves:
``−effect · shape(a − 0.3) + a shift per generation + noise`` (sd 1; the shift stands for the
data and training seeds an iteration's draws share), ``shape`` the square or the absolute value
(not what the test fits).  Each cell runs ``--reps`` searches and counts how often each element
comes out "reward" (for ``a``: the power; for the others: false alarms), and how often any of
the others does when the same draws are told fresh rewards (a design that no longer depends on
the noise of the rewards it is tested on).  It also reports a
spread statistic: how much more the search's draws shrank along ``a`` than along the others
(the other measure considered).

    PYTHONPATH=. python scripts/determination_check.py --reps 100 [--alpha 0.05]
"""

from __future__ import annotations

import argparse

import numpy as np

from lts.determination import ALPHA, determine
from policies import make_strategy
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

SPACE = ParamSpace(
    a=Continuous(0.0, 1.0),
    b=Continuous(0.0, 1.0),
    n=Integer(0, 20),
    mix=Proportions(("x", "y", "z")),
    cat=Categorical(("p", "q", "r")),
)


def history(effect: float, shape: str, k: int, t: int, seed: int) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    s = make_strategy("cma-mean", SPACE, seed=seed, budget=k * t, batch=k, options={"sigma0": 0.2})
    rows = []
    for it in range(t):
        psi = s.ask(k)
        shift = rng.normal()
        d = np.array([p["a"] - 0.3 for p in psi])
        f = d**2 if shape == "square" else np.abs(d)
        r = -effect * f / 0.04 + shift + rng.normal(size=k)  # effect: the reward's drop at 0.2 from the optimum
        s.tell(psi, list(r))
        rows.append({"iteration": it, "phase": "task", "params": psi, "rewards": list(r), "policy": s.describe()})
    return rows, s.describe()


def spread_rank(rows: list[dict]) -> float:
    """How much more the draws' spread along ``a`` shrank than along ``b`` (first third to last third)."""

    def sd(name: str, part: list[dict]) -> float:
        return float(np.mean([np.std([p[name] for p in r["params"]]) for r in part]))

    third = max(len(rows) // 3, 1)
    first, last = rows[:third], rows[-third:]
    return (sd("a", last) / sd("a", first)) / (sd("b", last) / sd("b", first))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=ALPHA, help="the tests' family-wise level")
    args = ap.parse_args()
    print("| K × T | shape | effect / noise | a: reward | b, n, mix, cat: reward (false alarms) | runs with a false alarm "
          "| the same, fresh rewards | a shrank more than b |", flush=True)  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    for k, t in ((4, 16), (8, 20), (8, 4)):
        for shape in ("square", "abs"):
            for effect in (0.0, 0.1, 0.25, 0.5, 1.0):
                if shape == "abs" and effect in (0.0, 0.1):
                    continue
                hit = {n: 0 for n in SPACE}
                shrank = anyfalse = fresh_false = 0
                fresh = np.random.default_rng(0)
                for rep in range(args.reps):
                    rows, pol = history(effect, shape, k, t, seed=1000 * rep + 7)
                    det = determine(rows, pol, alpha=args.alpha)
                    for n in SPACE:
                        hit[n] += det[n]["by"] == "reward"
                    shrank += spread_rank(rows) < 1.0
                    anyfalse += any(det[n]["by"] == "reward" for n in ("b", "n", "mix", "cat"))
                    # the same draws told fresh rewards: a design that no longer depends on their noise
                    for r in rows:
                        d = np.array([p["a"] - 0.3 for p in r["params"]])
                        f = d**2 if shape == "square" else np.abs(d)
                        r["rewards"] = list(-effect * f / 0.04 + fresh.normal() + fresh.normal(size=k))
                    det = determine(rows, pol, alpha=args.alpha)
                    fresh_false += any(det[n]["by"] == "reward" for n in ("b", "n", "mix", "cat"))
                others = sum(hit[n] for n in ("b", "n", "mix", "cat")) / (4 * args.reps)
                print(
                    f"| {k} × {t} | {shape} | {effect:g} | {hit['a'] / args.reps:.0%} | {others:.1%} "
                    f"({', '.join(f'{hit[n]}' for n in ('b', 'n', 'mix', 'cat'))}) | {anyfalse / args.reps:.0%} "
                    f"| {fresh_false / args.reps:.0%} | {shrank / args.reps:.0%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
