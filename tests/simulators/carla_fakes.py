"""A test double of the server side of CARLA, for `simulators.carla` tests.

`FakeServer` holds a world (a star-shaped road map per junction, a blueprint library,
actors, settings, weather) and hands out `FakeClient`s through ``server.factory``.  The
objects a real client creates locally (`carla.Transform`, `Location`, `Rotation`,
`BoundingBox`, `WeatherParameters`, `WorldSettings`, `command.DestroyActor`) are the real
``carla`` module's; everything that would need a server is faked here and records what
was done to it.

Sensors deliver their images from a background thread after ``tick()`` has returned,
with random delays (so out of order, and some a tick late or delivered twice), as a
real server's streaming port does.  Every image carries a marker of its frame, and the
server keeps the ground truth of which spawned actor is visible by how many pixels.

Faults are injected per method (`FakeServer.inject`) or for the whole server
(``server.dead``: every call times out, as while the server hangs; `FakeServer.restart`:
the process died and a new one started, which no existing client can talk to, #3707).

What a real 0.9.16 server does that the adapter must cope with, built in here so that tests
can fail: every sensor spawned costs (`Costs`) and every ``listen`` leaks a stream resource
that is never freed (#7156, #7413; ``crash_after_listens`` ends the server as #7987 reports);
the map's parked cars are a map layer that ``unload_map_layer(MapLayer.ParkedVehicles)``
removes (``parked_layer=False``: a map whose parked cars are part of the map itself);
``apply_settings`` into synchronous mode ticks; another client (`FakeServer.other_client`)
sets its own weather and ticks the world; the instance camera encodes actor ids from 0.9.16
on (Unreal object ids before), and a vehicle's mesh may be larger than its bounding box
(``mesh_scale``); a camera moved with ``set_transform`` may render from its old pose for
``move_lag`` more ticks.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

import carla
import numpy as np

from simulators import labels as L

JUNCTION_RADIUS = 10.0
LANE_OFFSET = 1.75
ARM_LENGTH = 150.0


def timeout_error(host: str = "localhost", port: int = 2000, ms: int = 10000) -> RuntimeError:
    return RuntimeError(
        f"time-out of {ms}ms while waiting for the simulator, make sure the simulator is ready and "
        f"connected to {host}:{port}"
    )


@dataclass(frozen=True)
class Costs:
    """Seconds the fake server spends on what a real one does per call (0: free, for tests).

    Assumed figures for a benchmark of the adapter's call pattern, not measured on CARLA."""

    rpc: float = 0.0  # every call's round trip
    spawn_sensor: float = 0.0  # a camera: actor, render target, stream
    listen: float = 0.0  # subscribing to a sensor's stream
    destroy: float = 0.0  # per destroyed actor
    tick: float = 0.0  # per tick, plus
    tick_per_camera: float = 0.0  # per listening camera rendered in it
    spawn_vehicle: float = 0.0


# ----------------------------------------------------------------------------- blueprints


class FakeAttribute:
    def __init__(self, value: Any, recommended: Iterable[str] = ()) -> None:
        self.value = str(value)
        self.recommended_values = list(recommended)

    def as_str(self) -> str:
        return self.value

    def as_int(self) -> int:
        return int(float(self.value))

    def as_float(self) -> float:
        return float(self.value)

    def __str__(self) -> str:
        return self.value


class FakeBlueprint:
    def __init__(self, bp_id: str, attributes: dict[str, Any], **extra: Any) -> None:
        self.id = bp_id
        self.tags = bp_id.split(".")
        self._attrs = {
            k: FakeAttribute(*v) if isinstance(v, tuple) else FakeAttribute(v) for k, v in attributes.items()
        }
        self.extra = extra  # what the fake server needs: extent, tag, expected car type

    def has_attribute(self, name: str) -> bool:
        return name in self._attrs

    def get_attribute(self, name: str) -> FakeAttribute:
        if name not in self._attrs:
            raise IndexError(f"blueprint {self.id!r} has no attribute {name!r}")
        return self._attrs[name]

    def set_attribute(self, name: str, value: str) -> None:
        if name not in self._attrs:
            raise IndexError(f"blueprint {self.id!r} has no attribute {name!r}")
        if not isinstance(value, str):
            raise TypeError("set_attribute takes a string, as in carla")
        self._attrs[name].value = value

    def attribute_dict(self) -> dict[str, str]:
        return {k: a.value for k, a in self._attrs.items()}


class FakeBlueprintLibrary:
    def __init__(self, blueprints: list[FakeBlueprint]) -> None:
        self._bps = blueprints

    def filter(self, pattern: str) -> list[FakeBlueprint]:
        return [bp for bp in self._bps if fnmatch(bp.id, pattern)]

    def find(self, bp_id: str) -> FakeBlueprint:
        for bp in self._bps:
            if bp.id == bp_id:
                return bp
        raise IndexError(f"no blueprint {bp_id!r}")

    def __iter__(self):
        return iter(self._bps)

    def __len__(self) -> int:
        return len(self._bps)


@dataclass(frozen=True)
class VehicleSpec:
    bp_id: str
    base_type: str | None
    wheels: int
    extent: tuple[float, float, float]  # half sizes: length/2, width/2, height/2
    expected: str | None  # the car type the heuristic should give (None: never placed)


