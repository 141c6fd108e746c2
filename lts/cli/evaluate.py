"""``python -m lts.evaluate RUN_DIR --target FILE|DIR``: the final evaluation protocol
(the engine: `lts.final_evaluation`), as a table and ``evaluation.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..final_evaluation import evaluate_run
from ..rundir import atomic_write_text
from . import ArgumentParser, add_debug_flag, progress_bar, run_cli

__all__ = ["main", "format_table"]


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"target {result['target']} · task {result['task']} · {result['scenes']} scenes · {result['repeats']} seed(s)"
        + (f" · refiner {result['refiner']}" if result["refiner"] else "")
    ]
    blocks = (
        (f"TEST ({result['test_frames']} frames, {result['test']}): the figures to report", result["metrics"]),
        (
            f"validation ({result['validation_frames']} frames, the split the run was rewarded on)",
            result.get("validation_metrics", {}),
        ),
    )
    for title, metrics in blocks:
        if not metrics:
            continue
        names = list(next(iter(metrics.values())).keys())
        head = f"{'model trained on':<16}" + "".join(f"{m:>16}" for m in names)
        lines += ["", title, head, "-" * len(head)]
        for which, vals in metrics.items():
            lines.append(f"{which:<16}" + "".join(f"{vals[m]:>16.4f}" for m in names))
    arrow = "higher" if result["higher_is_better"] else "lower"
    lines.append(f"({result['metric']}: {arrow} is better)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m lts.evaluate",
        description="Train final task models on data from the learned ψ, from random ψ and from ψ* (oracle), "
        "and score them on the target.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--target", required=True, metavar="FILE|DIR", help="target parameter file or labelled directory")
    p.add_argument("--scenes", type=int, metavar="N", help="training scenes per model (default: 4 × the run's M)")
    p.add_argument("--steps", type=int, metavar="N", help="training steps per model (default: the run's)")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="seeds to average (default 1)")
    p.add_argument("--refiner", metavar="CKPT", help="GAN refiner applied to rendered frames before training")
    p.add_argument("--finetune", metavar="DIR", help="labelled real split: also pre-train + fine-tune, and real only")
    p.add_argument("--finetune-steps", type=int, metavar="N", help="training steps on the real split")
    p.add_argument(
        "--finetune-split",
        default="train",
        metavar="NAME",
        help="Cityscapes split folder of --finetune (default train; ignored for KITTI)",
    )
    p.add_argument(
        "--test",
        metavar="DIR",
        help="labelled directory that is the test split of a directory --target (default: the run's "
        "test_target, else a split of --target by file name)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads in all (default: the run's)")
    p.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="final models trained side by side, sharing the threads (default: the run's; 0 = one per core)",
    )
    p.add_argument("--out", metavar="FILE", help="where to write the JSON (default RUN_DIR/evaluation.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with progress_bar(not args.quiet, total=None, unit="model", desc="evaluate") as bar:

        def progress(which: str, done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.set_postfix_str(which)
                bar.update(done - bar.n)

        result = evaluate_run(
            args.run_dir, args.target, scenes=args.scenes, steps=args.steps, repeats=args.repeats,
            refiner=args.refiner, finetune=args.finetune, finetune_steps=args.finetune_steps,
            finetune_split=args.finetune_split, test=args.test, device=args.device, threads=args.threads,
            parallel=args.parallel, progress=progress,
        )  # fmt: skip
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
