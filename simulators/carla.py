"""The CARLA adapter: the street parameter space rendered by a running CARLA server.

`CarlaSimulator` turns a ψ of `street_param_space()` (the procedural renderer's names,
so target files and learned policies carry over) into scenes on a CARLA 0.9.14+ server:

- ``weather`` proportions → one `carla.WeatherParameters` preset per scene;
- ``intersection`` proportions → a camera on a driving lane ``road_length`` metres before
  a junction of that shape (X: 4 arms, T: 3, L: 2 at a corner), found from the map's
  topology once per town;
- ``car_type`` proportions and ``cars_per_scene`` → a Poisson number of vehicles from
  blueprint groups, placed on the lanes ahead of the camera;
- RGB, semantic-segmentation, depth and instance-segmentation cameras on one transform,
  spawned once per simulator and moved to each scene's pose, in synchronous mode; each
  image is kept only if its frame is the last tick's and its pose the scene's.

This module owns the connection (and its failure messages), the world it takes over
(synchronous settings, the map's parked-vehicle layer unloaded; both restored on `close`),
and every actor it spawns (cars destroyed after each scene, cameras on `close`; both on
errors and on Ctrl-C).  ``carla`` is imported only when a simulator is built.

Pitfalls it is written against (carla-simulator/carla issues): labels a tick behind the
image (#1098, #2069), ticks that hang (#2809, #3395), sensors never destroyed (#6799,
#9067), semantic ids before 0.9.14 (#6902), spawns failing on collision (#1873, #5545),
servers that leak on every ``listen`` and crash after a few thousand camera cycles (#7156,
#7413, #7987), a new camera's auto-exposure adapting over frames (#3594), a client that
never recovers from a server restart (#3707).
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any, ClassVar

import numpy as np
import torch

from . import labels as L
from .base import Batch, Simulator
from .errors import SimulatorUnavailable, UserError, did_you_mean
from .street import CAR_TYPES, INTERSECTIONS, ROAD_LENGTH, WEATHERS, street_param_space

__all__ = [
    "CarlaSimulator",
    "WEATHER_PRESETS",
    "INSTALL_HINT",
    "classify_vehicle",
    "classify_junction",
    "find_junctions",
    "parse_ports",
    "check_worker_ports",
    "probe_server",
    "decode_bgra",
    "decode_depth",
    "HATCHBACK_MAX_LENGTH",
    "SUV_MIN_HEIGHT",
    "LEGACY_TRUCK_MIN_LENGTH",
    "LEGACY_TRUCK_MIN_HEIGHT",
    "LEGACY_VAN_MIN_HEIGHT",
]

INSTALL_HINT = 'pip install -e ".[carla]"'

#: ``weather`` choice → name of the `carla.WeatherParameters` preset.
WEATHER_PRESETS: dict[str, str] = {
    "clear_noon": "ClearNoon",
    "cloudy_noon": "CloudyNoon",
    "hard_rain_noon": "HardRainNoon",
    "clear_sunset": "ClearSunset",
}

# --- car-type heuristic (metres; a blueprint's size is its spawned bounding box, 2 × extent) ---
#: A 4-wheeled ``base_type == "car"`` shorter than this is a hatchback (Mini, Fiat 500, C3, A2, Micra).
HATCHBACK_MAX_LENGTH = 4.3
#: A car at least this tall is an SUV (Patrol, Wrangler, e-tron); checked before the length rule.
SUV_MIN_HEIGHT = 1.6
#: Servers without the ``base_type`` attribute (before 0.9.14): trucks are this long or this tall,
LEGACY_TRUCK_MIN_LENGTH = 6.0
LEGACY_TRUCK_MIN_HEIGHT = 2.6
#: and vans at least this tall.
LEGACY_VAN_MIN_HEIGHT = 1.9
# Base types that are never placed: they are no column of ``counts``.
_EXCLUDED_BASE_TYPES = frozenset({"motorcycle", "bicycle", "bus"})
# Where a car type has no blueprint on a server, the nearest group stands in (with a warning).
_TYPE_FALLBACK: dict[str, tuple[str, ...]] = {
    "sedan": ("hatchback", "suv", "van", "truck"),
    "hatchback": ("sedan", "suv", "van", "truck"),
    "suv": ("sedan", "van", "hatchback", "truck"),
    "van": ("suv", "truck", "sedan", "hatchback"),
    "truck": ("van", "suv", "sedan", "hatchback"),
}
_SHAPE_FALLBACK: dict[str, tuple[str, ...]] = {"X": ("T", "L"), "T": ("X", "L"), "L": ("T", "X")}
_SHAPE_ARMS = {4: "X", 3: "T", 2: "L"}

# Semantic tags (red channel of the instance camera) that mark a vehicle's pixels.
_VEHICLE_TAGS = np.array([L.CAR, L.TRUCK, L.BUS, L.MOTORCYCLE, L.BICYCLE], dtype=np.int64)
_SENSORS = {
    "rgb": "sensor.camera.rgb",
    "semantic": "sensor.camera.semantic_segmentation",
    "depth": "sensor.camera.depth",
    "instance": "sensor.camera.instance_segmentation",
}
ROLE_NAME = "lts"  # role_name of every actor lts spawns, so they can be told apart in a world
# From 0.9.16 the instance camera's green/blue bytes are the CARLA actor id (low 16 bits).
_ACTOR_ID_INSTANCES = (0, 9, 16)
_POSE_TOLERANCE = (0.05, 0.5)  # metres, degrees: an image rendered from the scene's camera pose
_MOVE_TICKS = 3  # extra ticks allowed for a camera move to show in the images
_MAX_DEPTH = 1000.0  # metres: the far plane of CARLA's depth camera


def _import_carla() -> Any:
    try:
        import carla
    except ImportError:
        raise UserError(f"the CARLA simulator needs the CARLA Python client; install it with {INSTALL_HINT}") from None
    return carla


# ----------------------------------------------------------------------------- connection


def parse_ports(port: int | str | Sequence[int]) -> list[int]:
    """``2000``, ``"2000,3000"`` or ``[2000, 3000]`` → a list of ports (one per Ray worker)."""
    if isinstance(port, str):
        parts: list[Any] = [p.strip() for p in port.split(",")]
    elif isinstance(port, Sequence):
        parts = list(port)
    else:
        parts = [port]
    ports = []
    for p in parts:
        if isinstance(p, (int, np.integer)) and not isinstance(p, bool):
            value = int(p)
        elif isinstance(p, str) and p.isdigit():
            value = int(p)
        else:
            value = -1
        if not 1 <= value <= 65535:
            raise UserError(f"CARLA port: expected an integer in 1..65535 (or a comma-separated list), got {p!r}")
        ports.append(value)
    if not ports:
        raise UserError(f"CARLA port: expected at least one port, got {port!r}")
    return ports


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name}: expected true or false, got {value!r}")
    return value


def check_worker_ports(port: int | str | Sequence[int], workers: int, *, shared: bool = False) -> None:
    """Refuse ``workers`` workers that would share a CARLA port (worker *i* takes
    ``ports[i % len(ports)]``), unless ``shared``: a server serves one synchronous client."""
    ports = parse_ports(port)
    if _flag(shared, "shared") or workers < 2:
        return
    used = [ports[i % len(ports)] for i in range(int(workers))]
    twice = sorted({p for p in used if used.count(p) > 1})
    if twice:
        raise UserError(
            f"{workers} workers on CARLA port(s) {','.join(map(str, ports))} would share port "
            f"{', '.join(map(str, twice))}, and a CARLA server serves one client (weather, ticks and cars "
            "are the whole world's); start one server per worker and list every port (--carla-port 2000,3000), "
            "or pass --carla-shared to have the workers take turns on one server"
        )


def _no_server(host: str, port: int, why: str) -> SimulatorUnavailable:
    return SimulatorUnavailable(
        f"no CARLA server at {host}:{port} ({why}); start one with "
        f"`./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}` (CARLA 0.9.14 or newer) "
        "and pass --carla-host/--carla-port, or use --sim procedural"
    )


# A msgpack-rpc request [0, msgid 0, "version", []]: what the CARLA client sends first.
_VERSION_REQUEST = b"\x94\x00\x00\xa7version\x90"


def probe_server(host: str, port: int, timeout: float) -> None:
    """Fail fast, with one line, where no CARLA server can be at ``host:port``.

    A refused or unanswered TCP connection is reported at once instead of after the
    client's own time-out; a service that answers but not in msgpack-rpc (a web server,
    a proxy) is refused here, because the CARLA client aborts the whole process
    (``std::bad_cast``) when it reads such a reply.  A server that accepts and stays
    silent is left to the client, which then times out normally.
    """
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        raise _no_server(host, port, f"cannot resolve host {host!r}: {e.strerror or e}") from None
    except ConnectionRefusedError:
        raise _no_server(host, port, "connection refused") from None
    except TimeoutError:
        raise _no_server(host, port, f"no answer within {timeout:g} s") from None
    except OSError as e:
        raise _no_server(host, port, e.strerror or str(e)) from None
    with sock:
        try:
            sock.settimeout(min(timeout, 5.0))
            sock.sendall(_VERSION_REQUEST)
            head = sock.recv(1)
        except (TimeoutError, OSError):
            return
    # A msgpack-rpc response is a 4-element array: first byte 0x94.  Empty: the peer hung up.
    if head and head != b"\x94":
        raise SimulatorUnavailable(
            f"{host}:{port} answered, but not as a CARLA server (first byte {head!r}); check "
            "--carla-host/--carla-port, start CARLA with `./CarlaUE4.sh -RenderOffScreen`, or use --sim procedural"
        )


def _version_tuple(v: str) -> tuple[int, ...]:
    m = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", str(v))
    return tuple(int(x) for x in m.groups()) if m else ()


def _is_timeout(e: BaseException) -> bool:
    return "time-out" in str(e) or "timeout" in str(e).lower()


# ----------------------------------------------------------------------------- blueprints


def classify_vehicle(
    base_type: str | None, extent: tuple[float, float, float] | None, wheels: int | None
) -> str | None:
    """The car type (one of `CAR_TYPES`) of a vehicle blueprint, or ``None`` for one lts never places.

    ``base_type`` is the blueprint's attribute (CARLA 0.9.14+: car, truck, van, bus,
    motorcycle, bicycle; ``None`` where absent); ``extent`` the half-sizes (x: length,
    y: width, z: height) of its bounding box; ``wheels`` its ``number_of_wheels``.

    Rules, in order: two-wheelers, buses → None; ``truck`` → truck; ``van`` → van;
    without ``base_type``: length ≥ 6.0 m or height ≥ 2.6 m → truck, height ≥ 1.9 m → van;
    then cars: height ≥ 1.6 m → suv, length < 4.3 m → hatchback, otherwise sedan.
    A car whose size is unknown is a sedan.
    """
    base = (base_type or "").strip().lower()
    if base in _EXCLUDED_BASE_TYPES or (wheels is not None and wheels < 4):
        return None
    if base == "truck":
        return "truck"
    if base == "van":
        return "van"
    if extent is None:
        return "sedan" if base in ("", "car") else None
    length, height = 2.0 * extent[0], 2.0 * extent[2]
    if not base:
        if length >= LEGACY_TRUCK_MIN_LENGTH or height >= LEGACY_TRUCK_MIN_HEIGHT:
            return "truck"
        if height >= LEGACY_VAN_MIN_HEIGHT:
            return "van"
    elif base != "car":
        return None  # a base type this version of lts does not know
    if height >= SUV_MIN_HEIGHT:
        return "suv"
    if length < HATCHBACK_MAX_LENGTH:
        return "hatchback"
    return "sedan"


def _attr(bp: Any, name: str) -> str | None:
    if not bp.has_attribute(name):
        return None
    return bp.get_attribute(name).as_str()


# ----------------------------------------------------------------------------- junctions


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _arm_headings(junction: Any, lane_type: Any) -> list[float]:
    """Outward direction (degrees) of every lane end at the junction's border: an entry
    lane points into the junction, so its arm lies opposite; an exit lane points out."""
    headings = []
    for entry, exit_ in junction.get_waypoints(lane_type):
        headings.append((entry.transform.rotation.yaw + 180.0) % 360.0)
        headings.append(exit_.transform.rotation.yaw % 360.0)
    return headings


def classify_junction(junction: Any, lane_type: Any, *, tolerance: float = 40.0) -> str | None:
    """``"X"``, ``"T"``, ``"L"`` or ``None`` from the number of distinct approach directions.

    Lane ends whose outward headings lie within ``tolerance`` degrees belong to one arm.
    4 arms → X, 3 → T, 2 at 45°..135° → L (a corner; two arms in line are just a road
    through a junction box), anything else → None.
    """
    arms: list[list[float]] = []
    for h in _arm_headings(junction, lane_type):
        for arm in arms:
            if _angle_diff(arm[0], h) <= tolerance:
                arm.append(h)
                break
        else:
            arms.append([h])
    shape = _SHAPE_ARMS.get(len(arms))
    if shape == "L" and not 45.0 <= _angle_diff(arms[0][0], arms[1][0]) <= 135.0:
        return None
    return shape


def find_junctions(carla_map: Any, lane_type: Any) -> dict[str, list[Any]]:
    """Junctions of a map by shape (``{"X": [...], "T": [...], "L": [...]}``), found
    through the map's topology (the lane segments; those inside a junction start in it)."""
    seen: dict[int, Any] = {}
    for segment in carla_map.get_topology():
        for wp in segment:
            if wp.is_junction:
                j = wp.get_junction()
                if j is not None and j.id not in seen:
                    seen[j.id] = j
    out: dict[str, list[Any]] = {s: [] for s in INTERSECTIONS}
    for jid in sorted(seen):
        shape = classify_junction(seen[jid], lane_type)
        if shape is not None:
            out[shape].append(seen[jid])
    return out


