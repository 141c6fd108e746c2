"""Research tool: how many evaluations a search strategy needs to reach the oracle band.

Not part of the library or its command lines; a lean, in-process stand-in for the loop
that runs strategies exactly as the loop evaluates them, on a simulated target:

- run seed S; the target is ``sim.generate(ψ*, target_size, seed=derive_seed(S, "target"))``;
- iteration ``it``: ``params = strategy.ask(K)``; every draw is rendered with data seed
  ``derive_seed(S, "data", it, 0)`` and trained with ``derive_seed(S, "train", it, 0)``
  (common random numbers, as the loop's ``common_seeds``); the reward is the task's;
  ``strategy.tell(params, rewards)``;
- after each iteration ``strategy.recommend()`` is re-scored (not charged) with the
  final seeds ``derive_seed(S, "final-data", r)`` / ``derive_seed(S, "final-train", r)``,
  ``r < final_repeats``, averaged; ψ* likewise gives the oracle reward R*.

**Evaluations to the oracle band** is the first evaluation count (after a batch) at
which the re-scored recommendation R satisfies ``|R − R*| ≤ 0.02·|R*|`` or ``R ≥ R*``;
null when it never does within the budget.

    PYTHONPATH=. python scripts/search_bench.py --config configs/gmm.yaml \\
        --strategy random --strategy tpe --seeds 0,1,2 --out runs/bench.jsonl
    PYTHONPATH=. python scripts/search_bench.py --table runs/bench.jsonl

A strategy is ``NAME`` or ``NAME:key=value,key=value`` (values parsed as YAML);
plain ``reinforce`` takes the config's ``policy:`` options, as the loop would.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

import simulators
from lts import tasks
from lts.seeding import derive_seed
from policies.registry import make_strategy, strategy_options


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        options[k.strip()] = yaml.safe_load(v)
    return name.strip(), options


class Problem:
    """A simulator, a task and a simulated target, read from an experiment config."""

    def __init__(self, config: str, target: str | None, metric: str) -> None:
        cfg = yaml.safe_load(Path(config).read_text())
        self.cfg = cfg
        self.sim = simulators.make(cfg["sim"], **(cfg.get("sim_options") or {}))
        self.task = tasks.make(cfg.get("task", "classify"), **{**(cfg.get("task_options") or {}), "metric": metric})
        self.psi_star = yaml.safe_load(Path(target or cfg["target"]).read_text())["params"]
        self.target_size = int(cfg.get("target_size", 1000))
        self.K, self.M = int(cfg.get("samples", 8)), int(cfg.get("scenes", 400))
        self.final_repeats = int(cfg.get("final_repeats", 3))
        self.policy_options = dict(cfg.get("policy") or {})

    def reward(self, psi: dict[str, Any], target: Any, data_seed: int, train_seed: int) -> float:
        try:
            model = self.task.fit(self.sim.generate(psi, self.M, seed=data_seed), seed=train_seed)
            return tasks.reward_of(self.task, self.task.score(model, target))
        except Exception:  # noqa: BLE001 - a failed evaluation is told as NaN, as the loop does
            return math.nan


def run_one(problem: Problem, spec: str, seed: int, budget: int, stop_at_band: bool) -> dict[str, Any]:
    name, options = parse_spec(spec)
    if name == "reinforce" and not options:
        known = strategy_options("reinforce")
        options = {k: v for k, v in problem.policy_options.items() if k in known}
    target = problem.sim.generate(problem.psi_star, problem.target_size, seed=derive_seed(seed, "target"))
    cache: dict[str, float] = {}

    def final(psi: dict[str, Any]) -> float:
        key = json.dumps(psi, sort_keys=True)
        if key not in cache:
            rs = [
                problem.reward(psi, target, derive_seed(seed, "final-data", r), derive_seed(seed, "final-train", r))
                for r in range(problem.final_repeats)
            ]
            cache[key] = float(sum(rs) / len(rs))
        return cache[key]

    oracle = final(problem.sim.param_space.validate(problem.psi_star))
    strategy = make_strategy(
        name, problem.sim.param_space, seed=derive_seed(seed, "search"), budget=budget, batch=problem.K, options=options
    )
    evals, it, hit = 0, 0, None
    curve: list[float] = []
    cpu_strategy = cpu_eval = 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while evals + problem.K <= budget:
        c = time.process_time()
        params = strategy.ask(problem.K)
        cpu_strategy += time.process_time() - c
        c = time.process_time()
        ds, ts = derive_seed(seed, "data", it, 0), derive_seed(seed, "train", it, 0)
        rewards = [problem.reward(p, target, ds, ts) for p in params]
        cpu_eval += time.process_time() - c
        c = time.process_time()
        strategy.tell(params, rewards)
        rec = strategy.recommend()
        cpu_strategy += time.process_time() - c
        evals += len(params)
        it += 1
        r = final(rec)
        curve.append(r)
        if hit is None and (abs(r - oracle) <= 0.02 * abs(oracle) or r >= oracle):
            hit = evals
            if stop_at_band:
                break
    return {
        "strategy": spec,
        "seed": seed,
        "budget": budget,
        "evals_to_band": hit,
        "final_reward": curve[-1] if curve else None,
        "oracle_reward": oracle,
        "curve": curve,
        "recommend": strategy.recommend(),
        "cpu_s": time.process_time() - cpu0,
        "cpu_strategy_s": cpu_strategy,
        "cpu_eval_s": cpu_eval,
        "wall_s": time.perf_counter() - wall0,
    }


def table(rows: list[dict[str, Any]]) -> str:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r)
    lines = [
        f"{'strategy':44s} {'seeds':>5s} {'median':>7s} {'min-max':>11s} {'hit':>5s} {'final R':>8s} "
        f"{'oracle':>8s} {'gap%':>6s} {'cpu s':>6s} {'strat s':>7s}"
    ]
    for spec, rs in by.items():
        budget = rs[0]["budget"]
        e = [r["evals_to_band"] if r["evals_to_band"] is not None else math.inf for r in rs]
        med = statistics.median(e)

        def fmt(x: float, budget: int = budget) -> str:
            return f">{budget}" if math.isinf(x) else f"{x:g}"

        fin = statistics.median(r["final_reward"] for r in rs)
        orc = statistics.median(r["oracle_reward"] for r in rs)
        gap = statistics.median(100 * (r["oracle_reward"] - r["final_reward"]) / abs(r["oracle_reward"]) for r in rs)
        lines.append(
            f"{spec:44s} {len(rs):5d} {fmt(med):>7s} {fmt(min(e)) + '-' + fmt(max(e)):>11s} "
            f"{sum(not math.isinf(x) for x in e):2d}/{len(rs):<2d} {fin:8.4f} {orc:8.4f} {gap:6.1f} "
            f"{statistics.median(r['cpu_s'] for r in rs):6.0f} {statistics.median(r['cpu_strategy_s'] for r in rs):7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/gmm.yaml")
    ap.add_argument("--target", default=None, help="target parameter file (default: the config's)")
    ap.add_argument("--metric", default="nll")
    ap.add_argument("--strategy", action="append", default=[])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=160)
    ap.add_argument("--stop-at-band", action="store_true", help="end a run at the band (development only)")
    ap.add_argument("--out", default=None, help="append one JSON line per run")
    ap.add_argument("--table", nargs="*", default=None, help="print the table of these JSONL files and exit")
    a = ap.parse_args(argv)
    if a.table is not None:
        rows = [json.loads(line) for f in a.table for line in Path(f).read_text().splitlines() if line.strip()]
        print(table(rows))
        return 0
    torch.set_num_threads(1)
    problem = Problem(a.config, a.target, a.metric)
    rows = []
    for spec in a.strategy:
        for s in (int(x) for x in a.seeds.split(",")):
            row = run_one(problem, spec, s, a.budget, a.stop_at_band)
            row["config"], row["target"] = a.config, a.target or problem.cfg["target"]
            rows.append(row)
            print(
                f"{spec} seed {s}: band at {row['evals_to_band']}, final {row['final_reward']:.4f} "
                f"(oracle {row['oracle_reward']:.4f}), cpu {row['cpu_s']:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
