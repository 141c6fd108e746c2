"""``python -m lts.bench loop``: where one policy iteration spends its time.

Runs a few iterations of an experiment in a temporary run directory and prints the
wall-clock time of an iteration and its work split into render / refine / train / score /
update.  The stage times are summed over the K evaluations, so when evaluations overlap
(side by side in threads, the default on a multi-core machine, or on Ray workers with
``--set workers=2``) they add up to more than the wall-clock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import load_config, resolve_path
from ..evaluation import at_once
from . import parse_set, set_threads

__all__ = ["loop_arguments", "bench_loop"]


def loop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="experiment (default: the default experiment)")
    p.add_argument("--iterations", type=int, default=2, metavar="N", help="iterations to time (default 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--device", choices=["cpu", "cuda"], help="device for rendering and training")


def bench_loop(args: argparse.Namespace) -> int:
    from ..loop import Callbacks, Experiment
    from ..rundir import RunDir

    # The task's iterations are timed; the distribution-matching warm-up (a render per draw) is not.
    layer: dict[str, Any] = {"iterations": args.iterations, "final_repeats": 0, "warmup": {"phases": []}}
    if args.device:
        layer["device"] = args.device
    cfg = load_config(resolve_path(args.config) if args.config else None, layer, overrides=parse_set(args.set))
    set_threads(cfg.threads)
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp) / "run")
        t0 = time.perf_counter()
        exp = Experiment(cfg, run, callbacks=Callbacks(on_iteration=lambda row: ends.append(time.perf_counter())))
        setup = time.perf_counter() - t0
        run.make()
        exp.start_fresh()
        begin = time.perf_counter()
        exp.run()
        rows = run.read_metrics()
    stages = ["render", "refine", "train", "score", "update"]
    # The first iteration carries the start-up (Ray workers, torch's first calls); with two
    # or more, the figures are the mean of the later ones.
    steady = rows[1:] if len(rows) >= 2 else rows
    n = len(steady)
    per = {s: sum(r["timing_s"][s] for r in steady) / n for s in stages}
    total = sum(per.values())
    wall = (ends[-1] - ends[0]) / n if len(ends) >= 2 else ends[0] - begin
    which = {1: "iteration 1", 2: "iteration 2"}.get(len(rows), f"mean of iterations 2–{len(rows)}")
    parallel = f" on {cfg.workers} Ray workers" if cfg.workers > 0 or cfg.ray_address else ""
    side_by_side, _ = at_once(parallel=cfg.parallel, threads=cfg.threads, samples=cfg.samples)
    if not parallel and side_by_side > 1:
        parallel = f", {side_by_side} at a time"
    print(f"experiment: sim={cfg.sim} task={cfg.task} K={cfg.samples} M={cfg.scenes} device={cfg.device}")
    print(f"set-up (simulator, target of {cfg.target_size} frames): {setup:.2f} s")
    print(f"first iteration (with start-up): {ends[0] - begin:.2f} s")
    print(f"one iteration ({which}): {wall:.2f} s wall-clock for {cfg.samples} evaluations{parallel}")
    print(f"work per iteration, summed over its evaluations: {total:.2f} s")
    for s in stages:
        share = 100 * per[s] / total if total else 0.0
        print(f"  {s:<7} {per[s]:8.3f} s  {share:5.1f} %  {'█' * int(share / 2.5)}")
    slowest = max(stages, key=lambda s: per[s])
    print(f"slowest stage: {slowest}")
    return 0