VEHICLES: tuple[VehicleSpec, ...] = (
    VehicleSpec("vehicle.fake.sedan_long", "car", 4, (2.45, 0.95, 0.72), "sedan"),
    VehicleSpec("vehicle.fake.sedan_mid", "car", 4, (2.30, 0.92, 0.75), "sedan"),
    VehicleSpec("vehicle.fake.hatch_mini", "car", 4, (1.85, 0.85, 0.74), "hatchback"),
    VehicleSpec("vehicle.fake.hatch_city", "car", 4, (2.00, 0.88, 0.76), "hatchback"),
    VehicleSpec("vehicle.fake.suv_big", "car", 4, (2.45, 1.00, 0.95), "suv"),
    VehicleSpec("vehicle.fake.van_box", "van", 4, (2.60, 1.05, 1.20), "van"),
    VehicleSpec("vehicle.fake.truck_hgv", "truck", 4, (4.20, 1.30, 1.80), "truck"),
    VehicleSpec("vehicle.fake.moto", "motorcycle", 2, (1.10, 0.40, 0.75), None),
    VehicleSpec("vehicle.fake.bike", "bicycle", 2, (0.90, 0.30, 0.80), None),
    VehicleSpec("vehicle.fake.bus", "bus", 4, (5.50, 1.40, 1.70), None),
    VehicleSpec("vehicle.old.truck", None, 4, (3.60, 1.25, 1.60), "truck"),  # no base_type (pre 0.9.14)
    VehicleSpec("vehicle.old.van", None, 4, (2.50, 1.00, 1.10), "van"),
    VehicleSpec("vehicle.old.sedan", None, 4, (2.35, 0.90, 0.72), "sedan"),
)
EXPECTED_TYPE = {v.bp_id: v.expected for v in VEHICLES}

SENSOR_IDS = (
    "sensor.camera.rgb",
    "sensor.camera.semantic_segmentation",
    "sensor.camera.depth",
    "sensor.camera.instance_segmentation",
)


def make_library(
    *, with_instance_camera: bool = True, vehicles: Iterable[VehicleSpec] = VEHICLES
) -> FakeBlueprintLibrary:
    bps = []
    for v in vehicles:
        attrs: dict[str, Any] = {
            "number_of_wheels": v.wheels,
            "role_name": "autopilot",
            "color": ("0,0,0", ["255,0,0", "0,255,0", "0,0,255"]),
        }
        if v.base_type is not None:
            attrs["base_type"] = v.base_type
        tag = L.TRUCK if v.expected == "truck" else L.BUS if v.base_type == "bus" else L.CAR
        bps.append(FakeBlueprint(v.bp_id, attrs, extent=v.extent, tag=tag))
    for sid in SENSOR_IDS:
        if sid.endswith("instance_segmentation") and not with_instance_camera:
            continue
        attrs = {"image_size_x": 800, "image_size_y": 600, "fov": 90.0, "sensor_tick": 0.0, "role_name": "front"}
        if sid.endswith(".rgb"):  # CARLA's defaults: histogram auto-exposure, adapting slowly
            attrs.update(exposure_mode="histogram", exposure_speed_up=3.0, exposure_speed_down=1.0)
        bps.append(FakeBlueprint(sid, attrs))
    return FakeBlueprintLibrary(bps)


# ----------------------------------------------------------------------------- the map


@dataclass
class JunctionSpec:
    id: int
    center: tuple[float, float]
    arms: tuple[float, ...]  # outward directions, degrees
    arm_length: float = ARM_LENGTH
    far_junction: int | None = None  # the junction an arm's far end runs into (None: a dead end)


