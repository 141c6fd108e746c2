"""``python -m lts.inspect RUN_DIR``: the learned distribution, next to the target.

``--json`` prints it for machines; ``--plot FILE.png`` draws every parameter over the
iterations (target dashed) and the reward curve (oracle and random as lines).
"""

from __future__ import annotations

import argparse
import json

from ..report import load_run, plot_run, policy_table, reward_table, run_notes
from . import ArgumentParser, run_cli

__all__ = ["main", "load_run", "plot_run"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m lts.inspect",
        description="Show a run's learned distribution over simulator parameters, next to the target.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="draw each parameter over the iterations")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = load_run(args.run_dir)
    if args.plot:
        plot_run(args.run_dir, args.plot)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    state = "finished" if info["finished"] else "not finished"
    print(f"{info['run_dir']}: {info['iterations']} iteration(s), {state}")
    print(policy_table(info["policy"], info["target"], determined=info["determined"]))
    for line in run_notes(info["policy"], info["summary"], info["determined"]):
        print(line)
    if info["summary"]:
        print()
        print(reward_table(info["summary"]))
    if args.plot:
        print(f"\nplot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
