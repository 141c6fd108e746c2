"""`ProceduralSimulator`: the embedded street-scene simulator (the default ``--sim``).

It draws each scene's attributes from ψ (`simulators.street.street_param_space`), renders
the scenes in batches with `render.Renderer` and derives exact labels: semantic ids
(CARLA's `CityObjectLabel`), depth in metres, car instances and per-type counts of the
cars that are actually visible.

Label conventions (also in the README):

- ``semantic``: ids of `simulators.labels`.  Cars of types sedan, hatchback, SUV and van
  are ``CAR`` (14); the truck type is ``TRUCK`` (15).  Sky is ``SKY``; the ground is
  ``ROAD``, ``ROAD_LINE``, ``SIDEWALK`` or ``TERRAIN``; buildings, poles (street lights,
  signal posts), ``TRAFFIC_LIGHT`` heads and trees (``VEGETATION``) are boxes.
- ``depth``: planar depth (distance along the viewing axis, as CARLA's depth camera) in
  metres; sky pixels hold `SKY_DEPTH` = 1000.
- ``instances``: car ``k`` of a scene (1-based, in placement order) on its pixels, 0
  elsewhere.  A car is *visible* when it has at least ``min_car_pixels`` pixels;
  ``counts[i, j]`` is the number of visible cars of type ``CAR_TYPES[j]`` in scene ``i``.
  A car with fewer pixels (a far-away speck, a sliver peeking out behind a building) is
  not counted — its type cannot be told from so few pixels, as in KITTI's benchmarks,
  which ignore boxes below a minimum height — and its pixels are relabelled
  ``UNLABELED`` (0) with instance 0 — an "ignore" label — so that every car pixel
  belongs to a counted car and every counted car has pixels.
- ``attributes``: per scene ``weather``, ``intersection``, ``turn`` ("left"/"right" for L
  junctions, "" otherwise), ``road_length`` (metres, drawn around ψ's value),
  ``n_cars`` (cars placed, visible or not) and ``car_types`` (their types, in instance
  order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .. import labels as L
from ..base import Batch, Simulator
from ..errors import UserError
from ..street import CAR_TYPES, street_param_space
from .render import SKY_DEPTH, Camera, Frames, Renderer
from .scene import sample_scenes

__all__ = ["ProceduralSimulator", "SKY_DEPTH", "parse_resolution"]

MIN_SIDE = 16
MAX_SIDE = 4096
#: Bytes of output per pixel: RGB (3), semantic (8), depth (4), instances (8).
_BYTES_PER_PIXEL = 23
_DEFAULT_MAX_BYTES = 8 * 1024**3


def parse_resolution(resolution: Any) -> tuple[int, int]:
    """``(H, W)``, ``[H, W]`` or ``"HxW"`` → ``(H, W)``; `UserError` naming the value otherwise."""
    value = resolution
    if isinstance(resolution, str):
        parts = resolution.lower().replace("×", "x").split("x")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            raise UserError(f"resolution {resolution!r}: expected HEIGHTxWIDTH, e.g. 64x128") from None
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise UserError(f"resolution {resolution!r}: expected (height, width) as two integers, e.g. (64, 128)")
    h, w = int(value[0]), int(value[1])
    for name, v in (("height", h), ("width", w)):
        if v < MIN_SIDE:
            raise UserError(f"resolution {h}x{w}: {name} {v} is below the minimum of {MIN_SIDE} pixels")
        if v > MAX_SIDE:
            raise UserError(f"resolution {h}x{w}: {name} {v} is above the maximum of {MAX_SIDE} pixels")
    return h, w


def _parse_device(device: Any) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r}: CUDA is not available on this machine (use device='cpu')")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return dev


class ProceduralSimulator(Simulator):
    """Street scenes from ψ, rendered with torch on the CPU or a GPU.

    Options: ``resolution`` (H, W) or "HxW", 16..4096 per side (default 64×128);
    ``device`` ("cpu", "cuda"); ``fov`` horizontal field of view in degrees (default 90,
    CARLA's default camera); ``max_cars`` cap on cars placed per scene (default 24);
    ``min_car_pixels`` pixels a car needs to be visible and counted (default 32 at
    64×128, 0.4% of the frame, scaled with the image area; at least 4); ``max_batch_bytes`` the largest output one
    ``generate`` call may allocate (default 8 GiB); ``chunk_pixels`` how many pixels are
    rendered at once (a speed/memory trade-off, results do not depend on it).
    """

    name = "procedural"

    def __init__(
        self,
        resolution: Any = (64, 128),
        device: str | torch.device = "cpu",
        fov: float = 90.0,
        max_cars: int = 24,
        min_car_pixels: int | None = None,
        max_batch_bytes: int = _DEFAULT_MAX_BYTES,
        chunk_pixels: int = 1 << 18,
        threads: int | None = 1,
    ) -> None:
        self.resolution = parse_resolution(resolution)
        self.device = _parse_device(device)
        if isinstance(fov, bool) or not isinstance(fov, (int, float)) or not 20.0 <= float(fov) <= 150.0:
            raise UserError(f"fov {fov!r}: expected a number of degrees in [20, 150]")
        if isinstance(max_cars, bool) or not isinstance(max_cars, int) or not 0 <= max_cars <= 64:
            raise UserError(f"max_cars {max_cars!r}: expected an integer in [0, 64]")
        h, w = self.resolution
        if min_car_pixels is None:
            min_car_pixels = L.min_visible_pixels(h, w)
        if isinstance(min_car_pixels, bool) or not isinstance(min_car_pixels, int) or min_car_pixels < 1:
            raise UserError(f"min_car_pixels {min_car_pixels!r}: expected a positive integer")
        if not isinstance(chunk_pixels, int) or chunk_pixels < 1:
            raise UserError(f"chunk_pixels {chunk_pixels!r}: expected a positive integer")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise UserError(f"threads {threads!r}: expected a positive integer or None")
        self.threads = threads
        self.fov = float(fov)
        self.max_cars = max_cars
        self.min_car_pixels = min_car_pixels
        self.max_batch_bytes = int(max_batch_bytes)
        self.chunk_pixels = chunk_pixels
        self.param_space = street_param_space()
        self.camera = Camera(height=h, width=w, fov=self.fov)
        self._renderer: Renderer | None = None

    def __repr__(self) -> str:
        h, w = self.resolution
        return f"ProceduralSimulator(resolution=({h}, {w}), device={str(self.device)!r}, fov={self.fov:g})"

    # ------------------------------------------------------------------ API

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        """``n`` scenes drawn from ψ = ``params``; scene i depends only on (ψ, seed, i)."""
        psi = self.param_space.validate(params)
        n = self._check_n(n)
        return self._generate([psi] * n, seed)

    def generate_per_scene(self, params: Sequence[Mapping[str, Any]], *, seed: int) -> Batch:
        """One scene per ψ; ``generate_per_scene([ψ] * n, seed=s)`` equals ``generate(ψ, n, seed=s)``."""
        if isinstance(params, Mapping) or not isinstance(params, Sequence):
            raise UserError("generate_per_scene: expected a list of parameter mappings, one per scene")
        psis = [self.param_space.validate(p) for p in params]
        return self._generate(psis, seed)

    def close(self) -> None:
        self._renderer = None

    # ------------------------------------------------------------------ internals

    def _check_n(self, n: Any) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise UserError(f"number of scenes {n!r}: expected a non-negative integer")
        return int(n)

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            self._renderer = Renderer(self.camera, self.device)
        return self._renderer

    def _generate(self, psis: list[dict[str, Any]], seed: int) -> Batch:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise UserError(f"seed {seed!r}: expected an integer")
        n = len(psis)
        h, w = self.resolution
        need = n * h * w * _BYTES_PER_PIXEL
        if need > self.max_batch_bytes:
            raise UserError(
                f"{n} scenes at resolution {h}x{w} need {need / 1024**3:.1f} GiB of output, above the limit of "
                f"{self.max_batch_bytes / 1024**3:.1f} GiB (max_batch_bytes); render fewer scenes per call"
            )
        dev = self.device
        if n == 0:
            return Batch(
                images=torch.zeros(0, 3, h, w, dtype=torch.uint8, device=dev),
                semantic=torch.zeros(0, h, w, dtype=torch.long, device=dev),
                depth=torch.zeros(0, h, w, dtype=torch.float32, device=dev),
                counts=torch.zeros(0, len(CAR_TYPES), dtype=torch.long, device=dev),
                instances=torch.zeros(0, h, w, dtype=torch.long, device=dev),
                attributes={k: [] for k in ("weather", "intersection", "turn", "road_length", "n_cars", "car_types")},
                count_names=CAR_TYPES,
            )
        scenes = sample_scenes(psis, seed, max_cars=self.max_cars)
        chunk = max(1, self.chunk_pixels // (h * w))
        frames = Frames(
            images=torch.empty(n, 3, h, w, dtype=torch.uint8, device=dev),
            semantic=torch.empty(n, h, w, dtype=torch.long, device=dev),
            depth=torch.empty(n, h, w, dtype=torch.float32, device=dev),
            instances=torch.empty(n, h, w, dtype=torch.long, device=dev),
        )
        counts = torch.empty(n, len(CAR_TYPES), dtype=torch.long, device=dev)
        restore = torch.get_num_threads()
        if self.threads is not None and dev.type == "cpu":
            torch.set_num_threads(self.threads)
        try:  # (a multi-threaded op on a busy machine can stall: all tensor work under the render threads)
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                part = scenes.subset(start, stop)
                view = Frames(*(getattr(frames, k)[start:stop] for k in ("images", "semantic", "depth", "instances")))
                self.renderer.render(part, out=view)
                counts[start:stop] = self._count(view.semantic, view.instances, part.type_of_inst)
        finally:
            torch.set_num_threads(restore)
        batch = Batch(
            images=frames.images,
            semantic=frames.semantic,
            depth=frames.depth,
            counts=counts,
            instances=frames.instances,
            count_names=CAR_TYPES,
        )
        batch.attributes = {
            "weather": scenes.weather,
            "intersection": scenes.intersection,
            "turn": scenes.turn,
            "road_length": scenes.road_length,
            "n_cars": [len(t) for t in scenes.car_types],
            "car_types": scenes.car_types,
        }
        return batch

    def _count(self, semantic: torch.Tensor, instances: torch.Tensor, type_of_inst: np.ndarray) -> torch.Tensor:
        """Per-type counts of visible cars; the pixels of cars below ``min_car_pixels`` are
        relabelled 0 (in place)."""
        dev = instances.device
        n, h, w = instances.shape
        slots = type_of_inst.shape[1]  # max_cars + 1 (instance 0 = no car)
        offset = (torch.arange(n, device=dev) * slots)[:, None, None]
        flat = (instances + offset).view(-1)
        pixels = torch.bincount(flat, minlength=n * slots).view(n, slots)
        pixels[:, 0] = 0
        visible = pixels >= self.min_car_pixels
        tiny = (pixels > 0) & ~visible
        if bool(tiny.any()):  # a few cars at most: find their pixels, leave the rest alone
            where = torch.nonzero(tiny.view(-1).index_select(0, flat)).flatten()
            semantic.view(-1).index_fill_(0, where, L.UNLABELED)
            instances.view(-1).index_fill_(0, where, 0)
        types = torch.as_tensor(type_of_inst, device=dev)
        counts = torch.zeros(n, len(CAR_TYPES), dtype=torch.long, device=dev)
        counts.scatter_add_(1, types.clamp(min=0), (visible & (types >= 0)).long())
        return counts
