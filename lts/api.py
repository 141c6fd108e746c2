"""The Python API: what the command lines do, as functions for notebooks and scripts.

>>> import lts
>>> r = lts.optimize(config="configs/gmm.yaml", iterations=3)   # doctest: +SKIP
>>> r.learned, r.summary["test"], r.plot("plot.png")            # doctest: +SKIP

``lts.optimize``, ``lts.evaluate`` and ``lts.compare`` are these functions (the modules
of the same names, which hold the command lines, can be called as them).  Keyword
arguments override config keys as ``--set`` does: ``search="tpe"``,
``task_options={"metric": "nll"}``, ``**{"search_options.lr": 0.1}``.  Nothing prints;
errors in what you pass are `simulators.UserError`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Result", "optimize", "evaluate", "compare"]


@dataclasses.dataclass
class Result:
    """A finished run: its directory and what it wrote there."""

    run_dir: Path
    summary: dict[str, Any]

    @property
    def learned(self) -> dict[str, Any]:
        """The ψ the search handed over (what the final ``lts`` reward was scored with)."""
        learned: dict[str, Any] = self.summary["learned"]
        return learned

    @property
    def policy(self) -> dict[str, Any]:
        """``policy.json``: the search's distribution (REINFORCE) or its ψ, per element."""
        policy: dict[str, Any] = json.loads((self.run_dir / "policy.json").read_text())
        return policy

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """``metrics.jsonl``: one row per iteration."""
        from .rundir import RunDir

        return RunDir(self.run_dir).read_metrics()

    def plot(self, path: str | Path | None = None) -> Path:
        """Every parameter over the iterations and the reward curve (``lts.inspect --plot``)."""
        from .report import plot_run

        return plot_run(self.run_dir, path if path is not None else self.run_dir / "plot.png")


def _config(config: str | Path | None, overrides: dict[str, Any]) -> Any:
    """Keyword arguments as the command line's layers: plain keys as flags, dotted ones as ``--set``."""
    from .config import load_experiment

    quick = bool(overrides.pop("quick", False))
    layer = {k: v for k, v in overrides.items() if "." not in k}
    return load_experiment(config, layer, {k: v for k, v in overrides.items() if "." in k}, quick=quick)


def optimize(config: str | Path | None = None, *, out: str | Path | None = None, **overrides: Any) -> Result:
    """Run ``python -m lts.optimize`` in this process and return its `Result`.

    ``config``: a YAML experiment (default: the built-in counting experiment); ``out``: the
    run directory (default: a new one under ``runs/``); ``quick=True``: the smoke-run budget.
    """
    from .config import run_hint
    from .evaluation import set_threads
    from .loop import Experiment
    from .rundir import RunDir

    cfg = _config(config, overrides)
    set_threads(cfg.threads)
    run_dir = RunDir.new(out, name_hint=run_hint(cfg))
    exp = Experiment(cfg, run_dir)  # set-up errors leave no directory behind
    run_dir.make()
    exp.start_fresh()
    summary = exp.run()
    assert summary is not None
    return Result(run_dir.path, summary)


def evaluate(run: str | Path | Result, target: str, **options: Any) -> dict[str, Any]:
    """``python -m lts.evaluate``: the run's learned ψ, ψ drawn per scene and (for a
    simulated target) ψ*, each trained afresh and scored on ``target``'s test split."""
    from .final_evaluation import evaluate_run

    return evaluate_run(run.run_dir if isinstance(run, Result) else run, target, **options)


def compare(
    config: str | Path | None = None,
    *,
    budget: float,
    seeds: int = 3,
    methods: Sequence[str] = ("lts", "random", "tpe"),
    out: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """``python -m lts.compare``: every method's evaluations to the oracle band; returns the
    ``comparison.json`` content (also written under ``out``)."""
    from .comparison import check_methods, out_dir, run_comparison
    from .config import run_hint

    cfg = _config(config, overrides)
    names = check_methods(list(methods), cfg)
    path = out_dir(None if out is None else str(out), run_hint(cfg))
    path.mkdir(parents=True, exist_ok=True)
    return run_comparison(cfg, budget=budget, seeds=[cfg.seed + i for i in range(seeds)], methods=names, out=path)
