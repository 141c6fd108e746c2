"""``python -m lts.compare``: LTS against search baselines on the same simulation budget.

With the same simulator, task, target and number N of simulator evaluations (one
evaluation = render M scenes + train the task + score it on the target), it runs:

- ``lts``: the learning-to-simulate loop (`lts.loop.Experiment`) for N // K iterations;
- ``random``: random search, N ψ drawn uniformly from the space (`ParamSpace.sample`);
- ``tpe``: Optuna's TPE sampler through Ray Tune's ``OptunaSearch``;
- ``bayesopt``: Gaussian-process Bayesian optimisation, Optuna's ``GPSampler`` through
  ``OptunaSearch`` (it needs nothing beyond optuna, torch and scipy; Tune's own
  ``BayesOptSearch`` needs the old bayesian-optimization 1.4.3 and takes continuous
  parameters only).

Fair by construction: for a seed S every method sees the target rendered with S's seed,
and its j-th evaluation uses the data and training seeds the loop gives its j-th
evaluation (iteration j // K, draw j % K; with ``common_seeds`` the draws of an
iteration share them, and so do each group of K evaluations here).  Each method is scored twice: by its
best-so-far reward over the N evaluations, and by the reward of the ψ it would hand a
user (LTS: the policy mean; a search method: its best ψ) re-evaluated with the loop's
final seeds (`Config.final_repeats` of them) — the number that is comparable across
methods, since a best-so-far maximum over noisy evaluations flatters whoever draws most.
The oracle (ψ*, when the target is simulated) is evaluated the same way.

The search space for Tune comes from `lts.tune_space` (the one conversion).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from simulators.errors import UserError

from .cli import ArgumentParser, parse_set, progress_bar, run_cli, set_threads
from .config import Config, config_to_dict, load_config, resolve_path
from .evaluation import EvalContext, EvalResult, EvalSpec, Evaluator, Executor, local_executor
from .seeding import derive_seed
from .tune_space import coords_to_params, tune_search_space

__all__ = [
    "METHODS",
    "TUNE_METHODS",
    "MethodRun",
    "run_comparison",
    "final_specs",
    "best_so_far",
    "format_table",
    "plot_comparison",
    "main",
    "build_parser",
]

METHODS = {
    "lts": "learning to simulate (REINFORCE on a policy over ψ); final ψ = the policy mean",
    "random": "random search: ψ uniform over the space; final ψ = the best one seen",
    "tpe": "Optuna TPE via ray.tune OptunaSearch; final ψ = the best one seen",
    "bayesopt": "Gaussian-process Bayesian optimisation (Optuna GPSampler via ray.tune OptunaSearch)",
}
TUNE_METHODS = ("tpe", "bayesopt")
_INDEX_KEY = "_eval_index"  # added to each Tune proposal: which evaluation it is (its seeds)

# (method, seed, evaluations done, budget)
Progress = Callable[[str, int, int, int], None]


@dataclasses.dataclass
class MethodRun:
    """One method on one seed: every evaluation in order, and the re-evaluated choice."""

    method: str
    seed: int
    rewards: list[float]  # per evaluation, NaN where it failed
    params: list[dict[str, Any] | None]
    errors: list[dict[str, Any]]
    chosen: dict[str, Any] | None = None
    final_reward: float | None = None
    final_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rewards"] = [_num(r) for r in self.rewards]
        d["best_so_far"] = [_num(r) for r in best_so_far(self.rewards)]
        return d


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def best_so_far(rewards: Sequence[float]) -> list[float]:
    """Running maximum, ignoring failed (NaN) evaluations (NaN until the first success)."""
    out, best = [], -math.inf
    for r in rewards:
        if r is not None and math.isfinite(r):
            best = max(best, r)
        out.append(best if math.isfinite(best) else math.nan)
    return out


def eval_spec(config: Config, seed: int, j: int, params: dict[str, Any]) -> EvalSpec:
    """The j-th evaluation of a run with ``seed``: the seeds the loop gives its j-th one."""
    k = config.samples
    # With common seeds the K draws of an iteration share one data and one training seed.
    draw = 0 if config.common_seeds else j % k
    return EvalSpec(
        index=j,
        params=params,
        n=config.scenes,
        data_seed=derive_seed(seed, "data", j // k, draw),
        train_seed=derive_seed(seed, "train", j // k, draw),
    )


def final_specs(config: Config, seed: int, params: dict[str, Any]) -> list[EvalSpec]:
    """ψ evaluated as `Experiment.finish` evaluates the policy mean (same data size and seeds)."""
    return [
        EvalSpec(
            index=r,
            params=params,
            n=config.scenes,
            data_seed=derive_seed(seed, "final-data", r),
            train_seed=derive_seed(seed, "final-train", r),
        )
        for r in range(config.final_repeats)
    ]


def _mean_metrics(results: Sequence[EvalResult]) -> tuple[float | None, dict[str, float]]:
    ok = [r for r in results if r.ok]
    if not ok:
        return None, {}
    return float(np.mean([r.reward for r in ok])), {
        k: float(np.mean([r.metrics[k] for r in ok])) for k in ok[0].metrics
    }


def _best_params(run: MethodRun) -> dict[str, Any] | None:
    finite = [(r, i) for i, r in enumerate(run.rewards) if math.isfinite(r)]
    return run.params[max(finite)[1]] if finite else None


@contextmanager
def _executor(context: EvalContext, workers: int, address: str | None, cfg: Config) -> Iterator[Executor]:
    """Ray, or in this process by the same rule as the LTS arm's (`local_executor`), so
    that every method's ψ is trained with the same torch thread count."""
    if workers > 0 or address:
        from .ray_exec import RayExecutor

        ex: Executor = RayExecutor(context, workers=max(workers, 1), address=address)
    else:
        ex = local_executor(context.build(), parallel=cfg.parallel, threads=cfg.threads, samples=cfg.samples)
    try:
        yield ex
    finally:
        ex.close()


