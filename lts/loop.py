"""The outer loop: the run's phases in turn, each ask → evaluate → tell, with checkpoints
and the final baselines.

A run is a chain of phases (`lts.phases`): each a strategy, the objective it is told
about and its budget.  The loop asks the current phase's strategy for its ψ, has its
objective evaluate them, tells the strategy what the objective says of each, records the
iteration and checkpoints; when a phase's iterations are done, the next starts from what
it hands over.  Each evaluation is charged by what it renders: one of M scenes counts 1,
one of m scenes m / M (``evaluations`` in the metrics rows).  Seeds come from the run
seed by (stream, iteration, draw), so a run is reproducible and a resumed run ends where
an uninterrupted one would.

After the last iteration the same data size, training budget and seeds score three
datasets: from the ψ the last phase hands over (``lts``), from ψ drawn afresh per scene
(``random``, domain randomization) and, for a simulated target, from ψ* (``oracle``).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import simulators
from policies import Strategy

from . import tasks as tasks_mod
from .checks import count_failures
from .config import Config, config_to_dict, legacy_config
from .determination import determine
from .evaluation import EvalContext, EvalResult, EvalSpec, random_params
from .executors import Places, make_executor
from .phases import Phase, build_phases, from_version_2, summary_counts
from .rundir import CHECKPOINT, POLICY, SUMMARY, RunDir
from .seeding import derive_seed
from .stopping import PlateauStopper, parse_duration
from .targets import Target, load_target

__all__ = ["Experiment", "Callbacks", "make_executor", "BASELINES", "CHECKPOINT_VERSION"]

BASELINES = ("lts", "oracle", "random")
# 1: before search strategies (REINFORCE wired into the loop); 2: before phases, read by
# `lts.phases.from_version_2`
CHECKPOINT_VERSION = 3


@dataclass
class Callbacks:
    """Hooks for progress display; every one is optional."""

    on_start: Callable[[Experiment], None] | None = None
    on_eval: Callable[[EvalResult], None] | None = None
    on_iteration: Callable[[dict[str, Any]], None] | None = None
    on_final: Callable[[str, int, int], None] | None = None  # (which, done, total)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class Experiment:
    """One learning-to-simulate run in a run directory."""

    def __init__(self, config: Config, run_dir: RunDir, *, callbacks: Callbacks | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.cb = callbacks or Callbacks()
        # the clock runs from here: a time budget counts the target's rendering too
        self.t_start, self.cpu_start = time.monotonic(), time.process_time()
        if config.workers > 0 or config.ray_address:  # before anything connects or renders
            simulators.check_workers(config.sim, config.sim_options, max(config.workers, 1))
        self.sim = simulators.make(config.sim, **config.sim_options)
        self.space = self.sim.param_space
        self.target: Target = load_target(
            config.target,
            self.sim,
            task_name=config.task,
            size=config.target_size,
            run_seed=config.seed,
            sim_name=config.sim,
            test_size=config.test_size,
            split=config.target_split,
            test_dir=config.test_target,
            setup_timeout=config.setup_timeout or None,
        )
        self.context = EvalContext(
            sim=config.sim,
            sim_options=config.sim_options,
            task=config.task,
            task_options=config.task_options,
            target=self.target.batch,
            refiner=config.refiner,
            device=config.device,
            test=self.target.test,
        )
        if config.refiner and not Path(config.refiner).is_file():
            raise simulators.UserError(f"refiner checkpoint {config.refiner!r} does not exist")
        _check_optional_packages(config)
        # Fails early (a task the target cannot serve) before any iteration runs.
        self.task = tasks_mod.make(config.task, **{"device": config.device, **config.task_options})
        self.task.check_target(self.target.batch)
        self.places = Places(config, self.context, self.sim, run_dir)
        self.phases: list[Phase] = build_phases(
            config, self.space, self.task, self.target, evaluator=self.places.local, executor=self.places.executor
        )
        if config.budget is not None:
            self.fit_budget(config.budget)
        self.started = 0  # phases started: the first, and each as the one before hands over
        self._handed: dict[str, Any] | None = None  # what the phases before hold, for the next row (`held`)
        self.iteration = 0
        self.sim_frames = 0
        self.evaluations = 0.0
        self.elapsed_before = 0.0
        self.cpu_before = 0.0
        self._tb: Any = None
        self.stopper = PlateauStopper() if config.stop else None
        self.time_budget = None if config.time_budget is None else parse_duration(config.time_budget)
        self.task_means: list[float | None] = []  # each search iteration's mean reward: what the stopper reads
        self.stopped: str | None = None  # why the search stopped before its iterations ran out
        self._last_task_seconds: float | None = None  # wall seconds of the search's last iteration

    # -- the chain of phases -----------------------------------------------------------
    def bounds(self) -> list[tuple[int, int]]:
        """Each phase's iterations as [first, end) over the run."""
        out, at = [], 0
        for p in self.phases:
            out.append((at, at + p.iterations))
            at += p.iterations
        return out

    @property
    def phase_index(self) -> int:
        """The phase that asks next (the last once every iteration has run)."""
        return next((i for i, (_, end) in enumerate(self.bounds()) if self.iteration < end), len(self.phases) - 1)

    @property
    def total_iterations(self) -> int:
        return sum(p.iterations for p in self.phases)

    @property
    def searcher(self) -> Strategy:
        """The strategy asked now (the last phase's once the run is done)."""
        self._advance()
        strategy = self.phases[self.phase_index].strategy
        assert strategy is not None
        return strategy

    def _advance(self, states: Sequence[bytes | None] = ()) -> None:
        """Start the phases up to the current one, each from what the one before hands over
        (its recommendation, and the elements it determined held); ``states``: a checkpoint's."""
        while self.started <= self.phase_index:
            i = self.started
            verdicts = self.held(i)
            held = [n for n, v in verdicts.items() if v["hold"] == "all"]
            parts = {n: v for n, v in verdicts.items() if v["hold"] == "part"}
            if i == 0:
                self.phases[0].start(self.space, None, ())
            else:
                prev = self.phases[i - 1].strategy
                assert prev is not None
                self.phases[i].start(self.space, prev.recommend(), held, parts, steps=prev.spread())
            if i < len(states) and states[i] is not None:
                strategy = self.phases[i].strategy
                assert strategy is not None
                strategy.load_state_dict(pickle.loads(states[i]))  # type: ignore[arg-type]
            elif i and (said := self.held(i - 1)) != verdicts:  # each verdict said once, when it is new
                self._handed = {n: v for n, v in verdicts.items() if said.get(n) != v}
            self.started += 1

    def held(self, upto: int | None = None) -> dict[str, dict[str, Any]]:
        """What the phases before phase ``upto`` (default: the search) hold of each mix they
        moved: {name: {"hold": "all" | "part" | "none", "why", …}} (`Phase.held`); an earlier
        phase's verdict stands unless a later one moved the mix again."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.phases[: min(len(self.phases) - 1 if upto is None else upto, self.phase_index)]:
            if p.strategy is not None:
                out.update(p.held(self.space))
        return out

    def step(self) -> dict[str, Any]:
        """One iteration of the current phase, ask → evaluate → tell; returns its metrics.jsonl row."""
        self._advance()
        cfg, it = self.config, self.iteration
        phase = self.phases[self.phase_index]
        started = time.monotonic()
        searcher = phase.strategy
        assert searcher is not None
        params = searcher.ask(phase.samples)
        specs = [phase.spec(cfg.seed, it, k, p, cfg.common_seeds) for k, p in enumerate(params)]
        results = phase.objective.map(specs, self.cb.on_eval)
        for r in results:
            if r.error is not None:
                warnings.warn(f"iteration {it}, draw {r.index}: evaluation failed ({r.error})")  # it names ψ
            elif not r.ok:
                warnings.warn(f"iteration {it}, draw {r.index}: non-finite reward told as a failure; ψ = {r.params}")
        self.sim_frames += sum(r.frames for r in results)
        self.evaluations += sum(s.n for s in specs) / cfg.scenes  # charged by what it renders
        t0 = time.perf_counter()
        searcher.tell([r.params or {} for r in results], [phase.objective.told(r) for r in results])
        self.iteration = it + 1
        row = self._row(it, phase, results, time.perf_counter() - t0)
        if phase is self.phases[-1]:  # the search on the task's reward: the stopper watches it
            self._last_task_seconds = time.monotonic() - started
            self.task_means.append(row["reward_mean"])
            if self.stopper is not None and self.iteration < self.total_iterations:
                self.stopped = self.stopper.reason(self.task_means)
            row["stopped"] = self.stopped
        elif phase.stopper is not None:  # a phase that ends when its own means plateau
            phase.means.append(row["reward_mean"])
            first, end = self.bounds()[self.phases.index(phase)]
            if self.iteration < end and (why := phase.stopper.reason(phase.means)):
                phase.iterations, phase.ended = self.iteration - first, why
                if self.config.budget is not None:  # what it left goes to the search
                    self.fit_budget(self.config.budget)
            row["ended"] = phase.ended
        # metrics first, then the checkpoint: a kill in between re-runs this iteration.
        self.run_dir.append_metrics(row)
        self.save()  # policy.json: what the phase asked next holds (the next one's after a hand-over)
        if self._tb is not None:
            _tensorboard_log(self._tb, row)
        if self.cb.on_iteration:
            self.cb.on_iteration(row)
        return row

    def _row(self, it: int, phase: Phase, results: list[EvalResult], tell_s: float) -> dict[str, Any]:
        """The metrics.jsonl row of iteration ``it``."""
        searcher = phase.strategy
        assert searcher is not None
        ok = [r for r in results if r.ok]
        stats = getattr(searcher, "last_stats", None) or None
        return {
            "iteration": it,
            "phase": phase.name,
            "search": searcher.name,
            "rewards": [_finite_or_none(r.reward) for r in results],
            "reward_mean": _finite_or_none(float(np.mean([r.reward for r in ok]))) if ok else None,
            "baseline": getattr(searcher, "baseline", None),
            "policy": searcher.describe(),
            "recommended": searcher.recommend(),
            "sim_frames": self.sim_frames,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_s(),
            "params": [r.params for r in results],
            "metrics": [r.metrics for r in results],
            "errors": [
                {"draw": r.index, "error": r.error, "kind": r.failure or "crashed", "params": r.params}
                for r in results
                if r.error
            ],
            "attempts": [r.attempts for r in results],
            "timing_s": {
                "render": sum(r.render_s for r in results),
                "refine": sum(r.refine_s for r in results),
                "train": sum(r.train_s for r in results),
                "score": sum(r.score_s for r in results),
                "update": tell_s,
            },
            # REINFORCE's update; one per signal ({"look": …, "labels": …}) where it has several
            "update": None if stats is None else {k or "task": v.__dict__ for k, v in stats.items()},
            # what a strategy reports of its own (a fit's residuals, say)
            **(getattr(searcher, "last_row", None) or {}),
            # the first row of a phase after others: what they hold of each mix, and why
            **({"held": self._take_handed()} if self._handed is not None else {}),
        }

    def _take_handed(self) -> dict[str, Any] | None:
        out, self._handed = self._handed, None
        return out

    def charge(self, done: int = 0) -> list[tuple[Phase, int]]:
        """Each phase and the ψ it evaluates after the run's first ``done`` iterations."""
        out = []
        for p, (first, end) in zip(self.phases, self.bounds()):
            out.append((p, max(end - max(first, done), 0) * p.samples))
        return out

    def fit_budget(self, budget: float) -> None:
        """Give the last phase the iterations that the charged ``budget`` leaves after the
        phases before it (`lts.compare`'s equal budgets)."""
        last = self.phases[-1]
        before = sum(p.evaluations * p.scenes for p in self.phases[:-1]) / self.config.scenes
        per = last.samples * last.scenes / self.config.scenes
        if before + per > budget + 1e-9:
            raise simulators.UserError(
                f"budget {budget:g} does not cover the phases before the search ({before:g} evaluations) and one "
                f"iteration ({per:g})"
            )
        last.iterations = max(int((budget - before) // per + 1e-9), 1)
        self.config = dataclasses.replace(self.config, iterations=last.iterations)

    # -- state ---------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t_start)

    def cpu_s(self) -> float:
        """CPU seconds of this process (its threads included; not Ray workers')."""
        return self.cpu_before + (time.process_time() - self.cpu_start)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "iteration": self.iteration,
            # one per phase started: its strategy's state, pickled (a strategy's state may hold
            # anything: numpy arrays, a generator, an Optuna study); the checkpoint itself stays
            # loadable with torch.load(weights_only=True)
            "phases": [
                {
                    "search": p.search,
                    "strategy": pickle.dumps(p.strategy.state_dict()),
                    # what an objective carries between iterations (the task's: the best model, --warm-start)
                    "objective": p.objective.state_dict() if hasattr(p.objective, "state_dict") else None,
                    # a phase that ends at a plateau: its means, and the iterations it ran once it ended
                    "means": list(p.means),
                    "ended": None if p.ended is None else [p.ended, p.iterations],
                }
                for p in self.phases[: self.started]
                if p.strategy is not None
            ],
            "sim_frames": self.sim_frames,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_s(),
            "task_means": list(self.task_means),
            "stopped": self.stopped,
            "config": config_to_dict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") == 2:
            state = from_version_2(state, self.phases)
        if state.get("version") != CHECKPOINT_VERSION:
            raise simulators.UserError(
                f"checkpoint in {str(self.run_dir.path)!r} was written by an older lts (before search strategies); "
                "start a new run"
            )
        edited = _edited_keys(legacy_config(state.get("config", {})), config_to_dict(self.config))
        if edited:
            raise simulators.UserError(
                f"config.yaml in {str(self.run_dir.path)!r} was edited since the checkpoint ({', '.join(edited)}); "
                "put it back, or start a new run (resume may change only --iterations and how evaluations run)"
            )
        self.iteration = int(state["iteration"])
        for p, saved in zip(self.phases[:-1], state["phases"]):
            p.means = list(saved.get("means", []))
            if saved.get("ended"):
                p.ended, p.iterations = saved["ended"][0], int(saved["ended"][1])
        if self.config.budget is not None and any(p.ended for p in self.phases[:-1]):
            self.fit_budget(self.config.budget)
        self.started = 0
        self._advance([p["strategy"] for p in state["phases"]])
        for p, saved in zip(self.phases, state["phases"]):
            if saved.get("objective") is not None:
                p.objective.load_state_dict(saved["objective"])
        self.sim_frames = int(state["sim_frames"])
        self.evaluations = float(state["evaluations"])
        self.elapsed_before, self.cpu_before = float(state["elapsed_s"]), float(state["cpu_s"])
        self.t_start, self.cpu_start = time.monotonic(), time.process_time()
        self.task_means = list(state.get("task_means", []))
        # a plateau stop holds while the stopper is on; a budget's is judged again (resume may raise it)
        stopped = state.get("stopped")
        self.stopped = stopped if stopped and stopped.startswith("plateau") and self.config.stop else None

    def save(self) -> None:
        """The checkpoint and ``policy.json``."""
        self.run_dir.save_checkpoint(self.state_dict())
        self.run_dir.write_json(POLICY, self.describe())

    def describe(self) -> dict[str, Any]:
        """``policy.json`` now: what the phase asked next holds."""
        return self.searcher.describe()

    def start_fresh(self) -> None:
        self.run_dir.write_config(config_to_dict(self.config))
        self.run_dir.rewrite_metrics([])
        self.save()

    def resume(self) -> None:
        state = self.run_dir.load_checkpoint()
        if state is None:
            raise simulators.UserError(f"{str(self.run_dir.path)!r} has no {CHECKPOINT} to resume from")
        try:
            self.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as e:
            if isinstance(e, simulators.UserError):
                raise
            raise simulators.UserError(
                f"checkpoint in {str(self.run_dir.path)!r} does not match this configuration: {e}"
            ) from None
        # Drop metrics of an iteration that finished after the last checkpoint (a kill
        # between the two writes): it is run again, identically.
        rows = [r for r in self.run_dir.read_metrics() if r.get("iteration", 0) < self.iteration]
        self.run_dir.rewrite_metrics(rows)
        # The configuration may have been extended (--iterations); record what runs now.
        self.run_dir.write_config(config_to_dict(self.config))
        if self.run_dir.finished:
            self.run_dir.file(SUMMARY).unlink()

    # -- the loop --------------------------------------------------------------------
    def run(self, *, final: bool = True) -> dict[str, Any] | None:
        """Every phase's iterations and (``final``) the final evaluations; returns the summary
        (None without the final evaluations)."""
        if self.cb.on_start:
            self.cb.on_start(self)
        try:
            if self.config.tensorboard:
                self._tb = _tensorboard_writer(self.run_dir)
            while self.iteration < self.total_iterations and not self._stop_before():
                self.step()
            summary = self.finish() if final else None
        finally:
            self.places.close()
            if self._tb is not None:
                self._tb.close()
        return summary

    def _stop_before(self) -> bool:
        """Whether the search stops before the next iteration: the stopper said so, or, under a
        time budget, the next iteration and the final evaluation would overrun it."""
        if self.stopped is None and self.time_budget is not None:
            last = self.phases[-1]
            # an evaluation's seconds, from the search's last iteration (none measured yet: 0)
            per_eval = self._last_task_seconds / last.samples if self._last_task_seconds is not None else 0.0
            need = per_eval * (last.samples + len(self.final_baselines()) * self.config.final_repeats)
            if self.elapsed() + need > self.time_budget:
                self.stopped = (
                    f"time budget: {self.elapsed():.0f} s spent of {self.time_budget:.0f} s, and an iteration and the "
                    f"final evaluation take about {need:.0f} s"
                )
        return self.stopped is not None

    @property
    def evaluations_saved(self) -> float:
        """Evaluations the search's stop left unspent, of the iterations it had."""
        if self.stopped is None:
            return 0.0
        return sum(n * p.scenes for p, n in self.charge(self.iteration)) / self.config.scenes

    # -- final baselines ----------------------------------------------------------------
    def final_baselines(self) -> list[str]:
        """What the final evaluations score (none after a run of no iteration)."""
        if not self.config.iterations:
            return []
        return [w for w in BASELINES if not (w == "oracle" and self.target.truth is None)]

    def final_params(self) -> dict[str, dict[str, Any] | None]:
        return {"lts": self.searcher.recommend(), "oracle": self.target.truth, "random": None}

    def final_specs(
        self, params: dict[str, Any] | None, *, per_scene: bool = False, repeats: Sequence[int] | None = None
    ) -> list[EvalSpec]:
        """ψ evaluated with the final seeds (the same data size and training budget as the
        search's evaluations); ``per_scene``: ψ drawn afresh for every scene instead;
        ``repeats``: the seeds' indices (default the first ``final_repeats``)."""
        cfg = self.config
        specs = []
        for r in range(cfg.final_repeats) if repeats is None else repeats:
            data_seed = derive_seed(cfg.seed, "final-data", r)
            specs.append(
                EvalSpec(
                    index=r,
                    params=params,
                    n=cfg.scenes,
                    data_seed=data_seed,
                    train_seed=derive_seed(cfg.seed, "final-train", r),
                    per_scene=random_params(self.space, cfg.scenes, data_seed) if per_scene else None,
                    also_test=self.target.test is not None,
                )
            )
        return specs

    def finish(self) -> dict[str, Any]:
        cfg = self.config
        chosen = self.final_params()
        which = self.final_baselines()
        specs: list[EvalSpec] = []
        labels: list[str] = []
        repeat: list[int] = []  # the seed index of each spec
        for w in which:
            for r, s in enumerate(self.final_specs(chosen[w], per_scene=w == "random")):
                s.index = len(specs)
                specs.append(s)
                labels.append(w)
                repeat.append(r)
        done = [0]

        def on_result(res: EvalResult) -> None:
            done[0] += 1
            if self.cb.on_final:
                self.cb.on_final(labels[res.index], done[0], len(specs))

        results = self.places.executor().map(specs, on_result=on_result) if specs else []
        # A failed final evaluation is retried once, with the seed after the final ones.
        failed = [i for i, r in enumerate(results) if not r.ok]
        again: list[EvalSpec] = []
        for i in failed:
            w = labels[i]
            (spec,) = self.final_specs(chosen[w], per_scene=w == "random", repeats=[cfg.final_repeats + repeat[i]])
            spec.index = len(labels)
            labels.append(w)
            again.append(spec)
        retried = self.places.executor().map(again, on_result=on_result) if again else []
        retries = []  # each retry, recorded in the summary: what failed, and how the retry ended
        for i, res in zip(failed, retried):
            retries.append(
                {"row": labels[i], "repeat": repeat[i], "retry_repeat": cfg.final_repeats + repeat[i],
                 "failed": results[i].error, "kind": results[i].failure, "retry_error": res.error}
            )  # fmt: skip
            results[i] = res
        rewards: dict[str, float | None] = {}
        metrics: dict[str, dict[str, float]] = {}
        test: dict[str, float | None] = {}
        test_metrics: dict[str, dict[str, float]] = {}
        errors: dict[str, str | None] = {}  # why a row has no figure
        seeds: dict[str, int] = {}  # the seeds a row's figure averages (fewer than final_repeats: some failed)
        for w in which:
            mine = [r for r, lab in zip(results, labels) if lab == w]
            seeds[w] = sum(r.ok for r in mine)
            rewards[w], metrics[w] = mean_metrics(mine)
            if self.target.test is not None:
                test[w], test_metrics[w] = mean_metrics(mine, split="test")
            errors[w] = next((r.error for r in mine if r.error), None) if rewards[w] is None else None
        # every failed evaluation of the run: the search's (metrics.jsonl) and the final ones
        rows = self.run_dir.read_metrics()
        kinds = [e.get("kind", "crashed") for row in rows for e in row.get("errors", [])]
        kinds += [r["kind"] or "crashed" for r in retries]
        kinds += [r.failure or "crashed" for r in retried if r.error]
        summary = {
            "reward": rewards,  # validation: the split the search was told
            "test": test,  # the held-out test split: the figures to report
            "metric": self.task.metric,
            "higher_is_better": self.task.higher_is_better,
            "metrics": metrics,
            "test_metrics": test_metrics,
            "search": cfg.search,
            "iterations": self.iteration,
            **summary_counts(self.phases, self.iteration),
            "stopped": self.stopped,
            "evaluations_saved": self.evaluations_saved,
            # what the phases before the search held of each mix they moved, and why (whole, in part, or not at all)
            "held": self.held(),
            "sim_frames": self.sim_frames,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_s(),
            "learned": chosen["lts"],
            "target": self.target.truth,
            "target_source": self.target.source,
            "final_repeats": cfg.final_repeats,
            "errors": errors,
            "seeds": seeds,
            "retries": retries,
            "failures": count_failures(kinds),
        }
        summary["determined"] = determine(rows, self.describe(), summary)  # target, reward or free, per element
        self.run_dir.write_json(SUMMARY, summary)
        return summary


def _check_optional_packages(config: Config) -> None:
    """The packages the configuration needs, checked before anything is written."""
    import importlib.util

    needs = [
        (config.tensorboard, "tensorboard", "--tensorboard", "tensorboard"),
        (config.workers > 0 or bool(config.ray_address), "ray", "--workers / --ray-address", "ray"),
    ]
    for wanted, module, what, extra in needs:
        if wanted and importlib.util.find_spec(module) is None:
            raise simulators.UserError(f'{what} needs the {module} package: pip install -e ".[{extra}]"')


def mean_metrics(results: Sequence[EvalResult], split: str = "validation") -> tuple[float | None, dict[str, float]]:
    """The mean reward and metrics of the successful results on ``split`` (None, {} if none)."""
    ok: list[tuple[float, dict[str, float]]] = []
    for r in results:
        if r.ok and split == "validation":
            ok.append((r.reward, r.metrics))
        elif r.ok and r.test_metrics is not None and math.isfinite(r.test_reward):
            ok.append((r.test_reward, r.test_metrics))
    if not ok:
        return None, {}
    keys = ok[0][1].keys()
    return float(np.mean([rw for rw, _ in ok])), {k: float(np.mean([m[k] for _, m in ok])) for k in keys}


# Keys a resume may change: more iterations, and how (not what) the evaluations run.
RESUMABLE = (
    "iterations", "budget", "time_budget", "stop", "parallel", "workers", "ray_address", "final_repeats",
    "tensorboard", "device", "threads", "eval_timeout", "setup_timeout",
)  # fmt: skip


def _edited_keys(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between the checkpoint's configuration and the one resumed."""
    out = []
    for key in sorted(set(saved) | set(now)):
        if not prefix and key in RESUMABLE:
            continue
        a, b = saved.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _edited_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


def _tensorboard_writer(run_dir: RunDir) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise simulators.UserError(
            '--tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"'
        ) from None
    return SummaryWriter(log_dir=str(run_dir.path / "tensorboard"))


def _tensorboard_log(writer: Any, row: dict[str, Any]) -> None:
    it = row["iteration"]
    group = "reward" if row.get("phase") == "task" else str(row.get("phase"))  # not the task's reward
    if row["reward_mean"] is not None:
        writer.add_scalar(f"{group}/mean", row["reward_mean"], it)
    if row["baseline"] is not None:
        writer.add_scalar(f"{group}/baseline", row["baseline"], it)
    for name, spec in row["policy"]["params"].items():
        if spec["kind"] == "proportions":
            for c, p in zip(spec["choices"], spec["mean"]):
                writer.add_scalar(f"policy/{name}/{c}", p, it)
        elif spec["kind"] == "categorical":
            for c, p in zip(spec["choices"], spec["probs"]):
                writer.add_scalar(f"policy/{name}/{c}", p, it)
        else:
            writer.add_scalar(f"policy/{name}/mean", spec["mean"], it)
            writer.add_scalar(f"policy/{name}/std", spec["std"], it)
    writer.flush()
