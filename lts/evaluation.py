"""One evaluation of ψ: render → [refine] → train → score, and the executors that run
the K evaluations of an iteration (in this process, one after another or side by side in
threads; on Ray in `lts.ray_exec`).

An `EvalContext` is everything a worker needs to build its own simulator, task and
refiner once, and it pickles; an `EvalSpec` is one evaluation, seeded by its own
index so results do not depend on which worker ran it.

Every batch rendered (and refined) passes `lts.checks.check_batch`, and every score
`check_metrics`, before it counts: an evaluation whose data or score is bad fails with its
reason and ``failure`` kind, as one that raises or runs past its time limit does, and is
never told as a reward.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

import simulators
from simulators import Batch, Simulator

from . import tasks as tasks_mod
from .checks import (
    BadBatch,
    EvalFailure,
    EvalTimeout,
    call_within,
    check_batch,
    check_metrics,
    short_params,
    sim_label,
    task_needs,
)
from .matching import TargetMatch
from .tasks import Task, reward_of

__all__ = [
    "EvalContext",
    "EvalSpec",
    "EvalResult",
    "SPLITS",
    "Evaluator",
    "Executor",
    "InProcessExecutor",
    "ThreadedExecutor",
    "at_once",
    "available_cores",
    "local_executor",
    "set_threads",
    "random_params",
]


_LOCK = type(threading.Lock())

#: The target splits an evaluation can be scored on.
SPLITS: tuple[str, ...] = ("validation", "test")


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
    test: Batch | None = None  # the target's held-out test split (`EvalSpec.split`)

    def build(self, *, sim: Simulator | None = None) -> Evaluator:
        sim = sim if sim is not None else simulators.make(self.sim, **self.sim_options)
        task = tasks_mod.make(self.task, **{"device": self.device, **self.task_options})
        refine = None
        if self.refiner:
            from .refiner import load_refiner

            refine = load_refiner(self.refiner, device=self.device)
        evaluator = Evaluator(sim, task, self.target, refine=refine, test=self.test, sim_name=self.sim)
        # after a timed-out evaluation, a fresh simulator (the old one may still be in use)
        evaluator.remake_sim = lambda: simulators.make(self.sim, **self.sim_options)
        return evaluator


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
    split: str = "validation"  # the target split scored: "validation" (the reward) or "test"
    also_test: bool = False  # score the same model on the test split too (`EvalResult.test_metrics`)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"EvalSpec.split {self.split!r}: expected one of {', '.join(SPLITS)}")


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
    failure: str | None = None  # with ``error``: its kind, one of `lts.checks.FAILURE_KINDS`
    state: dict[str, Any] | None = None
    attempts: int = 1  # how many workers it took (a Ray worker that died mid-evaluation is retried)
    test_metrics: dict[str, float] | None = None  # with `EvalSpec.also_test`: the test split's
    test_reward: float = math.nan

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.reward)


class Evaluator:
    """Runs evaluations with one simulator, task, target (its validation batch, and its
    test batch when there is one) and refiner, kept alive."""

    def __init__(
        self,
        sim: Simulator,
        task: Task,
        target: Batch,
        *,
        refine: Callable[[Batch], Batch] | None = None,
        test: Batch | None = None,
        sim_name: str | None = None,
    ) -> None:
        self.sim, self.task, self.target, self.refine, self.test = sim, task, target, refine, test
        self.sim_name = sim_label(sim, sim_name)
        self.needs = task_needs(task)
        #: builds a fresh simulator; used when an evaluation timed out in this process
        self.remake_sim: Callable[[], Simulator] | None = None
        self._waits = threading.local()  # per evaluation thread: its seconds waited for sim_lock
        # Held around the simulator and the refiner; `ThreadedExecutor` makes it a lock, so
        # that they serve one evaluation at a time (they need not be thread-safe).
        self.sim_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._closed = False

    def frames(self, spec: EvalSpec, res: EvalResult) -> Batch:
        """Render (and refine) the spec's scenes, timing both into ``res``."""
        with self._holding_sim():
            t0 = time.perf_counter()
            if spec.per_scene is not None:
                batch = self.sim.generate_per_scene(spec.per_scene, seed=spec.data_seed)
            else:
                batch = self.sim.generate(spec.params or {}, spec.n, seed=spec.data_seed)
            self.check(batch, spec, f"simulator {self.sim_name}")  # timed as part of the render
            t1 = time.perf_counter()
            if self.refine is not None:
                batch = self.refine(batch)
                self.check(batch, spec, f"the refiner (on simulator {self.sim_name}'s frames)")
            t2 = time.perf_counter()
        res.render_s, res.refine_s, res.frames = t1 - t0, t2 - t1, len(batch)
        return batch

    @contextlib.contextmanager
    def _holding_sim(self) -> Iterator[None]:
        """``sim_lock`` held; a lock swapped while waiting (`_abandon`, after a timeout) is
        followed, as the old one stays with the hung evaluation."""
        lock: Any = self.sim_lock
        if not isinstance(lock, _LOCK):
            with lock:
                yield
            return
        wait = getattr(self._waits, "seconds", None)  # the time limit (`safe`) does not count the wait
        if wait is not None:
            wait[1] = time.monotonic()
        while not lock.acquire(timeout=0.05):
            lock = self.sim_lock
        if wait is not None:
            wait[0], wait[1] = wait[0] + time.monotonic() - wait[1], None
        try:
            yield
        finally:
            lock.release()

    def check(self, batch: Batch, spec: EvalSpec, source: str) -> None:
        """`check_batch` for what ``source`` made for ``spec``; the error names ψ and the seed."""
        n = len(spec.per_scene) if spec.per_scene is not None else spec.n
        try:
            check_batch(batch, n=n, needs=self.needs)
        except BadBatch as e:
            e.args = (f"{e.kind}: {self._where(spec, source)}: {e}",)
            raise

    def _where(self, spec: EvalSpec, source: str | None = None) -> str:
        return f"{source or 'simulator ' + self.sim_name}, {short_params(spec.params)}, seed {spec.data_seed}"

    def __call__(self, spec: EvalSpec) -> EvalResult:
        res = EvalResult(index=spec.index, params=spec.params)
        batch = self.frames(spec, res)
        t2 = time.perf_counter()
        model = self.task.fit(batch, seed=spec.train_seed, init=spec.init)
        t3 = time.perf_counter()
        res.metrics = {k: float(v) for k, v in self.task.score(model, self.split_batch(spec.split)).items()}
        check_metrics(res.metrics, spec.split)
        res.reward = reward_of(self.task, res.metrics)
        if spec.also_test:
            res.test_metrics = {k: float(v) for k, v in self.task.score(model, self.split_batch("test")).items()}
            check_metrics(res.test_metrics, "test")
            res.test_reward = reward_of(self.task, res.test_metrics)
        res.train_s, res.score_s = t3 - t2, time.perf_counter() - t3
        if spec.keep_state:
            res.state = self.task.state_of(model)
        return res

    def split_batch(self, split: str) -> Batch:
        """The target batch of ``split`` ("validation" or "test")."""
        if split == "validation":
            return self.target
        if split == "test":
            if self.test is None:
                raise simulators.UserError("an evaluation asked for the target's test split, and this target has none")
            return self.test
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")

    def look(self, spec: EvalSpec, match: TargetMatch) -> EvalResult:
        """The loop's warm-up: render (and refine) only, rewarded by −the distances that ``match``
        gives (of the frames' look and of their labels to the target's, `lts.matching`);
        nothing is trained."""
        res = EvalResult(index=spec.index, params=spec.params)
        batch = self.frames(spec, res)
        t0 = time.perf_counter()
        distances = match(batch)
        res.score_s = time.perf_counter() - t0
        res.metrics = {match.metrics[k]: v for k, v in distances.items()}
        res.reward = -sum(res.metrics.values())
        return res

    def safe(
        self, spec: EvalSpec, run: Callable[[EvalSpec], EvalResult] | None = None, timeout: float | None = None
    ) -> EvalResult:
        """Like calling it (or ``run``), but an exception, a bad batch or score (`lts.checks`),
        or ``timeout`` seconds passed (None: no limit) become a failed result (the run goes on).

        Past ``timeout`` the evaluation's thread is left running, as no thread can be stopped
        from outside, and its result is dropped; the evaluator takes a fresh simulator
        (``remake_sim``) and lock, as the old ones may still be held.  Only Ray (`lts.ray_exec`)
        ends a hung evaluation, by ending its worker process."""
        # seconds spent waiting for the simulator, which another evaluation held; since when, if waiting now
        waited: list[Any] = [0.0, None]

        def seconds_waited() -> float:
            return float(waited[0]) + (time.monotonic() - waited[1] if waited[1] is not None else 0.0)

        def evaluate() -> EvalResult:
            self._waits.seconds = waited
            return (run or self)(spec)

        try:
            return call_within(evaluate, timeout, f"evaluation {spec.index}", waited=seconds_waited)
        except (KeyboardInterrupt, simulators.UserError):
            raise
        except EvalFailure as e:
            if isinstance(e, EvalTimeout):
                self._abandon()
            # a bad batch names its source (`check`); a score or a timeout, the simulator
            said = str(e) if isinstance(e, BadBatch) else f"{e.kind}: {self._where(spec)}: {e}"
            return EvalResult(index=spec.index, params=spec.params, error=said, failure=e.kind)
        except Exception as e:  # noqa: BLE001 - reported with its ψ, the update uses the rest
            last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
            where = f" at {last.filename}:{last.lineno}" if last else ""
            error = f"crashed: {self._where(spec)}: {type(e).__name__}: {e}{where}"
            return EvalResult(index=spec.index, params=spec.params, error=error, failure="crashed")

    def _abandon(self) -> None:
        """After a timeout: leave the simulator (and its lock) to the thread still using them."""
        if isinstance(self.sim_lock, _LOCK):
            self.sim_lock = threading.Lock()
        if self.remake_sim is not None:
            self.sim = self.remake_sim()

    def close(self) -> None:
        """Close the simulator (once; the executors that own this evaluator close it too)."""
        if not self._closed:
            self._closed = True
            self.sim.close()