@dataclass
class _Approach:
    """A driving lane into a junction and the waypoints behind its entry, every ``step`` metres."""

    junction_id: int
    shape: str
    path: list[tuple[float, Any]]  # (metres before the junction, waypoint), increasing

    @property
    def reach(self) -> float:
        return self.path[-1][0] if self.path else 0.0


def _walk_back(entry: Any, junction_id: int, max_distance: float, step: float) -> list[tuple[float, Any]]:
    """Waypoints behind ``entry`` until ``max_distance``, another junction, or the road's start."""
    path: list[tuple[float, Any]] = []
    wp, d = entry, 0.0
    while d + step <= max_distance + 1e-6:
        prev = wp.previous(step)
        if not prev:
            break
        wp, d = prev[0], d + step
        if wp.is_junction:
            if not path and wp.junction_id == junction_id:
                continue  # still inside the junction the entry belongs to
            break
        path.append((d, wp))
    return path


# ----------------------------------------------------------------------------- images


def decode_bgra(image: Any) -> np.ndarray:
    """A `carla.Image` (BGRA bytes) as an H×W×4 uint8 array (a copy)."""
    arr = np.frombuffer(image.raw_data, dtype=np.uint8)
    return arr.reshape(int(image.height), int(image.width), 4).copy()


def decode_depth(bgra: np.ndarray) -> np.ndarray:
    """Metres from a depth camera's BGRA: (R + 256 G + 256² B) / (256³ − 1) × 1000."""
    b, g, r = (bgra[..., i].astype(np.float64) for i in range(3))
    return ((r + g * 256.0 + b * 65536.0) / (256.0**3 - 1.0) * _MAX_DEPTH).astype(np.float32)