# -- the methods ------------------------------------------------------------------------


def _run_lts(exp: Any, progress: Progress | None, budget: int) -> MethodRun:
    from .loop import Callbacks

    done = [0]

    def on_eval(res: EvalResult) -> None:
        done[0] += 1
        if progress and done[0] <= budget:
            progress("lts", exp.config.seed, done[0], budget)

    exp.cb = Callbacks(on_eval=on_eval)
    t0 = time.monotonic()
    exp.run_dir.make()
    exp.start_fresh()
    summary = exp.run()
    rows = exp.run_dir.read_metrics()
    rewards = [math.nan if x is None else float(x) for r in rows for x in r["rewards"]]
    run = MethodRun(
        method="lts",
        seed=exp.config.seed,
        rewards=rewards,
        params=[p for r in rows for p in r["params"]],
        errors=[
            {**e, "evaluation": r["iteration"] * exp.config.samples + e["draw"]} for r in rows for e in r["errors"]
        ],
        chosen=summary["learned"],
        final_reward=summary["reward"].get("lts"),
        final_metrics=summary["metrics"].get("lts", {}),
        # Time of the iterations only: the search methods' re-evaluation is not counted either.
        elapsed_s=float(rows[-1]["elapsed_s"]) if rows else time.monotonic() - t0,
    )
    run.extra = {"summary": summary}  # type: ignore[attr-defined]
    return run


def _run_random(
    ex: Executor, space: Any, config: Config, seed: int, budget: int, progress: Progress | None
) -> MethodRun:
    rng = np.random.default_rng(derive_seed(seed, "random-search"))
    params = [space.sample(rng) for _ in range(budget)]
    specs = [eval_spec(config, seed, j, p) for j, p in enumerate(params)]
    done = [0]

    def on_result(res: EvalResult) -> None:
        done[0] += 1
        if progress:
            progress("random", seed, done[0], budget)

    t0 = time.monotonic()
    results = ex.map(specs, on_result=on_result)
    return MethodRun(
        method="random",
        seed=seed,
        rewards=[r.reward if r.ok else math.nan for r in results],
        params=params,
        errors=[{"evaluation": r.index, "error": r.error, "params": r.params} for r in results if r.error],
        elapsed_s=time.monotonic() - t0,
    )


# Tune trials run in Ray workers; each keeps one evaluator (simulator alive) per comparison run.
_TRIAL_EVALUATOR: dict[str, Evaluator] = {}
# Driver-side collectors of trial results, found by token (Tune pickles its callbacks).
_COLLECT: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {}


def _trial_evaluator(token: str, context: EvalContext) -> Evaluator:
    if token not in _TRIAL_EVALUATOR:
        for old in list(_TRIAL_EVALUATOR):
            _TRIAL_EVALUATOR.pop(old).close()
        _TRIAL_EVALUATOR[token] = context.build()
    return _TRIAL_EVALUATOR[token]