class Executor(Protocol):
    """Runs a list of evaluations and returns their results in the same order."""

    def map(
        self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None
    ) -> list[EvalResult]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Evaluations one after another in this process."""

    def __init__(self, evaluator: Evaluator, timeout: float | None = None) -> None:
        self.evaluator = evaluator
        self.timeout = timeout  # seconds per evaluation (`Evaluator.safe`); None: no limit

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
        out = []
        for spec in specs:
            r = self.evaluator.safe(spec, timeout=self.timeout)
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
    8.7 s each, against 6.4 s one at a time with two threads).  The simulator and the
    refiner serve one evaluation at a time; training and scoring overlap.  Results come
    back in the order of ``specs``, and ``on_result`` is called in the calling thread as
    each one finishes.  On Ctrl-C (or a `UserError`) no new evaluation starts and the
    caller goes on at once (to write its checkpoint); `close` then waits for the ones
    still running, whose results are dropped (a thread cannot be stopped inside torch,
    and one still running when the interpreter exits would abort it).
    """

    def __init__(
        self, evaluator: Evaluator, parallel: int, torch_threads: int = 1, timeout: float | None = None
    ) -> None:
        if parallel < 2:
            raise ValueError(f"parallel must be at least 2, got {parallel} (use InProcessExecutor)")
        self.evaluator = evaluator
        evaluator.sim_lock = threading.Lock()
        self.parallel = parallel
        self.torch_threads = torch_threads
        self.timeout = timeout  # seconds per evaluation (`Evaluator.safe`); None: no limit
        self._threads_before = torch.get_num_threads()
        torch.set_num_threads(torch_threads)
        self._closed = False
        self._workers: list[threading.Thread] = []

    def _work(self, todo: queue.SimpleQueue, done: queue.SimpleQueue, stop: threading.Event) -> None:
        # A thread's first torch call reads the process-wide count, which the renderer and
        # the classify task set and restore; fix this thread's own count now.
        torch.set_num_threads(self.torch_threads)
        torch.get_num_threads()
        while not stop.is_set():
            try:
                i, spec = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, self.evaluator.safe(spec, timeout=self.timeout), None))
            except BaseException as e:  # noqa: BLE001 - a UserError, re-raised by the caller
                done.put((i, None, e))

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
        todo: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for item in enumerate(specs):
            todo.put(item)
        stop = threading.Event()
        workers = [
            threading.Thread(target=self._work, args=(todo, done, stop), name=f"lts-eval-{k}")
            for k in range(min(self.parallel, len(specs)))
        ]
        for w in workers:
            w.start()
        self._workers = workers
        out: list[EvalResult | None] = [None] * len(specs)
        try:
            for _ in specs:
                i, r, err = done.get()
                if err is not None:
                    raise err
                if on_result is not None:
                    on_result(r)
                out[i] = r
        except BaseException:
            stop.set()  # evaluations not started yet are dropped; running ones end in `close`
            raise
        return [r for r in out if r is not None]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        running = [w for w in self._workers if w.is_alive()]
        if running:
            print(f"waiting for {len(running)} evaluation(s) still running to end …", file=sys.stderr, flush=True)
        for w in running:
            w.join()
        torch.set_num_threads(self._threads_before)
        self.evaluator.close()


def at_once(*, parallel: int, threads: int, samples: int) -> tuple[int, int]:
    """How many in-process evaluations run side by side, and the torch threads of each:
    ``parallel`` (0: one per core, or per ``threads`` when set, at most ``samples``)
    sharing ``threads`` torch threads (0: one per core)."""
    cores = threads or available_cores()
    n = min(parallel or cores, samples)
    return n, max(1, cores // n)


def local_executor(
    evaluator: Evaluator, *, parallel: int, threads: int, samples: int, timeout: float | None = None
) -> Executor:
    """The in-process executor a configuration asks for (`at_once`): threads side by side,
    or one evaluation after another when that is 1; ``timeout``: seconds per evaluation."""
    n, each = at_once(parallel=parallel, threads=threads, samples=samples)
    if n > 1:
        return ThreadedExecutor(evaluator, n, torch_threads=each, timeout=timeout)
    return InProcessExecutor(evaluator, timeout=timeout)


def set_threads(n: int) -> None:
    """Set torch's CPU threads for this process (0 keeps torch's default)."""
    if n > 0:
        torch.set_num_threads(n)


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
