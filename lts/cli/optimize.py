"""``python -m lts.optimize``: learn the simulator parameters whose data trains the best model.

Defaults: the embedded procedural simulator, car counting, the target in
``configs/targets/default.yaml``, a budget that ends in minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from typing import Any

from simulators.errors import UserError

from ..config import Config, describe_config, legacy_config, load_config, load_experiment, run_hint
from ..report import held_lines, policy_table, reward_table, run_notes
from ..rundir import RunDir
from ..stopping import WINDOW
from . import ArgumentParser, add_debug_flag, parse_set, run_cli, set_threads

__all__ = ["main", "build_parser"]

# Flags that may change when resuming; anything else would break the seeded run.
from ..loop import RESUMABLE as _RESUMABLE  # noqa: E402


def _search_help() -> str:
    from policies import STRATEGIES, strategy_options

    lines = ["Search strategies (--search NAME; options with --set search_options.KEY=VALUE):"]
    for name, (_, doc) in STRATEGIES.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in strategy_options(name).items() if k != "signals")
        lines.append(f"  {name:<10} {doc}")
        if opts:
            lines.append(f"  {'':<10}   options: {opts}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m lts.optimize",
        description="Learning to simulate: a search strategy asks for simulator parameters ψ, each ψ's rendered "
        "data trains a task model, and its score on the target's validation split is told back, until the search "
        "hands over the ψ whose data trains the best model.",
        epilog="Examples:\n  python -m lts.optimize --quick            # a smoke run, under a minute\n"
        "  python -m lts.optimize\n  python -m lts.optimize --config configs/gmm.yaml --search tpe\n"
        "  python -m lts.optimize --iterations 30 --set search_options.lr=0.1 --out runs/mine\n"
        "  python -m lts.optimize --resume runs/mine\n\n"
        + _search_help()
        + "\n\nConfig keys: python -m lts.optimize --help-config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="YAML experiment (see configs/); flags override it")
    a("--sim", metavar="NAME", help="simulator: procedural, gmm, carla, or package.module:Class")
    a("--task", metavar="NAME", help="task: counting, segmentation, classify")
    a("--target", metavar="FILE|DIR", help="target parameter file (.yaml) or labelled image directory")
    a(
        "--test",
        metavar="DIR",
        dest="test_target",
        help="a directory target's held-out test split (default: part of --target)",
    )
    a("--search", metavar="NAME", help="search strategy (below; default cma-mean)")
    a("--iterations", type=int, metavar="N", help="search iterations of K evaluations each (0: none, and no warm-up)")
    a(
        "--budget",
        type=float,
        metavar="N",
        help="evaluations to spend, warm-up renders charged m/M (as lts.compare counts them); sets the iterations",
    )
    a(
        "--time-budget",
        metavar="T",
        help="wall-clock limit, e.g. 90s, 10m, 1.5h: the search stops in time for the final evaluation",
    )
    a(
        "--no-stop",
        dest="stop",
        action="store_false",
        default=None,
        help="spend the whole budget (default: the search stops when its rewards plateau within their noise)",
    )
    a("--samples", type=int, metavar="K", help="ψ drawn per iteration")
    a("--scenes", type=int, metavar="M", help="scenes rendered per ψ")
    a(
        "--warmup-iterations",
        type=int,
        metavar="N",
        help="the warm-up's iterations in all (0: none; a moments phase keeps its one, the last other phase takes "
        "the rest; the phases are the config's warmup.phases)",
    )
    a("--quick", action="store_true", help="a smoke run of the chosen experiment at a tiny budget (under a minute)")
    a("--seed", type=int, metavar="S", help="run seed (same seed, same run)")
    a("--out", metavar="DIR", help="run directory to create (default: a new one under runs/)")
    a(
        "--parallel",
        type=int,
        metavar="N",
        help="evaluations run at once in this process, in threads (default 0 = one per CPU core or per --threads, at most K)",
    )
    a("--workers", type=int, metavar="N", help="run the K evaluations on N local Ray workers")
    a("--ray-address", metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    a("--refiner", metavar="CKPT", help="GAN refiner checkpoint applied to every rendered batch")
    a("--resume", metavar="RUN_DIR", help="continue a run from its last completed iteration")
    a("--device", choices=["cpu", "cuda"], help="device for rendering and training")
    a(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads the evaluations share (default 0 = one per core; 1 on a busy machine: one core in all)",
    )
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (YAML value), repeatable")
    a("--warm-start", action="store_true", default=None, help="warm-start each training from the last best model")
    a("--tensorboard", action="store_true", default=None, help="write TensorBoard logs under RUN_DIR/tensorboard")
    g = p.add_argument_group("CARLA (with --sim carla)")
    g.add_argument("--carla-host", metavar="HOST", help="CARLA server host (default localhost)")
    g.add_argument("--carla-port", metavar="PORT[,PORT…]", help="server port, or one per Ray worker")
    g.add_argument("--carla-timeout", type=float, metavar="S", help="seconds to wait for the server")
    g.add_argument("--carla-town", metavar="TOWN", help="map to load, e.g. Town10HD_Opt")
    g.add_argument(
        "--carla-shared",
        action="store_true",
        default=None,
        help="let workers given one port take turns on that server (default: refused)",
    )
    a("--quiet", action="store_true", help="no progress bar")
    a("--help-config", action="store_true", help="list every config key with its default and exit")
    add_debug_flag(p)
    return p


def _flags_to_layer(args: argparse.Namespace) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key in (
        "sim",
        "search",
        "task",
        "target",
        "test_target",
        "iterations",
        "samples",
        "scenes",
        "seed",
        "threads",
        "parallel",
        "workers",
        "ray_address",
        "refiner",
        "device",
        "warm_start",
        "tensorboard",
        "budget",
        "time_budget",
        "stop",
    ):
        v = getattr(args, key)
        if v is not None:
            layer[key] = v
    carla: dict[str, Any] = {}
    if args.carla_host is not None:
        carla["host"] = args.carla_host
    if args.carla_port is not None:
        try:
            ports = [int(x) for x in str(args.carla_port).split(",") if x.strip()]
        except ValueError:
            raise UserError(
                f"--carla-port {args.carla_port!r}: expected a port number or a comma-separated list"
            ) from None
        carla["port"] = ports[0] if len(ports) == 1 else ports
    if args.carla_timeout is not None:
        carla["timeout"] = args.carla_timeout
    if args.carla_town is not None:
        carla["town"] = args.carla_town
    if args.carla_shared:
        carla["shared"] = True
    if carla:
        layer["sim_options"] = carla
    return layer


def _resolved_config(args: argparse.Namespace) -> tuple[Config, RunDir, bool]:
    layer = _flags_to_layer(args)
    overrides = parse_set(args.set)
    if args.resume:
        run_dir = RunDir.open(args.resume)
        if args.config or args.out or args.quick or args.warmup_iterations is not None:
            raise UserError(
                "--resume takes the run's own config; do not pass --config, --out, --quick or --warmup-iterations "
                "with it"
            )
        changed = sorted((set(layer) | {k.split(".")[0] for k in overrides}) - set(_RESUMABLE))
        if changed:
            raise UserError(
                f"cannot change {', '.join(changed)} when resuming (allowed: {', '.join(sorted(_RESUMABLE))})"
            )
        saved = legacy_config(run_dir.read_config())
        if "policy" in saved and "search" not in saved:
            raise UserError(
                f"{str(run_dir.path)!r} was written by an older lts (before search strategies); start a new run"
            )
        return load_config(None, saved, layer, overrides=overrides), run_dir, True
    config = load_experiment(args.config, layer, overrides, quick=args.quick, warmup_iterations=args.warmup_iterations)
    return config, RunDir.new(args.out, name_hint=run_hint(config)), False


def plan_line(exp: Any) -> str:
    """What the run will do, in one line: its phases, evaluations, frames (asked of `Experiment.phases`)."""
    cfg = exp.config
    *before, last = exp.phases
    finals = len(exp.final_baselines()) * cfg.final_repeats if cfg.iterations else 0
    parts = []
    warm = [p for p in before if p.iterations]
    if warm:
        quiet = "" if any(p.trains for p in warm) else " (no training)"
        parts.append("warm-up " + ", then ".join(p.plan() for p in warm) + quiet)
    stops = cfg.stop and last.iterations > WINDOW
    if last.iterations:
        upto = "up to " if stops or cfg.time_budget else ""
        parts.append(last.plan().replace(f"{last.search} ", f"{last.search} {upto}", 1))
        if finals:
            parts.append(f"{finals} final evaluations")
    frames = sum(p.evaluations * p.scenes for p in exp.phases) + finals * cfg.scenes
    trainings = sum(p.evaluations for p in exp.phases if p.trains) + finals
    limits = [f"{sum(p.evaluations * p.scenes for p in exp.phases) / cfg.scenes:g} evaluations"]
    if cfg.time_budget:
        limits.append(f"{cfg.time_budget} of wall-clock time")
    stop = "; stops early at a plateau (--no-stop: never)" if stops else ""
    # a strategy that cannot move an element says so
    unmoved = sorted({n for p in exp.phases if p.strategy is not None for n in p.strategy.unmoved()})
    tail = f"; unmoved: {', '.join(unmoved)} (policy.json says why)" if unmoved else ""
    return (
        f"plan: {' → '.join(parts) or 'nothing to evaluate'}; {trainings} trainings, {frames:,} frames; "
        f"budget {' or '.join(limits)}{stop}{tail}"
    )


class _Progress:
    """One display for the whole run (warm-up, search iterations, final evaluations): a tqdm
    bar over evaluations with the overall time left, estimated from each phase's own timed
    evaluations, the latest reward and the best so far.  Off when stderr is not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.talk = enabled  # lines beside the bar (not --quiet)
        self.bar: Any = None
        self.best: float | None = None
        self.reward: float | None = None
        self.t_last = time.monotonic()
        self.spent = {"match": [0.0, 0], "task": [0.0, 0]}  # seconds, evaluations timed
        self.phase = "task"
        self.final_done = 0

    def start(self, exp: Any) -> None:
        cfg = exp.config
        *before, last = exp.charge(exp.iteration)  # (phase, ψ it evaluates from here)
        self.left = {
            "match": sum(n for _, n in before),
            "task": last[1],
            "final": len(exp.final_baselines()) * cfg.final_repeats if cfg.iterations else 0,
        }
        self.phase = "match" if self.left["match"] else "task"
        self.iters, self.done_iters = exp.total_iterations, exp.iteration
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=sum(self.left.values()),
            unit="eval",
            dynamic_ncols=True,
            file=sys.stderr,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} evals [{elapsed}{postfix}]",
        )
        self._show()
        self.t_last = time.monotonic()

    def _eta(self) -> str:
        def rate(phase: str) -> float | None:
            s, n = self.spent[phase]
            return s / n if n else None

        task = rate("task")
        match = rate("match")
        need = []
        if self.left["match"]:
            need.append((self.left["match"], match))
        need.append((self.left["task"] + self.left["final"], task))
        if any(n and r is None for n, r in need):
            return "left ?"
        secs = sum(n * (r or 0.0) for n, r in need)
        return f"left {int(secs // 60)}:{int(secs % 60):02d}"

    def _show(self) -> None:
        if self.bar is None:
            return
        what = {"match": "warm-up", "task": "search", "final": "final"}[self.phase]
        self.bar.set_description_str(
            f"{what} it {min(self.done_iters + 1, self.iters)}/{self.iters}"
            if self.phase != "final"
            else f"final {self.final_done}"
        )
        r = "—" if self.reward is None else f"{self.reward:.4f}"
        b = "—" if self.best is None else f"{self.best:.4f}"
        self.bar.set_postfix_str(f"{self._eta()}, reward {r}, best {b}", refresh=True)

    def on_eval(self, res: Any) -> None:
        now = time.monotonic()
        phase = "task" if self.phase == "final" else self.phase
        self.spent[phase][0] += now - self.t_last
        self.spent[phase][1] += 1
        self.t_last = now
        self.left[self.phase] = max(self.left[self.phase] - 1, 0)
        if self.bar is not None:
            self.bar.update(1)
            self._show()

    def on_iteration(self, row: dict[str, Any]) -> None:
        self.done_iters = row["iteration"] + 1
        if row.get("held") and self.talk:  # the plan's second line: what the warm-up determined
            for line in held_lines(row["held"]):
                if self.bar is not None:
                    self.bar.write(line, file=sys.stderr)
                else:
                    print(line, file=sys.stderr)
        if row.get("phase") == "task":
            self.reward = row["reward_mean"]
            ok = [r for r in row["rewards"] if r is not None]
            if ok:
                self.best = max([*ok, *([self.best] if self.best is not None else [])])
        if row.get("stopped") and self.bar is not None:  # the search ends here: its evaluations left go
            self.bar.total -= self.left["task"]
            self.left["task"] = 0
        if not self.left["match"]:
            self.phase = "task" if self.left["task"] else "final"
        self.t_last = time.monotonic()
        self._show()

    def on_final(self, which: str, done: int, total: int) -> None:
        self.phase, self.final_done = "final", done
        self.on_eval(None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        print("config keys (YAML file, or --set KEY=VALUE):\n" + describe_config())
        return 0
    config, run_dir, resuming = _resolved_config(args)

    from ..loop import Callbacks, Experiment

    set_threads(config.threads)

    prog = _Progress(enabled=not args.quiet)
    cb = Callbacks(on_start=prog.start, on_eval=prog.on_eval, on_iteration=prog.on_iteration, on_final=prog.on_final)
    exp = Experiment(config, run_dir, callbacks=cb)  # set-up errors leave no directory behind
    if resuming:
        exp.resume()
    else:
        run_dir.make()
        exp.start_fresh()
    if not args.quiet:
        print(f"run directory: {run_dir.path}", file=sys.stderr)
        print(plan_line(exp), file=sys.stderr)
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = exp.run()
        assert summary is not None
    except KeyboardInterrupt:
        prog.close()
        print(
            f"interrupted after {exp.iteration} iteration(s); checkpoint in {run_dir.path}. "
            f"Continue with: python -m lts.optimize --resume {run_dir.path}",
            file=sys.stderr,
        )
        raise
    except UserError as e:
        prog.close()
        raise UserError(f"{e} (completed iterations are saved; continue with --resume {run_dir.path})") from None
    finally:
        signal.signal(signal.SIGTERM, old)
        prog.close()
    print()
    print(f"what {summary['search']} hands over after {summary['iterations']} iterations:")
    print(
        policy_table(
            run_dir.read_json("policy.json"), summary.get("target"), _initial_policy(exp), summary.get("determined")
        )
    )
    print()
    print(reward_table(summary))
    notes = run_notes(run_dir.read_json("policy.json"), summary)
    if notes:
        print("\n" + "\n".join(notes))
    print(
        f"\n{summary['evaluations']:g} evaluations ({summary['sim_frames']} simulated frames) in "
        f"{summary['elapsed_s']:.1f} s; run directory {run_dir.path}"
    )
    return 0


def _initial_policy(exp: Any) -> dict[str, Any] | None:
    """Where the search started (for the table's start column); None when it was not REINFORCE."""
    from policies import make_strategy

    cfg = exp.config
    if cfg.search != "reinforce":
        return None
    s = make_strategy("reinforce", exp.space, seed=0, options=cfg.options_of("reinforce"))
    params: dict[str, Any] = s.describe()["params"]
    return params


if __name__ == "__main__":
    with warnings.catch_warnings():
        raise SystemExit(run_cli(main))