def _tune_trial(coords: dict[str, Any], *, context: EvalContext, config: Config, seed: int, token: str) -> None:
    """One Tune trial = one evaluation, seeded like the loop's evaluation of the same index."""
    from ray import tune

    j = int(coords[_INDEX_KEY])
    out: dict[str, Any] = {"eval_index": j, "error": ""}
    try:
        ev = _trial_evaluator(token, context)
        params = coords_to_params(ev.sim.param_space, coords)
        res = ev.safe(eval_spec(config, seed, j, params))
    except UserError as e:
        out.update(reward=math.nan, error=f"UserError: {e}", user_error=True)
    else:
        out.update(reward=res.reward if res.ok else math.nan, error=res.error or "", metrics=res.metrics)
    tune.report(out)


def _indexed(searcher: Any) -> Any:
    """Wrap a Tune searcher so that every proposal carries its evaluation index."""
    from ray.tune.search import Searcher

    class IndexedSearcher(Searcher):
        def __init__(self, inner: Any) -> None:
            self.inner, self.count = inner, 0
            super().__init__(metric=inner.metric, mode=inner.mode)

        def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
            return self.inner.set_search_properties(metric, mode, config, **spec)

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            return self.inner.set_max_concurrency(max_concurrent)

        def suggest(self, trial_id: str) -> Any:
            cfg = self.inner.suggest(trial_id)
            if isinstance(cfg, dict):
                cfg = {**cfg, _INDEX_KEY: self.count}
                self.count += 1
            return cfg

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.inner.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.inner.on_trial_complete(trial_id, result=result, error=error)

        def save(self, checkpoint_path: str) -> None:
            self.inner.save(checkpoint_path)

        def restore(self, checkpoint_path: str) -> None:
            self.inner.restore(checkpoint_path)

    return IndexedSearcher(searcher)


def _collector(token: str) -> Any:
    """A Tune callback handing each trial's (config, reported metrics) to ``_COLLECT[token]``."""
    from ray import tune

    class Collect(tune.Callback):
        def __init__(self, token: str) -> None:
            self.token = token

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            fn = _COLLECT.get(self.token)
            if fn is not None:
                fn(dict(trial.config), dict(result))

    return Collect(token)


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _sampler(method: str, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # e.g. "greenlet unavailable, sequential L-BFGS-B"
    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed)


def _run_tune(
    method: str,
    context: EvalContext,
    space: Any,
    config: Config,
    seed: int,
    budget: int,
    concurrency: int,
    progress: Progress | None,
) -> MethodRun:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric="reward", mode="max", sampler=_sampler(method, seed))
    token = uuid.uuid4().hex
    rewards = [math.nan] * budget
    params: list[dict[str, Any] | None] = [None] * budget
    errors: list[dict[str, Any]] = []
    user_errors: list[str] = []
    done = [0]

    def collect(coords: dict[str, Any], m: dict[str, Any]) -> None:
        j = int(coords.get(_INDEX_KEY, -1))
        if not 0 <= j < budget:
            return
        if m.get("user_error"):
            user_errors.append(str(m["error"]).removeprefix("UserError: "))
        params[j] = coords_to_params(space, coords)
        r = m.get("reward")
        rewards[j] = float(r) if r is not None and math.isfinite(float(r)) else math.nan
        if m.get("error"):
            errors.append({"evaluation": j, "error": str(m["error"])[:500], "params": params[j]})
        done[0] += 1
        if progress:
            progress(method, seed, done[0], budget)

    _COLLECT[token] = collect
    storage = tempfile.mkdtemp(prefix="lts-tune-")
    t0 = time.monotonic()
    try:
        with warnings.catch_warnings(), _environ(RAY_AIR_NEW_OUTPUT="0"):
            # Old-style output at verbose=0 prints nothing (the new one prints an experiment
            # banner even then); warnings: optuna's experimental notices, Tune's deprecations.
            warnings.simplefilter("ignore")
            tuner = tune.Tuner(
                tune.with_parameters(_tune_trial, context=context, config=config, seed=seed, token=token),
                param_space=tune_search_space(space),
                tune_config=tune.TuneConfig(
                    search_alg=_indexed(searcher),
                    num_samples=budget,
                    max_concurrent_trials=concurrency,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=f"{method}-seed{seed}",
                    storage_path=storage,
                    verbose=0,
                    callbacks=[_collector(token)],
                    # A trial whose worker died runs again (same ψ, same index, same seeds).
                    failure_config=tune.FailureConfig(max_failures=2),
                ),
            )
            grid = tuner.fit()
    finally:
        _COLLECT.pop(token, None)
        shutil.rmtree(storage, ignore_errors=True)
    elapsed = time.monotonic() - t0
    if user_errors:
        raise UserError(user_errors[0])
    # A trial that crashed outside the evaluation (Tune's own failure) reported nothing.
    for result in grid.errors if hasattr(grid, "errors") else []:
        errors.append({"evaluation": None, "error": f"{type(result).__name__}: {result}"[:500], "params": None})
    return MethodRun(method=method, seed=seed, rewards=rewards, params=params, errors=errors, elapsed_s=elapsed)


