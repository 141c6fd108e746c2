"""The outer loop: ask → evaluate → tell, with checkpoints and the final baselines.

Each iteration asks the search strategy (`policies`, ``search``) for K ψ, evaluates each
(render M scenes, train the task, score it on the target's validation split) and tells
the strategy their rewards.  Where there is something to match, a cheap stage comes
first (`lts.matching`, ``match_iterations``): it renders ``match_scenes`` per ψ, trains
nothing, and moves the elements it matches by how close the frames look, and their
labels are, to the target's; the strategy then starts from the matched ψ, with the
mixes it matched held (``match_hold``).  Each evaluation is charged by what it renders:
one of M scenes counts 1, one of m scenes m / M (``evaluations`` in the metrics rows).
Seeds come from the run seed by (stream, iteration, draw), so a run is reproducible and
a resumed run ends where an uninterrupted one would.

After the last iteration the same data size, training budget and seeds score three
datasets: from the ψ the strategy hands over (``lts``), from ψ drawn afresh per scene
(``random``, domain randomization) and, for a simulated target, from ψ* (``oracle``).
"""

from __future__ import annotations

import functools
import math
import pickle
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import simulators
from policies import ReinforceStrategy, Strategy, make_strategy, strategy_options
from policies.base import point_json

from . import tasks as tasks_mod
from .checks import EvalFailure, count_failures
from .config import LEGACY_DEFAULTS, Config, config_to_dict
from .evaluation import EvalContext, EvalResult, EvalSpec, Evaluator, Executor, local_executor, random_params
from .matching import TargetMatch, mix_fit
from .rundir import CHECKPOINT, POLICY, SUMMARY, RunDir
from .seeding import derive_seed
from .stopping import PlateauStopper, parse_duration
from .targets import Target, load_target

__all__ = ["Experiment", "Callbacks", "MatchStage", "make_executor", "BASELINES", "CHECKPOINT_VERSION"]

BASELINES = ("lts", "oracle", "random")
MOMENT_TRIES = 3  # seeds the warm-up's moments try for a choice whose render fails
CHECKPOINT_VERSION = 2  # 1: before search strategies (REINFORCE wired into the loop)


@dataclass
class Callbacks:
    """Hooks for progress display; every one is optional."""

    on_start: Callable[[Experiment], None] | None = None
    on_eval: Callable[[EvalResult], None] | None = None
    on_iteration: Callable[[dict[str, Any]], None] | None = None
    on_final: Callable[[str, int, int], None] | None = None  # (which, done, total)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def make_executor(config: Config, context: EvalContext, sim: simulators.Simulator, run_dir: RunDir | None) -> Executor:
    """Ray when ``workers`` or ``ray_address`` asks for it (``parallel`` is then unused);
    else in this process, side by side in threads or one after another (`local_executor`)."""
    if config.workers > 0 or config.ray_address:
        from .ray_exec import RayExecutor

        sim.close()
        return RayExecutor(
            context,
            workers=max(config.workers, 1),
            address=config.ray_address,
            temp_dir=None if run_dir is None else str(run_dir.path.resolve()),
            timeout=config.eval_limit(ray=True),
            setup_timeout=config.setup_timeout or None,
        )
    return local_executor(
        context.build(sim=sim),
        parallel=config.parallel,
        threads=config.threads,
        samples=config.samples,
        timeout=config.eval_limit(ray=False),
    )


