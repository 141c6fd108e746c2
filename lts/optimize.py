"""``python -m lts.optimize``: learn the simulator parameters whose data trains the best model.

Defaults: the embedded procedural simulator, car counting, the target in
``configs/targets/default.yaml``, a budget that ends in minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from simulators.errors import UserError

from .cli import ArgumentParser, parse_set, run_cli, set_threads
from .config import Config, describe_config, load_config, resolve_path
from .report import policy_table, reward_table
from .rundir import RunDir

__all__ = ["main", "build_parser"]

# Flags that may change when resuming; anything else would break the seeded run.
_RESUMABLE = {"iterations", "parallel", "workers", "ray_address", "final_repeats", "tensorboard", "device", "threads"}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m lts.optimize",
        description="Learning to simulate: a policy over simulator parameters ψ is trained by REINFORCE so "
        "that data rendered from ψ trains the best task model on the target.",
        epilog="Examples:\n  python -m lts.optimize\n  python -m lts.optimize --config configs/gmm.yaml\n"
        "  python -m lts.optimize --iterations 30 --set policy.lr=0.1 --out runs/mine\n"
        "  python -m lts.optimize --resume runs/mine\n\nConfig keys: python -m lts.optimize --help-config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="YAML experiment (see configs/); flags override it")
    a("--sim", metavar="NAME", help="simulator: procedural, gmm, carla, or package.module:Class")
    a("--task", metavar="NAME", help="task: counting, segmentation, classify")
    a("--target", metavar="FILE|DIR", help="target parameter file (.yaml) or labelled image directory")
    a("--iterations", type=int, metavar="N", help="policy iterations")
    a("--samples", type=int, metavar="K", help="ψ drawn per iteration")
    a("--scenes", type=int, metavar="M", help="scenes rendered per ψ")
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
    a("--quiet", action="store_true", help="no progress bar")
    a("--help-config", action="store_true", help="list every config key with its default and exit")
    return p


def _flags_to_layer(args: argparse.Namespace) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key in (
        "sim",
        "task",
        "target",
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
    if carla:
        layer["sim_options"] = carla
    return layer


def _resolved_config(args: argparse.Namespace) -> tuple[Config, RunDir, bool]:
    layer = _flags_to_layer(args)
    overrides = parse_set(args.set)
    if args.resume:
        run_dir = RunDir.open(args.resume)
        if args.config or args.out:
            raise UserError("--resume takes the run's own config; do not pass --config or --out with it")
        changed = sorted((set(layer) | {k.split(".")[0] for k in overrides}) - _RESUMABLE)
        if changed:
            raise UserError(
                f"cannot change {', '.join(changed)} when resuming (allowed: {', '.join(sorted(_RESUMABLE))})"
            )
        saved = run_dir.read_config()
        if isinstance(saved.get("policy"), dict):  # written before these keys existed: keep drawing as it did
            saved["policy"].setdefault("sampling", "independent")
            saved["policy"].setdefault("columns", [])
            saved["policy"].setdefault("lr_floor", 1.0)  # written when the learning rates stayed constant
        saved.setdefault("parallel", 1)  # written before evaluations ran side by side: one after another, as then
        saved.setdefault("match_iterations", 0)  # written before the warm-up existed: none, as then
        saved.setdefault("match_hold", False)  # written before the task left the warm-up's elements alone
        saved.setdefault("match_samples", saved.get("samples", Config.samples))
        saved.setdefault("match_labels", [])  # written before the warm-up compared labels: none, as then
        # written when the warm-up rendered the task's M scenes a draw
        saved.setdefault("match_scenes", saved.get("scenes", Config.scenes))
        return load_config(None, saved, layer, overrides=overrides), run_dir, True
    config_path = None
    if args.config:
        config_path = resolve_path(args.config)
        if not config_path.is_file():
            raise UserError(f"config file {args.config!r} does not exist")
    config = load_config(config_path, layer, overrides=overrides)
    hint = f"{Path(str(config.sim).split(':')[-1]).name}-{config.task}"
    return config, RunDir.new(args.out, name_hint=hint), False


class _Progress:
    """A tqdm bar over evaluations with the latest reward and baseline; the warm-up's
    renders get a bar of their own (they take a fraction of a training's time each)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def start(self, exp: Any) -> None:
        if not self.enabled:
            return
        self.samples, self.match_samples = exp.config.samples, exp.config.match_samples
        self.match_iterations = exp.match_iterations
        self.iters = exp.match_iterations + exp.config.iterations
        if exp.iteration < self.match_iterations:
            self._open("match", self.match_iterations, exp.iteration, self.match_samples)
        else:
            self._open("optimize", exp.config.iterations, exp.iteration - self.match_iterations, self.samples)

    def _open(self, desc: str, iterations: int, done: int, samples: int) -> None:
        from tqdm.auto import tqdm

        self.close()
        self.bar = tqdm(
            total=iterations * samples,
            initial=done * samples,
            unit="eval",
            dynamic_ncols=True,
            desc=desc,
            file=sys.stderr,
        )

    def on_eval(self, res: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_iteration(self, row: dict[str, Any]) -> None:
        if self.bar is not None:
            rm, b = row["reward_mean"], row["baseline"]
            what = "−MMD²" if row.get("phase") == "match" else "reward"
            self.bar.set_postfix_str(
                f"it {row['iteration'] + 1}/{self.iters} {what} {rm if rm is None else f'{rm:.4f}'} "
                f"baseline {b if b is None else f'{b:.4f}'}"
            )
            if row["iteration"] + 1 == self.match_iterations < self.iters:  # the warm-up's last: the task's bar next
                self._open("optimize", self.iters - self.match_iterations, 0, self.samples)

    def on_final(self, which: str, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"final {done}/{total} ({which})")

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

    from .loop import Callbacks, Experiment

    set_threads(config.threads)

    prog = _Progress(enabled=not args.quiet)
    cb = Callbacks(on_start=prog.start, on_eval=prog.on_eval, on_iteration=prog.on_iteration, on_final=prog.on_final)
    exp = Experiment(config, run_dir, callbacks=cb)  # set-up errors leave no directory behind
    if resuming:
        exp.resume()
    else:
        run_dir.make()
        exp.start_fresh()
    print(f"run directory: {run_dir.path}", file=sys.stderr)
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        summary = exp.run()
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
    initial = None
    rows = run_dir.read_metrics()
    if rows:
        initial = _initial_policy(exp)
    print()
    print(f"learned distribution (policy mean) after {summary['iterations']} iterations:")
    print(policy_table(run_dir.read_json("policy.json"), summary.get("target"), initial))
    print()
    print(reward_table(summary))
    print(f"\n{summary['sim_frames']} simulated frames in {summary['elapsed_s']:.1f} s; run directory {run_dir.path}")
    return 0


def _initial_policy(exp: Any) -> dict[str, Any]:
    from policies import Policy

    pc = exp.config.policy
    return Policy(exp.space, init_std=pc.init_std, init_logit_std=pc.init_logit_std, min_std=pc.min_std).to_json()[
        "params"
    ]


if __name__ == "__main__":
    with warnings.catch_warnings():
        raise SystemExit(run_cli(main))