# -- the comparison ---------------------------------------------------------------------


def _check_methods(methods: Sequence[str]) -> list[str]:
    out = []
    for m in methods:
        if m not in METHODS:
            from simulators.errors import did_you_mean

            raise UserError(f"unknown method {m!r}; expected some of {', '.join(METHODS)}" + did_you_mean(m, METHODS))
        if m not in out:
            out.append(m)
    if not out:
        raise UserError("no methods to compare")
    if any(m in TUNE_METHODS for m in out):
        try:
            import optuna  # noqa: F401
            import ray.tune  # noqa: F401
        except ImportError:
            raise UserError(
                f"methods {', '.join(m for m in out if m in TUNE_METHODS)} need Ray Tune and Optuna: "
                'pip install -e ".[ray]" (or leave them out: --methods lts,random)'
            ) from None
    return out


def _stats(xs: Sequence[float | None]) -> dict[str, Any]:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def run_comparison(
    config: Config,
    *,
    budget: int,
    seeds: Sequence[int],
    methods: Sequence[str],
    out: Path,
    workers: int = 0,
    ray_address: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every method on every seed with ``budget`` evaluations; write and return
    ``OUT/comparison.json``.  LTS run directories go to ``OUT/lts-seedS``."""
    from . import tasks as tasks_mod
    from .loop import Experiment
    from .rundir import RunDir, atomic_write_text

    methods = _check_methods(methods)
    k = config.samples
    if budget < k:
        raise UserError(f"--budget {budget} is below one LTS iteration (samples K = {k})")
    used = (budget // k) * k  # LTS spends whole iterations; every method gets the same count
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    needs_ray = bool(ray_address) or workers > 0 or any(m in TUNE_METHODS for m in methods)
    ray_tmp, started_ray = None, False
    if needs_ray:
        from .ray_exec import import_ray, init_local_ray

        ray = import_ray()
        if not ray.is_initialized():
            if ray_address:
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                try:
                    ray.init(address=ray_address, log_to_driver=False, configure_logging=True, logging_level="WARNING")
                except (ConnectionError, ray.exceptions.RayError) as e:
                    raise UserError(f"--ray-address {ray_address!r}: cannot connect to a Ray cluster ({e})") from None
            else:
                ray_tmp = init_local_ray(max(workers, 1))
            started_ray = True
    runs: dict[str, list[MethodRun]] = {m: [] for m in methods}
    oracle: list[float | None] = []
    domain_random: list[float | None] = []
    task = tasks_mod.make(config.task, **{"device": config.device, **config.task_options})
    try:
        for seed in seeds:
            # No distribution-matching warm-up: every method learns from the task's reward alone.
            cfg = dataclasses.replace(
                config,
                seed=int(seed),
                iterations=used // k,
                match_iterations=0,
                workers=workers,
                ray_address=ray_address,
            )
            # The Experiment renders seed S's target; every method is scored on that one.
            exp = Experiment(cfg, RunDir(out / f"lts-seed{seed}"))
            context, space, target = exp.context, exp.space, exp.target
            if "lts" in methods:
                run = _run_lts(exp, progress, used)
                runs["lts"].append(run)
                domain_random.append(run.extra["summary"]["reward"].get("random"))  # type: ignore[attr-defined]
            else:
                exp.sim.close()
            pending: list[MethodRun] = []
            for m in methods:
                if m in TUNE_METHODS:
                    run = _run_tune(m, context, space, cfg, int(seed), used, max(workers, 1), progress)
                    runs[m].append(run)
                    pending.append(run)
            with _executor(context, workers, ray_address, cfg) as ex:
                if "random" in methods:
                    run = _run_random(ex, space, cfg, int(seed), used, progress)
                    runs["random"].append(run)
                    pending.append(run)
                # Re-evaluate each search method's best ψ and ψ* with the loop's final seeds.
                chosen = [(r, _best_params(r)) for r in pending]
                specs, owners = [], []
                for r, psi in chosen:
                    r.chosen = psi
                    if psi is not None:
                        for s in final_specs(cfg, int(seed), psi):
                            specs.append(dataclasses.replace(s, index=len(specs)))
                            owners.append(r)
                if target.params is not None:
                    for s in final_specs(cfg, int(seed), target.params):
                        specs.append(dataclasses.replace(s, index=len(specs)))
                        owners.append(None)
                results = ex.map(specs) if specs else []
            for r, _ in chosen:
                r.final_reward, r.final_metrics = _mean_metrics([x for x, o in zip(results, owners) if o is r])
            if target.params is not None:
                oracle.append(_mean_metrics([x for x, o in zip(results, owners) if o is None])[0])
    finally:
        if started_ray:
            from .ray_exec import shutdown_local_ray

            shutdown_local_ray(ray_tmp)
    report = {
        "sim": config.sim,
        "task": config.task,
        "target": config.target,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "budget": used,
        "budget_requested": budget,
        "samples": k,
        "scenes": config.scenes,
        "final_repeats": config.final_repeats,
        "seeds": [int(s) for s in seeds],
        "workers": workers,
        "config": config_to_dict(config),
        "methods": {
            m: {
                "description": METHODS[m],
                "evaluations": [len(r.rewards) for r in rs],
                "final": _stats([r.final_reward for r in rs]),
                "best_so_far": _stats([_num(best_so_far(r.rewards)[-1]) if r.rewards else None for r in rs]),
                "elapsed_s": _stats([r.elapsed_s for r in rs]),
                "failed_evaluations": sum(len(r.errors) for r in rs),
                "runs": [r.to_json() for r in rs],
            }
            for m, rs in runs.items()
        },
        "oracle": {**_stats(oracle), "per_seed": oracle} if oracle else None,
        "domain_randomization": {**_stats(domain_random), "per_seed": domain_random} if domain_random else None,
    }
    atomic_write_text(out / "comparison.json", json.dumps(report, indent=2) + "\n")
    return report


# -- reporting --------------------------------------------------------------------------


def _pm(s: dict[str, Any] | None, digits: int = 4) -> str:
    if not s or s.get("mean") is None:
        return "—"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _reward_name(report: dict[str, Any]) -> str:
    # Error metrics enter the reward negated (lts.tasks.reward_of).
    return report["metric"] if report["higher_is_better"] else f"−{report['metric']}"


def format_table(report: dict[str, Any]) -> str:
    """The comparison as a plain-text table (mean ± std over seeds)."""
    reward = _reward_name(report)
    lines = [
        f"{report['sim']} / {report['task']}: {report['budget']} simulator evaluations per method "
        f"(K = {report['samples']}, M = {report['scenes']}), {len(report['seeds'])} seed(s) {report['seeds']}; "
        f"reward = {reward} (higher is better), mean ± std over seeds",
        "",
        f"{'method':<10} {'evals':>6}  {'final reward of chosen ψ':>26}  {'best-so-far at N':>18}  {'time/seed':>9}",
    ]
    for m, d in report["methods"].items():
        evals = d["evaluations"]
        ev = str(evals[0]) if evals and len(set(evals)) == 1 else "/".join(map(str, evals))
        t = d["elapsed_s"]["mean"]
        lines.append(
            f"{m:<10} {ev:>6}  {_pm(d['final']):>26}  {_pm(d['best_so_far']):>18}  "
            f"{'—' if t is None else f'{t:.0f} s':>9}"
        )
    for name, key in (("oracle ψ*", "oracle"), ("domain rand.", "domain_randomization")):
        if report.get(key):
            lines.append(f"{name:<10} {'':>6}  {_pm(report[key]):>26}")
    lines += [
        "",
        "final reward: the method's chosen ψ (LTS: policy mean; search: best ψ seen) re-evaluated with the "
        f"loop's {report['final_repeats']} final seed(s); best-so-far: the best training-time evaluation.",
    ]
    fails = {m: d["failed_evaluations"] for m, d in report["methods"].items() if d["failed_evaluations"]}
    if fails:
        lines.append("failed evaluations: " + ", ".join(f"{m} {n}" for m, n in fails.items()))
    return "\n".join(lines)


def plot_comparison(report: dict[str, Any], path: Path) -> None:
    """Best-so-far reward vs evaluations (mean over seeds, ±1 std band), oracle dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for m, d in report["methods"].items():
        curves = [r["best_so_far"] for r in d["runs"] if r["best_so_far"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        a = np.array([[math.nan if v is None else v for v in c[:n]] for c in curves], dtype=float)
        x = np.arange(1, n + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before a first success
            mean, std = np.nanmean(a, 0), np.nanstd(a, 0)
        (line,) = ax.plot(x, mean, label=m)
        if len(curves) > 1:
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if report.get("oracle") and report["oracle"]["mean"] is not None:
        ax.axhline(report["oracle"]["mean"], color="k", linestyle="--", linewidth=1, label="oracle ψ*")
    ax.set_xscale("log")  # most of the action is in the first evaluations
    ax.set_xlabel("simulator evaluations (log scale)")
    ax.set_ylabel(f"best-so-far reward ({_reward_name(report)})")
    ax.set_title(f"{report['sim']} / {report['task']}: {len(report['seeds'])} seed(s), mean ± std")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m lts.compare",
        description="Compare LTS with random search and Ray Tune searchers (Optuna TPE, GP Bayesian optimisation) "
        "on the same simulator, task, target and number of simulator evaluations.",
        epilog="Example:\n  python -m lts.compare --config configs/gmm.yaml --budget 320 --seeds 3\n\n"
        "Methods:\n" + "\n".join(f"  {k:<9} {v}" for k, v in METHODS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="YAML experiment (see configs/)")
    a("--budget", type=int, required=True, metavar="N", help="simulator evaluations per method and seed")
    a("--seeds", type=int, default=3, metavar="S", help="seeds per method: the config's seed, seed+1, … (default 3)")
    a("--methods", default=",".join(METHODS), metavar="LIST", help=f"comma-separated (default {','.join(METHODS)})")
    a("--target", metavar="FILE|DIR", help="target parameter file or labelled image directory")
    a("--out", metavar="DIR", help="output directory (default: a new one under runs/)")
    a("--workers", type=int, default=0, metavar="W", help="Ray workers for evaluations and Tune trials (0: in-process)")
    a("--ray-address", metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    a("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, repeatable")
    a("--no-plot", action="store_true", help="do not write comparison.png")
    a("--quiet", action="store_true", help="no progress bar")
    return p


def _out_dir(out: str | None, hint: str) -> Path:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.budget < 1:
        raise UserError(f"--budget must be >= 1, got {args.budget}")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    config_path = None
    if args.config:
        config_path = resolve_path(args.config)
        if not config_path.is_file():
            raise UserError(f"config file {args.config!r} does not exist")
    layer = {"target": args.target} if args.target else {}
    config = load_config(config_path, layer, overrides=parse_set(args.set))
    methods = _check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    set_threads(config.threads)  # in-process evaluations (Ray workers use one thread each)
    k = config.samples
    if args.budget < k:
        raise UserError(f"--budget {args.budget} is below one LTS iteration (samples K = {k})")
    if args.budget % k:
        print(
            f"note: budget {args.budget} is not a multiple of K = {k}; every method gets {args.budget // k * k}",
            file=sys.stderr,
        )
    out = _out_dir(args.out, f"{Path(str(config.sim).split(':')[-1]).name}-{config.task}")
    out.mkdir(parents=True, exist_ok=True)
    seeds = [config.seed + i for i in range(args.seeds)]
    total = len(seeds) * len(methods) * (args.budget // k * k)
    with progress_bar(not args.quiet, total=total, unit="eval", dynamic_ncols=True, desc="compare") as bar:
        last: dict[tuple[str, int], int] = {}

        def progress(method: str, seed: int, done: int, budget: int) -> None:
            if bar is not None:
                key = (method, seed)
                bar.update(done - last.get(key, 0))
                last[key] = done
                bar.set_description(f"{method} seed {seed}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # failed evaluations are counted in the table
            report = run_comparison(
                config,
                budget=args.budget,
                seeds=seeds,
                methods=methods,
                out=out,
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
