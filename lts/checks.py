"""The checked boundary between what a simulator (a plug-in, a refiner, a directory of
frames) hands the loop and what the loop trains on, as Gymnasium's ``PassiveEnvChecker``
checks each step of a wrapped environment.

`check_batch` checks one `Batch`: lengths agree with ``n``, each field has the dtype and
shape a task can use, images / depth / features are finite, label ids lie in the label
space, counts are non-negative.  It raises `BadBatch`; the evaluation that rendered the
batch fails with a reason (`lts.evaluation`), and is never told as a reward.  A task
score that is not finite fails the same way (`NonFiniteMetric`), and so does an
evaluation past its time limit (`EvalTimeout`).  Each carries a short ``kind``, which the
run counts (``failures`` in ``summary.json``).

`setup_call` runs a set-up step (rendering the target) with its own time limit and turns
a crash of the simulator into one line (`SetupError`), its traceback kept as the cause
for ``--debug``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import torch

from simulators import Batch
from simulators.errors import SetupError, UserError
from simulators.labels import NUM_LABELS

__all__ = [
    "BadBatch", "NonFiniteMetric", "EvalTimeout", "SetupError", "EvalFailure", "check_batch", "check_metrics",
    "task_needs", "TASK_NEEDS", "count_failures", "sim_label", "setup_call", "short_params", "FAILURE_KINDS",
]  # fmt: skip

T = TypeVar("T")

#: The kinds of failure a run counts, in ``summary.json``'s ``failures``.
FAILURE_KINDS = ("non-finite output", "bad batch", "non-finite metric", "timed out", "worker died", "crashed")


class EvalFailure(Exception):
    """An evaluation failed for a reason the loop names (not a bug in lts, not the user's
    configuration): it is recorded with its ``kind`` and the run goes on."""

    kind = "crashed"


class BadBatch(EvalFailure):
    """A batch that breaks the contract of `simulators.Batch`."""

    kind = "bad batch"

    def __init__(self, message: str, kind: str = "bad batch") -> None:
        super().__init__(message)
        self.kind = kind


class NonFiniteMetric(EvalFailure):
    """A task score that is NaN or infinite."""

    kind = "non-finite metric"


class EvalTimeout(EvalFailure):
    """An evaluation (or a set-up step) past its time limit."""

    kind = "timed out"


#: What each built-in task trains on: `Batch` field -> what to call it in a message.
TASK_NEEDS: dict[str, dict[str, str]] = {
    "counting": {"images": "images", "counts": "per-type car counts"},
    "segmentation": {"images": "images", "semantic": "semantic labels"},
    "classify": {"features": "points (features)", "labels": "class labels"},
}


def task_needs(task: Any) -> tuple[str, ...]:
    """The `Batch` fields ``task`` trains on (a plug-in task: its ``label_field``, if it names one)."""
    name = getattr(task, "name", "")
    if name in TASK_NEEDS:
        return tuple(TASK_NEEDS[name])
    field = getattr(task, "label_field", None)
    return (field,) if isinstance(field, str) else ()


def sim_label(sim: Any, name: str | None = None) -> str:
    """How messages name a simulator: the name it was made by, else ``module:Class``."""
    if name:
        return name
    cls = type(sim)
    return f"{cls.__module__}:{cls.__qualname__}"


def short_params(params: Mapping[str, Any] | None) -> str:
    """ψ in a message: numbers to four digits, so that a line stays readable."""
    if params is None:
        return "ψ drawn per scene"

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return "ψ {" + ", ".join(f"{k}: {fmt(v)}" for k, v in params.items()) + "}"


_FLOAT_FIELDS = ("depth", "features")
_INT_FIELDS = ("semantic", "instances", "labels", "cityscapes_ids")
_NDIM = {"images": 4, "semantic": 3, "depth": 3, "instances": 3, "cityscapes_ids": 3, "counts": 2, "features": 2,
         "labels": 1}  # fmt: skip


def _non_finite(t: torch.Tensor) -> int:
    # one vectorised sum first (NaN and ±inf reach it; much faster than isfinite on a CPU);
    # the exact count only when it is not finite (0 when the sum merely overflowed)
    if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
        return 0
    return int((~torch.isfinite(t)).sum())


def check_batch(batch: Any, *, n: int | None = None, needs: Iterable[str] = ()) -> None:
    """Raise `BadBatch` (``kind`` "non-finite output" for NaN or infinite values) naming
    the first thing wrong with ``batch``; ``n``: the rows it must have; ``needs``: the
    fields the task trains on.  Reductions only, one pass per field: a small fraction of a
    render (measured in docs/robustness.md)."""
    if not isinstance(batch, Batch):
        raise BadBatch(f"returned {type(batch).__name__}, expected a simulators.Batch")
    tensors = {}
    for name in _NDIM:
        t = getattr(batch, name)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise BadBatch(f"{name} is a {type(t).__name__}, expected a torch.Tensor")
        tensors[name] = t
    for name in needs:
        if name not in tensors:
            raise BadBatch(f"has no {name}, which the task trains on")
    if not tensors:
        raise BadBatch("holds no data (every field is None)")
    rows = {name: int(t.shape[0]) if t.ndim else -1 for name, t in tensors.items()}
    expected = n if n is not None else next(iter(rows.values()))
    for name, r in rows.items():
        if r != expected:
            raise BadBatch(f"{name} has {r} rows, expected {expected}")
    for key, values in batch.attributes.items():
        if isinstance(values, (list, tuple)) and len(values) != expected:
            raise BadBatch(f"attribute {key!r} has {len(values)} values, expected {expected}")
    for name, t in tensors.items():
        if t.ndim != _NDIM[name]:
            raise BadBatch(f"{name} has shape {tuple(t.shape)}, expected {_NDIM[name]} dimensions")
    images = tensors.get("images")
    if images is not None:
        if images.shape[1] != 3:
            raise BadBatch(f"images have shape {tuple(images.shape)}, expected N×3×H×W")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise BadBatch(f"images are {images.dtype}, expected uint8 (0..255) or float (0..1)")
        if bad := _non_finite(images):
            raise BadBatch(f"images hold {bad} NaN or infinite value(s)", kind="non-finite output")
    for name in _FLOAT_FIELDS:
        t = tensors.get(name)
        if t is None:
            continue
        if not t.is_floating_point():
            raise BadBatch(f"{name} is {t.dtype}, expected a float dtype")
        if bad := _non_finite(t):
            raise BadBatch(f"{name} holds {bad} NaN or infinite value(s)", kind="non-finite output")
    for name in _INT_FIELDS:
        t = tensors.get(name)
        if t is not None and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
            raise BadBatch(f"{name} is {t.dtype}, expected an integer dtype")
    if images is not None:
        for name in ("semantic", "depth", "instances", "cityscapes_ids"):
            t = tensors.get(name)
            if t is not None and tuple(t.shape[1:]) != tuple(images.shape[2:]):
                raise BadBatch(
                    f"{name} is {tuple(t.shape[1:])} per frame, but the images are {tuple(images.shape[2:])}"
                )
    sem = tensors.get("semantic")
    if sem is not None and sem.numel():
        lo, hi = (int(x) for x in torch.aminmax(sem))
        if lo < 0 or hi >= NUM_LABELS:
            raise BadBatch(
                f"semantic holds label id {lo if lo < 0 else hi}, outside the label space 0..{NUM_LABELS - 1}"
            )
    for name in ("labels", "instances"):
        t = tensors.get(name)
        if t is not None and t.numel() and (low := int(torch.aminmax(t)[0])) < 0:
            raise BadBatch(f"{name} holds {low}, expected ids >= 0")
    counts = tensors.get("counts")
    if counts is not None:
        if counts.dtype == torch.bool or counts.is_complex():
            raise BadBatch(f"counts are {counts.dtype}, expected integers")
        if bad := _non_finite(counts):
            raise BadBatch(f"counts hold {bad} NaN or infinite value(s)", kind="non-finite output")
        if counts.numel() and float(counts.min()) < 0:
            raise BadBatch(f"counts hold {float(counts.min()):g}, expected counts >= 0")
        if batch.count_names and counts.shape[1] != len(batch.count_names):
            raise BadBatch(f"counts have {counts.shape[1]} columns, expected one per car type {batch.count_names}")


def count_failures(kinds: Iterable[str]) -> dict[str, Any]:
    """``summary.json``'s ``failures``: how many evaluations failed, in all and by kind."""
    by_kind: dict[str, int] = {}
    for k in kinds:
        by_kind[k] = by_kind.get(k, 0) + 1
    return {"evaluations": sum(by_kind.values()), "by_kind": by_kind}


