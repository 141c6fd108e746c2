"""Search strategies against each other, by evaluations to the oracle (``python -m lts.compare``, `lts.api.compare`).

Each method is a search strategy (`policies`): ``lts`` is the configuration as given
(its warm-up stage, then its ``search``), every other name a strategy of its own
(``random``, ``tpe``, ``cmaes``, ``gp``, …) run as a generic searcher runs: on the
task's reward alone, without the warm-up (``--set warmup.phases=[]`` gives ``lts``
without it, the ablation).  Every method runs as an lts run (`lts.loop.Experiment`,
run directories under ``OUT/METHOD-seedS``) on the same simulator, task, target and
budget of N evaluations, each simulator call charged by what it renders: an evaluation
of M scenes counts 1, a warm-up render of m scenes m / M.

After every iteration (K evaluations), and at the end of the warm-up (the ψ the search
starts from), the ψ the method would hand over is re-scored with the run's final seeds
(as the final ``lts`` reward is; these re-scores are not charged), and so is ψ* (the
oracle).  **Evaluations to the oracle band** is the first count at which the handed-over
ψ scores within ``band`` (2 %) of the oracle's reward (|R − R*| ≤ 0.02·|R*|, or better
than R*); ``null`` if never.  Fair by construction: for a seed S every method sees the
same target, and its i-th iteration the same data and training seeds (`lts.loop`), so
methods differ by the ψ they ask for, not by luck.
``OUT/comparison.json`` is rewritten after every seed: an interrupted comparison keeps
the seeds it finished.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from policies import STRATEGIES, make_strategy
from simulators.errors import UserError, did_you_mean

from .config import Config, config_to_dict
from .evaluation import EvalContext, EvalSpec, Executor

__all__ = [
    "BAND",
    "evals_to_band",
    "in_band",
    "method_search",
    "check_methods",
    "run_comparison",
    "format_table",
    "plot_comparison",
    "out_dir",
]

BAND = 0.02  # relative distance to the oracle's reward that counts as reached

# (method, seed, evaluations done in this run)
Progress = Callable[[str, int, int], None]


def in_band(reward: float | None, oracle: float, rel: float = BAND) -> bool:
    """|R − R*| ≤ rel·|R*|, or R better than R* (rewards: higher is better)."""
    if reward is None or not math.isfinite(reward):
        return False
    return reward >= oracle or abs(reward - oracle) <= rel * abs(oracle)


def evals_to_band(curve: Sequence[Sequence[float | None]], oracle: float | None, rel: float = BAND) -> float | None:
    """The first evaluation count of ``curve`` ([evaluations, reward] pairs in order) whose
    reward is in the oracle's band; None if none is (or there is no oracle)."""
    if oracle is None:
        return None
    for e, r in curve:
        if in_band(r, oracle, rel):
            return float(e)  # type: ignore[arg-type]
    return None


def method_search(method: str, config: Config) -> str:
    """The strategy a method runs: ``lts`` is the configuration's search."""
    return config.search if method == "lts" else method


def check_methods(methods: Sequence[str], config: Config) -> list[str]:
    """The methods, each a known strategy whose options are valid (before anything is written)."""
    out = list(dict.fromkeys(methods))
    if not out:
        raise UserError("--methods is empty; name at least one of lts, " + ", ".join(STRATEGIES))
    known = ["lts", *STRATEGIES]
    for m in out:
        if m not in known:
            raise UserError(
                f"unknown method {m!r}: expected lts or a search strategy ({', '.join(STRATEGIES)})"
                + did_you_mean(m, known)
            )
    import simulators

    sim = simulators.make(config.sim, **config.sim_options)
    try:
        for m in out:
            name = method_search(m, config)
            make_strategy(
                name,
                sim.param_space,
                seed=0,
                budget=config.samples,
                batch=config.samples,
                options=config.options_of(name),
            )
    finally:
        sim.close()
    return out


@contextmanager
def _executor(context: EvalContext, workers: int, address: str | None, cfg: Config) -> Iterator[Executor]:
    """The run's executor (`lts.executors.make_executor`) for ``workers`` and ``address``, closed after use."""
    from .executors import make_executor

    ex = make_executor(dataclasses.replace(cfg, workers=workers, ray_address=address), context, None, None)
    try:
        yield ex
    finally:
        ex.close()


