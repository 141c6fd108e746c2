"""``python -m lts.bench ray``: how much faster an iteration runs on N Ray workers.

Runs the same short experiment in-process and with ``--workers 1``, ``2``, … (each
starting its own local Ray), times every iteration after the first (the first also
pays for starting Ray and the workers), and checks that every run ends with the same
``policy.json``.  The default experiment is the toy one with a training budget that
makes one evaluation take a few seconds on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from simulators.errors import UserError

from ..config import REPO_ROOT, load_config, resolve_path
from . import ArgumentParser, parse_set, run_cli

__all__ = ["ray_arguments", "add_ray_parser", "bench_ray", "main"]

DEFAULT_STEPS = 3000  # classify training steps: ~1.8 s per evaluation on an idle 2-core machine, ~3 s on a busy one


def ray_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``python -m lts.bench ray``."""
    p.add_argument(
        "--config", metavar="FILE", help=f"experiment (default: configs/gmm.yaml with {DEFAULT_STEPS} steps)"
    )
    p.add_argument("--workers", default="0,1,2", metavar="LIST", help="worker counts to time; 0 = in-process")
    p.add_argument("--iterations", type=int, default=3, metavar="N", help="iterations per run (default 3)")
    p.add_argument("--samples", type=int, default=4, metavar="K", help="evaluations per iteration (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")


_add_arguments = ray_arguments  # the name lts.bench imported first


def add_ray_parser(sub: Any) -> None:
    """Register ``ray`` on ``python -m lts.bench``'s subparsers."""
    p = sub.add_parser("ray", help="time an iteration in-process and on 1, 2, … Ray workers")
    ray_arguments(p)
    p.set_defaults(func=bench_ray)


def _run(cfg: Any, workers: int) -> dict[str, Any]:
    import dataclasses

    from ..loop import Experiment
    from ..rundir import RunDir

    cfg = dataclasses.replace(cfg, workers=workers)
    with tempfile.TemporaryDirectory(prefix="lts-bench-") as tmp:
        run = RunDir(Path(tmp) / "run")
        t0 = time.perf_counter()
        exp = Experiment(cfg, run)
        run.make()
        exp.start_fresh()
        exp.run()
        total = time.perf_counter() - t0
        rows = run.read_metrics()
        policy = json.loads(run.file("policy.json").read_text())
    elapsed = [r["elapsed_s"] for r in rows]
    per_iter = [b - a for a, b in zip(elapsed, elapsed[1:])]
    work = [sum(r["timing_s"][s] for s in ("render", "refine", "train", "score")) / cfg.samples for r in rows]
    mean_iter = sum(per_iter) / len(per_iter)
    return {
        "workers": workers,
        "iteration_s": mean_iter,
        "iterations_timed": len(per_iter),
        "first_iteration_s": elapsed[0],
        "startup_s": max(elapsed[0] - mean_iter, 0.0),
        "evaluation_s": sum(work) / len(work),
        "total_s": total,
        "policy": policy,
    }


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, dict):
        return max([_max_diff(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, list):
        return max([_max_diff(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b))
    return 0.0 if a == b else float("inf")


def bench_ray(args: argparse.Namespace) -> int:
    try:
        workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        raise UserError(f"--workers {args.workers!r}: expected a comma-separated list of integers") from None
    if not workers or min(workers) < 0:
        raise UserError(f"--workers {args.workers!r}: expected counts >= 0")
    if args.iterations < 2:
        raise UserError(f"--iterations must be >= 2 (the first one is not timed), got {args.iterations}")
    layer: dict[str, Any] = {"iterations": args.iterations, "samples": args.samples, "final_repeats": 0}
    if args.config:
        path = resolve_path(args.config)
    else:
        path = REPO_ROOT / "configs" / "gmm.yaml"
        layer["task_options"] = {"steps": DEFAULT_STEPS}
    cfg = load_config(path, layer, overrides=parse_set(args.set))
    load_before = os.getloadavg()
    results = [_run(cfg, w) for w in workers]
    load_after = os.getloadavg()
    ref = results[0]["policy"]
    one = next((r for r in results if r["workers"] == 1), None)
    print(
        f"experiment: sim={cfg.sim} task={cfg.task} K={cfg.samples} M={cfg.scenes} task_options={cfg.task_options}; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    print(f"{'workers':>8} {'eval (s)':>9} {'iteration (s)':>14} {'speed-up':>9} {'start-up (s)':>13} {'policy Δ':>9}")
    for r in results:
        r["speedup_vs_1"] = None if one is None else one["iteration_s"] / r["iteration_s"]
        r["policy_max_abs_diff"] = _max_diff(ref, r["policy"])
        label = "in-proc" if r["workers"] == 0 else str(r["workers"])
        speed = "—" if r["speedup_vs_1"] is None else f"{r['speedup_vs_1']:.2f}×"
        print(
            f"{label:>8} {r['evaluation_s']:>9.2f} {r['iteration_s']:>14.2f} {speed:>9} {r['startup_s']:>13.1f} "
            f"{r['policy_max_abs_diff']:>9.1e}"
        )
    print("iteration: mean wall time of iterations 2…N; speed-up: vs 1 Ray worker; policy Δ: max |difference| "
          "of policy.json from the first row")  # fmt: skip
    if args.json:
        out: dict[str, Any] = {
            "config": str(path),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": load_after,
        }
        out["runs"] = [{k: v for k, v in r.items() if k != "policy"} for r in results]
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m lts.bench_ray", description=__doc__.splitlines()[0])
    ray_arguments(p)
    return bench_ray(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