def _unit(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


class FakeJunction:
    def __init__(self, spec: JunctionSpec, fmap: FakeMap) -> None:
        self.spec = spec
        self.id = spec.id
        self._map = fmap
        cx, cy = spec.center
        self.bounding_box = carla.BoundingBox(
            carla.Location(cx, cy, 0.0), carla.Vector3D(JUNCTION_RADIUS, JUNCTION_RADIUS, 2.0)
        )

    def get_waypoints(self, lane_type: Any) -> list[tuple[FakeWaypoint, FakeWaypoint]]:
        if lane_type != carla.LaneType.Driving:
            return []
        out = []
        for a, b in self._map.connections(self.id):
            out.append(
                (
                    FakeWaypoint(self._map, "conn", self.id, a, 0.0, b),
                    FakeWaypoint(self._map, "conn", self.id, a, 1.0, b),
                )
            )
        return out


class FakeWaypoint:
    """A point on the fake map.  kinds: "in" (lane toward junction ``j`` on arm ``a``,
    ``s`` metres from its border), "out" (lane away from it), "conn" (connecting lane
    inside the junction from arm ``a`` to arm ``b``, fraction ``s``), "inner" (inside a
    junction an arm runs into; a stopper)."""

    def __init__(self, fmap: FakeMap, kind: str, j: int, a: int, s: float, b: int = -1) -> None:
        self._map, self.kind, self.j, self.a, self.s, self.b = fmap, kind, j, a, float(s), b
        spec = fmap.specs[j]
        c = np.array(spec.center, dtype=float)
        if kind in ("in", "out"):
            u = _unit(spec.arms[a])
            n = np.array([-u[1], u[0]])
            side = -LANE_OFFSET if kind == "in" else LANE_OFFSET
            pos = c + (JUNCTION_RADIUS + self.s) * u + side * n
            yaw = (spec.arms[a] + 180.0) % 360.0 if kind == "in" else spec.arms[a] % 360.0
        elif kind == "conn":
            p0, p1 = fmap.border(j, a, "in"), fmap.border(j, b, "out")
            pos = p0 + self.s * (p1 - p0)
            yaw0, yaw1 = (spec.arms[a] + 180.0) % 360.0, spec.arms[b] % 360.0
            yaw = yaw0 if self.s <= 0.0 else yaw1 if self.s >= 1.0 else math.degrees(math.atan2(*(p1 - p0)[::-1]))
        else:  # inner
            pos, yaw = c, 0.0
        self.transform = carla.Transform(
            carla.Location(float(pos[0]), float(pos[1]), 0.0), carla.Rotation(yaw=float(yaw))
        )
        self.is_junction = kind in ("conn", "inner")
        self.junction_id = j if self.is_junction else -1
        self.road_id = j * 100 + a if kind in ("in", "out") else 10000 + j * 100 + a * 10 + max(b, 0)
        self.section_id = 0
        self.lane_id = -1 if kind in ("in", "conn") else 1
        self.lane_type = carla.LaneType.Driving
        self.lane_width = 3.5
        self.id = hash((kind, j, a, round(self.s, 3), b))

    def __repr__(self) -> str:
        return f"FakeWaypoint({self.kind}, j={self.j}, a={self.a}, s={self.s:.2f}, b={self.b})"

    def get_junction(self) -> FakeJunction | None:
        return self._map.junctions[self.j] if self.is_junction else None

    def get_left_lane(self) -> FakeWaypoint | None:
        if self.kind == "in":
            return FakeWaypoint(self._map, "out", self.j, self.a, self.s)
        if self.kind == "out":
            return FakeWaypoint(self._map, "in", self.j, self.a, self.s)
        return None

    def get_right_lane(self) -> FakeWaypoint | None:
        return None

    def _conn_len(self, a: int, b: int) -> float:
        return self._map.conn_length(self.j, a, b)

    def next(self, d: float) -> list[FakeWaypoint]:
        m, spec = self._map, self._map.specs[self.j]
        if self.kind == "in":
            if self.s - d >= 0:
                return [FakeWaypoint(m, "in", self.j, self.a, self.s - d)]
            r = d - self.s
            out = []
            for a, b in m.connections(self.j):
                if a != self.a:
                    continue
                lc = self._conn_len(a, b)
                if r <= lc:
                    out.append(FakeWaypoint(m, "conn", self.j, a, r / lc, b))
                elif r - lc <= spec.arm_length:
                    out.append(FakeWaypoint(m, "out", self.j, b, r - lc))
            return out
        if self.kind == "out":
            return [FakeWaypoint(m, "out", self.j, self.a, self.s + d)] if self.s + d <= spec.arm_length else []
        if self.kind == "conn":
            lc = self._conn_len(self.a, self.b)
            rem = (1.0 - self.s) * lc
            if d <= rem:
                return [FakeWaypoint(m, "conn", self.j, self.a, self.s + d / lc, self.b)]
            return [FakeWaypoint(m, "out", self.j, self.b, d - rem)]
        return []

    def previous(self, d: float) -> list[FakeWaypoint]:
        m, spec = self._map, self._map.specs[self.j]
        if self.kind == "in":
            if self.s + d <= spec.arm_length:
                return [FakeWaypoint(m, "in", self.j, self.a, self.s + d)]
            if spec.far_junction is not None:
                return [FakeWaypoint(m, "inner", spec.far_junction, 0, 0.0)]
            return []
        if self.kind == "out":
            if self.s - d >= 0:
                return [FakeWaypoint(m, "out", self.j, self.a, self.s - d)]
            r = d - self.s
            a = next(x for x, y in m.connections(self.j) if y == self.a)
            lc = self._conn_len(a, self.a)
            if r <= lc:
                return [FakeWaypoint(m, "conn", self.j, a, 1.0 - r / lc, self.a)]
            return [FakeWaypoint(m, "in", self.j, a, r - lc)]
        if self.kind == "conn":
            lc = self._conn_len(self.a, self.b)
            back = self.s * lc
            if d <= back:
                return [FakeWaypoint(m, "conn", self.j, self.a, self.s - d / lc, self.b)]
            return [FakeWaypoint(m, "in", self.j, self.a, d - back)]
        return []


class FakeMap:
    def __init__(self, name: str, specs: Iterable[JunctionSpec]) -> None:
        self.name = name
        self.specs = {s.id: s for s in specs}
        self.junctions = {j: FakeJunction(s, self) for j, s in self.specs.items()}

    def connections(self, j: int) -> list[tuple[int, int]]:
        n = len(self.specs[j].arms)
        return [(a, b) for a in range(n) for b in range(n) if a != b]

    def border(self, j: int, a: int, kind: str) -> np.ndarray:
        spec = self.specs[j]
        u = _unit(spec.arms[a])
        n = np.array([-u[1], u[0]])
        side = -LANE_OFFSET if kind == "in" else LANE_OFFSET
        return np.array(spec.center, dtype=float) + JUNCTION_RADIUS * u + side * n

    def conn_length(self, j: int, a: int, b: int) -> float:
        return float(max(np.linalg.norm(self.border(j, b, "out") - self.border(j, a, "in")), 2.0))

    def get_topology(self) -> list[tuple[FakeWaypoint, FakeWaypoint]]:
        segs = []
        for j, spec in self.specs.items():
            for a in range(len(spec.arms)):
                segs.append((FakeWaypoint(self, "in", j, a, spec.arm_length), FakeWaypoint(self, "in", j, a, 0.0)))
                segs.append((FakeWaypoint(self, "out", j, a, 0.0), FakeWaypoint(self, "out", j, a, spec.arm_length)))
            for a, b in self.connections(j):
                segs.append((FakeWaypoint(self, "conn", j, a, 0.0, b), FakeWaypoint(self, "conn", j, a, 1.0, b)))
        return segs

    def get_spawn_points(self) -> list[carla.Transform]:
        pts = []
        for j, spec in self.specs.items():
            for a in range(len(spec.arms)):
                pts.append(FakeWaypoint(self, "out", j, a, 20.0).transform)
        return pts

    def parked_cars(self) -> list[tuple[float, float, float]]:
        """(x, y, yaw) of the map's own parked cars: beside every arm, off the road."""
        out = []
        for spec in self.specs.values():
            for deg in spec.arms:
                u = _unit(deg)
                n = np.array([-u[1], u[0]])
                for s in (50.0, 90.0):
                    if s > spec.arm_length:
                        continue
                    p = np.array(spec.center) + (JUNCTION_RADIUS + s) * u + 12.0 * n
                    out.append((float(p[0]), float(p[1]), deg))
        return out


def main_town() -> FakeMap:
    """X, T, L, a straight pass-through, a rotated X and a five-arm junction."""
    return FakeMap(
        "Carla/Maps/Town99",
        [
            JunctionSpec(1, (0.0, 0.0), (0.0, 90.0, 180.0, 270.0)),
            JunctionSpec(2, (1000.0, 0.0), (0.0, 90.0, 270.0)),
            JunctionSpec(3, (0.0, 1000.0), (0.0, 90.0)),
            JunctionSpec(4, (1000.0, 1000.0), (0.0, 180.0)),
            JunctionSpec(5, (2000.0, 0.0), (10.0, 100.0, 190.0, 280.0)),
            JunctionSpec(6, (2000.0, 2000.0), (0.0, 72.0, 144.0, 216.0, 288.0)),
        ],
    )


# ----------------------------------------------------------------------------- actors & images


@dataclass
class FakeImage:
    frame: int
    width: int
    height: int
    fov: float
    raw_data: bytes
    transform: Any = None

    @property
    def frame_number(self) -> int:
        return self.frame


class FakeActor:
    def __init__(self, server: FakeServer, actor_id: int, bp: FakeBlueprint, transform: carla.Transform) -> None:
        self._server = server
        self._epoch = server.epoch
        self.id = actor_id
        self.type_id = bp.id
        self.attributes = bp.attribute_dict()
        self.blueprint = bp
        ext = bp.extra.get("extent", (0.0, 0.0, 0.0))
        self.bounding_box = carla.BoundingBox(carla.Location(0.0, 0.0, ext[2]), carla.Vector3D(*ext))
        self._transform = carla.Transform(
            carla.Location(transform.location.x, transform.location.y, transform.location.z), transform.rotation
        )
        self.render_pose = self._transform  # where a camera renders from (a move may land ticks late)
        self._pending: list[list[Any]] = []  # [ticks left, pose] of moves not yet rendered
        self.uid = server.new_uid()  # Unreal's GetUniqueID(): not the actor id
        self.is_alive = True

    def get_transform(self) -> carla.Transform:
        return self._transform

    def get_location(self) -> carla.Location:
        return self._transform.location

    def set_transform(self, transform: carla.Transform) -> None:
        self._server.rpc("set_transform", self._epoch)
        self._server.move(self, transform)

    def destroy(self) -> bool:
        self._server.rpc("destroy", self._epoch)
        return self._server.destroy_actor(self.id)


class FakeSensor(FakeActor):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._callback: Callable[[Any], None] | None = None

    def is_listening(self) -> bool:  # a method, as in carla 0.9.16
        return self._callback is not None

    def listen(self, callback: Callable[[Any], None]) -> None:
        self._server.rpc("listen", self._epoch)
        self._server.on_listen()
        self._callback = callback

    def stop(self) -> None:
        self._callback = None


@dataclass
class FakeResponse:
    actor_id: int = 0
    error: str = ""

    def has_error(self) -> bool:
        return bool(self.error)


class FakeWorld:
    def __init__(self, server: FakeServer, world_id: int, fmap: FakeMap) -> None:
        self._server = server
        self._epoch = server.epoch
        self.id = world_id
        self._map = fmap

    def _rpc(self, method: str) -> None:
        self._server.rpc(method, self._epoch)

    def get_map(self) -> FakeMap:
        self._rpc("get_map")
        return self._map

    def get_settings(self) -> carla.WorldSettings:
        self._rpc("get_settings")
        s = self._server.settings
        return carla.WorldSettings(
            synchronous_mode=s["synchronous_mode"],
            no_rendering_mode=s["no_rendering_mode"],
            fixed_delta_seconds=s["fixed_delta_seconds"],
        )

    def apply_settings(self, settings: carla.WorldSettings) -> int:
        self._rpc("apply_settings")
        new = {
            "synchronous_mode": bool(settings.synchronous_mode),
            "no_rendering_mode": bool(settings.no_rendering_mode),
            "fixed_delta_seconds": float(settings.fixed_delta_seconds or 0.0),
        }
        self._server.settings = new
        self._server.settings_log.append(dict(new))
        if new["synchronous_mode"]:  # the server ticks so that the settings take effect
            return self._server.tick(by_client=False)
        return self._server.frame

    def get_blueprint_library(self) -> FakeBlueprintLibrary:
        self._rpc("get_blueprint_library")
        return self._server.library

    def set_weather(self, weather: carla.WeatherParameters) -> None:
        self._rpc("set_weather")
        self._server.on_set_weather(weather)

    def get_weather(self) -> carla.WeatherParameters:
        return self._server.weather

    def unload_map_layer(self, layers: Any) -> None:
        self._rpc("unload_map_layer")
        self._server.set_layer(layers, loaded=False)

    def load_map_layer(self, layers: Any) -> None:
        self._rpc("load_map_layer")
        self._server.set_layer(layers, loaded=True)

    def try_spawn_actor(self, bp: FakeBlueprint, transform: carla.Transform, attach_to: Any = None) -> Any:
        self._rpc("try_spawn_actor")
        return self._server.spawn(bp, transform)

    def spawn_actor(self, bp: FakeBlueprint, transform: carla.Transform, attach_to: Any = None) -> Any:
        self._rpc("spawn_actor")
        actor = self._server.spawn(bp, transform)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def get_actors(self, actor_ids: Iterable[int] | None = None) -> list[FakeActor]:
        self._rpc("get_actors")
        actors = list(self._server.actors.values())
        if actor_ids is not None:
            wanted = set(actor_ids)
            actors = [a for a in actors if a.id in wanted]
        return actors

    def tick(self, seconds: float = 0.0) -> int:
        self._rpc("tick")
        for hook in list(self._server.before_tick):
            hook()
        return self._server.tick()


class FakeClient:
    def __init__(self, server: FakeServer, host: str, port: int) -> None:
        self._server = server
        self._epoch = server.epoch
        self.host, self.port = host, port
        self.timeout: float | None = None
        server.clients.append(self)

    def _rpc(self, method: str) -> None:
        self._server.rpc(method, self._epoch)

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def get_client_version(self) -> str:
        return carla.Client("localhost", 1).get_client_version()

    def get_server_version(self) -> str:
        self._rpc("get_server_version")
        return self._server.version

    def get_world(self) -> FakeWorld:
        self._rpc("get_world")
        return self._server.world

    def get_available_maps(self) -> list[str]:
        self._rpc("get_available_maps")
        return ["/Game/Carla/Maps/" + name for name in self._server.towns]

    def load_world(self, name: str, reset_settings: bool = True) -> FakeWorld:
        self._rpc("load_world")
        self._server.load(name)
        return self._server.world

    def apply_batch_sync(self, commands: list[Any], do_tick: bool = False) -> list[FakeResponse]:
        self._rpc("apply_batch_sync")
        out = []
        for cmd in commands:
            if isinstance(cmd, carla.command.DestroyActor):
                ok = self._server.destroy_actor(cmd.actor_id)
                out.append(FakeResponse(cmd.actor_id, "" if ok else f"actor {cmd.actor_id} not found"))
            elif isinstance(cmd, carla.command.ApplyTransform):
                actor = self._server.actors.get(cmd.actor_id)
                if actor is not None:
                    self._server.move(actor, cmd.transform)
                out.append(FakeResponse(cmd.actor_id, "" if actor else f"actor {cmd.actor_id} not found"))
            else:
                out.append(FakeResponse(0, f"unsupported command {type(cmd).__name__}"))
        return out

    def apply_batch(self, commands: list[Any], do_tick: bool = False) -> None:
        self.apply_batch_sync(commands, do_tick)


# ----------------------------------------------------------------------------- the server


@dataclass
class Fault:
    method: str
    exc: BaseException | Callable[[], None]
    skip: int = 0
    times: int = 1


@dataclass
class SceneRecord:
    """What the server saw between two ``set_weather`` calls (one scene)."""

    weather: Any
    live_at_start: int  # lts vehicles in the world when the scene began
    spawn_tries: int = 0
    spawn_failures: int = 0
    vehicles: list[int] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)


