"""``python -m lts.compare``: search strategies against each other, by evaluations to the
oracle (the engine: `lts.comparison`)."""

from __future__ import annotations

import argparse
import sys
import warnings

from policies import STRATEGIES
from simulators.errors import UserError

from ..comparison import BAND, check_methods, format_table, out_dir, plot_comparison, run_comparison
from ..config import load_experiment, run_hint
from . import ArgumentParser, parse_set, progress_bar, run_cli, set_threads

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m lts.compare",
        description="Compare search strategies by the evaluations each needs until the ψ it hands over trains a "
        "model as good as the true ψ* does (within 2 %), on the same simulator, task, target and seeds.",
        epilog="Example:\n  python -m lts.compare --config configs/gmm.yaml "
        "--budget 96 --seeds 3 --methods lts,random,tpe,cmaes\n\n"
        "Methods: lts (the config's search) and the strategies:\n"
        + "\n".join(f"  {k:<9} {v[1]}" for k, v in STRATEGIES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="YAML experiment (see configs/)")
    a(
        "--budget",
        type=float,
        required=True,
        metavar="N",
        help="evaluations per method and seed (warm-up renders charged m/M)",
    )
    a("--seeds", type=int, default=3, metavar="S", help="seeds per method: the config's seed, seed+1, … (default 3)")
    a("--methods", default="lts,random,tpe", metavar="LIST", help="comma-separated (default lts,random,tpe)")
    a("--target", metavar="FILE|DIR", help="target parameter file or labelled image directory")
    a("--band", type=float, default=BAND, metavar="REL", help=f"the oracle band, relative (default {BAND})")
    a("--out", metavar="DIR", help="output directory (default: a new one under runs/)")
    a("--workers", type=int, default=0, metavar="W", help="Ray workers for the evaluations (0: in-process)")
    a("--ray-address", metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, repeatable")
    a("--no-plot", action="store_true", help="do not write comparison.png")
    a("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.budget >= 1:
        raise UserError(f"--budget must be >= 1, got {args.budget:g}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    if not 0 < args.band < 1:
        raise UserError(f"--band must be in (0, 1), got {args.band:g}")
    layer = {"target": args.target} if args.target else {}
    config = load_experiment(args.config, layer, parse_set(args.set))
    if args.budget < config.samples:
        raise UserError(f"--budget {args.budget:g} is below one iteration (samples K = {config.samples})")
    methods = check_methods([m.strip() for m in args.methods.split(",") if m.strip()], config)
    set_threads(config.threads)
    out = out_dir(args.out, run_hint(config))
    out.mkdir(parents=True, exist_ok=True)
    seeds = [config.seed + i for i in range(args.seeds)]
    with progress_bar(not args.quiet and sys.stderr.isatty(), unit="eval", dynamic_ncols=True, desc="compare") as bar:

        def progress(method: str, seed: int, done: int) -> None:
            if bar is not None:
                bar.update(1)
                bar.set_description(f"{method} seed {seed}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # failed evaluations are counted in the table
            report = run_comparison(
                config,
                budget=args.budget,
                seeds=seeds,
                methods=methods,
                out=out,
                band=args.band,
                workers=args.workers,
                ray_address=args.ray_address,
                progress=progress,
            )
    print(format_table(report))
    if not args.no_plot:
        plot_comparison(report, out / "comparison.png")
    print(f"\nwrote {out / 'comparison.json'}" + ("" if args.no_plot else f" and {out / 'comparison.png'}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
