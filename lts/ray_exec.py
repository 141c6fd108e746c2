"""Ray execution of an iteration's K evaluations (``--workers N`` / ``--ray-address ADDR``).

`RayExecutor` keeps N Ray actors; each builds its evaluator (simulator, task, refiner)
once from the picklable `EvalContext` and keeps it alive between evaluations, so a
CARLA worker keeps its server connection.  Evaluations go to actors as they free up
and come back in spec order.  Every evaluation is seeded by its own spec, never by the
worker that ran it, so a run gives the same results on any number of workers.

Faults: an evaluation that raises comes back as a failed `EvalResult` (the worker's
`Evaluator.safe`); a worker process that dies mid-evaluation is replaced and the
evaluation is retried, at most ``max_retries`` times, after which it comes back failed.
An evaluation past ``timeout`` seconds comes back failed ("timed out", not retried: the
same seeds would hang again); its worker is ended, which is the only way to stop it, and
replaced.  A replaced worker takes evaluations once its set-up is done, so that its set-up
does not count against an evaluation's time.  A `UserError` (a bad configuration, no
simulator server) stops the run, and so does a worker's set-up that crashes (one line,
`SetupError`) or takes longer than ``setup_timeout``.

Ray is imported only here, and only when an executor is built.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from simulators.errors import SetupError, UserError

from .checks import short_params
from .evaluation import EvalContext, EvalResult, EvalSpec

__all__ = ["RayExecutor", "import_ray", "init_local_ray", "ray_temp_dir", "shutdown_local_ray"]

INSTALL_HINT = 'pip install -e ".[ray]"'

# Ray puts its Unix sockets under <temp>/session_<date>_<time>_<usec>_<pid>/sockets/;
# a socket path longer than 107 bytes (AF_UNIX) fails, so the temp dir must be short.
_SESSION_TAIL = len("/lts-ray-xxxxxxxx/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
_MAX_SOCKET_PATH = 107


def import_ray() -> Any:
    """The ``ray`` module, or a `UserError` naming the install command."""
    try:
        import ray
    except ImportError:
        raise UserError(f"running on Ray (--workers, --ray-address) needs Ray: {INSTALL_HINT}") from None
    return ray


def ray_temp_dir(preferred: str | os.PathLike[str] | None = None) -> str:
    """A fresh directory for a local Ray's session files, short enough for its sockets.

    ``preferred`` (e.g. the run directory) is used when its path is short enough,
    else the system temp dir, else ``/tmp``.
    """
    candidates = [preferred, tempfile.gettempdir(), "/tmp"]
    for base in candidates:
        if base is None:
            continue
        base = os.path.abspath(os.fspath(base))
        if os.path.isdir(base) and len(base) + _SESSION_TAIL <= _MAX_SOCKET_PATH:
            return tempfile.mkdtemp(prefix="lts-ray-", dir=base)
    raise UserError(
        f"no temporary directory with a path short enough for Ray's sockets (tried {candidates}); "
        "set TMPDIR to a short path such as /tmp"
    )


def init_local_ray(num_cpus: int, *, temp_dir: str | None = None, env_vars: dict[str, str] | None = None) -> str:
    """Start a quiet local Ray (no dashboard, no usage stats, worker output not echoed).

    Returns the directory holding Ray's session files (remove it after `ray.shutdown`).
    """
    # Read by ray.init: no usage-stats prompt or upload.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = import_ray()
    tmp = ray_temp_dir(temp_dir)
    kwargs: dict[str, Any] = {}
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": dict(env_vars)}
    # Ray enables token authentication for a new local cluster (its default, kept) and
    # warns about it on every start; that warning is noise for a run's user.
    auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = auth_log.level
    auth_log.setLevel(logging.ERROR)
    try:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
            ignore_reinit_error=True,
            _temp_dir=tmp,
            **kwargs,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        auth_log.setLevel(level)
    return tmp


def shutdown_local_ray(temp_dir: str | None) -> None:
    """Shut Ray down and remove the session directory `init_local_ray` made."""
    ray = import_ray()
    ray.shutdown()
    if temp_dir:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _auth_hint(address: str) -> str:
    # Ray turns token authentication on by itself only for "auto" (a local `ray start`).
    if address != "auto" and "RAY_AUTH_MODE" not in os.environ:
        return (
            "; if the cluster uses token authentication, set RAY_AUTH_MODE=token "
            "(the token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
        )
    return ""


def _died_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Errors that mean the worker process (not the evaluation) failed."""
    ex = ray.exceptions
    names = ("RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


class _Worker:
    """One Ray actor: builds its evaluator once and runs evaluations with it."""

    def __init__(self, context: EvalContext, worker_index: int, pass_index: bool, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        if pass_index:
            # CARLA: one server per worker; the adapter picks ports[worker_index % len(ports)].
            context = dataclasses.replace(context, sim_options={**context.sim_options, "worker_index": worker_index})
        self.evaluator: Any = None
        self.error: BaseException | None = None
        try:
            self.evaluator = context.build()
        except Exception as e:  # noqa: BLE001 - handed to the driver, which raises it there
            self.error = e

    def ready(self) -> tuple[int, BaseException | None]:
        return os.getpid(), self.error

    def run(self, spec: EvalSpec) -> EvalResult | BaseException:
        if self.evaluator is None:
            if isinstance(self.error, UserError):
                return self.error
            return EvalResult(index=spec.index, params=spec.params, error=f"worker set-up failed: {self.error!r}")
        try:
            return self.evaluator.safe(spec)
        except UserError as e:
            return e  # raised again by the driver: a user error stops the run

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None


class RayExecutor:
    """Runs evaluations on ``workers`` Ray actors, each keeping its simulator alive.

    With ``address`` it joins an existing cluster (``"auto"``: the one ``ray start``
    made on this machine); otherwise it starts a local Ray with ``workers`` CPUs, or
    uses the one this process already started.  ``threads`` sets each worker's torch
    thread count (default 1, which is also what Ray's one-CPU actors get by default).
    """

    def __init__(
        self,
        context: EvalContext,
        *,
        workers: int,
        address: str | None = None,
        temp_dir: str | None = None,
        max_retries: int = 2,
        threads: int | None = None,
        timeout: float | None = None,
        setup_timeout: float | None = None,
    ) -> None:
        if workers < 1:
            raise UserError(f"workers must be >= 1, got {workers}")
        if max_retries < 0:
            raise UserError(f"max_retries must be >= 0, got {max_retries}")
        ray = import_ray()
        self._ray = ray
        self.context = context
        self.workers = int(workers)
        self.max_retries = int(max_retries)
        self.restarts = 0  # workers replaced after dying or timing out
        self.timeout = timeout or None  # seconds per evaluation
        self.setup_timeout = setup_timeout or None  # seconds for a worker's set-up
        self._owns_ray = False
        self._temp: str | None = None
        self._actors: list[Any] = []
        if address:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if not ray.is_initialized():
                try:
                    ray.init(
                        address=address,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                        configure_logging=True,
                    )
                except (ConnectionError, ray.exceptions.RayError) as e:
                    raise UserError(
                        f"--ray-address {address!r}: cannot connect to a Ray cluster ({e}){_auth_hint(address)}"
                    ) from None
                self._owns_ray = True  # our connection, not the cluster: shutdown only disconnects
        elif not ray.is_initialized():
            self._temp = init_local_ray(self.workers, temp_dir=temp_dir)
            self._owns_ray = True
        # One torch thread per worker: on a busy 2-core machine two threads made the counting
        # task's training 7–9× slower (OpenMP threads waiting on each other), with 1 worker or 2.
        self.threads = 1 if threads is None else int(threads)
        self._pass_index = (
            context.sim == "carla"
            or context.sim.endswith(":CarlaSimulator")
            or isinstance(context.sim_options.get("port"), (list, tuple))
        )
        self._pids: list[int] = [0] * self.workers
        try:
            self._options = self._actor_options(context)
            self._cls = ray.remote(_Worker)
            self._ctx_ref = ray.put(context)
            self._actors = [None] * self.workers
            for i in range(self.workers):
                self._actors[i] = self._new_actor(i)
            # Wait for every worker's set-up, so that a bad configuration fails now, once.
            try:
                ready = ray.get([a.ready.remote() for a in self._actors], timeout=self.setup_timeout)
            except ray.exceptions.GetTimeoutError:
                raise SetupError(
                    f"simulator {context.sim}: the Ray workers' set-up (building the simulator) did not finish within "
                    f"{self.setup_timeout:g} s (setup_timeout; --set setup_timeout=SECONDS, 0 for none)"
                ) from None
            for i, (pid, err) in enumerate(ready):
                self._setup_failed(err)
                self._pids[i] = pid
        except BaseException:
            self.close()
            raise

    def _actor_options(self, context: EvalContext) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}
        if context.device.startswith("cuda"):
            gpus = float(self._ray.cluster_resources().get("GPU", 0.0))
            if gpus <= 0:
                raise UserError("device cuda: the Ray cluster has no GPU")
            opts["num_gpus"] = min(1.0, gpus / self.workers)
        return opts

    def _setup_failed(self, err: BaseException | None) -> None:
        """Raise a worker's set-up error: a `UserError` as it is, a crash as one line."""
        if err is None:
            return
        if isinstance(err, UserError):
            raise err
        said = " ".join(str(err).split())
        raise SetupError(
            f"simulator {self.context.sim} failed while a Ray worker built it: {type(err).__name__}: {said}"
        ) from err

    def _new_actor(self, index: int) -> Any:
        return self._cls.options(**self._options).remote(self._ctx_ref, index, self._pass_index, self.threads)

    def _replace(self, index: int) -> None:
        """A dead worker's slot gets a fresh actor (same index: same CARLA port)."""
        old = self._actors[index]
        try:
            self._ray.kill(old, no_restart=True)
        except Exception:  # noqa: BLE001 - it is already gone
            pass
        self._actors[index] = self._new_actor(index)
        self._pids[index] = 0  # known once it answers; see worker_pids()
        self.restarts += 1

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (asks the ones replaced since the last call)."""
        for i, pid in enumerate(self._pids):
            if pid == 0:
                self._pids[i] = self._ray.get(self._actors[i].ready.remote())[0]
        return list(self._pids)

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
        ray = self._ray
        died = _died_errors(ray)
        results: list[EvalResult | None] = [None] * len(specs)
        attempts = [0] * len(specs)
        pending: deque[int] = deque(range(len(specs)))
        idle: deque[int] = deque(range(self.workers))
        # ObjectRef -> (worker, position in specs; -1: a replaced worker's set-up)
        running: dict[Any, tuple[int, int]] = {}
        deadline: dict[Any, float] = {}  # ObjectRef -> when it times out

        def replace(w: int) -> None:
            self._replace(w)
            ref = self._actors[w].ready.remote()
            running[ref] = (w, -1)  # idle once its set-up is done
            if self.setup_timeout is not None:
                deadline[ref] = time.monotonic() + self.setup_timeout

        while pending or running:
            while pending and idle:
                w, pos = idle.popleft(), pending.popleft()
                attempts[pos] += 1
                ref = self._actors[w].run.remote(specs[pos])
                running[ref] = (w, pos)
                if self.timeout is not None:
                    deadline[ref] = time.monotonic() + self.timeout
            wait = min(deadline.values()) - time.monotonic() if deadline else None
            done, _ = ray.wait(list(running), num_returns=1, timeout=None if wait is None else max(wait, 0.0))
            now = time.monotonic()
            for ref in [r for r, t in deadline.items() if t <= now and r not in done]:
                # past its limit: ending the worker is the only way to stop the evaluation
                w, pos = running.pop(ref)
                del deadline[ref]
                if pos < 0:
                    raise SetupError(
                        f"simulator {self.context.sim}: a replaced Ray worker's set-up did not finish within "
                        f"{self.setup_timeout:g} s (setup_timeout; --set setup_timeout=SECONDS, 0 for none)"
                    )
                replace(w)
                spec = specs[pos]
                out = EvalResult(
                    index=spec.index,
                    params=spec.params,
                    error=f"timed out: simulator {self.context.sim}, {short_params(spec.params)}, seed "
                    f"{spec.data_seed}: evaluation {spec.index} did not finish within {self.timeout:g} s "
                    "(eval_timeout); its Ray worker was replaced",
                    failure="timed out",
                    attempts=attempts[pos],
                )
                results[pos] = out
                if on_result is not None:
                    on_result(out)
            for ref in done:
                w, pos = running.pop(ref)
                deadline.pop(ref, None)
                if pos < 0:  # a replaced worker is ready
                    try:
                        pid, err = ray.get(ref)
                    except died:
                        replace(w)  # died during its set-up: try another
                        continue
                    self._setup_failed(err)
                    self._pids[w] = pid
                    idle.append(w)
                    continue
                spec = specs[pos]
                try:
                    out = ray.get(ref)
                except died as e:
                    replace(w)
                    if attempts[pos] <= self.max_retries:
                        pending.appendleft(pos)  # the next free worker takes it first
                        continue
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    out = EvalResult(
                        index=spec.index,
                        params=spec.params,
                        error=f"worker died {_times(attempts[pos])}: simulator {self.context.sim}, "
                        f"{short_params(spec.params)}, seed {spec.data_seed}: {type(e).__name__}: {reason}"[:800],
                        failure="worker died",
                    )
                except ray.exceptions.RayTaskError as e:
                    # Not from the evaluation (Evaluator.safe catches those): e.g. a result
                    # that does not pickle.  Reported like a failed evaluation.
                    idle.append(w)
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    out = EvalResult(
                        index=spec.index,
                        params=spec.params,
                        error=f"crashed: simulator {self.context.sim}, {short_params(spec.params)}, seed "
                        f"{spec.data_seed}: {type(cause).__name__}: {cause}",
                        failure="crashed",
                    )
                else:
                    idle.append(w)
                    if isinstance(out, BaseException):
                        raise out
                out.attempts = attempts[pos]
                results[pos] = out
                if on_result is not None:
                    on_result(out)
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Close the workers' simulators, end the workers, and Ray if this executor started it."""
        ray = self._ray
        actors = [a for a in getattr(self, "_actors", []) if a is not None]
        if actors and ray.is_initialized():
            # Let each simulator clean up (a CARLA world goes back to asynchronous mode).
            try:
                ray.get([a.close.remote() for a in actors], timeout=30)
            except Exception:  # noqa: BLE001 - a dead or stuck worker is ended below anyway
                pass
            for a in actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        self._actors = []
        if self._owns_ray:
            self._owns_ray = False
            shutdown_local_ray(self._temp)
            self._temp = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
