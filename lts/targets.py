"""Targets: the validation set a task is scored on.

Either rendered from hidden parameters ψ* (a target parameter file, DESIGN.md contract
5) with a seed the loop never uses for training, or read from a directory of real
labelled images (Cityscapes or KITTI layout, `lts.datasets`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators import Batch, Simulator
from simulators.errors import UserError
from simulators.space import load_target_file

from .config import resolve_path
from .seeding import derive_seed

__all__ = ["Target", "load_target", "target_params"]

# What a task needs from a directory target.
_NEEDS = {"counting": ("counts",), "segmentation": ("semantic",)}


@dataclass
class Target:
    """The validation batch, ψ* when it was rendered from parameters, and where it came from."""

    batch: Batch
    params: dict[str, Any] | None
    source: str

    @property
    def simulated(self) -> bool:
        return self.params is not None


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


def load_target(
    spec: str | Path,
    sim: Simulator,
    *,
    task_name: str,
    size: int,
    run_seed: int,
    sim_name: str | None = None,
) -> Target:
    """Build the target named by ``spec`` (a parameter file or a labelled directory)."""
    path = resolve_path(spec)
    if path.is_dir():
        from .datasets import read_labelled_dir

        need = _NEEDS.get(task_name)
        if need is None:
            raise UserError(f"task {task_name!r} cannot be scored on an image directory ({str(path)!r})")
        resolution = getattr(sim, "resolution", None)
        batch = read_labelled_dir(path, resolution=resolution, need=need)
        return Target(batch=batch, params=None, source=str(path))
    if not path.exists():
        raise UserError(f"target {str(spec)!r} does not exist (expected a target .yaml file or an image directory)")
    params = target_params(path, sim, sim_name)
    batch = sim.generate(params, size, seed=derive_seed(run_seed, "target"))
    return Target(batch=batch, params=params, source=str(path))