@dataclasses.dataclass
class _Run:
    """One method on one seed: the handed-over ψ after each iteration, and what they scored."""

    method: str
    seed: int
    points: list[tuple[float, float, dict[str, Any]]]  # (evaluations charged, CPU-seconds, ψ)
    options: dict[str, Any]
    elapsed_s: float
    failed: int
    spent: float  # evaluations charged when the search ended (the budget, or fewer where it stopped)
    curve: list[list[float | None]] = dataclasses.field(default_factory=list)


def _run_method(method: str, config: Config, budget: float, out: Path, progress: Progress | None) -> tuple[_Run, Any]:
    """Run ``method`` as an lts run with ``budget`` charged evaluations; returns it and its Experiment."""
    from .loop import Callbacks, Experiment
    from .rundir import RunDir

    search = method_search(method, config)
    # the loop spends the budget (the phases before the search charged too); lts stops as its
    # config says, and a searcher users already have runs as they have it: the reward alone, no
    # warm-up, no stopper
    cfg = dataclasses.replace(config, search=search, budget=budget, time_budget=None)
    if method != "lts":
        cfg = dataclasses.replace(cfg, warmup=dataclasses.replace(cfg.warmup, phases=[]), stop=False)
    exp = Experiment(cfg, RunDir(out / f"{method}-seed{cfg.seed}"))
    done = [0]

    def on_eval(res: Any) -> None:
        done[0] += 1
        if progress:
            progress(method, cfg.seed, done[0])

    points: list[tuple[float, float, dict[str, Any]]] = []
    failed = [0]

    def on_iteration(row: dict[str, Any]) -> None:
        failed[0] += len(row["errors"])
        # each warm-up phase's last ψ is a hand-over too: what the next phase starts from (and
        # policy.json then); asked now, for a phase that ends at a plateau has cut its iterations by then
        if row["phase"] == "task" or row["iteration"] + 1 in {end for _, end in exp.bounds()[:-1]}:
            points.append((float(row["evaluations"]), float(row["cpu_s"]), row["recommended"]))

    exp.cb = Callbacks(on_eval=on_eval, on_iteration=on_iteration)
    exp.run_dir.make()
    exp.start_fresh()
    exp.run(final=False)
    policy = exp.run_dir.read_json("policy.json")
    run = _Run(method, cfg.seed, points, policy.get("options", {}), exp.elapsed(), failed[0], exp.evaluations)
    return run, exp


def _rescore(runs: list[_Run], exp: Any, oracle_params: dict[str, Any] | None, ex: Executor) -> dict[str, float | None]:
    """Score every handed-over ψ of ``runs`` and ψ* with the final seeds; fills each run's
    curve and returns {json(ψ): reward} (ψ* under the key "oracle")."""
    from .loop import mean_metrics

    todo: dict[str, dict[str, Any]] = {}
    for run in runs:
        for _, _, psi in run.points:
            todo.setdefault(json.dumps(psi, sort_keys=True), psi)
    if oracle_params is not None:
        todo["oracle"] = oracle_params
    specs: list[EvalSpec] = []
    owner: list[str] = []
    for key, psi in todo.items():
        for s in exp.final_specs(psi):
            specs.append(dataclasses.replace(s, index=len(specs)))
            owner.append(key)
    results = ex.map(specs) if specs else []
    split = "test" if exp.target.test is not None else "validation"  # the held-out figures where there are some
    score = {key: mean_metrics([r for r, o in zip(results, owner) if o == key], split)[0] for key in todo}
    for run in runs:
        run.curve = [[e, score[json.dumps(psi, sort_keys=True)]] for e, _, psi in run.points]
    return score


def _summary(xs: Sequence[float | None], budget: float | None) -> dict[str, Any]:
    """Median and range over seeds; a null (never reached) counts as more than the budget."""
    n = len(xs)
    reached = [x for x in xs if x is not None]
    keyed = sorted(x if x is not None else math.inf for x in xs)
    med = float(np.median(keyed)) if keyed else math.inf
    return {
        "median": med if math.isfinite(med) else None,
        "min": min(reached) if reached else None,
        "max": max(keyed) if keyed and math.isfinite(max(keyed)) else None,
        "reached": len(reached),
        "seeds": n,
        "budget": budget,
    }