def _project_box(
    actor: Any, cam_inv: np.ndarray, f: float, w: int, h: int
) -> tuple[int, int, int, int, float, float] | None:
    """Pixel box (u0, u1, v0, v1, nearest, farthest planar depth) of an actor's bounding box."""
    corners = actor.bounding_box.get_world_vertices(actor.get_transform())
    pts = np.array([[c.x, c.y, c.z, 1.0] for c in corners], dtype=np.float64) @ cam_inv.T
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]  # UE camera frame: x forward, y right, z up
    if not (x > 0.05).any():
        return None
    xc = np.maximum(x, 0.05)  # corners behind the camera project far off-screen, then are clipped
    u, v = w / 2.0 + f * y / xc, h / 2.0 - f * z / xc
    u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 1, w)
    v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 1, h)
    if u0 >= u1 or v0 >= v1:
        return None
    return u0, u1, v0, v1, float(x.min()), float(x.max())


def _assign_instances(
    tags: np.ndarray, uids: np.ndarray, depth: np.ndarray, boxes: Sequence[tuple | None], margin: float = 1.0
) -> np.ndarray:
    """Instance map (0 = none, k = k-th placed car) from the instance camera, for servers
    before 0.9.16.

    There the instance camera's green/blue bytes are the Unreal object's ``GetUniqueID()``,
    not the CARLA actor id, so a segment (vehicle tag, one id) is given to the placed car
    whose projected box and depth range hold most of its pixels; segments no placed car
    explains (parked cars of the map) stay 0.  A car whose mesh outgrows its bounding box
    can be missed; 0.9.16 servers are read by actor id instead (`_instances_by_actor`).
    """
    inst = np.zeros(tags.shape, dtype=np.int64)
    vehicle = np.isin(tags, _VEHICLE_TAGS)
    if not vehicle.any() or not any(b is not None for b in boxes):
        return inst
    cand = np.zeros((len(boxes), *tags.shape), dtype=bool)
    for k, box in enumerate(boxes):
        if box is None:
            continue
        u0, u1, v0, v1, dmin, dmax = box
        cand[k, v0:v1, u0:u1] = True
        cand[k] &= (depth >= dmin - margin) & (depth <= dmax + margin)
    cand &= vehicle
    # Ties (a small, far segment inside two boxes) go to the car whose depth range holds
    # the segment's depth, then to the box whose centre is nearest the segment's.
    centres = np.array([[(b[0] + b[1]) / 2.0, (b[2] + b[3]) / 2.0] if b else [np.inf, np.inf] for b in boxes])
    ranges = np.array([[b[4], b[5]] if b else [np.inf, np.inf] for b in boxes])
    for uid in np.unique(uids[vehicle]):
        seg = vehicle & (uids == uid)
        votes = (cand & seg).reshape(len(boxes), -1).sum(axis=1)
        if votes.max() == 0 or 2 * votes.max() < int(seg.sum()):
            continue
        rows, cols = np.nonzero(seg)
        d = float(np.median(depth[seg]))
        gap = np.maximum(ranges[:, 0] - d, 0.0) + np.maximum(d - ranges[:, 1], 0.0)
        dist = np.hypot(centres[:, 0] - (cols.mean() + 0.5), centres[:, 1] - (rows.mean() + 0.5))
        k = int(np.lexsort((dist, gap, -votes))[0])
        inst[seg] = k + 1
    return inst


def _instances_by_actor(tags: np.ndarray, ids: np.ndarray, actor_ids: Sequence[int]) -> np.ndarray:
    """Instance map (0 = none, k = k-th placed car) from a 0.9.16 instance camera, whose
    green/blue bytes are the actor id's low 16 bits."""
    inst = np.zeros(tags.shape, dtype=np.int64)
    vehicle = np.isin(tags, _VEHICLE_TAGS)
    for k, actor_id in enumerate(actor_ids):
        inst[vehicle & (ids == (int(actor_id) & 0xFFFF))] = k + 1
    return inst


def _pose_matches(image: Any, where: Any) -> bool:
    """Whether an image was rendered from the camera pose ``where`` (`carla.Image.transform`)."""
    t = getattr(image, "transform", None)
    if t is None:
        return True  # an image without a pose cannot be checked
    metres, degrees = _POSE_TOLERANCE
    a, b = t.location, where.location
    if math.dist((a.x, a.y, a.z), (b.x, b.y, b.z)) > metres:
        return False
    return all(_angle_diff(getattr(t.rotation, k), getattr(where.rotation, k)) <= degrees for k in ("yaw", "pitch"))


class _ServerLock:
    """Turns on one server for the workers that share it (``shared``): a lock file per
    ``host:port`` (``flock``, held by one process of this machine at a time) and a lock for
    the threads of this process."""

    _threads: ClassVar[dict[str, threading.Lock]] = {}

    def __init__(self, host: str, port: int) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{host}-{port}")
        self.path = os.path.join(tempfile.gettempdir(), f"lts-carla-{name}.lock")
        self.local = self._threads.setdefault(self.path, threading.Lock())

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.local, open(self.path, "a+") as fh:
            try:
                import fcntl
            except ImportError:  # not POSIX: only the threads of this process take turns
                yield
                return
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- the simulator


@dataclass
class _Scene:
    """One rendered scene, before it joins a batch."""

    rgb: np.ndarray
    semantic: np.ndarray
    depth: np.ndarray
    instances: np.ndarray
    counts: np.ndarray
    attributes: dict[str, Any] = field(default_factory=dict)


