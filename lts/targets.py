"""Targets: the validation set a task is scored on (the reward) and the held-out test set
that a user reports.

Either rendered from hidden parameters ψ* (a target parameter file, docs/design.md, contract
5), the validation set with seed ``derive_seed(run_seed, "target")`` and the test set with
``derive_seed(run_seed, "target-test")``, seeds the loop never uses for training; or read
from a directory of real labelled images (Cityscapes or KITTI layout, `lts.datasets`),
split by file name into validation and test (`split_files`), or with a separate test
directory.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators import Batch, Simulator
from simulators.errors import UserError
from simulators.space import load_target_file

from .checks import TASK_NEEDS, BadBatch, check_batch, setup_call, sim_label
from .config import resolve_path
from .seeding import derive_seed

__all__ = ["Target", "load_target", "split_files", "target_params"]

# What a task needs from a directory target.
_NEEDS = {"counting": ("counts",), "segmentation": ("semantic",)}


@dataclass
class Target:
    """The validation batch (the reward), the test batch (the figures a user reports), ψ*
    when they were rendered from parameters, and where they came from."""

    batch: Batch
    params: dict[str, Any] | None
    source: str
    test: Batch | None = None  # the held-out test set (None: none was made)
    rendered_from: dict[str, Any] | None = None  # a directory's ψ*, when lts.render wrote it (params.json)

    @property
    def simulated(self) -> bool:
        return self.params is not None

    @property
    def truth(self) -> dict[str, Any] | None:
        """ψ* where it is known: a parameter file's, or the ``params.json`` that ``lts.render``
        writes beside a directory it rendered (a benchmark's directory target, seen through a
        camera model, say): the oracle trains on it.  None for real data."""
        return self.params if self.params is not None else self.rendered_from


def _rendered_from(path: Path, sim: Simulator, sim_name: str | None) -> dict[str, Any] | None:
    """The ψ* in ``path/params.json`` (``lts.render``'s record of what it rendered) when it is
    for this simulator and fits its space; else None (a directory of real data has none)."""
    file = path / "params.json"
    if not file.is_file():
        return None
    try:
        spec = json.loads(file.read_text())
        if spec.get("simulator") not in (sim_name, getattr(sim, "name", None)):
            return None
        return sim.param_space.validate(spec["params"], fill_defaults=True)
    except (ValueError, KeyError, TypeError, AttributeError, UserError) as e:
        warnings.warn(f"target directory {str(path)!r}: params.json is not a ψ for this simulator ({e}); no oracle")
        return None


def target_params(path: str | Path, sim: Simulator, sim_name: str | None = None) -> dict[str, Any]:
    """ψ* from a target file, checked against ``sim``'s space (missing elements take defaults)."""
    spec = load_target_file(path)
    if spec.simulator and sim_name and spec.simulator != sim_name and ":" not in sim_name:
        # Street targets carry over between procedural and CARLA; the parameter check below
        # catches a target that does not fit.
        warnings.warn(f"target {str(path)!r} was written for simulator {spec.simulator!r}; using it with {sim_name!r}")
    try:
        return sim.param_space.validate(spec.params, fill_defaults=True)
    except UserError as e:
        raise UserError(f"target file {str(path)!r}: {e}") from None


def split_files(files: Sequence[str], split: float) -> tuple[list[int], list[int]]:
    """Indices of ``files`` going to validation and to test.

    Deterministic and hash-free: the names are sorted, the validation part gets
    ``round(split * n)`` of them (at least one and at least one left for test), taken evenly
    spaced through the sorted list (the i-th sorted name goes to validation when
    ``floor((i + 1) k / n) > floor(i k / n)``), so that both parts span every city and
    sequence.  Both lists are in the order of ``files``.
    """
    _check_split(split)
    n = len(files)
    if n < 2:
        raise UserError(
            f"the target directory has {n} labelled image(s); splitting it into validation and test needs "
            "at least 2 (or give a separate test directory)"
        )
    k = min(max(round(split * n), 1), n - 1)
    order = sorted(range(n), key=lambda i: files[i])
    val = {order[i] for i in range(n) if (i + 1) * k // n > i * k // n}
    return [i for i in range(n) if i in val], [i for i in range(n) if i not in val]


def _check_split(split: float) -> None:
    if not (isinstance(split, int | float) and 0 < float(split) < 1):
        raise UserError(f"target split {split!r}: expected the fraction of the directory for validation, in (0, 1)")


def _check_rendered(batch: Batch, task_name: str, sim: Simulator, sim_name: str | None) -> None:
    """A rendered target lacking what the task needs is the simulator's doing: say so."""
    for field_name, what in TASK_NEEDS.get(task_name, {}).items():
        if getattr(batch, field_name) is None:
            raise UserError(f"task {task_name} needs {what}; simulator {sim_label(sim, sim_name)} renders none")


def load_target(
    spec: str | Path,
    sim: Simulator,
    *,
    task_name: str,
    size: int,
    run_seed: int,
    sim_name: str | None = None,
    test_size: int | None = None,
    split: float = 0.5,
    test_dir: str | Path | None = None,
    setup_timeout: float | None = None,
) -> Target:
    """Build the target named by ``spec``: a parameter file (validation: ``size`` frames,
    test: ``test_size`` frames, default ``size``, from ψ* with two seeds) or a labelled
    directory (``split`` of its images, by file name, for validation and the rest for test;
    or all of them for validation and ``test_dir``, of the same layout and resolution, for
    test).  Every split passes `lts.checks.check_batch`; a simulator that crashes, or renders
    for longer than ``setup_timeout`` seconds, is one line naming it, the split and the seed
    (`SetupError`)."""
    _check_split(split)
    path = resolve_path(spec)
    if path.is_dir():
        from .datasets import labelled_dir_info, read_labelled_dir

        need = _NEEDS.get(task_name)
        if need is None:
            raise UserError(f"task {task_name!r} cannot be scored on an image directory ({str(path)!r})")
        resolution = getattr(sim, "resolution", None)
        if test_dir is None:
            batch = _checked_dir(read_labelled_dir(path, resolution=resolution, need=need), path)
            val_idx, test_idx = split_files(batch.attributes["file"], split)
            return Target(
                batch=batch.subset(val_idx),
                params=None,
                source=str(path),
                test=batch.subset(test_idx),
                rendered_from=_rendered_from(path, sim, sim_name),
            )
        test_path = resolve_path(test_dir)
        info = labelled_dir_info(path)
        try:
            test_info = labelled_dir_info(test_path)
        except UserError as e:
            raise UserError(f"test directory: {e}") from None
        if test_info.kind != info.kind:
            raise UserError(
                f"test directory {str(test_path)!r} is in {test_info.kind} layout; expected {info.kind}, "
                f"as the validation directory {str(path)!r}"
            )
        if test_info.size != info.size:
            raise UserError(
                f"test directory {str(test_path)!r} holds {test_info.size[1]}×{test_info.size[0]} images; "
                f"expected {info.size[1]}×{info.size[0]}, as the validation directory {str(path)!r}"
            )
        batch = _checked_dir(read_labelled_dir(path, resolution=resolution, need=need), path)
        try:
            test = read_labelled_dir(test_path, resolution=resolution or info.size, need=need)
        except UserError as e:
            raise UserError(f"test directory: {e}") from None
        _checked_dir(test, test_path)
        return Target(
            batch=batch, params=None, source=str(path), test=test, rendered_from=_rendered_from(path, sim, sim_name)
        )
    if not path.exists():
        raise UserError(f"target {str(spec)!r} does not exist (expected a target .yaml file or an image directory)")
    if test_dir is not None:
        raise UserError(f"a test directory ({str(test_dir)!r}) goes with a directory target, not with {str(spec)!r}")
    n_test = size if test_size is None else test_size
    if n_test < 1:
        raise UserError(f"test_size {n_test}: expected at least one test frame")
    params = target_params(path, sim, sim_name)
    name = sim_label(sim, sim_name)

    def render(which: str, n: int, seed: int) -> Batch:
        what = f"rendering the target's {which} split ({n} scenes, seed {seed})"
        out = setup_call(lambda: sim.generate(params, n, seed=seed), sim=name, what=what, timeout=setup_timeout)
        if which == "validation":
            _check_rendered(out, task_name, sim, sim_name)
        try:
            check_batch(out, n=n, needs=TASK_NEEDS.get(task_name, {}))
        except BadBatch as e:
            raise UserError(f"simulator {name}: the target's {which} split (seed {seed}): {e}") from None
        return out

    batch = render("validation", size, derive_seed(run_seed, "target"))
    test = render("test", n_test, derive_seed(run_seed, "target-test"))
    return Target(batch=batch, params=params, source=str(path), test=test)


def _checked_dir(batch: Batch, path: Path) -> Batch:
    """A directory's frames through the same check as a simulator's."""
    try:
        check_batch(batch)
    except BadBatch as e:
        raise UserError(f"target directory {str(path)!r}: its frames: {e}") from None
    return batch
