"""The simulator interface and the batch it returns.

A simulator has a ``param_space``, ``generate(params, n, *, seed) -> Batch`` and
``close()``.  Everything else is an optional hook with a default here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import torch

from .space import ParamSpace

__all__ = ["Batch", "Simulator", "PointwiseSimulator"]

_TENSOR_FIELDS = ("images", "semantic", "depth", "counts", "instances", "features", "labels", "cityscapes_ids")


@dataclass
class Batch:
    """A labelled dataset rendered from one ψ (or one ψ per scene).

    Fields a simulator does not have stay ``None``.

    - ``images``: N×3×H×W, uint8 (0..255) or float (0..1).
    - ``semantic``: N×H×W int64, label ids of `simulators.labels`.
    - ``depth``: N×H×W float32, metres.
    - ``counts``: N×C int64, visible cars per type in the order of ``count_names``.
    - ``instances``: N×H×W int64, 0 for background, 1.. per object.
    - ``features`` / ``labels``: N×D float and N int64, for non-image simulators.
    - ``cityscapes_ids``: N×H×W int64, the Cityscapes labelIds that ``semantic`` was mapped
      from, for a real directory labelled in Cityscapes ids (Cityscapes, KITTI semantics):
      the official 19-class metric needs them (polegroup, parking, … have no lts class of
      their own).  Its presence also says the labels can hold only Cityscapes' classes.
    - ``attributes``: per-scene attributes actually drawn (name → list of N values).
    - ``count_names``: the car types, in the column order of ``counts``.
    """

    images: torch.Tensor | None = None
    semantic: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    instances: torch.Tensor | None = None
    features: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    cityscapes_ids: torch.Tensor | None = None
    attributes: dict[str, list[Any]] = field(default_factory=dict)
    count_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        for name in _TENSOR_FIELDS:
            t = getattr(self, name)
            if t is not None:
                return int(t.shape[0])
        return 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor fields that are present."""
        return {n: getattr(self, n) for n in _TENSOR_FIELDS if getattr(self, n) is not None}

    def to(self, device: str | torch.device) -> Batch:
        # Any: replace() checks ** against every field's type, not only the tensor ones named
        moved: dict[str, Any] = {n: t.to(device) for n, t in self.tensors().items()}
        return replace(self, **moved)

    def subset(self, index: slice | Sequence[int] | torch.Tensor) -> Batch:
        """Rows ``index`` of every field (attributes too)."""
        if isinstance(index, slice):
            idx = list(range(len(self)))[index]
        else:
            idx = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        tens: dict[str, Any] = {}  # Any: as in `to`
        for n, t in self.tensors().items():
            tens[n] = t[torch.as_tensor(idx, dtype=torch.long, device=t.device)]
        attrs = {k: [v[i] for i in idx] for k, v in self.attributes.items()}
        return replace(self, attributes=attrs, **tens)

    def images_float(self) -> torch.Tensor:
        """Images as float in [0, 1]."""
        if self.images is None:
            raise ValueError("this batch has no images")
        return self.images.float() / 255.0 if self.images.dtype == torch.uint8 else self.images.float()

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """Join batches with the same fields along the first axis."""
        if not batches:
            raise ValueError("nothing to concatenate")
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        out: dict[str, Any] = {}
        for f in fields(Batch):
            vals = [getattr(b, f.name) for b in batches]
            if f.name == "attributes":
                keys = dict.fromkeys(k for v in vals for k in v)
                out["attributes"] = {
                    k: [x for b, v in zip(batches, vals) for x in v.get(k, [None] * len(b))] for k in keys
                }
            elif f.name == "count_names":
                out["count_names"] = first.count_names
            elif all(v is None for v in vals):
                out[f.name] = None
            elif any(v is None for v in vals):
                raise ValueError(f"cannot concatenate batches where only some have {f.name!r}")
            else:
                out[f.name] = torch.cat(vals, dim=0)
        return Batch(**out)


class Simulator:
    """Base class for simulators.  Subclasses set ``param_space`` and implement
    ``generate``; ``close`` and ``generate_per_scene`` have defaults.

    ``generate(params, n, *, seed)`` must be deterministic in ``seed``: the same ψ,
    ``n`` and seed give the same batch.
    """

    #: Short name the registry knows the simulator by (set by subclasses).
    name: ClassVar[str] = ""
    param_space: ParamSpace

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        raise NotImplementedError

    def generate_per_scene(self, params: Sequence[Mapping[str, Any]], *, seed: int) -> Batch:
        """One scene per ψ in ``params`` (used for domain randomization).

        The default renders them one by one; simulators that can batch override it.
        """
        ss = np.random.SeedSequence(seed)
        seeds = [int(s.generate_state(1)[0]) for s in ss.spawn(len(params))]
        return Batch.concat([self.generate(p, 1, seed=s) for p, s in zip(params, seeds)])

    def close(self) -> None:
        """Release what the simulator holds (connections, actors, GPU memory)."""

    @classmethod
    def check_workers(cls, options: Mapping[str, Any], workers: int) -> None:
        """Raise `UserError` where ``workers`` copies built from ``options`` cannot run at
        once (called before any is built); by default any number can."""

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PointwiseSimulator(Simulator):
    """A simulator that draws every sample from a ψ of its own in one vectorised call
    (``_draw(ψs, seed)``): a batch of one ψ and a batch of one ψ per scene (domain
    randomization) are the same draw."""

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        p = self.param_space.validate(params)
        return self._draw([p] * n, seed)

    def generate_per_scene(self, params: Sequence[Mapping[str, Any]], *, seed: int) -> Batch:
        return self._draw([self.param_space.validate(p) for p in params], seed)

    def _draw(self, ps: Sequence[dict[str, Any]], seed: int) -> Batch:
        raise NotImplementedError

    # the pieces of a labelled-points `_draw`: one row per sample, each from its own ψ

    @staticmethod
    def column(ps: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
        """Element ``key`` of every sample's ψ, as floats."""
        return np.array([p[key] for p in ps], dtype=np.float64)

    @staticmethod
    def draw_classes(
        ps: Sequence[Mapping[str, Any]], mix: str, classes: Sequence[str], rng: np.random.Generator
    ) -> np.ndarray:
        """Each sample's class (an index into ``classes``), drawn from its ψ's ``mix`` (one
        uniform number per sample)."""
        cum = np.cumsum([[p[mix][c] for c in classes] for p in ps], axis=1)
        return (rng.random(len(ps))[:, None] >= cum[:, :-1]).sum(1).astype(np.int64)

    @staticmethod
    def points_batch(points: np.ndarray, labels: np.ndarray, mix: str, classes: Sequence[str]) -> Batch:
        """Labelled points, each sample's class also named under ``mix`` (the proportions
        element it was drawn from)."""
        return Batch(
            features=torch.from_numpy(points.astype(np.float32)),
            labels=torch.from_numpy(labels),
            attributes={mix: [classes[c] for c in labels]},
        )