class MatchStage:
    """The cheap stage: REINFORCE on −MMD² of the frames' look (``match_elements``, or the
    simulator's `ParamSpace.looks`) and of their labels (``match_labels``, or
    `ParamSpace.contents`), each signal moving its own elements; the rest stay at their
    defaults.  With ``match_moments`` its first iteration solves the mixes instead
    (`solve`): each choice rendered alone, the mix whose mean features fit the target's
    (`lts.matching.simplex_lstsq`); the later iterations move the other elements, and
    there are none when nothing else is left.  Its result is where a strategy starts: the
    matched ψ, with the matched mixes held when ``match_hold`` (they are what its features
    measure frame by frame; continuous elements go on, the counts place them only on a ridge)."""

    def __init__(self, config: Config, space: simulators.ParamSpace, signals: Mapping[str, Sequence[str]]) -> None:
        self.config, self.space = config, space
        moved = [n for names in signals.values() for n in names]
        #: the mixes the first iteration solves (element → its signal), with ``match_moments``
        self.mixes: dict[str, str] = {}
        self.choices: dict[str, tuple[str, ...]] = {}
        for k, names in signals.items():
            for n in names:
                el = space[n]
                if config.match_moments and isinstance(el, simulators.Proportions):
                    self.mixes[n], self.choices[n] = k, tuple(el.choices)
        rest = {k: [n for n in names if n not in self.mixes] for k, names in signals.items()}
        self.rest = {k: v for k, v in rest.items() if v}  # what REINFORCE (or ``match_search``) moves
        #: the stage's iterations: the moments (one), then the search of the rest, if any
        self.iterations = config.match_iterations if self.rest else 1
        self.start = space.default()
        self.solved: dict[str, dict[str, float]] | None = None
        # Two signals move two sets of elements: REINFORCE with an update per signal.  One
        # signal is one reward, which any strategy can search (``match_search``).
        self.signals = len(self.rest) > 1 or config.match_search == "reinforce"
        self.strategy: Strategy | None = self._strategy(None) if self.rest else None
        held = [n for n in moved if isinstance(space[n], (simulators.Proportions, simulators.Categorical))]
        self.held = tuple(held) if config.match_hold else ()
        self.match: TargetMatch | None = None

    def _strategy(self, init: dict[str, Any] | None) -> Strategy:
        """The search of the elements the moments do not solve, from ``init``."""
        config, space = self.config, self.space
        moved = [n for names in self.rest.values() for n in names]
        searched = self.iterations - (1 if self.mixes else 0)
        common: dict[str, Any] = {
            "seed": derive_seed(config.seed, "match"),
            "budget": max(searched, 1) * config.match_samples,
            "batch": config.match_samples,
            "fixed": [n for n in space if n not in moved],
            "init": init,
        }
        if self.signals:
            return ReinforceStrategy(space, signals=self.rest, **common)
        # the warm-up hands over its most recent centre: its distances keep falling, and
        # generations tied with the best would pull in centres it has since left
        options = {"handover": "recent"} if "handover" in strategy_options(config.match_search) else {}
        return make_strategy(config.match_search, space, options=options, **common)

    @property
    def moment_renders(self) -> int:
        """The moments' renders: one per choice of each mix."""
        return sum(len(c) for c in self.choices.values())

    def renders(self, done: int = 0) -> int:
        """Renders the stage makes after its first ``done`` iterations (the moments', then
        ``match_samples`` each of the rest's iterations)."""
        searched = max(self.iterations - max(done, 1 if self.mixes else 0), 0) if self.rest else 0
        return (self.moment_renders if done == 0 else 0) + searched * self.config.match_samples

    def solve(self, render: Callable[[dict[str, Any], int], simulators.Batch]) -> dict[str, float]:
        """The moments: each mix from ``render``'s frames of every choice alone, fitted to the
        target's mean features; returns each mix's residual (the fit's distance).  A render
        that fails (``render(ψ, attempt)`` raises) is tried again with the next seed, up to
        `MOMENT_TRIES` in all."""
        assert self.match is not None
        solved, residual = {}, {}
        for name, signal in self.mixes.items():
            choices = self.choices[name]
            columns = []
            for c in choices:
                for attempt in range(MOMENT_TRIES):
                    try:
                        batch = render({**self.start, name: {x: float(x == c) for x in choices}}, attempt)
                        break
                    except (KeyboardInterrupt, simulators.UserError):
                        raise
                    except Exception as e:  # noqa: BLE001 - said in one line; --resume renders it again
                        if attempt + 1 < MOMENT_TRIES:
                            continue  # recorded in the row's errors; the next seed
                        said = " ".join(str(e).split())  # one line
                        if not isinstance(e, EvalFailure):  # a failed evaluation's reason names its kind
                            said = f"{type(e).__name__}: {said}"
                        raise simulators.UserError(
                            f"the warm-up's moments could not render {name} = {c!r} alone with {MOMENT_TRIES} seeds "
                            f"({said}); fix the simulator and --resume, or start a run with "
                            "match_moments: false"
                        ) from None
                columns.append(self.match.mean_features(batch, signal).cpu())
            try:
                p, residual[name] = mix_fit(
                    torch.stack(columns, 1), self.match.target_mean(signal).cpu(), scale=self.match.scale_free(signal)
                )
            except ValueError:
                raise simulators.UserError(f"the warm-up's moments: {name}'s frames gave non-finite features") from None
            solved[name] = {c: float(x) for c, x in zip(choices, p)}
        self.apply(solved)
        return residual

    def apply(self, solved: Mapping[str, Mapping[str, float]]) -> None:
        """Take the solved mixes (`solve`'s, or a checkpoint's): the rest's search starts there."""
        self.solved = {k: dict(v) for k, v in solved.items()}
        if self.rest:
            self.strategy = self._strategy({**self.start, **self.solved})

    def describe(self) -> dict[str, Any]:
        """``policy.json`` now: the stage's search, or its ψ where nothing is searched."""
        if self.strategy is not None:
            return self.strategy.describe()
        return {"strategy": "moments", "params": point_json(self.space, self.result()[0])["params"]}

    @classmethod
    def build(cls, config: Config, space: simulators.ParamSpace, task: Any, target: Target) -> MatchStage | None:
        """The stage the configuration asks for, or None when there is nothing to match."""
        looks = space.element_names(
            space.look if config.match_elements is None else config.match_elements, "match_elements"
        )
        contents = space.element_names(
            space.content if config.match_labels is None else config.match_labels, "match_labels"
        )
        label_field = getattr(task, "label_field", None)
        if label_field is None or getattr(target.batch, label_field, None) is None:
            contents = ()  # nothing to compare them by
        if config.match_labels is None:  # elements named for the look keep it as their reward
            contents = tuple(n for n in contents if n not in looks)
        elif config.match_iterations and (both := sorted(set(looks) & set(contents))):
            raise simulators.UserError(f"match_elements and match_labels both name {both}; an element has one reward")
        signals = {k: v for k, v in (("look", looks), ("labels", contents)) if v}
        if not config.match_iterations or not config.iterations or not signals:
            return None  # nothing to match, or no search to start (--iterations 0 evaluates nothing)
        stage = cls(config, space, signals)
        stage.match = TargetMatch(
            target.batch,
            label_field if contents else None,
            look=bool(looks),
            classes=config.match_classes,
            distances=tuple(stage.rest),  # what the later iterations measure (the moments take means)
        )
        if len(stage.held) == len(space):
            raise simulators.UserError(
                f"match_hold holds {list(stage.held)}, every element there is: the search would have nothing to move"
            )
        return stage

    def told(self, r: EvalResult) -> Any:
        """What the stage's strategy is told of a render: −its distance per signal (REINFORCE's
        update per signal), or their sum (`EvalResult.reward`) for any other strategy; NaN if it failed."""
        if not r.ok:
            return math.nan
        if not self.signals:
            return r.reward
        assert self.match is not None
        return {k: -r.metrics[m] for k, m in self.match.metrics.items() if m in r.metrics}

    def result(self) -> tuple[dict[str, Any], tuple[str, ...]]:
        """(the ψ a strategy starts from, the elements it holds)."""
        if self.strategy is None:
            return self.space.validate({**self.start, **(self.solved or {})}), self.held
        return self.strategy.recommend(), self.held


