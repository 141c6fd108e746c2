"""One evaluation of ψ: render → [refine] → train → score, and the executors that run
the K evaluations of an iteration (in this process, one after another or side by side in
threads; on Ray in `lts.ray_exec`).

An `EvalContext` is everything a worker needs to build its own simulator, task and
refiner once, and it pickles; an `EvalSpec` is one evaluation, seeded by its own
index so results do not depend on which worker ran it.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

import simulators
from simulators import Batch, Simulator

from . import tasks as tasks_mod
from .tasks import Task, reward_of

__all__ = [
    "EvalContext",
    "EvalSpec",
    "EvalResult",
    "Evaluator",
    "Executor",
    "InProcessExecutor",
    "ThreadedExecutor",
    "available_cores",
    "random_params",
]


@dataclass
class EvalContext:
    """What it takes to build an evaluator anywhere (it pickles)."""

    sim: str
    sim_options: dict[str, Any]
    task: str
    task_options: dict[str, Any]
    target: Batch
    refiner: str | None = None
    device: str = "cpu"

    def build(self, *, sim: Simulator | None = None) -> Evaluator:
        sim = sim if sim is not None else simulators.make(self.sim, **self.sim_options)
        task = tasks_mod.make(self.task, **{"device": self.device, **self.task_options})
        refine = None
        if self.refiner:
            from .refiner import load_refiner

            refine = load_refiner(self.refiner, device=self.device)
        return Evaluator(sim, task, self.target, refine=refine)


@dataclass
class EvalSpec:
    """One evaluation: ψ (or one ψ per scene), scenes, and its own seeds."""

    index: int
    params: dict[str, Any] | None
    n: int
    data_seed: int
    train_seed: int
    per_scene: list[dict[str, Any]] | None = None
    init: dict[str, Any] | None = None
    keep_state: bool = False


@dataclass
class EvalResult:
    index: int
    params: dict[str, Any] | None
    metrics: dict[str, float] = field(default_factory=dict)
    reward: float = math.nan
    render_s: float = 0.0
    refine_s: float = 0.0
    train_s: float = 0.0
    score_s: float = 0.0
    frames: int = 0
    error: str | None = None
    state: dict[str, Any] | None = None
    attempts: int = 1  # how many workers it took (a Ray worker that died mid-evaluation is retried)

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.reward)


class Evaluator:
    """Runs evaluations with one simulator, task, target (and refiner), kept alive."""

    def __init__(
        self, sim: Simulator, task: Task, target: Batch, *, refine: Callable[[Batch], Batch] | None = None
    ) -> None:
        self.sim, self.task, self.target, self.refine = sim, task, target, refine
        # Held around the simulator and the refiner; `ThreadedExecutor` makes it a lock, so
        # that they serve one evaluation at a time (they need not be thread-safe).
        self.sim_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    def __call__(self, spec: EvalSpec) -> EvalResult:
        res = EvalResult(index=spec.index, params=spec.params)
        with self.sim_lock:
            t0 = time.perf_counter()
            if spec.per_scene is not None:
                batch = self.sim.generate_per_scene(spec.per_scene, seed=spec.data_seed)
            else:
                batch = self.sim.generate(spec.params or {}, spec.n, seed=spec.data_seed)
            t1 = time.perf_counter()
            if self.refine is not None:
                batch = self.refine(batch)
            t2 = time.perf_counter()
        model = self.task.fit(batch, seed=spec.train_seed, init=spec.init)
        t3 = time.perf_counter()
        res.metrics = {k: float(v) for k, v in self.task.score(model, self.target).items()}
        t4 = time.perf_counter()
        res.reward = reward_of(self.task, res.metrics)
        res.render_s, res.refine_s, res.train_s, res.score_s = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        res.frames = len(batch)
        if spec.keep_state:
            res.state = self.task.state_of(model)
        return res

    def safe(self, spec: EvalSpec) -> EvalResult:
        """Like calling it, but an exception becomes a failed result (the run goes on)."""
        try:
            return self(spec)
        except (KeyboardInterrupt, simulators.UserError):
            raise
        except Exception as e:  # noqa: BLE001 - reported with its ψ, the update uses the rest
            last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f" at {last.filename}:{last.lineno}" if last else ""
            return EvalResult(index=spec.index, params=spec.params, error=f"{type(e).__name__}: {e}{where}")

    def close(self) -> None:
        self.sim.close()


class Executor(Protocol):
    """Runs a list of evaluations and returns their results in the same order."""

    def map(
        self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None
    ) -> list[EvalResult]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Evaluations one after another in this process."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
        out = []
        for spec in specs:
            r = self.evaluator.safe(spec)
            if on_result is not None:
                on_result(r)
            out.append(r)
        return out

    def close(self) -> None:
        self.evaluator.close()


class ThreadedExecutor:
    """Up to ``parallel`` evaluations at once in this process, each in a thread of its own
    with ``torch_threads`` torch threads.  Small nets use the cores better this way than as
    one evaluation with every core (two single-threaded counting trainings side by side:
    4.2 s per training on two cores, against 6.2 s one at a time with two threads).  The
    simulator and the refiner serve one evaluation at a time; training and scoring
    overlap.  Results come back in the order of ``specs`` and ``on_result`` is called in
    the calling thread, as each one finishes.
    """

    def __init__(self, evaluator: Evaluator, parallel: int, torch_threads: int = 1) -> None:
        if parallel < 2:
            raise ValueError(f"parallel must be at least 2, got {parallel} (use InProcessExecutor)")
        self.evaluator = evaluator
        evaluator.sim_lock = threading.Lock()
        self.parallel = parallel
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(torch_threads)  # the workers' setting (and this thread's)
        self._pool = ThreadPoolExecutor(
            parallel, thread_name_prefix="lts-eval", initializer=torch.set_num_threads, initargs=(torch_threads,)
        )

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
        futures = {self._pool.submit(self.evaluator.safe, spec): i for i, spec in enumerate(specs)}
        out: list[EvalResult | None] = [None] * len(specs)
        try:
            for fut in as_completed(futures):
                r = fut.result()  # a UserError (bad input) is raised here
                if on_result is not None:
                    on_result(r)
                out[futures[fut]] = r
        except BaseException:
            for fut in futures:  # evaluations not started yet are dropped; running ones end
                fut.cancel()
            raise
        return [r for r in out if r is not None]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self._threads_before)
        self.evaluator.close()


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def random_params(space: simulators.ParamSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """Domain randomization: a ψ drawn uniformly afresh for every scene."""
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]
