"""Benchmarks: ``python -m lts.bench SUBCOMMAND``.

``render``: labelled frames per second of a simulator (RGB + semantic + depth +
instances + counts, end to end through ``generate``: a new scene sampled for every
frame) at 64×128 and 128×256, for a batch, with the peak memory; with PyBullet
installed, the same run measures PyBullet's CPU renderer (``getCameraImage`` with
``ER_TINY_RENDERER``) on scenes of comparable complexity (a ground plane, 24 box
buildings and 8 cars of two boxes each) both ways: like for like, a new random scene
built for every frame (``resetSimulation`` and the bodies created again), and at its
best, one fixed scene built once.  The two do not return the same things
(`RETURNS`): lts gives labelled frames, PyBullet RGBA, a depth buffer and body ids.
The ratios are given per CPU-second of this process (what a frame costs, whatever else
the machine runs) and per wall-clock second; the renderers take turns batch by batch.

Subcommands are registered in ``_SUBCOMMANDS`` (name → help, argument builder, runner).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from simulators.errors import UserError

from . import ArgumentParser, parse_resolution, run_cli

__all__ = ["main", "RETURNS", "RenderResult", "bench_render", "bench_pybullet"]

#: What each renderer returns per frame, as the benchmark reports it.
RETURNS: dict[str, tuple[str, ...]] = {
    "lts": (
        "RGB",
        "semantic classes (29 CARLA/Cityscapes ids)",
        "depth (metres)",
        "instance ids",
        "visible car counts per type",
    ),
    "pybullet": ("RGBA", "depth buffer (non-linear, not metres)", "body/link ids (no classes, no counts)"),
}


@dataclass
class RenderResult:
    """One measurement: ``fps`` from wall-clock time (best of the repeats), ``cpu_fps``
    from the process's CPU time (what the frames cost, whatever else runs on the machine)."""

    renderer: str
    resolution: str
    frames: int
    fps: float
    cpu_fps: float
    ms_per_frame: float
    peak_mb: float | None = None
    scene: str = "new scene per frame"  # or "fixed scene"
    returns: tuple[str, ...] = ()


def _peak_rss_mb() -> float:
    # ru_maxrss: kilobytes on Linux, bytes on macOS
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


class _Runner:
    """Times one renderer batch by batch, so that two renderers can take turns (on a
    busy machine, interleaving is what makes their ratio fair)."""

    name = ""
    frames = 0
    resolution = (0, 0)
    scene = "new scene per frame"
    returns: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.best_wall, self.best_cpu = math.inf, math.inf

    def _batch(self, index: int) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        pass

    def warm_up(self) -> None:
        self._batch(0)
        self._sync()

    def run(self, index: int) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        self._batch(index)
        self._sync()
        self.best_wall = min(self.best_wall, time.perf_counter() - t0)
        self.best_cpu = min(self.best_cpu, time.process_time() - c0)

    def peak_mb(self) -> float | None:
        return None

    def close(self) -> None:
        pass

    def result(self) -> RenderResult:
        h, w = self.resolution
        return RenderResult(
            renderer=self.name,
            resolution=f"{h}x{w}",
            frames=self.frames,
            fps=self.frames / self.best_wall,
            cpu_fps=self.frames / max(self.best_cpu, 1e-9),
            ms_per_frame=1000.0 * self.best_wall / self.frames,
            peak_mb=self.peak_mb(),
            scene=self.scene,
            returns=self.returns,
        )