class Experiment:
    """One learning-to-simulate run in a run directory."""

    def __init__(self, config: Config, run_dir: RunDir, *, callbacks: Callbacks | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.cb = callbacks or Callbacks()
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
        self.stage = MatchStage.build(config, self.space, self.task, self.target)
        self.match_iterations = self.stage.iterations if self.stage is not None else 0
        self.iterations = self._search_iterations()
        # The strategy is built where the stage ends (it starts from the stage's ψ); built
        # once now as well, so that a bad search or option fails before anything is written.
        self.strategy: Strategy | None = self._make_strategy()
        if self.stage is not None:
            self.strategy = None
        self.iteration = 0
        self.sim_frames = 0
        self.evaluations = 0.0
        self.elapsed_before = 0.0
        self.cpu_before = 0.0
        self.best_state: dict[str, Any] | None = None
        self.stopper = PlateauStopper() if config.stop else None
        self.time_budget = None if config.time_budget is None else parse_duration(config.time_budget)
        self.task_means: list[float | None] = []  # each search iteration's mean reward: what the stopper reads
        self.stopped: str | None = None  # why the search stopped before its iterations ran out
        self._last_task_seconds: float | None = None  # wall seconds of the last search iteration
        self.t_start, self.cpu_start = time.monotonic(), time.process_time()
        self.executor: Executor | None = None
        self._match_eval: Evaluator | None = None
        self._tb: Any = None

    @property
    def warmup_charge(self) -> float:
        """Evaluations the warm-up is charged (m/M a render)."""
        return self.stage.renders() * self.config.match_scenes / self.config.scenes if self.stage is not None else 0.0

    def _search_iterations(self) -> int:
        """The search's iterations: the config's, or as many as the evaluation budget holds."""
        cfg = self.config
        if cfg.budget is None:
            return cfg.iterations
        n = int((cfg.budget - self.warmup_charge) // cfg.samples + 1e-9)
        if n < 1:
            raise simulators.UserError(
                f"budget {cfg.budget:g} does not cover the warm-up ({self.warmup_charge:g} evaluations) and one "
                f"iteration of {cfg.samples}"
            )
        return n

    def _make_strategy(self) -> Strategy:
        cfg = self.config
        init, fixed = self.stage.result() if self.stage is not None else (None, ())
        return make_strategy(
            cfg.search,
            self.space,
            seed=derive_seed(cfg.seed, "search"),
            budget=self.iterations * cfg.samples,
            batch=cfg.samples,
            init=init,
            fixed=fixed,
            options=cfg.options_of(cfg.search),
        )

    @property
    def searcher(self) -> Strategy:
        """The strategy asked now: the stage's during the stage (after its moments), else the search's."""
        if self.stage is not None and self.iteration < self.match_iterations:
            assert self.stage.strategy is not None, "the stage's moments come first"
            return self.stage.strategy
        if self.strategy is None:
            self.strategy = self._make_strategy()
        return self.strategy

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
            # pickled: a strategy's state may hold anything (numpy arrays, a generator, an Optuna
            # study); the checkpoint itself stays loadable with torch.load(weights_only=True)
            "match": None
            if self.stage is None or self.stage.strategy is None
            else pickle.dumps(self.stage.strategy.state_dict()),
            "moments": None if self.stage is None else self.stage.solved,
            "strategy": None if self.strategy is None else pickle.dumps(self.strategy.state_dict()),
            "sim_frames": self.sim_frames,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_s(),
            "best_state": self.best_state,
            "task_means": list(self.task_means),
            "stopped": self.stopped,
            "config": config_to_dict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise simulators.UserError(
                f"checkpoint in {str(self.run_dir.path)!r} was written by an older lts (before search strategies); "
                "start a new run"
            )
        edited = _edited_keys({**LEGACY_DEFAULTS, **state.get("config", {})}, config_to_dict(self.config))
        if edited:
            raise simulators.UserError(
                f"config.yaml in {str(self.run_dir.path)!r} was edited since the checkpoint ({', '.join(edited)}); "
                "put it back, or start a new run (resume may change only --iterations and how evaluations run)"
            )
        self.iteration = int(state["iteration"])
        if self.stage is not None and state.get("moments") is not None:
            self.stage.apply(state["moments"])
        if self.stage is not None and self.stage.strategy is not None and state["match"] is not None:
            self.stage.strategy.load_state_dict(pickle.loads(state["match"]))
        if state["strategy"] is not None:
            self.strategy = self._make_strategy()
            self.strategy.load_state_dict(pickle.loads(state["strategy"]))
        self.sim_frames = int(state["sim_frames"])
        self.evaluations = float(state["evaluations"])
        self.elapsed_before, self.cpu_before = float(state["elapsed_s"]), float(state["cpu_s"])
        self.best_state = state.get("best_state")
        self.task_means = list(state.get("task_means", []))
        # a plateau stop holds while the stopper is on; a budget's is judged again (resume may raise it)
        stopped = state.get("stopped")
        self.stopped = stopped if stopped and stopped.startswith("plateau") and self.config.stop else None
        self.t_start, self.cpu_start = time.monotonic(), time.process_time()

    def save(self, policy: dict[str, Any] | None = None) -> None:
        """The checkpoint and ``policy.json`` (``policy``: the searcher's description, when at hand)."""
        self.run_dir.save_checkpoint(self.state_dict())
        self.run_dir.write_json(POLICY, policy if policy is not None else self.describe())

    def describe(self) -> dict[str, Any]:
        """``policy.json`` now: what the stage or the search holds."""
        if self.stage is not None and self.iteration < self.match_iterations:
            return self.stage.describe()
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
        """The stage, the search's iterations and (``final``) the final evaluations; returns
        the summary (None without the final evaluations)."""
        cfg = self.config
        if self.cb.on_start:
            self.cb.on_start(self)
        try:
            if cfg.tensorboard:
                self._tb = _tensorboard_writer(self.run_dir)
            while self.iteration < self.match_iterations:  # renders here, before Ray may take the simulator
                self.step()
            self.executor = make_executor(cfg, self.context, self.sim, self.run_dir)
            while self.iteration < self.match_iterations + self.iterations and not self._stop_before():
                self.step()
            summary = self.finish() if final else None
        finally:
            if self.executor is not None:
                self.executor.close()
            if self._tb is not None:
                self._tb.close()
        return summary

    def step(self) -> dict[str, Any]:
        """One iteration, ask → evaluate → tell; returns its metrics.jsonl row."""
        if self.stage is not None and self.stage.mixes and self.stage.solved is None:
            return self._moments()
        it, matching, searcher = self.iteration, self.iteration < self.match_iterations, self.searcher
        started = time.monotonic()
        params = searcher.ask(self.config.match_samples if matching else self.config.samples)
        results = self._evaluate(params, it, matching)
        t0 = time.perf_counter()
        if matching and self.stage is not None:
            told = [self.stage.told(r) for r in results]
        else:
            told = [r.reward if r.ok else math.nan for r in results]
        searcher.tell([r.params or {} for r in results], told)
        if self.config.warm_start and not matching and any(r.ok for r in results):
            self.best_state = max((r for r in results if r.ok), key=lambda r: r.reward).state
        self.iteration = it + 1
        row = self._row(it, matching, searcher, results, time.perf_counter() - t0)
        if not matching:
            self._last_task_seconds = time.monotonic() - started
            self.task_means.append(row["reward_mean"])
            left = self.match_iterations + self.iterations - self.iteration
            if self.stopper is not None and left > 0:
                self.stopped = self.stopper.reason(self.task_means)
            row["stopped"] = self.stopped
        # the row's description is policy.json's, unless the warm-up just handed over to the search
        return self._record(row, row["policy"] if searcher is self.searcher else None)

    def _moments(self) -> dict[str, Any]:
        """The stage's first iteration with ``match_moments``: every choice of each mix
        rendered alone (``match_scenes`` scenes, common seeds) and the mixes solved."""
        assert self.stage is not None
        cfg, it, t0 = self.config, self.iteration, time.perf_counter()
        if self._match_eval is None:  # shares the simulator; the executor's evaluator closes it
            self._match_eval = self.context.build(sim=self.sim)
        results: list[EvalResult] = []

        def render(psi: dict[str, Any], attempt: int) -> simulators.Batch:
            # common seeds: the choices differ, the scenes not; a failed render, the next seed
            seed = derive_seed(cfg.seed, "moments", *([attempt] if attempt else []))
            spec = EvalSpec(index=len(results), params=psi, n=cfg.match_scenes, data_seed=seed, train_seed=seed)
            frames: list[simulators.Batch] = []

            def rendered(spec: EvalSpec) -> EvalResult:
                res = EvalResult(index=spec.index, params=psi, reward=0.0)
                assert self._match_eval is not None
                frames.append(self._match_eval.frames(spec, res))
                return res

            assert self._match_eval is not None
            res = self._match_eval.safe(spec, rendered)  # a failure, with its reason, in the row's errors
            results.append(res)
            self.sim_frames += res.frames
            self.evaluations += cfg.match_scenes / cfg.scenes  # charged by what it renders
            if self.cb.on_eval:
                self.cb.on_eval(res)
            if not frames:
                raise EvalFailure(res.error)
            return frames[0]

        residual = self.stage.solve(render)
        self.iteration = it + 1
        row = {
            **self._row(it, True, None, results, time.perf_counter() - t0),
            "rewards": [-r for r in residual.values()],  # −the fit's distance, one per mix
            "reward_mean": -float(np.mean(list(residual.values()))),
            "residuals": residual,
        }
        return self._record(row, None)  # policy.json: the stage's search (if any), else the task's

    def _record(self, row: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
        """Append an iteration's row, checkpoint, log; returns the row."""
        # metrics first, then the checkpoint: a kill in between re-runs this iteration.
        self.run_dir.append_metrics(row)
        self.save(policy)
        if self._tb is not None:
            _tensorboard_log(self._tb, row)
        if self.cb.on_iteration:
            self.cb.on_iteration(row)
        return row

    def _evaluate(self, params: list[dict[str, Any]], it: int, matching: bool) -> list[EvalResult]:
        """Evaluate the asked ψ; a failed one is reported and told as a failure."""
        cfg = self.config
        specs = [
            EvalSpec(
                index=k,
                params=p,
                n=cfg.match_scenes if matching else cfg.scenes,
                data_seed=derive_seed(cfg.seed, "data", it, 0 if cfg.common_seeds else k),
                train_seed=derive_seed(cfg.seed, "train", it, 0 if cfg.common_seeds else k),
                init=self.best_state if cfg.warm_start else None,
                keep_state=cfg.warm_start,
            )
            for k, p in enumerate(params)
        ]
        if matching:
            results = self._match_results(specs)
        else:
            assert self.executor is not None
            results = self.executor.map(specs, on_result=self.cb.on_eval)
        for r in results:
            if r.error is not None:
                warnings.warn(f"iteration {it}, draw {r.index}: evaluation failed ({r.error})")  # it names ψ
            elif not r.ok:
                warnings.warn(f"iteration {it}, draw {r.index}: non-finite reward told as a failure; ψ = {r.params}")
        self.sim_frames += sum(r.frames for r in results)
        self.evaluations += sum(s.n for s in specs) / cfg.scenes  # charged by what it renders
        return results

    def _match_results(self, specs: list[EvalSpec]) -> list[EvalResult]:
        """The stage's evaluations, one after another in this process (a render each)."""
        assert self.stage is not None and self.stage.match is not None
        if self._match_eval is None:  # shares the simulator; the executor's evaluator closes it
            self._match_eval = self.context.build(sim=self.sim)
        look = functools.partial(self._match_eval.look, match=self.stage.match)
        out = []
        for spec in specs:
            out.append(self._match_eval.safe(spec, look))
            if self.cb.on_eval:
                self.cb.on_eval(out[-1])
        return out

    def _row(
        self, it: int, matching: bool, searcher: Strategy | None, results: list[EvalResult], tell_s: float
    ) -> dict[str, Any]:
        """The metrics.jsonl row of iteration ``it`` (``searcher`` None: the stage's moments)."""
        ok = [r for r in results if r.ok]
        stats = getattr(searcher, "last_stats", None) or None
        if searcher is None:
            assert self.stage is not None
            policy, recommended = self.stage.describe(), self.stage.result()[0]
        else:
            policy, recommended = searcher.describe(), searcher.recommend()
        return {
            "iteration": it,
            "phase": "match" if matching else "task",
            "search": "moments" if searcher is None else searcher.name,
            "rewards": [_finite_or_none(r.reward) for r in results],
            "reward_mean": _finite_or_none(float(np.mean([r.reward for r in ok]))) if ok else None,
            "baseline": getattr(searcher, "baseline", None),
            "policy": policy,
            "recommended": recommended,
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
            # REINFORCE's update; the stage's holds one per signal ({"look": …, "labels": …})
            "update": None if stats is None else {k or "task": v.__dict__ for k, v in stats.items()},
        }

    def _stop_before(self) -> bool:
        """Whether the search stops before its next iteration: the stopper said so, or the next
        iteration (and, under a time budget, the final evaluation) would overrun a budget."""
        cfg = self.config
        if self.stopped is None and cfg.budget is not None and self.evaluations + cfg.samples > cfg.budget + 1e-9:
            self.stopped = (
                f"budget: {self.evaluations:g} of {cfg.budget:g} evaluations spent, an iteration costs {cfg.samples}"
            )
        if self.stopped is None and self.time_budget is not None:
            # an evaluation's seconds, from the search's last iteration (or none measured yet)
            last = self._last_task_seconds
            per_eval = last / cfg.samples if last is not None else 0.0
            finals = len(self.final_baselines()) * cfg.final_repeats
            need = per_eval * (cfg.samples + finals)
            if self.elapsed() + need > self.time_budget:
                self.stopped = (
                    f"time budget: {self.elapsed():.0f} s spent of {self.time_budget:.0f} s, and an iteration and the "
                    f"final evaluation take about {need:.0f} s"
                )
        return self.stopped is not None

    @property
    def evaluations_saved(self) -> float:
        """Evaluations the search's stop left unspent, of the iterations it had."""
        left = max(self.match_iterations + self.iterations - self.iteration, 0)
        return float(left * self.config.samples) if self.stopped is not None else 0.0

    # -- final baselines ----------------------------------------------------------------
    def final_baselines(self) -> list[str]:
        """What the final evaluations score (none after a run of no iteration)."""
        if not self.iterations:
            return []
        return [w for w in BASELINES if not (w == "oracle" and self.target.params is None)]

    def final_params(self) -> dict[str, dict[str, Any] | None]:
        return {"lts": self.searcher.recommend(), "oracle": self.target.params, "random": None}

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
        assert self.executor is not None
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

        results = self.executor.map(specs, on_result=on_result) if specs else []
        # A failed final evaluation is retried once, with the seed after the final ones.
        failed = [i for i, r in enumerate(results) if not r.ok]
        again: list[EvalSpec] = []
        for i in failed:
            w = labels[i]
            (spec,) = self.final_specs(chosen[w], per_scene=w == "random", repeats=[cfg.final_repeats + repeat[i]])
            spec.index = len(labels)
            labels.append(w)
            again.append(spec)
        retried = self.executor.map(again, on_result=on_result) if again else []
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
        kinds = [e.get("kind", "crashed") for row in self.run_dir.read_metrics() for e in row.get("errors", [])]
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
            "match_iterations": min(self.match_iterations, self.iteration),
            "stopped": self.stopped,
            "evaluations_saved": self.evaluations_saved,
            "sim_frames": self.sim_frames,
            "evaluations": self.evaluations,
            "elapsed_s": self.elapsed(),
            "cpu_s": self.cpu_s(),
            "learned": chosen["lts"],
            "target": self.target.params,
            "target_source": self.target.source,
            "final_repeats": cfg.final_repeats,
            "errors": errors,
            "seeds": seeds,
            "retries": retries,
            "failures": count_failures(kinds),
        }
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
    group = "match" if row.get("phase") == "match" else "reward"  # the stage's reward is −MMD²
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