def run_comparison(
    config: Config,
    *,
    budget: float,
    seeds: Sequence[int],
    methods: Sequence[str],
    out: Path,
    band: float = BAND,
    workers: int = 0,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every method on every seed with ``budget`` evaluations; write and return
    ``OUT/comparison.json``."""
    from . import tasks as tasks_mod
    from .rundir import atomic_write_text

    if budget < config.samples:
        raise UserError(f"--budget {budget:g} is below one iteration (samples K = {config.samples})")
    task = tasks_mod.make(config.task, **{"device": config.device, **config.task_options})
    per: dict[str, dict[str, list[Any]]] = {
        m: {k: [] for k in ("evals_to_band", "cpu_s_to_band", "final", "spent", "oracle", "curve", "elapsed_s")}
        for m in methods
    }
    runs_of: dict[str, list[_Run]] = {m: [] for m in methods}
    exp: Any = None
    failed = dict.fromkeys(methods, 0)
    done: list[int] = []
    report: dict[str, Any] = {}
    for seed in seeds:
        cfg = dataclasses.replace(config, seed=int(seed), workers=workers, ray_address=ray_address)
        runs = []
        for m in methods:
            run, exp = _run_method(m, cfg, budget, out, progress)
            runs.append(run)
        assert exp is not None
        with _executor(exp.context, workers, ray_address, cfg) as ex:
            score = _rescore(runs, exp, exp.target.truth, ex)
        oracle = score.get("oracle")
        for run in runs:
            d = per[run.method]
            reached = evals_to_band(run.curve, oracle, band)
            d["evals_to_band"].append(reached)
            cpu = next((c for e, c, _ in run.points if e == reached), None) if reached is not None else None
            d["cpu_s_to_band"].append(cpu)
            d["final"].append(run.curve[-1][1] if run.curve else None)
            d["spent"].append(run.spent)
            d["oracle"].append(oracle)
            d["curve"].append(run.curve)
            d["elapsed_s"].append(run.elapsed_s)
            runs_of[run.method].append(run)
            failed[run.method] += run.failed
        done.append(int(seed))
        # written after every seed, so that an interrupted comparison keeps the seeds it finished
        report = _report(config, task, budget, band, done, workers, ray_address, exp, per, runs_of, failed)
        atomic_write_text(out / "comparison.json", json.dumps(report, indent=2) + "\n")
    return report


def _report(
    config: Config,
    task: Any,
    budget: float,
    band: float,
    seeds: list[int],
    workers: int,
    ray_address: str | None,
    exp: Any,
    per: dict[str, dict[str, list[Any]]],
    runs_of: dict[str, list[_Run]],
    failed: dict[str, int],
) -> dict[str, Any]:
    """comparison.json's content for the seeds done so far."""
    methods = list(per)
    return {
        "sim": config.sim,
        "task": config.task,
        "target": config.target,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "budget": budget,
        "samples": config.samples,
        "scenes": config.scenes,
        "final_repeats": config.final_repeats,
        "seeds": seeds,
        "workers": workers,
        # CPU-seconds are this process's: with Ray workers their time is not in them
        "cpu_measured": not (workers > 0 or ray_address),
        "band": {"rel": band},
        # the split the handed-over ψ and ψ* are re-scored on (never told to a search)
        "split": "test" if exp is not None and exp.target.test is not None else "validation",
        "config": config_to_dict(config),
        "methods": {
            m: {
                "search": method_search(m, config),
                "options": runs_of[m][0].options if runs_of[m] else {},
                **per[m],
                "failed_evaluations": failed[m],
                "summary": {
                    "evals_to_band": _summary(per[m]["evals_to_band"], budget),
                    "cpu_s_to_band": _summary(per[m]["cpu_s_to_band"], None),
                    "final": _summary(per[m]["final"], None),
                    "spent": _summary(per[m]["spent"], None),
                },
            }
            for m in methods
        },
    }


# -- reporting --------------------------------------------------------------------------


def _reward_name(report: dict[str, Any]) -> str:
    # Error metrics enter the reward negated (lts.tasks.reward_of).
    return report["metric"] if report["higher_is_better"] else f"−{report['metric']}"


def _range(s: dict[str, Any], digits: int, unit: str = "") -> str:
    if s["median"] is None and not s["reached"]:
        return f"never ({s['reached']}/{s['seeds']})"
    lo = "—" if s["min"] is None else f"{s['min']:.{digits}f}"
    beyond = "never" if s["budget"] is None else f"> {s['budget']:g}"  # seeds that did not reach it
    hi = beyond if s["max"] is None else f"{s['max']:.{digits}f}"
    med = beyond if s["median"] is None else f"{s['median']:.{digits}f}{unit}"
    return f"{med} [{lo}–{hi}] ({s['reached']}/{s['seeds']})"


def format_table(report: dict[str, Any]) -> str:
    """The comparison as a plain-text table (median [min–max] over seeds)."""
    seeds = report["seeds"]
    oracle = [o for d in report["methods"].values() for o in d["oracle"] if o is not None]
    lines = [
        f"{report['sim']} / {report['task']}: budget {report['budget']:g} evaluations per method (K = "
        f"{report['samples']}, M = {report['scenes']}), {len(seeds)} seed(s) {seeds}; reward = "
        f"{_reward_name(report)} on the {report.get('split', 'validation')} split, band = within "
        f"{report['band']['rel']:.0%} of the oracle's"
        + (f" (oracle median {float(np.median(oracle)):.4f})" if oracle else ""),
        "",
        f"{'method':<22} {'evaluations to band (reached)':>32}  {'CPU-s to band':>24}  {'final reward':>28}  "
        f"{'evaluations spent':>24}",
    ]
    for m, d in report["methods"].items():
        opts = ", ".join(f"{k}={v}" for k, v in d["options"].items() if v is not None)
        name = m if m == d["search"] else f"{m} ({d['search']})"
        s = d["summary"]
        cpu = _range(s["cpu_s_to_band"], 0, " s") if report["cpu_measured"] else "not measured (Ray)"
        spent = _range(s["spent"], 1).rsplit(" (", 1)[0] if "spent" in s else "—"
        lines.append(
            f"{name:<22} {_range(s['evals_to_band'], 1):>32}  {cpu:>24}  {_range(s['final'], 4):>28}  {spent:>24}"
        )
        if opts:
            lines.append(f"{'':<22}   {opts}")
    lines += [
        "",
        "median [min–max] over seeds; never reached counts as more than the budget; lts's search stops at a "
        "plateau of its rewards (--set stop=false: the whole budget). Each iteration's handed-over "
        "ψ (and lts's at the end of each warm-up phase) is re-scored with the run's "
        f"{report['final_repeats']} final seed(s) (not charged).",
    ]
    fails = {m: d["failed_evaluations"] for m, d in report["methods"].items() if d["failed_evaluations"]}
    if fails:
        lines.append("failed evaluations: " + ", ".join(f"{m} {n}" for m, n in fails.items()))
    return "\n".join(lines)


def plot_comparison(report: dict[str, Any], path: Path) -> None:
    """Reward of the handed-over ψ against evaluations: median and range over seeds; the
    oracle's band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for m, d in report["methods"].items():
        curves = [c for c in d["curve"] if c]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        x = np.array([c[0] for c in curves[0][:n]], dtype=float)
        a = np.array([[math.nan if p[1] is None else p[1] for p in c[:n]] for c in curves], dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med, lo, hi = np.nanmedian(a, 0), np.nanmin(a, 0), np.nanmax(a, 0)
        (line,) = ax.plot(x, med, marker=".", label=m)
        if len(curves) > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
    oracle = [o for d in report["methods"].values() for o in d["oracle"] if o is not None]
    if oracle:
        o, rel = float(np.median(oracle)), report["band"]["rel"]
        ax.axhline(o, color="k", linestyle="--", linewidth=1, label="oracle ψ* (median)")
        ax.axhspan(o - rel * abs(o), o + rel * abs(o), color="k", alpha=0.08, linewidth=0)
    ax.set_xlabel("evaluations charged")
    ax.set_ylabel(f"reward of the handed-over ψ ({_reward_name(report)})")
    ax.set_title(f"{report['sim']} / {report['task']}: {len(report['seeds'])} seed(s), median and range")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -----------------------------------------------------------------------


def out_dir(out: str | None, hint: str) -> Path:
    """The comparison's directory: ``out`` (new or empty), or a new one under ``runs/``."""
    if out is None:
        base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-compare-{hint}"
        path, i = base, 1
        while path.exists():
            path, i = Path(f"{base}-{i}"), i + 1
        return path
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"--out {str(path)!r} exists and is not empty; choose a new directory")
    return path