class _SimRunner(_Runner):
    def __init__(
        self,
        sim_name: str,
        resolution: tuple[int, int],
        batch: int,
        device: str,
        params: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        import simulators

        super().__init__()
        options: dict[str, Any] = {"resolution": resolution, "device": device}
        if threads is not None:
            options["threads"] = threads
        self.sim = simulators.make(sim_name, **options)
        self.psi = dict(params) if params is not None else _default_params(self.sim)
        self.name, self.frames, self.resolution = sim_name, batch, resolution
        self.returns = RETURNS["lts"] if sim_name == "procedural" else ()
        self.cuda = str(device).startswith("cuda")

    def _batch(self, index: int) -> None:
        self.sim.generate(self.psi, self.frames, seed=index)

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def warm_up(self) -> None:
        super().warm_up()
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float | None:
        if self.cuda:
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        return _peak_rss_mb()

    def close(self) -> None:
        self.sim.close()


class _PyBulletRunner(_Runner):
    """PyBullet's TinyRenderer: ``getCameraImage`` per frame, on a new random scene built
    for every frame (``new_scene``, like lts's ``generate``) or on one scene built once."""

    def __init__(self, resolution: tuple[int, int], frames: int, new_scene: bool = True) -> None:
        try:
            import pybullet as p
        except ImportError:
            raise UserError('the PyBullet comparison needs pybullet: pip install -e ".[bench]"') from None
        super().__init__()
        self.p = p
        self.name, self.frames, self.resolution = "pybullet", frames, resolution
        self.new_scene = new_scene
        self.scene = "new scene per frame" if new_scene else "fixed scene"
        self.returns = RETURNS["pybullet"]
        h, w = resolution
        self.client = p.connect(p.DIRECT)
        if not new_scene:
            _pybullet_scene(p, self.client, seed=0)
        self.view = p.computeViewMatrix([0, -1.75, 1.6], [10, -1.75, 1.6], [0, 0, 1], physicsClientId=self.client)
        vfov = math.degrees(2 * math.atan(math.tan(math.radians(45.0)) * h / w))  # 90° across, like ours
        self.proj = p.computeProjectionMatrixFOV(vfov, w / h, 0.3, 1000.0, physicsClientId=self.client)

    def _batch(self, index: int) -> None:
        h, w = self.resolution
        for k in range(self.frames):
            if self.new_scene:
                self.p.resetSimulation(physicsClientId=self.client)
                _pybullet_scene(self.p, self.client, seed=index * self.frames + k)
            self.p.getCameraImage(
                w, h, self.view, self.proj, renderer=self.p.ER_TINY_RENDERER, physicsClientId=self.client
            )

    def close(self) -> None:
        self.p.disconnect(self.client)


def _measure(runners: list[_Runner], repeat: int) -> list[RenderResult]:
    """Warm every runner up, then let them take turns ``repeat`` times; best of each."""
    try:
        for r in runners:
            r.warm_up()
        for i in range(repeat):
            for r in runners:
                r.run(1 + i)
        return [r.result() for r in runners]
    finally:
        for r in runners:
            r.close()


def bench_render(
    sim_name: str,
    resolution: tuple[int, int],
    batch: int,
    repeat: int,
    device: str,
    params: dict[str, Any] | None = None,
    threads: int | None = None,
) -> RenderResult:
    """Time ``sim.generate(ψ, batch)`` ``repeat`` times (after one warm-up batch), best of.
    ``threads``: the simulator's ``threads`` option, when given."""
    return _measure([_SimRunner(sim_name, resolution, batch, device, params, threads)], repeat)[0]


def bench_pybullet(resolution: tuple[int, int], frames: int, repeat: int, new_scene: bool = True) -> RenderResult:
    """PyBullet's TinyRenderer: ``frames`` calls of ``getCameraImage`` (RGBA, depth buffer
    and body ids), each on a new random scene (``new_scene``) or all on one, best of ``repeat``."""
    return _measure([_PyBulletRunner(resolution, frames, new_scene)], repeat)[0]


def _default_params(sim: Any) -> dict[str, Any]:
    psi = sim.param_space.default()
    # a busy street: about 8 cars a scene, a mid-length road
    if "cars_per_scene" in psi:
        psi["cars_per_scene"] = 8.0
    return psi


def _pybullet_scene(p: Any, client: int, seed: int = 0) -> None:
    """A ground plane, 24 box buildings along both sides and 8 two-box cars on the lanes,
    their sizes, places and colours drawn from ``seed``."""
    import random

    rng = random.Random(seed)
    plane = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=client)
    p.createMultiBody(0, plane, -1, [0, 0, 0], physicsClientId=client)
    for i in range(24):
        side = 1 if i % 2 else -1
        w, d, h = rng.uniform(4, 10), rng.uniform(4, 9), rng.uniform(4, 15)
        vs = p.createVisualShape(
            p.GEOM_BOX, halfExtents=[w, d, h], rgbaColor=[rng.random(), rng.random(), rng.random(), 1],
            physicsClientId=client,
        )  # fmt: skip
        p.createMultiBody(0, -1, vs, [(i // 2) * 16.0 + 5.0, side * (11.0 + d), h], physicsClientId=client)
    for i in range(8):
        x, y = 8.0 + i * 9.0, rng.choice([-5.25, -1.75, 1.75, 5.25])
        colour = [rng.random(), rng.random(), rng.random(), 1]
        for he, z in (([2.3, 0.9, 0.46], 0.46), ([1.2, 0.8, 0.3], 1.22)):
            vs = p.createVisualShape(p.GEOM_BOX, halfExtents=he, rgbaColor=colour, physicsClientId=client)
            p.createMultiBody(0, -1, vs, [x, y, z], physicsClientId=client)


def _pybullet_available() -> bool:
    try:
        import pybullet  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- render


def _render_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--sim", default="procedural", help="simulator name or package.module:Class (default procedural)")
    sp.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    sp.add_argument("--batch", type=int, default=64, help="frames per generate call (default 64)")
    sp.add_argument("--repeat", type=int, default=3, help="timed batches per resolution; the best counts (default 3)")
    sp.add_argument(
        "--resolution",
        action="append",
        metavar="HxW",
        help="a resolution to measure (repeatable; default 64x128 and 128x256)",
    )
    sp.add_argument(
        "--threads", type=int, help="torch CPU threads the simulator renders with (default: the simulator's own)"
    )
    sp.add_argument(
        "--pybullet",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure PyBullet's TinyRenderer in the same run (default: when pybullet is installed)",
    )
    sp.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")


def _render(args: argparse.Namespace) -> int:
    import torch

    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: expected a positive number of frames")
    if args.repeat < 1:
        raise UserError(f"--repeat {args.repeat}: expected a positive number")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: expected a positive number")
    resolutions = [parse_resolution(r) for r in (args.resolution or ["64x128", "128x256"])]
    use_pb = _pybullet_available() if args.pybullet is None else args.pybullet
    if use_pb and not _pybullet_available():
        raise UserError('--pybullet needs pybullet: pip install -e ".[bench]"')
    threads = "the simulator's default" if args.threads is None else str(args.threads)
    print(
        f"render benchmark: sim {args.sim}, device {args.device}, batch {args.batch}, best of {args.repeat}, "
        f"render threads {threads} (torch {torch.__version__}, {torch.get_num_threads()} threads available)"
    )
    lts_returns = ", ".join(RETURNS["lts"]) if args.sim == "procedural" else "what the simulator renders"
    print(f"{args.sim} returns: {lts_returns}; a new scene sampled for every frame")
    if use_pb:
        print(f"pybullet returns: {', '.join(RETURNS['pybullet'])}; timed on a new random scene per frame "
              "(like for like) and on one fixed scene (its best case)")  # fmt: skip
    header = f"{'resolution':>10}  {'fps':>8}  {'cpu fps':>8}  {'ms/frame':>8}  {'peak MB':>8}"
    if use_pb:
        header += f"  {'pb new-scene cpu fps':>20}  {'cpu ratio':>9}  {'pb fixed cpu fps':>16}  {'cpu ratio':>9}"
    print(header)
    results: list[RenderResult] = []
    for res in resolutions:
        runners: list[_Runner] = [_SimRunner(args.sim, res, args.batch, args.device, threads=args.threads)]
        if use_pb:
            runners += [_PyBulletRunner(res, args.batch, new_scene=True), _PyBulletRunner(res, args.batch, False)]
        measured = _measure(runners, args.repeat)  # they take turns, batch by batch
        results.extend(measured)
        ours = measured[0]
        line = f"{ours.resolution:>10}  {ours.fps:8.0f}  {ours.cpu_fps:8.0f}  {ours.ms_per_frame:8.3f}  "
        line += f"{ours.peak_mb:8.0f}"
        for pb in measured[1:]:
            width = 20 if pb.scene == "new scene per frame" else 16
            line += f"  {pb.cpu_fps:{width}.0f}  {ours.cpu_fps / pb.cpu_fps:8.1f}x"
        print(line, flush=True)
    print(
        "fps: wall clock (best batch; the renderers take turns); cpu fps: frames per CPU-second of this process; "
        "cpu ratio: lts cpu fps / PyBullet cpu fps; "
        "peak MB: "
        + ("CUDA memory allocated" if str(args.device).startswith("cuda") else "peak resident memory of the process")
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return 0


# ----------------------------------------------------------------------------- dispatch

from .bench_loop import bench_loop, loop_arguments  # noqa: E402
from .bench_ray import _add_arguments as ray_arguments  # noqa: E402
from .bench_ray import bench_ray  # noqa: E402

#: name → (help, add arguments, run).  Other benchmarks register here.
_SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "render": ("labelled frames per second of a simulator (vs PyBullet's TinyRenderer)", _render_args, _render),
    "loop": (
        "time of one LTS iteration split into render / refine / train / score / update",
        loop_arguments,
        bench_loop,
    ),
    "ray": ("iteration time in-process and on 1, 2, … Ray workers", ray_arguments, bench_ray),
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lts.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, (help_text, add_args, _run) in _SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return _SUBCOMMANDS[args.command][2](args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
