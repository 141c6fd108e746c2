"""The outer loop: ask → render → train → score → tell, with checkpoints and baselines.

Each iteration draws K ψ from the policy, evaluates each (render M scenes, train the
task, score on the target), and moves the policy by REINFORCE with a moving-average
baseline.  A warm-up of ``match_iterations`` comes first where there is something to
match (`lts.matching`); it trains nothing and has two rewards, each moving its own
elements with an optimiser and baseline of its own: how close the rendered frames look
to the target's (``match_elements``, or the simulator's `ParamSpace.looks`), and how close
their labels are to the target's (``match_labels``, or `ParamSpace.contents`).  With
``match_hold`` the task's iterations then leave the mixes it moved alone; their baseline
starts afresh.  Each phase's learning rates fall on a cosine to ``policy.lr_floor`` of
their value.  Seeds come from the run seed by (stream, iteration, draw), so a
run is reproducible and a resumed run ends where an uninterrupted one would.

After the last iteration the same data size, training budget and seeds are used to
score three datasets: from the final policy's mean ψ (``lts``), from ψ drawn afresh
per scene (``random``, domain randomization) and, for a simulated target, from ψ*
(``oracle``).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import simulators
from policies import Policy, PolicySample, moving_average, reinforce_update

from . import tasks as tasks_mod
from .config import Config, config_to_dict
from .evaluation import EvalContext, EvalResult, EvalSpec, Evaluator, Executor, local_executor, random_params
from .matching import MMD_METRICS, TargetMatch
from .rundir import CHECKPOINT, POLICY, SUMMARY, RunDir
from .seeding import derive_seed
from .targets import Target, load_target

__all__ = ["Experiment", "Callbacks", "make_executor", "BASELINES"]

BASELINES = ("lts", "oracle", "random")


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
        )
    return local_executor(
        context.build(sim=sim), parallel=config.parallel, threads=config.threads, samples=config.samples
    )


class Experiment:
    """One learning-to-simulate run in a run directory."""

    def __init__(self, config: Config, run_dir: RunDir, *, callbacks: Callbacks | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.cb = callbacks or Callbacks()
        self.sim = simulators.make(config.sim, **config.sim_options)
        self.space = self.sim.param_space
        self.target: Target = load_target(
            config.target,
            self.sim,
            task_name=config.task,
            size=config.target_size,
            run_seed=config.seed,
            sim_name=config.sim,
        )
        self.context = EvalContext(
            sim=config.sim,
            sim_options=config.sim_options,
            task=config.task,
            task_options=config.task_options,
            target=self.target.batch,
            refiner=config.refiner,
            device=config.device,
        )
        if config.refiner and not Path(config.refiner).is_file():
            raise simulators.UserError(f"refiner checkpoint {config.refiner!r} does not exist")
        # Fails early (a task the target cannot serve) before any iteration runs.
        task = tasks_mod.make(config.task, **{"device": config.device, **config.task_options})
        task.check_target(self.target.batch)
        pc = config.policy
        self.policy = Policy(self.space, init_std=pc.init_std, init_logit_std=pc.init_logit_std, min_std=pc.min_std)
        columns = self.space.priority if pc.columns is None else pc.columns
        self.columns = self.space.column_names(columns, "policy.columns")
        self.match: TargetMatch | None = None
        self._match_eval: Evaluator | None = None
        # The warm-up runs where there is something to match, with a reward per signal: how
        # the frames look moves the named elements (or the simulator's `ParamSpace.looks`),
        # what they contain (the task's labels) moves `ParamSpace.contents` (or the named).
        looks = self.space.element_names(
            self.space.look if config.match_elements is None else config.match_elements, "match_elements"
        )
        contents = self.space.element_names(
            self.space.content if config.match_labels is None else config.match_labels, "match_labels"
        )
        label_field = getattr(task, "label_field", None)
        if label_field is None or getattr(self.target.batch, label_field, None) is None:
            contents = ()  # nothing to compare them by
        if config.match_labels is None:  # elements named for the look keep it as their reward
            contents = tuple(n for n in contents if n not in looks)
        elif config.match_iterations and (both := sorted(set(looks) & set(contents))):
            raise simulators.UserError(f"match_elements and match_labels both name {both}; an element has one reward")
        signals = {k: v for k, v in (("look", looks), ("labels", contents)) if v}
        self.match_iterations = config.match_iterations if signals else 0
        self.match_optimizers: dict[str, torch.optim.Optimizer] = {}
        self.match_baselines: dict[str, float | None] = {}
        if self.match_iterations:
            self.match = TargetMatch(self.target.batch, label_field if contents else None, look=bool(looks))
            for k, names in signals.items():
                self.match_optimizers[k] = torch.optim.Adam(self.policy.param_groups(pc.lr, pc.logit_lr, names))
                self.match_baselines[k] = None
        # With match_hold the task's iterations leave the mixes the warm-up moved where it left
        # them: those its features measure frame by frame (which weather, which car type).
        # Continuous elements go on: the counts place them only on a ridge (more cars on
        # longer roads count the same), and the task's reward tells the points on it apart.
        moved = looks + contents if self.match_iterations and config.match_hold else ()
        held = [n for n in moved if isinstance(self.space[n], (simulators.Proportions, simulators.Categorical))]
        groups = self.policy.param_groups(pc.lr, pc.logit_lr, [n for n in self.space if n not in held])
        if not groups:
            raise simulators.UserError(
                f"match_hold holds {held}, every element there is: the task's iterations would have nothing to move"
            )
        self.optimizer = torch.optim.Adam(groups)
        self.iteration = 0
        self.baseline: float | None = None
        self.sim_frames = 0
        self.elapsed_before = 0.0
        self.best_state: dict[str, Any] | None = None
        self.t_start = time.monotonic()
        self.executor: Executor | None = None
        self._tb: Any = None

    # -- state ---------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t_start)

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "sim_frames": self.sim_frames,
            "elapsed_s": self.elapsed(),
            "best_state": self.best_state,
            "match_optimizers": {k: o.state_dict() for k, o in self.match_optimizers.items()},
            "match_baselines": dict(self.match_baselines),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.sim_frames = int(state["sim_frames"])
        self.elapsed_before = float(state["elapsed_s"])
        self.best_state = state.get("best_state")
        saved = state.get("match_optimizers")
        if saved is None and state.get("match_optimizer") is not None:
            # written before the label signal: one optimiser; mid-warm-up, `baseline` was the warm-up's
            saved = {"look": state["match_optimizer"]}
            if self.iteration < self.match_iterations and "look" in self.match_baselines:
                self.match_baselines["look"], self.baseline = self.baseline, None
        for k, o in self.match_optimizers.items():
            if k in (saved or {}):
                o.load_state_dict(saved[k])
        self.match_baselines.update(
            {k: v for k, v in state.get("match_baselines", {}).items() if k in self.match_baselines}
        )
        self.t_start = time.monotonic()

    def save(self) -> None:
        self.run_dir.save_checkpoint(self.state_dict())
        self.run_dir.write_json(POLICY, self.policy.to_json())

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
    def run(self) -> dict[str, Any]:
        cfg = self.config
        if self.cb.on_start:
            self.cb.on_start(self)
        try:
            if cfg.tensorboard:
                self._tb = _tensorboard_writer(self.run_dir)
            while self.iteration < self.match_iterations:  # renders here, before Ray may take the simulator
                self.step()
            self.executor = make_executor(cfg, self.context, self.sim, self.run_dir)
            while self.iteration < self.match_iterations + cfg.iterations:
                self.step()
            summary = self.finish()
        finally:
            if self.executor is not None:
                self.executor.close()
            if self._tb is not None:
                self._tb.close()
        return summary

    def _match_results(self, specs: list[EvalSpec]) -> list[EvalResult]:
        """The warm-up's evaluations, one after another in this process (a render each)."""
        assert self.match is not None
        if self._match_eval is None:  # shares the simulator; the executor's evaluator closes it
            self._match_eval = self.context.build(sim=self.sim)
        look = functools.partial(self._match_eval.look, match=self.match)
        out = []
        for spec in specs:
            out.append(self._match_eval.safe(spec, look))
            if self.cb.on_eval:
                self.cb.on_eval(out[-1])
        return out

    def step(self) -> dict[str, Any]:
        """One policy iteration; returns its metrics.jsonl row."""
        cfg, it = self.config, self.iteration
        matching = it < self.match_iterations
        if self.match_iterations and it == self.match_iterations:
            self.baseline = None  # a new reward: its baseline starts afresh
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "policy", it))
        k_draws = cfg.match_samples if matching else cfg.samples
        sample = self.policy.sample(k_draws, gen, design=cfg.policy.sampling, columns=self.columns)
        specs = [
            EvalSpec(
                index=k,
                params=sample.params[k],
                n=cfg.match_scenes if matching else cfg.scenes,
                data_seed=derive_seed(cfg.seed, "data", it, 0 if cfg.common_seeds else k),
                train_seed=derive_seed(cfg.seed, "train", it, 0 if cfg.common_seeds else k),
                init=self.best_state if cfg.warm_start else None,
                keep_state=cfg.warm_start,
            )
            for k in range(k_draws)
        ]
        if matching:
            results = self._match_results(specs)
        else:
            assert self.executor is not None
            results = self.executor.map(specs, on_result=self.cb.on_eval)
        t0 = time.perf_counter()
        ok = [r for r in results if r.ok]
        for r in results:
            if r.error is not None:
                warnings.warn(f"iteration {it}, draw {r.index}: evaluation failed ({r.error}); ψ = {r.params}")
            elif not r.ok:
                warnings.warn(f"iteration {it}, draw {r.index}: non-finite reward dropped; ψ = {r.params}")
        stats = None
        if ok:
            sub = PolicySample(
                raw={n: v[[r.index for r in ok]] for n, v in sample.raw.items()}, params=[r.params for r in ok]
            )
            if matching:  # one update per signal, each on its own elements with its own baseline
                stats = {}
                for k, opt in self.match_optimizers.items():
                    _anneal(opt, it, self.match_iterations, cfg.policy.lr_floor)
                    rewards = torch.tensor([-r.metrics[MMD_METRICS[k]] for r in ok], dtype=torch.float64)
                    stats[k], self.match_baselines[k] = self._update(opt, sub, rewards, self.match_baselines[k])
            else:
                _anneal(self.optimizer, it - self.match_iterations, cfg.iterations, cfg.policy.lr_floor)
                rewards = torch.tensor([r.reward for r in ok], dtype=torch.float64)
                stats, self.baseline = self._update(self.optimizer, sub, rewards, self.baseline)
                if cfg.warm_start:
                    self.best_state = max(ok, key=lambda r: r.reward).state
        update_s = time.perf_counter() - t0
        self.sim_frames += sum(r.frames for r in results)
        self.iteration = it + 1
        row = {
            "iteration": it,
            "phase": "match" if matching else "task",
            "rewards": [_finite_or_none(r.reward) for r in results],
            "reward_mean": _finite_or_none(float(np.mean([r.reward for r in ok]))) if ok else None,
            "baseline": self._row_baseline(matching),
            "policy": self.policy.to_json(),
            "sim_frames": self.sim_frames,
            "elapsed_s": self.elapsed(),
            "params": [r.params for r in results],
            "metrics": [r.metrics for r in results],
            "errors": [{"draw": r.index, "error": r.error, "params": r.params} for r in results if r.error],
            "attempts": [r.attempts for r in results],
            "timing_s": {
                "render": sum(r.render_s for r in results),
                "refine": sum(r.refine_s for r in results),
                "train": sum(r.train_s for r in results),
                "score": sum(r.score_s for r in results),
                "update": update_s,
            },
            # the warm-up's: one per signal ({"look": …, "labels": …})
            "update": None if stats is None else _stats_json(stats),
        }
        # metrics first, then the checkpoint: a kill in between re-runs this iteration.
        self.run_dir.append_metrics(row)
        self.save()
        if self._tb is not None:
            _tensorboard_log(self._tb, row)
        if self.cb.on_iteration:
            self.cb.on_iteration(row)
        return row

    def _update(
        self, optimizer: torch.optim.Optimizer, sub: PolicySample, rewards: torch.Tensor, baseline: float | None
    ) -> tuple[Any, float]:
        """One REINFORCE step; returns its stats and the moved baseline."""
        pc = self.config.policy
        stats = reinforce_update(
            self.policy,
            optimizer,
            sub,
            rewards,
            float(rewards.mean()) if baseline is None else baseline,
            entropy_coef=pc.entropy_coef,
            max_grad_norm=pc.max_grad_norm or None,
        )
        return stats, moving_average(baseline, rewards, pc.baseline_decay)

    def _row_baseline(self, matching: bool) -> float | None:
        """The baseline of the row's reward (in the warm-up, −the sum of the MMD²s)."""
        if not matching:
            return self.baseline
        values = list(self.match_baselines.values())
        return None if any(b is None for b in values) else float(sum(values))

    # -- final baselines ----------------------------------------------------------------
    def final_params(self) -> dict[str, dict[str, Any] | None]:
        mean = self.policy.mean()
        for name, el in self.space.items():
            if isinstance(el, simulators.Integer):
                mean[name] = int(round(mean[name]))
        return {"lts": self.space.validate(mean), "oracle": self.target.params, "random": None}

    def finish(self) -> dict[str, Any]:
        cfg = self.config
        assert self.executor is not None
        chosen = self.final_params()
        which = [w for w in BASELINES if not (w == "oracle" and chosen["oracle"] is None)]
        specs, labels = [], []
        for w in which:
            for r in range(cfg.final_repeats):
                data_seed = derive_seed(cfg.seed, "final-data", r)
                per_scene = random_params(self.space, cfg.scenes, data_seed) if w == "random" else None
                specs.append(
                    EvalSpec(
                        index=len(specs),
                        params=chosen[w],
                        n=cfg.scenes,
                        data_seed=data_seed,
                        train_seed=derive_seed(cfg.seed, "final-train", r),
                        per_scene=per_scene,
                    )
                )
                labels.append(w)
        done = [0]

        def on_result(res: EvalResult) -> None:
            done[0] += 1
            if self.cb.on_final:
                self.cb.on_final(labels[res.index], done[0], len(specs))

        results = self.executor.map(specs, on_result=on_result) if specs else []
        rewards: dict[str, float | None] = {}
        metrics: dict[str, dict[str, float]] = {}
        for w in which:
            rs = [r for r, lab in zip(results, labels) if lab == w and r.ok]
            rewards[w] = float(np.mean([r.reward for r in rs])) if rs else None
            keys = rs[0].metrics.keys() if rs else []
            metrics[w] = {k: float(np.mean([r.metrics[k] for r in rs])) for k in keys}
        from . import tasks as tasks_mod

        task_cls = tasks_mod.make(cfg.task, **{"device": cfg.device, **cfg.task_options})
        summary = {
            "reward": rewards,
            "metric": task_cls.metric,
            "higher_is_better": task_cls.higher_is_better,
            "metrics": metrics,
            "iterations": self.iteration,
            "match_iterations": min(self.match_iterations, self.iteration),
            "sim_frames": self.sim_frames,
            "elapsed_s": self.elapsed(),
            "learned": chosen["lts"],
            "target": self.target.params,
            "target_source": self.target.source,
            "final_repeats": cfg.final_repeats,
        }
        self.run_dir.write_json(SUMMARY, summary)
        return summary


def _stats_json(stats: Any) -> dict[str, Any]:
    return {k: v.__dict__ for k, v in stats.items()} if isinstance(stats, dict) else stats.__dict__


def _anneal(optimizer: torch.optim.Optimizer, it: int, iterations: int, floor: float) -> None:
    """Iteration ``it`` of a phase of ``iterations``: each group's learning rate on a cosine
    from its initial value (first iteration) to ``floor`` times it (last iteration)."""
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
        g["lr"] = g["initial_lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * it / max(iterations - 1, 1))))


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
    group = "match" if row.get("phase") == "match" else "reward"  # the warm-up's reward is −MMD²
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