class FakeServer:
    """The whole fake server; ``server.factory`` is the ``client_factory`` for `CarlaSimulator`."""

    def __init__(
        self,
        *,
        towns: dict[str, FakeMap] | None = None,
        town: str | None = None,
        version: str | None = None,
        library: FakeBlueprintLibrary | None = None,
        seed: int = 0,
        max_delay: float = 0.002,
        late_prob: float = 0.25,
        late_delay: float = 0.012,
        stale_prob: float = 0.25,
        spawn_fail_prob: float = 0.0,
        parked_cars: bool = True,
        parked_layer: bool = True,
        collision_distance: float = 3.0,
        costs: Costs | None = None,
        crash_after_listens: int | None = None,
        mesh_scale: float = 1.0,
        move_lag: int = 0,
    ) -> None:
        self.towns = towns or {"Town99": main_town()}
        self.version = version or carla.Client("localhost", 1).get_client_version()
        self.library = library or make_library()
        self.rng = np.random.default_rng(seed)
        self.max_delay, self.late_prob, self.late_delay, self.stale_prob = max_delay, late_prob, late_delay, stale_prob
        self.spawn_fail_prob = spawn_fail_prob
        self.collision_distance = collision_distance
        self.with_parked = parked_cars
        self.parked_layer = parked_layer  # False: the parked cars are part of the map, no layer
        self.parked_loaded = True
        self.layer_log: list[tuple[str, int]] = []  # ("unload" | "load", layer bits)
        self.costs = costs or Costs()
        self.crash_after_listens = crash_after_listens
        self.mesh_scale = float(mesh_scale)
        self.move_lag = int(move_lag)
        self.epoch = 0  # the server process; a restart starts the next one
        self.listen_calls = 0
        self.stream_leaks = 0  # stream resources `listen` allocated and nothing frees (#7156, #7413)
        self.sensors_spawned = 0
        self.before_tick: list[Callable[[], None]] = []  # another client's work, before each of ours
        self.weather_at: dict[int, Any] = {}  # frame → the weather it was rendered in
        self.apply_ticks: list[int] = []  # frames `apply_settings` ticked
        self.poses: dict[int, set[tuple]] = {}  # frame → poses (x, y, z, yaw) the cameras rendered from
        self.settings = {"synchronous_mode": False, "no_rendering_mode": True, "fixed_delta_seconds": 0.0}
        self.original_settings = dict(self.settings)
        self.settings_log: list[dict[str, Any]] = []
        self.weather = carla.WeatherParameters.Default
        self.frame = 1000
        self.actors: dict[int, FakeActor] = {}
        self._ids = itertools.count(100)
        self._uids: set[int] = set()
        self.clients: list[FakeClient] = []
        self.calls: dict[str, int] = {}
        self.faults: list[Fault] = []
        self.dead = False
        self.drop_images = False
        self.spawned_ids: list[int] = []
        self.blueprint_of: dict[int, str] = {}  # actor id → blueprint id, kept after destruction
        self.destroyed_ids: list[int] = []
        self.violations: list[str] = []
        self.scenes: list[SceneRecord] = []
        self.visible: dict[int, dict[int, int]] = {}  # frame → {actor id: visible pixels}
        self.visible_parked: dict[int, int] = {}  # frame → pixels of the map's parked cars
        self.loads: list[str] = []
        self._world_ids = itertools.count(1)
        self.world = FakeWorld(self, next(self._world_ids), self.towns[town or next(iter(self.towns))])
        self._parked = self._make_parked()
        self._heap: list[tuple[float, int, FakeSensor, FakeImage]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._last_image: dict[int, FakeImage] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._deliver, name="fake-carla-stream", daemon=True)
        self._thread.start()

    # -- plumbing

    def factory(self, host: str, port: int) -> FakeClient:
        return FakeClient(self, host, port)

    def inject(self, method: str, exc: BaseException | Callable[[], None], *, skip: int = 0, times: int = 1) -> None:
        """Make the ``skip+1``-th next call of ``method`` raise ``exc`` (or run it, if callable)."""
        self.faults.append(Fault(method, exc, skip, times))

    def rpc(self, method: str, epoch: int | None = None) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.costs.rpc:
            time.sleep(self.costs.rpc)
        if self.dead or (epoch is not None and epoch != self.epoch):
            raise timeout_error()  # a client of a server process that died never reconnects (#3707)
        for f in list(self.faults):
            if f.method != method:
                continue
            if f.skip > 0:
                f.skip -= 1
                continue
            f.times -= 1
            if f.times <= 0:
                self.faults.remove(f)
            if isinstance(f.exc, BaseException):
                raise f.exc
            f.exc()
            return

    def new_uid(self) -> int:
        while True:
            uid = int(self.rng.integers(1, 65536))
            if uid not in self._uids:
                self._uids.add(uid)
                return uid

    def restart(self) -> None:
        """The server process died and a new one was started on the same port: every client,
        world and actor handed out so far is dead for good; ids (actors, episodes) and settings
        start afresh, the parked cars are back."""
        self.epoch += 1
        self.dead = False
        with self._cv:
            self._heap.clear()
        for a in self.actors.values():
            a.is_alive = False
        self.actors.clear()
        self._ids = itertools.count(100)
        self._world_ids = itertools.count(1)
        self.settings = dict(self.original_settings)
        self.parked_loaded = True
        self.world = FakeWorld(self, next(self._world_ids), self.world._map)
        self._last_image.clear()

    def other_client(self, weather: Any, *, ticks: int = 1) -> None:
        """Another client on this server: before each of our ticks it sets its weather and
        ticks the world itself (``ticks`` times)."""

        def act() -> None:
            self.weather = weather
            for _ in range(ticks):
                self.tick(by_client=False)

        self.before_tick.append(act)

    def on_listen(self) -> None:
        self.listen_calls += 1
        self.stream_leaks += 1
        if self.crash_after_listens is not None and self.listen_calls > self.crash_after_listens:
            self.dead = True  # out of memory: the server process is gone (#7987)
            raise timeout_error()
        if self.costs.listen:
            time.sleep(self.costs.listen)

    def set_layer(self, layers: Any, *, loaded: bool) -> None:
        bits = int(layers)
        self.layer_log.append(("load" if loaded else "unload", bits))
        if bits & int(carla.MapLayer.ParkedVehicles) and self.parked_layer:
            self.parked_loaded = loaded

    def move(self, actor: FakeActor, transform: carla.Transform) -> None:
        pose = carla.Transform(
            carla.Location(transform.location.x, transform.location.y, transform.location.z), transform.rotation
        )
        actor._transform = pose
        if self.move_lag <= 0:
            actor.render_pose = pose
            actor._pending.clear()
        else:
            actor._pending.append([self.move_lag, pose])

    def actor_encoding(self) -> bool:
        """Whether the instance camera encodes actor ids (0.9.16 on) rather than Unreal ids."""
        m = re.match(r"(\d+)\.(\d+)\.(\d+)", self.version)
        return bool(m) and tuple(int(x) for x in m.groups()) >= (0, 9, 16)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=2.0)

    def load(self, name: str) -> None:
        base = name.split("/")[-1]
        if base not in self.towns:
            raise RuntimeError(f"map '{name}' not found")
        self.loads.append(base)
        for a in list(self.actors.values()):
            self.destroy_actor(a.id)
        self.settings = dict(self.original_settings)
        self.parked_loaded = True
        self.world = FakeWorld(self, next(self._world_ids), self.towns[base])
        self._parked = self._make_parked()

    def _make_parked(self) -> list[tuple[carla.Transform, carla.BoundingBox, int]]:
        if not self.with_parked:
            return []
        out = []
        for x, y, yaw in self.world._map.parked_cars():
            bb = carla.BoundingBox(carla.Location(0, 0, 0.75), carla.Vector3D(2.3, 0.95, 0.75))
            out.append((carla.Transform(carla.Location(x, y, 0.0), carla.Rotation(yaw=yaw)), bb, self.new_uid()))
        return out

    # -- world state

    def lts_actors(self) -> list[FakeActor]:
        return [a for a in self.actors.values() if a.attributes.get("role_name") == "lts"]

    def lts_vehicles(self) -> list[FakeActor]:
        return [a for a in self.lts_actors() if a.type_id.startswith("vehicle.")]

    def lts_sensors(self) -> list[FakeActor]:
        return [a for a in self.lts_actors() if isinstance(a, FakeSensor)]

    def listening_sensors(self) -> list[FakeSensor]:
        return [a for a in self.actors.values() if isinstance(a, FakeSensor) and a.is_listening()]

    def on_set_weather(self, weather: Any) -> None:
        self.weather = weather
        self.scenes.append(SceneRecord(weather, live_at_start=len(self.lts_vehicles())))

    def spawn(self, bp: FakeBlueprint, transform: carla.Transform) -> FakeActor | None:
        is_vehicle = bp.id.startswith("vehicle.")
        rec = self.scenes[-1] if self.scenes else None
        if is_vehicle and rec is not None and transform.location.z < 100:  # not a size probe
            rec.spawn_tries += 1
        if is_vehicle:
            loc = transform.location
            clash = any(
                a.type_id.startswith("vehicle.") and a.get_location().distance(loc) < self.collision_distance
                for a in self.actors.values()
            )
            unlucky = loc.z < 100 and self.spawn_fail_prob and self.rng.random() < self.spawn_fail_prob
            if clash or unlucky:  # (nothing collides 200 m up, where sizes are measured)
                if rec is not None and loc.z < 100:
                    rec.spawn_failures += 1
                return None
        cls = FakeSensor if bp.id.startswith("sensor.") else FakeActor
        if cls is FakeSensor:
            self.sensors_spawned += 1
            if self.costs.spawn_sensor:
                time.sleep(self.costs.spawn_sensor)
        elif self.costs.spawn_vehicle:
            time.sleep(self.costs.spawn_vehicle)
        actor = cls(self, next(self._ids), bp, transform)
        self.actors[actor.id] = actor
        self.spawned_ids.append(actor.id)
        self.blueprint_of[actor.id] = bp.id
        if is_vehicle and rec is not None and transform.location.z < 100:
            rec.vehicles.append(actor.id)
        return actor

    def destroy_actor(self, actor_id: int) -> bool:
        actor = self.actors.pop(actor_id, None)
        if actor is None:
            return False
        if isinstance(actor, FakeSensor) and actor.is_listening():
            self.violations.append(f"sensor {actor_id} destroyed while listening")
            actor.stop()
        actor.is_alive = False
        self.destroyed_ids.append(actor_id)
        if self.costs.destroy:
            time.sleep(self.costs.destroy)
        return True

    # -- ticking and the sensor stream

    def tick(self, *, by_client: bool = True) -> int:
        """One frame; ``by_client``: a client's ``world.tick()`` (else `apply_settings`' own)."""
        if not self.settings["synchronous_mode"]:
            self.violations.append("tick outside synchronous mode")
        self.frame += 1
        frame = self.frame
        self.weather_at[frame] = self.weather
        if self.scenes and by_client:
            self.scenes[-1].ticks.append(frame)
        if not by_client:
            self.apply_ticks.append(frame)
        cameras = 0
        for actor in list(self.actors.values()):
            for move in list(actor._pending):
                move[0] -= 1
                if move[0] <= 0:
                    actor.render_pose = move[1]
                    actor._pending.remove(move)
        now = time.monotonic()
        rendered: dict[tuple, dict[str, FakeImage]] = {}
        for actor in list(self.actors.values()):
            if not isinstance(actor, FakeSensor) or not actor.is_listening() or self.drop_images:
                continue
            cameras += 1
            t = actor.render_pose
            self.poses.setdefault(frame, set()).add(
                (round(t.location.x, 3), round(t.location.y, 3), round(t.location.z, 3), round(t.rotation.yaw, 3))
            )
            w = int(actor.attributes["image_size_x"])
            h = int(actor.attributes["image_size_y"])
            fov = float(actor.attributes["fov"])
            key = (t.location.x, t.location.y, t.location.z, t.rotation.yaw, t.rotation.pitch, w, h, fov)
            if key not in rendered:
                rendered[key] = self.render(t, w, h, fov, frame)
            image = rendered[key][actor.type_id]
            delay = self.rng.uniform(0.0, self.max_delay)
            if self.rng.random() < self.late_prob:
                delay += self.late_delay
            with self._cv:
                heapq.heappush(self._heap, (now + delay, next(self._seq), actor, image))
                old = self._last_image.get(actor.id)
                if old is not None and self.rng.random() < self.stale_prob:  # an old frame, again, later
                    heapq.heappush(self._heap, (now + delay + self.max_delay, next(self._seq), actor, old))
                self._last_image[actor.id] = image
                self._cv.notify_all()
        cost = self.costs.tick + cameras * self.costs.tick_per_camera
        if cost:
            time.sleep(cost)
        return frame

    def _deliver(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = None if not self._heap else max(self._heap[0][0] - time.monotonic(), 0.0)
                    self._cv.wait(timeout)
                if self._stop:
                    return
                _, _, sensor, image = heapq.heappop(self._heap)
            cb = sensor._callback
            if cb is not None and sensor.is_alive:
                cb(image)

    # -- rendering (a pinhole camera over flat ground, boxes for vehicles)

    def render(self, cam: carla.Transform, w: int, h: int, fov: float, frame: int) -> dict[str, FakeImage]:
        f = w / (2.0 * math.tan(math.radians(fov) / 2.0))
        tag = np.full((h, w), L.SKY, dtype=np.int64)
        depth = np.full((h, w), 1000.0)
        uid = np.zeros((h, w), dtype=np.int64)
        owner = np.zeros((h, w), dtype=np.int64)  # actor id, -1 for parked cars
        rows = np.arange(h)[:, None] + 0.5 - h / 2.0
        ground = np.broadcast_to(rows > 0, (h, w))
        tag[ground] = L.ROAD
        with np.errstate(divide="ignore"):
            depth[ground] = np.broadcast_to(np.minimum(cam.location.z * f / np.maximum(rows, 1e-6), 999.0), (h, w))[
                ground
            ]
        inv = np.array(cam.get_inverse_matrix())
        objects = []
        by_actor = self.actor_encoding()
        k = self.mesh_scale  # a mesh larger than the bounding box the server reports
        for a in self.actors.values():
            if a.type_id.startswith("vehicle."):
                e, c = a.bounding_box.extent, a.bounding_box.location
                mesh = carla.BoundingBox(carla.Location(c.x, c.y, c.z * k), carla.Vector3D(e.x * k, e.y * k, e.z * k))
                iid = a.id & 0xFFFF if by_actor else a.uid  # 0.9.16: the actor id, 16 bits (G, B)
                objects.append((mesh, a.get_transform(), a.blueprint.extra["tag"], iid, a.id))
        if self.parked_loaded or not self.parked_layer:
            for t, bb, puid in self._parked:  # map meshes, not actors: no actor id to encode
                objects.append((bb, t, L.CAR, 0 if by_actor else puid, -1))
        drawn = []
        for bb, t, otag, ouid, oid in objects:
            corners = np.array([[c.x, c.y, c.z, 1.0] for c in bb.get_world_vertices(t)]) @ inv.T
            if (corners[:, 0] <= 0.1).all():
                continue
            x = np.maximum(corners[:, 0], 0.1)
            u = w / 2.0 + f * corners[:, 1] / x
            v = h / 2.0 - f * corners[:, 2] / x
            d = float(corners[:, 0].mean())  # planar depth of the box centre
            c0, c1 = max(math.ceil(u.min() - 0.5), 0), min(math.floor(u.max() - 0.5), w - 1)
            r0, r1 = max(math.ceil(v.min() - 0.5), 0), min(math.floor(v.max() - 0.5), h - 1)
            if c0 > c1 or r0 > r1 or d <= 0.1:
                continue
            drawn.append((d, r0, r1, c0, c1, otag, ouid, oid))
        for d, r0, r1, c0, c1, otag, ouid, oid in sorted(drawn, reverse=True):  # far to near
            tag[r0 : r1 + 1, c0 : c1 + 1] = otag
            depth[r0 : r1 + 1, c0 : c1 + 1] = d
            uid[r0 : r1 + 1, c0 : c1 + 1] = ouid
            owner[r0 : r1 + 1, c0 : c1 + 1] = oid
        # The frame marker: one pixel of the top row, at column frame % w.
        mc = frame % w
        tag[0, mc], depth[0, mc], uid[0, mc], owner[0, mc] = L.POLE, 1.0, 0, 0
        ids, n = np.unique(owner[owner > 0], return_counts=True)
        self.visible[frame] = {int(i): int(k) for i, k in zip(ids, n, strict=True)}
        self.visible_parked[frame] = int((owner == -1).sum())

        def bgra(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> bytes:
            out = np.zeros((h, w, 4), dtype=np.uint8)
            out[..., 0], out[..., 1], out[..., 2], out[..., 3] = b, g, r, 255
            return out.tobytes()

        pal = np.array([L.PALETTE[i] for i in range(L.NUM_LABELS)], dtype=np.uint8)
        rgb = pal[tag]
        rgb[0, mc] = (255, frame & 255, (frame >> 8) & 255)
        enc = np.round(depth / 1000.0 * (256**3 - 1)).astype(np.int64)
        zeros = np.zeros((h, w), dtype=np.int64)
        raw = {
            "sensor.camera.rgb": bgra(rgb[..., 0], rgb[..., 1], rgb[..., 2]),
            "sensor.camera.semantic_segmentation": bgra(tag, zeros, zeros),
            "sensor.camera.depth": bgra(enc & 255, (enc >> 8) & 255, (enc >> 16) & 255),
            "sensor.camera.instance_segmentation": bgra(tag, uid & 255, (uid >> 8) & 255),
        }
        return {k: FakeImage(frame, w, h, fov, v, cam) for k, v in raw.items()}