def check_metrics(metrics: Mapping[str, float], split: str) -> None:
    """Raise `NonFiniteMetric` when a score on ``split`` is NaN or infinite."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(float(v))}
    if bad:
        said = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteMetric(f"non-finite metric on the {split} split ({said})")


def call_within(fn: Callable[[], T], timeout: float | None, what: str, waited: Callable[[], float] | None = None) -> T:
    """``fn()``, or `EvalTimeout` after ``timeout`` seconds (None or 0: no limit), not
    counting the seconds ``waited()`` says it spent waiting its turn (for a shared simulator).

    With a limit ``fn`` runs in a daemon thread, with this thread's torch thread count.  A
    thread cannot be stopped from outside: past the limit it is left running and its result
    dropped (Ray's workers are processes, which `lts.ray_exec` kills instead)."""
    if not timeout:
        return fn()
    box: dict[str, Any] = {}
    threads = torch.get_num_threads()

    def target() -> None:
        torch.set_num_threads(threads)
        try:
            box["out"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["err"] = e

    worker = threading.Thread(target=target, daemon=True, name="lts-timed")
    start = time.monotonic()
    worker.start()
    while worker.is_alive():
        left = start + timeout + (waited() if waited else 0.0) - time.monotonic()
        if left <= 0:
            raise EvalTimeout(f"{what} did not finish within {timeout:g} s")
        worker.join(min(left, 0.25))
    if "err" in box:
        raise box["err"]
    return box["out"]


def setup_call(fn: Callable[[], T], *, sim: str, what: str, timeout: float | None = None) -> T:
    """A set-up step of simulator ``sim`` (``what``: e.g. "rendering the target's validation
    split (seed 3)"): a crash or a hang becomes one line, `SetupError`, exit status 2; a
    `UserError` passes as it is."""
    try:
        return call_within(fn, timeout, f"simulator {sim}: {what}")
    except UserError:
        raise
    except EvalTimeout as e:
        raise SetupError(f"{e} (setup_timeout; --set setup_timeout=SECONDS, 0 for none)") from None
    except Exception as e:
        said = " ".join(str(e).split())
        raise SetupError(
            f"simulator {sim} failed while {what}: {type(e).__name__}: {said} (--debug shows where)"
        ) from e