class CarlaSimulator(Simulator):
    """Street scenes rendered by a CARLA server (0.9.14 or newer), same ψ as ``procedural``.

    >>> sim = CarlaSimulator(host="localhost", port=2000)          # doctest: +SKIP
    >>> batch = sim.generate(sim.param_space.sample(seed=0), 8, seed=0)   # doctest: +SKIP
    >>> sim.close()                                                 # doctest: +SKIP

    Options (the command line's ``--carla-host --carla-port --carla-timeout --carla-town``):

    - ``host``, ``port``: the server; ``port`` may be a list (or ``"2000,3000"``), one per
      Ray worker, and ``worker_index`` picks ``ports[worker_index % len(ports)]``.
    - ``timeout``: seconds for connecting, for every call to the server and for each tick.
    - ``town``: a map to load (``"Town05"``); ``None`` keeps the loaded one.
    - ``resolution``: (height, width) of the frames; ``fov``: horizontal field of view.
    - ``fixed_delta``: the synchronous-mode time step (seconds).
    - ``warmup_ticks``: ticks after spawning before the captured one (cars settle on the
      road, the new weather and the cameras' exposure take effect).
    - ``exposure``: ``"auto"`` (CARLA's histogram auto-exposure, its adaptation speeded up
      so that it settles within the warm-up ticks instead of carrying the previous scene's
      light over) or ``"manual"`` (fixed: the blueprint's shutter speed, ISO and f-stop).
    - ``shared``: take turns on a server with other lts workers given the same port (each
      `generate` holds a lock per ``host:port`` on this machine, takes the world over and
      gives it back); without it a server already in synchronous mode is refused.
    - ``min_visible_pixels``: a placed car counts as visible with at least this many pixels.
    - ``car_blueprints``: optional ``{car_type: [blueprint ids or patterns]}`` replacing
      the size heuristic of `classify_vehicle`.
    - ``client_factory``: ``(host, port) -> client`` (tests pass a fake server here);
      by default the port is probed and a ``carla.Client`` made.
    - ``connect``: connect now (default, so a missing server is reported at once) or on
      first use.

    Same seed → same weather, junction, camera pose, blueprints and placements; the pixels
    are the server's and may differ slightly between server versions and GPUs.
    """

    name: ClassVar[str] = "carla"
    param_space = street_param_space()

    def __init__(
        self,
        host: str = "localhost",
        port: int | str | Sequence[int] = 2000,
        timeout: float = 10.0,
        town: str | None = None,
        resolution: tuple[int, int] = (64, 128),
        fixed_delta: float = 0.05,
        *,
        worker_index: int = 0,
        fov: float = 90.0,
        camera_height: float = 1.7,
        camera_pitch: float = -5.0,
        warmup_ticks: int = 10,
        min_visible_pixels: int = 8,
        spawn_attempts: int = 8,
        car_blueprints: Mapping[str, Sequence[str]] | None = None,
        exposure: str = "auto",
        shared: bool = False,
        client_factory: Callable[[str, int], Any] | None = None,
        connect: bool = True,
    ) -> None:
        self._options = dict(
            host=host, port=port, timeout=timeout, town=town, resolution=resolution, fixed_delta=fixed_delta,
            worker_index=worker_index, fov=fov, camera_height=camera_height, camera_pitch=camera_pitch,
            warmup_ticks=warmup_ticks, min_visible_pixels=min_visible_pixels, spawn_attempts=spawn_attempts,
            car_blueprints=car_blueprints, exposure=exposure, shared=shared, client_factory=client_factory,
        )  # fmt: skip
        if not isinstance(host, str) or not host.strip():
            raise UserError(f"CARLA host: expected a host name or address, got {host!r}")
        self.host = host.strip()
        ports = parse_ports(port)
        if isinstance(worker_index, bool) or not isinstance(worker_index, (int, np.integer)) or worker_index < 0:
            raise UserError(f"worker_index: expected an integer >= 0, got {worker_index!r}")
        self.port = ports[int(worker_index) % len(ports)]
        self.timeout = self._positive("timeout", timeout)
        self.fixed_delta = self._positive("fixed_delta", fixed_delta)
        self.fov = self._positive("fov", fov)
        if not 0 < self.fov < 180:
            raise UserError(f"fov: expected degrees in (0, 180), got {fov!r}")
        try:
            hgt, wid = (int(x) for x in resolution)
        except (TypeError, ValueError):
            raise UserError(f"resolution: expected (height, width), got {resolution!r}") from None
        if hgt < 8 or wid < 8:
            raise UserError(f"resolution: expected (height, width) of at least 8 pixels each, got {resolution!r}")
        self.resolution = (hgt, wid)
        self.town = None if town in (None, "") else str(town)
        self.camera_height = float(camera_height)
        self.camera_pitch = float(camera_pitch)
        self.warmup_ticks = max(int(warmup_ticks), 0)
        self.min_visible_pixels = max(int(min_visible_pixels), 1)
        self.spawn_attempts = max(int(spawn_attempts), 1)
        self.car_blueprints = {k: list(v) for k, v in car_blueprints.items()} if car_blueprints else None
        if self.car_blueprints:
            unknown = [k for k in self.car_blueprints if k not in CAR_TYPES]
            if unknown:
                raise UserError(f"car_blueprints: unknown car type {unknown[0]!r}, expected some of {list(CAR_TYPES)}")
        if exposure not in ("auto", "manual"):
            raise UserError(f"exposure: expected 'auto' or 'manual', got {exposure!r}")
        self.exposure = exposure
        self.shared = _flag(shared, "shared")
        self._lock = _ServerLock(self.host, self.port) if self.shared else None
        self._client_factory = client_factory
        self._carla: Any = None
        self._client: Any = None
        self._world: Any = None
        self._world_id: Any = None
        self._map: Any = None
        self._original_settings: Any = None
        self._approaches: dict[str, dict[str, list[_Approach]]] = {}  # town → shape → approaches
        self._groups: dict[str, list[Any]] | None = None  # car type → blueprints
        self._sensor_bps: dict[str, Any] | None = None
        self._leaked: set[int] = set()  # ids a failed destroy left behind; retried later
        self._cameras: dict[str, tuple[Any, queue.Queue]] | None = None  # spawned once, moved per scene
        self._holding = False  # the world is in our settings, its parked layer unloaded
        self._broken = False  # a call failed: the next use makes a new client
        self._actor_ids = True  # the instance camera encodes actor ids (0.9.16+)
        self._warned: set[str] = set()
        self._closed = False
        if connect:
            self.connect()

    @staticmethod
    def _positive(name: str, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name}: expected a positive number, got {value!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise UserError(f"{name}: expected a positive number, got {value!r}")
        return v

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def check_workers(cls, options: Mapping[str, Any], workers: int) -> None:
        """Refuse workers that would share a port (see `check_worker_ports`)."""
        check_worker_ports(options.get("port", 2000), workers, shared=options.get("shared", False))

    # -------------------------------------------------------------- connection & settings

    def connect(self) -> None:
        """Connect (if not yet) and put the world in synchronous mode.  Raises
        `SimulatorUnavailable` within about ``timeout`` seconds where no server answers."""
        if self._closed:
            raise UserError("this CARLA simulator was closed; make a new one")
        carla = self._carla = _import_carla()
        if self._client is None:
            if self._client_factory is None:
                probe_server(self.host, self.port, self.timeout)
                client = carla.Client(self.host, self.port)
            else:
                client = self._client_factory(self.host, self.port)
            client.set_timeout(self.timeout)
            try:
                server_version = str(client.get_server_version())
            except RuntimeError as e:
                raise _no_server(self.host, self.port, f"no answer within {self.timeout:g} s") from e
            self._check_versions(str(client.get_client_version()), server_version)
            sv = _version_tuple(server_version)
            self._actor_ids = not sv or sv >= _ACTOR_ID_INSTANCES
            self._client = client
        self._ensure_world()

    def _check_versions(self, client_version: str, server_version: str) -> None:
        cv, sv = _version_tuple(client_version), _version_tuple(server_version)
        if sv and sv < (0, 9, 14):
            warnings.warn(
                f"CARLA server {self.address} is version {server_version}; lts needs 0.9.14 or newer "
                "(semantic ids and the instance camera changed there)",
                stacklevel=3,
            )
        elif cv != sv:
            warnings.warn(
                f"CARLA client {client_version} and server {server_version} ({self.address}) differ; "
                f"install the matching client (pip install carla=={server_version}) if anything misbehaves",
                stacklevel=3,
            )

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the server; its RuntimeErrors (time-outs, lost connection) become one-line
        `SimulatorUnavailable`s that name the server and say how to go on."""
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:
            if type(e) is not RuntimeError:  # RecursionError, NotImplementedError: bugs, not the server
                raise
            # A CARLA client does not recover once its server went away (#3707): use a new one next time.
            self._broken = True
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            if _is_timeout(e):
                why = f"the server did not answer {what} within {self.timeout:g} s"
            else:
                why = f"{what} failed: {detail}"
            raise SimulatorUnavailable(
                f"CARLA server {self.address}: {why}; restart the server (./CarlaUE4.sh -RenderOffScreen) "
                "and resume the run"
            ) from e

    def _ensure_world(self) -> None:
        """(Re)load the town where the world is new to us (first use, a new client, a world
        reloaded since), then take it over (`_take_world`) unless workers take turns on it."""
        world = self._call("get_world", self._client.get_world)
        if world.id == self._world_id:
            self._world = world
            return
        # get_map() builds the map from OpenDRIVE on the client: once per world, not per scene.
        carla_map = self._call("get_map", world.get_map)
        if self.town is not None and str(carla_map.name).split("/")[-1] != self.town.split("/")[-1]:
            world = self._load_town(self.town)
            carla_map = self._call("get_map", world.get_map)
        self._world, self._world_id, self._map = world, world.id, carla_map
        self._cameras = None  # a new world: cameras of the old one are gone with it
        if not self.shared:
            self._take_world()

    def _take_world(self) -> None:
        """Synchronous settings and the parked-vehicle layer unloaded, so that every car in a
        frame is one lts placed.  A server already synchronous under another client is refused
        (its weather, ticks and cars would land in our scenes), unless ``shared``."""
        world = self._world
        settings = self._call("get_settings", world.get_settings)
        if settings.synchronous_mode and not self._holding:
            if not self.shared:
                raise UserError(
                    f"CARLA server {self.address} is already in synchronous mode: another client drives it (or a "
                    "run that was killed left it so); give each run its own server (--carla-port), restart this "
                    "one, or pass --carla-shared to take turns on it with other lts workers"
                )
            self._warn_once(
                "sync",
                f"CARLA server {self.address} is in synchronous mode outside lts' turns (a client that does "
                "not take turns, or a run that was killed); its ticks and weather may land in our scenes",
            )
        if self._original_settings is None:
            self._original_settings = settings
        wanted = self._call("get_settings", world.get_settings)
        wanted.synchronous_mode = True
        wanted.fixed_delta_seconds = self.fixed_delta
        wanted.no_rendering_mode = False  # the cameras need rendering
        self._call("apply_settings", world.apply_settings, wanted)
        self._holding = True
        # Town10HD_Opt and the other _Opt maps keep their parked cars in a layer; where a map
        # has none this does nothing, and `unplaced_car_pixels` shows what is left.
        self._call("unload_map_layer", world.unload_map_layer, self._carla.MapLayer.ParkedVehicles)
        self._warn_leftovers(world)

    def _release_world(self) -> None:
        """Destroy the cameras, and give the world back as it was found.  Raises where the
        server cannot be reached (after destroying what it could)."""
        self._drop_cameras()
        if self._leaked:
            self._destroy_ids(sorted(self._leaked))
        if self._holding:
            self._holding = False
            self._world.load_map_layer(self._carla.MapLayer.ParkedVehicles)
            if self._original_settings is not None:
                self._world.apply_settings(self._original_settings)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """The world, for one `generate`: held throughout, or (``shared``) taken over under the
        server's lock and given back afterwards, so that workers take turns."""
        if self._lock is None:
            yield
            return
        with self._lock.held():
            try:
                self._take_world()
                yield
            finally:
                try:
                    self._release_world()
                except Exception as e:  # noqa: BLE001 - the server is gone; the error that ended the turn says so
                    self._broken = True
                    self._warn_once("release", f"could not give the CARLA world at {self.address} back: {e}")

    def _reconnect(self) -> None:
        """A new client after a failed call: the old one never recovers if the server restarted
        (#3707), and a restart cannot be told apart (world and actor ids start afresh), so the
        world is set up again either way.  Cameras and leftovers are destroyed only where they
        are still in the world with lts' role name."""
        if self._cameras is not None:
            self._leaked.update(sensor.id for sensor, _ in self._cameras.values())
            self._cameras = None
        self._client, self._world, self._world_id, self._broken = None, None, None, False
        self.connect()
        if self._leaked:
            try:
                ours = {
                    a.id
                    for a in self._world.get_actors(sorted(self._leaked))
                    if a.attributes.get("role_name") == ROLE_NAME
                }
            except Exception:  # noqa: BLE001 - retried on the next scene
                return
            self._leaked &= ours

    def _warn_leftovers(self, world: Any) -> None:
        try:
            left = [
                a
                for a in world.get_actors()
                if a.attributes.get("role_name") == ROLE_NAME and a.id not in self._leaked  # not our own
            ]
        except (RuntimeError, AttributeError):
            return
        if left:
            warnings.warn(
                f"{len(left)} actors spawned by an earlier lts run are still in the CARLA world at {self.address} "
                "(a run that was killed); restart the server to free them",
                stacklevel=4,
            )

    def _load_town(self, town: str) -> Any:
        client = self._client
        maps = [str(m) for m in self._call("get_available_maps", client.get_available_maps)]
        names = {m.split("/")[-1]: m for m in maps}
        want = town.split("/")[-1]
        if want not in names:
            raise UserError(
                f"CARLA town {self.town!r} is not on the server {self.address}; available: "
                f"{', '.join(sorted(names))}" + did_you_mean(want, names)
            )
        # Loading a map takes far longer than a tick: give it its own allowance.
        client.set_timeout(max(self.timeout, 120.0))
        try:
            world = self._call(f"load_world({want})", client.load_world, want)
        finally:
            client.set_timeout(self.timeout)
        return world

    def close(self) -> None:
        """Destroy the cameras and what is left, and restore the world's settings
        (synchronous mode) and its parked-vehicle layer."""
        if self._closed:
            return
        self._closed = True
        if self._client is None or self._world is None:
            return
        try:
            self._release_world()
        except Exception as e:  # a dead server: nothing left to restore
            warnings.warn(f"could not restore the CARLA world settings at {self.address}: {e}", stacklevel=2)
        finally:
            self._client = self._world = None

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict[str, Any]:
        # A carla.Client cannot be pickled: a copy (a Ray worker) reconnects on first use.
        return dict(self._options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state, connect=False)  # type: ignore[misc]

    # -------------------------------------------------------------- per-town caches

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _town_approaches(self) -> dict[str, list[_Approach]]:
        carla_map = self._map
        town = str(carla_map.name)
        if town not in self._approaches:
            driving = self._carla.LaneType.Driving
            hi = float(ROAD_LENGTH.high)
            by_shape: dict[str, list[_Approach]] = {s: [] for s in INTERSECTIONS}
            for shape, junctions in find_junctions(carla_map, driving).items():
                for j in junctions:
                    seen: set[tuple[int, int]] = set()
                    for entry, _ in j.get_waypoints(driving):
                        loc = entry.transform.location
                        key = (round(loc.x * 2), round(loc.y * 2))  # one approach per lane, not per turn
                        if key in seen:
                            continue
                        seen.add(key)
                        path = _walk_back(entry, j.id, hi, 2.0)
                        if path and path[-1][0] >= 6.0:  # room for a camera before the junction
                            by_shape[shape].append(_Approach(j.id, shape, path))
            if not any(by_shape.values()):
                raise UserError(
                    f"CARLA town {town!r} has no X, T or L junction with a lane leading into it; "
                    "choose another town with --carla-town"
                )
            self._approaches[town] = by_shape
        return self._approaches[town]

    def _shape_for(self, requested: str, approaches: dict[str, list[_Approach]], town: str) -> str:
        if approaches[requested]:
            return requested
        for alt in _SHAPE_FALLBACK[requested]:
            if approaches[alt]:
                self._warn_once(
                    f"shape:{town}:{requested}",
                    f"CARLA town {town!r} has no {requested} junction; scenes that ask for one use {alt} instead",
                )
                return alt
        raise AssertionError("unreachable: _town_approaches refuses towns without junctions")

    def _blueprint_groups(self) -> dict[str, list[Any]]:
        if self._groups is not None:
            return self._groups
        library = self._call("get_blueprint_library", self._world.get_blueprint_library)
        vehicles = list(library.filter("vehicle.*"))
        groups: dict[str, list[Any]] = {t: [] for t in CAR_TYPES}
        if self.car_blueprints:
            for kind, patterns in self.car_blueprints.items():
                groups[kind] = [bp for bp in vehicles if any(fnmatch(bp.id, p) for p in patterns)]
        else:
            for bp in vehicles:
                wheels = _attr(bp, "number_of_wheels")
                base = _attr(bp, "base_type")
                if (base or "").lower() in _EXCLUDED_BASE_TYPES or (wheels is not None and int(wheels) < 4):
                    continue
                extent = None if base in ("truck", "van") else self._measure(bp)
                car_type = classify_vehicle(base, extent, None if wheels is None else int(wheels))
                if car_type is not None:
                    groups[car_type].append(bp)
        if not any(groups.values()):
            raise UserError(f"CARLA server {self.address} offers no car blueprints lts can place")
        self._groups = groups
        return groups

    def _sensor_blueprints(self) -> dict[str, Any]:
        if self._sensor_bps is None:
            library = self._call("get_blueprint_library", self._world.get_blueprint_library)
            found = {key: list(library.filter(bp_id)) for key, bp_id in _SENSORS.items()}
            for key, bps in found.items():
                if not bps:
                    raise UserError(
                        f"CARLA server {self.address} has no {_SENSORS[key]!r} sensor; lts needs CARLA 0.9.14 or newer"
                    )
            self._sensor_bps = {key: bps[0] for key, bps in found.items()}
        return self._sensor_bps

    def _measure(self, bp: Any) -> tuple[float, float, float] | None:
        """A blueprint's bounding-box half-sizes: blueprints carry no size, so one copy is
        spawned high above a spawn point, read and destroyed at once (no tick needed)."""
        carla = self._carla
        points = self._map.get_spawn_points()
        for point in points[:10]:
            where = carla.Transform(carla.Location(point.location.x, point.location.y, point.location.z + 200.0))
            actor = self._call("try_spawn_actor", self._world.try_spawn_actor, bp, where)
            if actor is None:
                continue
            try:
                e = actor.bounding_box.extent
                return float(e.x), float(e.y), float(e.z)
            finally:
                self._destroy([actor])
        return None

    # -------------------------------------------------------------- generation

    def generate(self, params: Mapping[str, Any], n: int, *, seed: int) -> Batch:
        """Render ``n`` scenes from ψ; the same seed gives the same scene descriptions."""
        psi = self.param_space.validate(params)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise UserError(f"number of scenes: expected an integer >= 0, got {n!r}")
        rng = np.random.default_rng(seed)
        if self._closed:
            raise UserError("this CARLA simulator was closed; make a new one")
        if self._client is None:
            self.connect()
        elif self._broken:
            self._reconnect()
        else:
            self._ensure_world()
        with self._turn():
            if self._leaked:
                self._destroy_ids(sorted(self._leaked))
            scenes = [self._scene(psi, rng) for _ in range(int(n))]
        return self._batch(scenes)

    def _batch(self, scenes: list[_Scene]) -> Batch:
        h, w = self.resolution
        attrs: dict[str, list[Any]] = {}
        for s in scenes:
            for k, v in s.attributes.items():
                attrs.setdefault(k, []).append(v)

        def stack(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            return np.stack([getattr(s, name) for s in scenes]) if scenes else np.zeros((0, *shape), dtype=dtype)

        return Batch(
            images=torch.from_numpy(stack("rgb", (3, h, w), np.uint8)),
            semantic=torch.from_numpy(stack("semantic", (h, w), np.int64)),
            depth=torch.from_numpy(stack("depth", (h, w), np.float32)),
            instances=torch.from_numpy(stack("instances", (h, w), np.int64)),
            counts=torch.from_numpy(stack("counts", (len(CAR_TYPES),), np.int64)),
            attributes=attrs,
            count_names=CAR_TYPES,
        )

    def _scene(self, psi: Mapping[str, Any], rng: np.random.Generator) -> _Scene:
        carla = self._carla
        weather = WEATHERS[rng.choice(len(WEATHERS), p=_probs(psi["weather"], WEATHERS))]
        requested = INTERSECTIONS[rng.choice(len(INTERSECTIONS), p=_probs(psi["intersection"], INTERSECTIONS))]
        n_cars = int(rng.poisson(float(psi["cars_per_scene"])))
        types = [CAR_TYPES[i] for i in rng.choice(len(CAR_TYPES), size=n_cars, p=_probs(psi["car_type"], CAR_TYPES))]
        approaches = self._town_approaches()
        town = str(self._map.name)
        shape = self._shape_for(requested, approaches, town)
        approach, road_length, cam_wp = self._camera_waypoint(approaches[shape], float(psi["road_length"]), rng)
        groups = self._blueprint_groups()
        self._sensor_blueprints()

        t = cam_wp.transform
        cam_tf = carla.Transform(
            carla.Location(t.location.x, t.location.y, t.location.z + self.camera_height),
            carla.Rotation(pitch=self.camera_pitch, yaw=t.rotation.yaw, roll=0.0),
        )
        spawned: list[Any] = []
        try:
            self._call(
                "set_weather", self._world.set_weather, getattr(carla.WeatherParameters, WEATHER_PRESETS[weather])
            )
            cars = self._place_cars(types, groups, cam_wp, road_length, rng, spawned)
            sensors = self._cameras_at(cam_tf)
            frame, images = self._tick_and_collect(sensors, cam_tf)
            scene = self._decode(images, cars, cam_tf, town)
        except BaseException:
            self._drop_cameras()  # destroyed on errors and Ctrl-C too; the next scene spawns them again
            raise
        finally:
            self._destroy(spawned)
        scene.attributes.update(
            weather=weather,
            intersection=shape,
            intersection_requested=requested,
            car_types=[kind for _, kind in cars],
            n_cars=len(cars),
            n_requested=n_cars,
            road_length=road_length,
            junction=approach.junction_id,
            town=town,
            frame=frame,
            camera=(round(cam_tf.location.x, 3), round(cam_tf.location.y, 3), round(cam_tf.location.z, 3),
                    round(cam_tf.rotation.yaw, 3)),
        )  # fmt: skip
        return scene

    @staticmethod
    def _camera_waypoint(
        candidates: list[_Approach], road_length: float, rng: np.random.Generator
    ) -> tuple[_Approach, float, Any]:
        """A lane ``road_length`` metres before a junction, or as far back as the road allows."""
        fits = [a for a in candidates if a.reach >= road_length - 1.0]
        if fits:
            approach = fits[int(rng.integers(len(fits)))]
        else:
            longest = max(a.reach for a in candidates)
            best = [a for a in candidates if a.reach == longest]
            approach = best[int(rng.integers(len(best)))]
        d, wp = approach.path[0]
        for dist, w in approach.path:
            if dist > road_length + 1.0:
                break
            d, wp = dist, w
        return approach, float(d), wp

    def _lanes_across(self, wp: Any) -> list[Any]:
        """The driving lanes of the road at ``wp`` (both directions)."""
        driving = self._carla.LaneType.Driving
        lanes, seen = [wp], {(wp.road_id, wp.section_id, wp.lane_id)}
        for step in ("get_left_lane", "get_right_lane"):
            cur = wp
            for _ in range(8):
                cur = getattr(cur, step)()
                if cur is None:
                    break
                key = (cur.road_id, cur.section_id, cur.lane_id)
                if key in seen:
                    break
                seen.add(key)
                if cur.lane_type == driving:
                    lanes.append(cur)
        return lanes

    def _place_cars(
        self,
        types: list[str],
        groups: dict[str, list[Any]],
        cam_wp: Any,
        road_length: float,
        rng: np.random.Generator,
        spawned: list[Any],
    ) -> list[tuple[Any, str]]:
        """Spawn one car per type on lanes ahead of the camera; a spawn that collides is
        tried elsewhere (``spawn_attempts`` times) and, failing that, left out."""
        carla = self._carla
        placed: list[tuple[Any, str]] = []
        for kind in types:
            kind = self._available_type(kind, groups)
            for _ in range(self.spawn_attempts):
                ahead = cam_wp.next(float(rng.uniform(6.0, road_length + 30.0)))
                if not ahead:
                    continue
                lanes = self._lanes_across(ahead[int(rng.integers(len(ahead)))])
                wp = lanes[int(rng.integers(len(lanes)))]
                bp = groups[kind][int(rng.integers(len(groups[kind])))]
                if bp.has_attribute("color"):
                    colours = list(bp.get_attribute("color").recommended_values)
                    if colours:
                        bp.set_attribute("color", str(colours[int(rng.integers(len(colours)))]))
                if bp.has_attribute("role_name"):
                    bp.set_attribute("role_name", ROLE_NAME)
                t = wp.transform
                # Lifted so the box clears the road; it settles during the warm-up ticks.
                where = carla.Transform(carla.Location(t.location.x, t.location.y, t.location.z + 0.5), t.rotation)
                actor = self._call("try_spawn_actor", self._world.try_spawn_actor, bp, where)
                if actor is not None:
                    spawned.append(actor)
                    placed.append((actor, kind))
                    break
        return placed

    def _available_type(self, kind: str, groups: dict[str, list[Any]]) -> str:
        if groups[kind]:
            return kind
        for alt in _TYPE_FALLBACK[kind]:
            if groups[alt]:
                self._warn_once(
                    f"type:{kind}",
                    f"CARLA server {self.address} has no {kind} blueprint; {alt} cars stand in for them",
                )
                return alt
        raise AssertionError("unreachable: _blueprint_groups refuses servers without car blueprints")

    def _cameras_at(self, where: Any) -> dict[str, tuple[Any, queue.Queue]]:
        """The four cameras at ``where``: spawned (and listened to) once per simulator, then
        moved in one batch, because every new camera allocates render targets and every
        ``listen`` leaks on the server (#7156, #7413) until it crashes (#7987)."""
        if self._cameras is not None:
            carla = self._carla
            cams = list(self._cameras.values())
            moves = [carla.command.ApplyTransform(sensor.id, where) for sensor, _ in cams]
            responses = self._call("apply_batch_sync", self._client.apply_batch_sync, moves, False)
            if not any(r.has_error() for r in responses):
                for _, q in cams:  # images of earlier scenes are never wanted again
                    _drain(q)
                return self._cameras
            self._drop_cameras()  # a camera is gone (destroyed by someone else): start afresh
        self._cameras = self._spawn_cameras(where)
        return self._cameras

    def _spawn_cameras(self, where: Any) -> dict[str, tuple[Any, queue.Queue]]:
        h, w = self.resolution
        spawned: list[Any] = []
        sensors: dict[str, tuple[Any, queue.Queue]] = {}
        try:
            for key, bp in self._sensor_blueprints().items():
                values: list[tuple[str, Any]] = [("image_size_x", w), ("image_size_y", h), ("fov", self.fov)]
                values += [("sensor_tick", 0.0), ("role_name", ROLE_NAME)]
                if key == "rgb":
                    values += self._exposure_attributes()
                for name, value in values:
                    if bp.has_attribute(name):
                        bp.set_attribute(name, value if isinstance(value, str) else f"{value:g}")
                sensor = self._call(f"spawn_actor({bp.id})", self._world.spawn_actor, bp, where)
                spawned.append(sensor)
                q: queue.Queue = queue.Queue()
                self._call(f"listen({bp.id})", sensor.listen, q.put)
                sensors[key] = (sensor, q)
        except BaseException:
            self._destroy(spawned)
            raise
        return sensors

    def _exposure_attributes(self) -> list[tuple[str, Any]]:
        if self.exposure == "manual":
            return [("exposure_mode", "manual")]
        # Auto-exposure adapts at exposure_speed_up/down f-stops per second of simulated time
        # (CARLA's defaults 3 and 1: more than the warm-up's 0.5 s for a scene change, #3594);
        # 10 stops within the warm-up settles any change of weather or view.
        speed = 10.0 / (max(self.warmup_ticks, 1) * self.fixed_delta)
        return [("exposure_mode", "histogram"), ("exposure_speed_up", speed), ("exposure_speed_down", speed)]

    def _drop_cameras(self) -> None:
        if self._cameras is not None:
            cams = [sensor for sensor, _ in self._cameras.values()]
            self._cameras = None
            self._destroy(cams)

    def _tick_and_collect(self, sensors: dict[str, tuple[Any, queue.Queue]], where: Any) -> tuple[int, dict[str, Any]]:
        """Tick ``warmup_ticks + 1`` times, then take from every sensor's queue the image
        whose frame number is the last tick's: older ones (a tick late) are dropped, and
        one not yet delivered is waited for, at most ``timeout`` seconds.  Where one was
        rendered from another pose than ``where`` (a move that has not landed yet), tick
        again, up to `_MOVE_TICKS` times."""
        for _ in range(self.warmup_ticks):
            self._call("tick", self._world.tick, self.timeout)
        for _ in range(_MOVE_TICKS + 1):
            frame = int(self._call("tick", self._world.tick, self.timeout))
            out = {key: self._image(key, q, frame) for key, (_, q) in sensors.items()}
            if all(_pose_matches(image, where) for image in out.values()):
                return frame, out
        raise SimulatorUnavailable(
            f"CARLA server {self.address}: the cameras still render from another pose {_MOVE_TICKS} ticks after "
            "being moved (another client moving them?); restart the server and resume the run"
        )

    def _image(self, key: str, q: queue.Queue, frame: int) -> Any:
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                image = q.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise SimulatorUnavailable(
                    f"CARLA server {self.address}: no {key} image for frame {frame} within {self.timeout:g} s; "
                    "restart the server (./CarlaUE4.sh -RenderOffScreen) and resume the run"
                ) from None
            if int(image.frame) == frame:
                return image
            # Older frames are stale; a newer one means another client ticks this server.
            if int(image.frame) > frame:
                self._warn_once(
                    "newer-frame",
                    f"CARLA server {self.address} delivered frame {image.frame} after tick {frame}: "
                    "another client is ticking it; give each run its own server",
                )

    def _decode(self, frame: dict[str, Any], cars: list[tuple[Any, str]], cam_tf: Any, town: str) -> _Scene:
        h, w = self.resolution
        rgb = decode_bgra(frame["rgb"])[..., [2, 1, 0]].transpose(2, 0, 1).copy()
        sem = decode_bgra(frame["semantic"])[..., 2].astype(np.int64)
        sem[sem >= L.NUM_LABELS] = L.UNLABELED
        depth = decode_depth(decode_bgra(frame["depth"]))
        ins = decode_bgra(frame["instance"])
        tags = ins[..., 2].astype(np.int64)
        uids = ins[..., 1].astype(np.int64) | (ins[..., 0].astype(np.int64) << 8)
        if self._actor_ids:
            instances = _instances_by_actor(tags, uids, [actor.id for actor, _ in cars])
        else:
            f = w / (2.0 * math.tan(math.radians(self.fov) / 2.0))
            cam_inv = np.array(cam_tf.get_inverse_matrix(), dtype=np.float64)
            boxes = [self._call("get_transform", _project_box, actor, cam_inv, f, w, h) for actor, _ in cars]
            instances = _assign_instances(tags, uids, depth, boxes)
        unplaced = int((np.isin(tags, _VEHICLE_TAGS) & (instances == 0)).sum())
        if unplaced >= self.min_visible_pixels:
            self._warn_once(
                "unplaced",
                f"CARLA map {town!r} at {self.address}: a scene has {unplaced} car pixels that belong to no car lts "
                "placed (parked cars of a map without a ParkedVehicles layer, or another client's cars); they are "
                "car in `semantic` but not in `counts` (per scene: attributes['unplaced_car_pixels'])",
            )
        pixels = np.bincount(instances.ravel(), minlength=len(cars) + 1)[1:]
        counts = np.zeros(len(CAR_TYPES), dtype=np.int64)
        keep = np.zeros(len(cars) + 1, dtype=bool)
        for k, (_, kind) in enumerate(cars):
            if pixels[k] >= self.min_visible_pixels:
                counts[CAR_TYPES.index(kind)] += 1
                keep[k + 1] = True
        instances[~keep[instances]] = 0  # cars below the visibility threshold are background
        return _Scene(
            rgb=rgb, semantic=sem, depth=depth, instances=instances, counts=counts,
            attributes={"unplaced_car_pixels": unplaced},
        )  # fmt: skip

    # -------------------------------------------------------------- clean-up

    def _destroy(self, actors: list[Any]) -> None:
        """Stop sensors and destroy actors in one batch.  Never raises: a failure (a dead
        server) leaves the ids in ``_leaked`` for the next scene or `close` to retry."""
        if not actors:
            return
        for a in actors:
            if hasattr(a, "is_listening") and hasattr(a, "stop"):
                try:
                    listening = a.is_listening  # a method in 0.9.16, a property in older clients
                    if listening() if callable(listening) else listening:
                        a.stop()  # a sensor destroyed while streaming keeps memory on the server
                except Exception:
                    pass
        self._destroy_ids([a.id for a in actors])
        actors.clear()

    def _destroy_ids(self, ids: list[int]) -> None:
        carla = self._carla
        try:
            responses = self._client.apply_batch_sync([carla.command.DestroyActor(i) for i in ids], False)
        except Exception:
            self._leaked.update(ids)
            return
        for i, r in zip(ids, responses, strict=False):
            # "not found" means already gone; anything else is retried later.
            if r.has_error() and "not found" not in str(r.error).lower():
                self._leaked.add(i)
            else:
                self._leaked.discard(i)


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _probs(value: Mapping[str, float], choices: Sequence[str]) -> np.ndarray:
    p = np.array([float(value[c]) for c in choices], dtype=np.float64)
    return p / p.sum()
