"""Scene descriptions for the procedural street simulator: drawing scenes from ψ.

A scene is a set of axis-aligned boxes (buildings, cars, street lights, trees, traffic
lights, a far skyline) on a ground plane, a road layout (a straight road of about
``road_length`` metres ending in an X, T or L junction), a camera pose and a weather
preset.  This module decides *what* is in a scene; `render` decides what it looks like.

World frame: x forward along the road (metres from the camera), y to the left, z up.
Traffic drives on the right.  The road has two lanes each way (``ROAD_HALF_WIDTH`` = 7 m)
and sidewalks of ``SIDEWALK_WIDTH``; the junction occupies x ∈ [L, L + 14].  The camera
looks straight down +x (no yaw, no roll) so that the renderer can use separable rays.

Sampling is vectorised over the scenes of a batch, but every random number of scene
*i* comes from its own counter-based generator (Philox keyed by the batch seed and *i*),
drawn as one fixed-layout block: scene *i* is the same whatever the batch it is in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import labels as L
from ..street import CAR_TYPES, INTERSECTIONS, WEATHERS

__all__ = [
    "WeatherPreset",
    "WEATHER_PRESETS",
    "CarSpec",
    "CAR_SPECS",
    "SceneBatch",
    "sample_scenes",
    "LANE_WIDTH",
    "ROAD_HALF_WIDTH",
    "SIDEWALK_WIDTH",
    "BOX_FIELDS",
    "SCENE_FIELDS",
    "MATERIALS",
]

LANE_WIDTH = 3.5
ROAD_HALF_WIDTH = 2 * LANE_WIDTH  # two lanes each way
SIDEWALK_WIDTH = 4.0
ROAD_LENGTH_RANGE = (15.0, 130.0)  # a scene's drawn road length stays in here
_CAR_GAP = 1.5  # metres between cars in a lane

# Materials: how the renderer textures a box.
M_NONE, M_BUILDING, M_CAR_BODY, M_CAR_CABIN, M_CARGO, M_POLE, M_TRUNK, M_CANOPY, M_TLIGHT = range(9)
MATERIALS = ("none", "building", "car_body", "car_cabin", "cargo", "pole", "trunk", "canopy", "traffic_light")

#: Columns of a box row.  ``main`` is 0, or -1 for a part that belongs to the box just
#: before it (a car's cabin on its body, a tree's trunk under its canopy): such a part
#: is ordered with its main box and drawn in front of it where both are hit.  ``a, b_, c``
#: are material parameters: buildings (floor height, window spacing, window width
#: fraction); car bodies (facing: +1 front toward the camera, -1 back, 0 side; window band
#: bottom and top for a truck cab); cabins (facing, glass fraction); traffic lights (state).
BOX_FIELDS = (
    "x0", "x1", "y0", "y1", "z0", "z1", "r", "g", "b", "material", "sem", "inst", "main", "rank", "a", "b_", "c",
)  # fmt: skip
_NBF = len(BOX_FIELDS)
_BF = {n: i for i, n in enumerate(BOX_FIELDS)}

#: Columns of a scene row (camera, layout, weather).
SCENE_FIELDS = (
    "cam_y", "cam_z", "horizon", "road_length", "junction", "turn",
    "sun_x", "sun_y", "sun_z", "sun_r", "sun_g", "sun_b", "amb_r", "amb_g", "amb_b",
    "zen_r", "zen_g", "zen_b", "hor_r", "hor_g", "hor_b", "shadow", "fog", "fog_r", "fog_g", "fog_b",
    "wet", "rain", "cloud", "cloud_r", "cloud_g", "cloud_b", "lit_windows", "lights", "road_tone", "seed",
)  # fmt: skip
# "horizon": the horizon row as a fraction of the image height; "junction": 0 X, 1 T, 2 L;
# "turn": +1 an L's side road goes left, -1 right, 0 otherwise; "seed": a per-scene noise seed.


@dataclass(frozen=True)
class WeatherPreset:
    """Light and atmosphere of one of CARLA's weather presets (colours in display RGB 0..1)."""

    sun_elevation: tuple[float, float]  # degrees, drawn uniformly
    sun_colour: tuple[float, float, float]  # direct light (0 = no direct light)
    ambient: tuple[float, float, float]  # sky light on every surface
    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    shadow: float  # 1 hard shadows … 0 none
    fog: float  # extinction per metre
    fog_colour: tuple[float, float, float]
    wet: float  # road reflectance 0..1
    rain: float  # rain streak intensity 0..1
    cloud: float  # cloud cover 0..1
    cloud_colour: tuple[float, float, float]
    lit_windows: float  # fraction of windows lit from inside
    lights: float  # car light intensity
    road_tone: float  # asphalt brightness factor (wet asphalt is darker)
    sunset: bool = False  # the sun stands low in front-left or front-right


WEATHER_PRESETS: dict[str, WeatherPreset] = {
    "clear_noon": WeatherPreset(
        sun_elevation=(50.0, 72.0),
        sun_colour=(0.78, 0.75, 0.68),
        ambient=(0.40, 0.45, 0.55),
        zenith=(0.20, 0.42, 0.80),
        horizon=(0.66, 0.78, 0.92),
        shadow=0.9,
        fog=0.0015,
        fog_colour=(0.70, 0.78, 0.88),
        wet=0.0,
        rain=0.0,
        cloud=0.2,
        cloud_colour=(0.95, 0.96, 0.98),
        lit_windows=0.02,
        lights=0.3,
        road_tone=1.0,
    ),
    "cloudy_noon": WeatherPreset(
        sun_elevation=(50.0, 72.0),
        sun_colour=(0.20, 0.20, 0.20),
        ambient=(0.68, 0.69, 0.71),
        zenith=(0.50, 0.53, 0.58),
        horizon=(0.76, 0.77, 0.79),
        shadow=0.2,
        fog=0.005,
        fog_colour=(0.72, 0.73, 0.75),
        wet=0.0,
        rain=0.0,
        cloud=0.85,
        cloud_colour=(0.82, 0.82, 0.84),
        lit_windows=0.06,
        lights=0.4,
        road_tone=0.95,
    ),
    "hard_rain_noon": WeatherPreset(
        sun_elevation=(50.0, 72.0),
        sun_colour=(0.0, 0.0, 0.0),
        ambient=(0.31, 0.33, 0.37),
        zenith=(0.20, 0.22, 0.25),
        horizon=(0.35, 0.37, 0.40),
        shadow=0.0,
        fog=0.028,
        fog_colour=(0.34, 0.36, 0.39),
        wet=1.0,
        rain=1.0,
        cloud=1.0,
        cloud_colour=(0.30, 0.31, 0.33),
        lit_windows=0.25,
        lights=1.0,
        road_tone=0.55,
    ),
    "clear_sunset": WeatherPreset(
        sun_elevation=(4.0, 11.0),
        sun_colour=(1.0, 0.55, 0.22),
        ambient=(0.30, 0.26, 0.32),
        zenith=(0.16, 0.20, 0.45),
        horizon=(1.0, 0.58, 0.32),
        shadow=0.95,
        fog=0.004,
        fog_colour=(0.85, 0.55, 0.40),
        wet=0.0,
        rain=0.0,
        cloud=0.25,
        cloud_colour=(1.0, 0.62, 0.50),
        lit_windows=0.15,
        lights=0.8,
        road_tone=0.95,
        sunset=True,
    ),
}
if tuple(WEATHER_PRESETS) != WEATHERS:  # one preset per weather name, in the same order
    raise RuntimeError("WEATHER_PRESETS must follow simulators.street.WEATHERS")


@dataclass(frozen=True)
class CarSpec:
    """Shape and palette of a car type.  A car is two boxes: the lower body and, on top
    of it, the cabin (for a truck: the cab in front and the cargo box behind it)."""

    length: float
    width: float
    body_height: float
    cabin_length: float
    cabin_height: float  # above the body (truck: the cargo box's height from the ground)
    cabin_rear: float  # cabin's distance from the rear end
    cabin_width: float
    glass: float  # fraction of the cabin's height that is glass
    palette: tuple[tuple[float, float, float], ...]
    size_jitter: float = 0.04


CAR_SPECS: dict[str, CarSpec] = {
    # a long, low saloon in muted colours
    "sedan": CarSpec(
        4.8, 1.82, 0.86, 2.3, 0.48, 0.9, 1.52, 0.8,
        ((0.72, 0.72, 0.74), (0.10, 0.16, 0.38), (0.42, 0.05, 0.07), (0.42, 0.43, 0.45), (0.55, 0.50, 0.42)),
    ),
    # short and tall-cabined, in bright colours
    "hatchback": CarSpec(
        3.8, 1.68, 0.90, 2.2, 0.68, 0.2, 1.54, 0.78,
        ((0.90, 0.14, 0.10), (0.95, 0.78, 0.10), (0.35, 0.65, 0.92), (0.98, 0.48, 0.08), (0.50, 0.80, 0.20)),
    ),
    # wide, high and dark
    "suv": CarSpec(
        4.9, 2.0, 1.12, 3.1, 0.74, 0.2, 1.84, 0.72,
        ((0.05, 0.05, 0.06), (0.12, 0.26, 0.15), (0.20, 0.21, 0.22), (0.34, 0.32, 0.20)),
    ),
    # a tall white box
    "van": CarSpec(
        5.3, 2.02, 1.15, 4.5, 0.98, 0.05, 1.94, 0.45,
        ((0.95, 0.95, 0.94), (0.90, 0.86, 0.72), (0.80, 0.82, 0.84)),
    ),
    # a cab in front of a tall cargo box
    "truck": CarSpec(
        8.2, 2.5, 2.95, 5.8, 3.75, 0.0, 2.5, 0.0,
        ((0.75, 0.10, 0.08), (0.10, 0.25, 0.60), (0.93, 0.93, 0.93), (0.10, 0.45, 0.22), (0.95, 0.55, 0.08)),
    ),
}  # fmt: skip
if tuple(CAR_SPECS) != CAR_TYPES:
    raise RuntimeError("CAR_SPECS must follow simulators.street.CAR_TYPES")

_TRUCK = CAR_TYPES.index("truck")
_TRUCK_CARGO = np.array([(0.92, 0.92, 0.90), (0.70, 0.71, 0.72), (0.72, 0.62, 0.45), (0.55, 0.58, 0.62)])
_BUILDING_PALETTE = np.array(
    [
        (0.62, 0.60, 0.57),
        (0.76, 0.68, 0.55),
        (0.55, 0.30, 0.22),
        (0.82, 0.80, 0.76),
        (0.46, 0.50, 0.56),
        (0.72, 0.56, 0.32),
        (0.38, 0.36, 0.35),
        (0.76, 0.60, 0.56),
    ]
)
_CANOPY = np.array([(0.18, 0.34, 0.10), (0.24, 0.40, 0.12), (0.14, 0.28, 0.12), (0.30, 0.42, 0.14)])
_POLE_COLOUR = (0.42, 0.43, 0.45)

# Spec tables indexed by car type.
_SPEC = {f: np.array([getattr(CAR_SPECS[t], f) for t in CAR_TYPES]) for f in (
    "length", "width", "body_height", "cabin_length", "cabin_height", "cabin_rear", "cabin_width", "glass",
    "size_jitter")}  # fmt: skip
_PALETTE_N = np.array([len(CAR_SPECS[t].palette) for t in CAR_TYPES])
_PALETTE = np.zeros((len(CAR_TYPES), int(_PALETTE_N.max()), 3))
for _i, _t in enumerate(CAR_TYPES):
    _PALETTE[_i, : _PALETTE_N[_i]] = CAR_SPECS[_t].palette

# Fixed layout of each scene's block of uniform random numbers (so that adding draws to
# one part never shifts another's).
_MAX_BUILDINGS = 24  # per row
_ROWS = 5  # main left, main right, on after an X (left, right), across the end (T, L)
_BLD_U = 13
_SKY = 24
_FUR_SEGS = 4  # main left, main right, after an X left, right
_POLES = 12
_TREES = 16
_CAR_U = 8
_U_SCENE = 40
_LAYOUT = {}
_o = 0
for _name, _size in (
    ("scene", _U_SCENE),
    ("bld", _ROWS * _MAX_BUILDINGS * _BLD_U),
    ("sky", _SKY * 3),
    ("poles", _FUR_SEGS * _POLES),
    ("trees", _FUR_SEGS * _TREES * 6),
    ("cars", 64 * _CAR_U),  # room for max_cars up to 64
):
    _LAYOUT[_name] = (_o, _o + _size)
    _o += _size
_U_TOTAL = _o + (-_o) % 4  # whole Philox steps per scene


@dataclass
class SceneBatch:
    """Scenes drawn for one batch, as padded arrays plus their per-scene attributes."""

    boxes: np.ndarray  # N×B×len(BOX_FIELDS) float32; empty boxes have material 0
    scene: np.ndarray  # N×len(SCENE_FIELDS) float32
    type_of_inst: np.ndarray  # N×(max_cars+1) int64: type index of instance k, -1 for none
    weather: list[str]
    intersection: list[str]
    turn: list[str]
    road_length: list[float]
    car_types: list[list[str]]

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def subset(self, start: int, stop: int) -> SceneBatch:
        sl = slice(start, stop)
        nb = int((self.boxes[sl, :, _BF["material"]] > 0).sum(1).max()) if stop > start else 0
        return SceneBatch(
            boxes=self.boxes[sl, : max(nb, 1)],
            scene=self.scene[sl],
            type_of_inst=self.type_of_inst[sl],
            weather=self.weather[sl],
            intersection=self.intersection[sl],
            turn=self.turn[sl],
            road_length=self.road_length[sl],
            car_types=self.car_types[sl],
        )


def _uniforms(seed: int, start: int, n: int) -> np.ndarray:
    """Uniforms for scenes ``start … start + n - 1``: scene *i* reads the *i*-th block of
    ``_U_TOTAL`` numbers of a Philox stream keyed by the seed (counter-based: the stream
    jumps straight to a block, so a scene's numbers do not depend on the batch)."""
    bits = np.random.Philox(key=int(seed) % (1 << 64))
    bits.advance(start * (_U_TOTAL // 4))  # Philox4x64: 4 words per step, one word per double
    return np.random.Generator(bits).random(n * _U_TOTAL).reshape(n, _U_TOTAL)


def _block(u: np.ndarray, name: str, *shape: int) -> np.ndarray:
    a, b = _LAYOUT[name]
    return u[:, a:b].reshape(u.shape[0], *shape) if shape else u[:, a:b]


def _categorical(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Index drawn from ``probs`` (…×C, rows summing to 1) with uniforms ``u`` (…)."""
    cum = np.cumsum(probs, axis=-1)
    idx = (u[..., None] >= cum[..., :-1]).sum(-1)
    # rounding: never land on a choice of probability 0
    last_pos = probs.shape[-1] - 1 - np.argmax(probs[..., ::-1] > 0, axis=-1)
    return np.minimum(idx, last_pos)


def _poisson(u: np.ndarray, lam: np.ndarray, kmax: int = 64) -> np.ndarray:
    """Poisson(lam) by inverting its CDF at u."""
    k = np.arange(kmax + 1)
    lam = np.maximum(lam, 1e-12)[:, None]
    logpmf = k * np.log(lam) - lam - np.array([math.lgamma(x + 1) for x in k])
    cdf = np.cumsum(np.exp(logpmf), axis=1)
    return np.minimum((u[:, None] > cdf).sum(1), kmax)


def _lerp(a: float | np.ndarray, b: float | np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t


def _empty_boxes(*shape: int) -> np.ndarray:
    """Box rows, all empty (material 0; `_fill` writes the boxes that are kept)."""
    return np.zeros((*shape, _NBF), dtype=np.float32)


def _fill(out: np.ndarray, keep: np.ndarray, **cols: Any) -> None:
    """Write box columns (arrays broadcast against ``keep``); rows not kept get material 0,
    which is what makes a box absent (`sample_scenes` drops them)."""
    for name, v in cols.items():
        out[..., _BF[name]] = v
    out[..., _BF["material"]] *= keep


def sample_scenes(params: Sequence[Mapping[str, Any]], seed: int, *, max_cars: int = 24, start: int = 0) -> SceneBatch:
    """Draw scene ``start + k`` for each validated ψ ``params[k]`` (`street_param_space`)."""
    n = len(params)
    u = _uniforms(seed, start, n)
    us = _block(u, "scene")
    pw = np.array([[p["weather"][w] for w in WEATHERS] for p in params])
    pj = np.array([[p["intersection"][j] for j in INTERSECTIONS] for p in params])
    pt = np.array([[p["car_type"][t] for t in CAR_TYPES] for p in params])
    lam = np.array([float(p["cars_per_scene"]) for p in params])
    length0 = np.array([float(p["road_length"]) for p in params])

    weather = _categorical(us[:, 0], pw)
    junction = _categorical(us[:, 1], pj)
    gauss = np.sqrt(-2.0 * np.log1p(-us[:, 2])) * np.cos(2.0 * math.pi * us[:, 3])
    road_length = np.clip(length0 * (1.0 + 0.08 * gauss), *ROAD_LENGTH_RANGE)
    n_cars = np.minimum(_poisson(us[:, 4], lam), max_cars)
    is_x, is_t, is_l = (junction == 0), (junction == 1), (junction == 2)
    turn = np.where(is_l, np.where(us[:, 5] < 0.5, 1.0, -1.0), 0.0)

    parts = [
        _cars(u, pt, n_cars, road_length, junction, turn, max_cars),
        _buildings(u, road_length, is_x, is_t | is_l, turn),
        _skyline(u),
        _furniture(u, us, road_length, is_x),
        _traffic_lights(us, road_length),
    ]
    boxes, type_of_inst, placed = parts[0]
    allb = np.concatenate([boxes] + parts[1:], axis=1)
    valid = allb[..., _BF["material"]] > 0
    # pack each scene's boxes to the front (stable: a part stays right after its main box)
    order = np.argsort(~valid, axis=1, kind="stable")
    nb = max(int(valid.sum(1).max()), 1)
    allb = allb[np.arange(n)[:, None], order[:, :nb]]

    # weather, sun, camera
    presets = [WEATHER_PRESETS[w] for w in WEATHERS]
    wp = [presets[int(w)] for w in weather]

    def per(f: str) -> np.ndarray:
        return np.array([getattr(p, f) for p in wp], dtype=np.float64)

    el_lo = np.array([p.sun_elevation[0] for p in wp])
    el_hi = np.array([p.sun_elevation[1] for p in wp])
    el = np.radians(_lerp(el_lo, el_hi, us[:, 6]))
    sunset = per("sunset") > 0
    az_sunset = np.radians(_lerp(15.0, 70.0, us[:, 7])) * np.where(us[:, 8] < 0.5, 1.0, -1.0)
    az = np.where(sunset, az_sunset, _lerp(-math.pi, math.pi, us[:, 7]))
    sun = np.stack((np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
    cols = [
        -0.5 * LANE_WIDTH + _lerp(-0.3, 0.3, us[:, 9]),
        _lerp(1.45, 1.75, us[:, 10]),
        _lerp(0.42, 0.48, us[:, 11]),
        road_length,
        junction.astype(np.float64),
        turn,
        *sun.T,
        *np.array([p.sun_colour for p in wp]).T,
        *np.array([p.ambient for p in wp]).T,
        *np.array([p.zenith for p in wp]).T,
        *np.array([p.horizon for p in wp]).T,
        per("shadow"),
        per("fog") * _lerp(0.8, 1.25, us[:, 12]),
        *np.array([p.fog_colour for p in wp]).T,
        per("wet"),
        per("rain"),
        per("cloud"),
        *np.array([p.cloud_colour for p in wp]).T,
        per("lit_windows"),
        per("lights"),
        per("road_tone") * _lerp(0.9, 1.1, us[:, 13]),
        np.floor(us[:, 14] * 9973.0),
    ]
    scene = np.stack(cols, -1).astype(np.float32)
    return SceneBatch(
        boxes=allb.astype(np.float32),
        scene=scene,
        type_of_inst=type_of_inst,
        weather=[WEATHERS[int(w)] for w in weather],
        intersection=[INTERSECTIONS[int(j)] for j in junction],
        turn=[{1.0: "left", -1.0: "right"}.get(float(t), "") for t in turn],
        road_length=[round(float(x), 3) for x in road_length],
        car_types=placed,
    )


def _buildings(u: np.ndarray, road_length: np.ndarray, is_x: np.ndarray, closed: np.ndarray, turn: np.ndarray):
    """Rows of buildings: both sides up to the side road; on past an X; one across the
    end of a T or L.  An L's side without a side road runs on to the end of the road."""
    R, S = ROAD_HALF_WIDTH, SIDEWALK_WIDTH
    n = u.shape[0]
    ub = _block(u, "bld", _ROWS, _MAX_BUILDINGS, _BLD_U)
    J1 = road_length + 2 * R
    one = np.ones(n)
    # per row: along x?, facade, outward, start, end, present, gaps allowed
    left_end = np.where((turn != 0) & (turn != 1.0), J1 + S, road_length - S)
    right_end = np.where((turn != 0) & (turn != -1.0), J1 + S, road_length - S)
    rows = [
        (True, (R + S) * one, 1.0, -15.0 * one, left_end, one > 0, True),
        (True, -(R + S) * one, -1.0, -15.0 * one, right_end, one > 0, True),
        (True, (R + S) * one, 1.0, J1 + S, J1 + S + 90.0, is_x, True),
        (True, -(R + S) * one, -1.0, J1 + S, J1 + S + 90.0, is_x, True),
        (False, J1 + S, 1.0, -90.0 * one, 90.0 * one, closed, False),
    ]
    out = _empty_boxes(n, _ROWS, _MAX_BUILDINGS)
    j = np.arange(_MAX_BUILDINGS)
    for r, (along_x, facade, outward, start, end, present, gaps) in enumerate(rows):
        v = ub[:, r]  # (n, M, U)
        w = _lerp(8.0, 22.0, v[..., 0])
        gap = (v[..., 1] < 0.15) * (j > 0) * _lerp(2.0, 6.0, v[..., 2]) * gaps
        b0 = start[:, None] + np.cumsum(gap + w, 1) - w
        e = b0 + w
        fin = (end[:, None] - e) < 5.0  # this one runs to the end of the row
        done_before = (np.cumsum(fin, 1) - fin) > 0
        keep = (b0 < end[:, None] - 3.0) & ~done_before & present[:, None]
        b1 = np.where(fin, end[:, None], e)
        setback = (v[..., 3] < 0.3) * _lerp(0.0, 2.0, v[..., 4])
        depth = _lerp(8.0, 18.0, v[..., 5])
        h = np.where(v[..., 6] < 0.8, _lerp(7.0, 30.0, v[..., 7]), _lerp(30.0, 55.0, v[..., 7]))
        colour = _BUILDING_PALETTE[np.minimum((v[..., 8] * len(_BUILDING_PALETTE)).astype(int), 7)]
        colour = np.minimum(colour * _lerp(0.85, 1.12, v[..., 9])[..., None], 1.0)
        f0 = facade[:, None] + outward * setback
        f1 = facade[:, None] + outward * (setback + depth)
        lo, hi = np.minimum(f0, f1), np.maximum(f0, f1)
        xs = (b0, b1) if along_x else (lo, hi)
        ys = (lo, hi) if along_x else (b0, b1)
        _fill(
            out[:, r], keep,
            x0=xs[0], x1=xs[1], y0=ys[0], y1=ys[1], z0=0.0, z1=h,
            r=colour[..., 0], g=colour[..., 1], b=colour[..., 2], material=M_BUILDING, sem=L.BUILDING,
            a=_lerp(3.0, 3.6, v[..., 10]), b_=_lerp(2.2, 3.6, v[..., 11]), c=_lerp(0.35, 0.7, v[..., 12]),
        )  # fmt: skip
    return out.reshape(n, -1, _NBF)


def _skyline(u: np.ndarray) -> np.ndarray:
    """Big far blocks, so that the horizon is not empty ground."""
    n = u.shape[0]
    v = _block(u, "sky", _SKY, 3)
    w = _lerp(25.0, 70.0, v[..., 0])
    y0 = -400.0 + np.cumsum(w, 1) - w
    x0 = _lerp(380.0, 460.0, v[..., 1])
    out = _empty_boxes(n, _SKY)
    _fill(
        out, y0 < 400.0,
        x0=x0, x1=x0 + 40.0, y0=y0, y1=y0 + w, z0=0.0, z1=_lerp(15.0, 70.0, v[..., 2]),
        r=0.45, g=0.47, b=0.52, material=M_BUILDING, sem=L.BUILDING, a=3.3, b_=3.0, c=0.5,
    )  # fmt: skip
    return out


def _furniture(u: np.ndarray, us: np.ndarray, road_length: np.ndarray, is_x: np.ndarray) -> np.ndarray:
    """Street lights at the kerb (pole + arm over the road) and trees on the sidewalks."""
    R, S = ROAD_HALF_WIDTH, SIDEWALK_WIDTH
    n = u.shape[0]
    J1 = road_length + 2 * R
    vp = _block(u, "poles", _FUR_SEGS, _POLES)
    vt = _block(u, "trees", _FUR_SEGS, _TREES, 6)
    segs = [
        (1.0, -5.0 + 0 * road_length, road_length - 3.0, np.ones(n, bool)),
        (-1.0, -5.0 + 0 * road_length, road_length - 3.0, np.ones(n, bool)),
        (1.0, J1 + 3.0, J1 + S + 80.0, is_x),
        (-1.0, J1 + 3.0, J1 + S + 80.0, is_x),
    ]
    poles = _empty_boxes(n, _FUR_SEGS, _POLES, 2)
    trees = _empty_boxes(n, _FUR_SEGS, _TREES, 2)
    k = np.arange(_POLES)
    for s, (side, start, end, present) in enumerate(segs):
        spacing = _lerp(18.0, 30.0, us[:, 15 + s])[:, None]
        x = start[:, None] + _lerp(2.0, spacing, us[:, 19 + s, None]) + k * spacing
        keep = (x < end[:, None] - 1.0) & present[:, None]
        h = _lerp(6.5, 8.0, vp[:, s])
        py = side * (R + 0.45)
        a0, a1 = min(py - side * 0.1, side * (R - 0.2)), max(py - side * 0.1, side * (R - 0.2))
        pc = dict(r=_POLE_COLOUR[0], g=_POLE_COLOUR[1], b=_POLE_COLOUR[2], material=M_POLE, sem=L.POLE)
        _fill(poles[:, s, :, 0], keep, x0=x - 0.1, x1=x + 0.1, y0=py - 0.1, y1=py + 0.1, z0=0.0, z1=h, **pc)
        # the lamp arm reaches over the road, its footprint touching the pole's
        _fill(poles[:, s, :, 1], keep, x0=x - 0.08, x1=x + 0.08, y0=a0, y1=a1, z0=h - 0.25, z1=h - 0.05, **pc)
        v = vt[:, s]
        step = _lerp(9.0, 14.0, v[..., 0])
        x = start[:, None] + _lerp(4.0, 10.0, us[:, 27 + s, None]) + np.cumsum(step, 1) - step
        tree_p = _lerp(0.0, 0.9, us[:, 23 + s])[:, None]
        keep = (v[..., 1] < tree_p) & (x < end[:, None] - 2.0) & present[:, None]
        half = _lerp(0.9, 1.5, v[..., 2])
        trunk_h = _lerp(2.2, 3.2, v[..., 3])
        top = trunk_h + _lerp(2.0, 3.5, v[..., 4])
        ty = side * (R + S * 0.55)
        colour = _CANOPY[np.minimum((v[..., 5] * len(_CANOPY)).astype(int), len(_CANOPY) - 1)]
        _fill(
            trees[:, s, :, 0], keep,
            x0=x - half, x1=x + half, y0=ty - half, y1=ty + half, z0=trunk_h, z1=top,
            r=colour[..., 0], g=colour[..., 1], b=colour[..., 2], material=M_CANOPY, sem=L.VEGETATION,
        )  # fmt: skip
        _fill(
            trees[:, s, :, 1], keep,
            x0=x - 0.15, x1=x + 0.15, y0=ty - 0.15, y1=ty + 0.15, z0=0.0, z1=trunk_h + 0.2,
            r=0.30, g=0.22, b=0.15, material=M_TRUNK, sem=L.VEGETATION, main=-1.0, rank=1.0,
        )  # fmt: skip
    return np.concatenate([poles.reshape(n, -1, _NBF), trees.reshape(n, -1, _NBF)], 1)


def _traffic_lights(us: np.ndarray, road_length: np.ndarray) -> np.ndarray:
    """A signal post at each near corner of the junction, its head hanging toward the road."""
    R = ROAD_HALF_WIDTH
    n = us.shape[0]
    out = _empty_boxes(n, 2, 2)
    keep = np.ones(n, bool)
    x = road_length - 1.0
    h = 4.6
    for i, side in enumerate((-1.0, 1.0)):
        y = side * (R + 0.7)
        _fill(out[:, i, 0], keep, x0=x - 0.09, x1=x + 0.09, y0=y - 0.09, y1=y + 0.09, z0=0.0, z1=h,
              r=0.25, g=0.26, b=0.27, material=M_POLE, sem=L.POLE)  # fmt: skip
        y0, y1 = min(y - side * 0.1, y - side * 0.5), max(y - side * 0.1, y - side * 0.5)
        _fill(out[:, i, 1], keep, x0=x - 0.2, x1=x + 0.05, y0=y0, y1=y1, z0=h - 1.2, z1=h - 0.1,
              r=0.08, g=0.08, b=0.08, material=M_TLIGHT, sem=L.TRAFFIC_LIGHT,
              a=(us[:, 31 + i] < 0.5).astype(float))  # fmt: skip
    return out.reshape(n, -1, _NBF)


def _cars(
    u: np.ndarray,
    pt: np.ndarray,
    n_cars: np.ndarray,
    road_length: np.ndarray,
    junction: np.ndarray,
    turn: np.ndarray,
    max_cars: int,
) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Cars on lanes, none overlapping: each car picks a lane segment (weighted by its
    length, the road ahead weighted most); a segment keeps cars while they fit and
    spreads them uniformly with at least ``_CAR_GAP`` between them."""
    R = ROAD_HALF_WIDTH
    n = u.shape[0]
    M = max(max_cars, 1)
    v = _block(u, "cars", 64, _CAR_U)[:, :M]
    J1 = road_length + 2 * R
    lanes = (-1.5 * LANE_WIDTH, -0.5 * LANE_WIDTH, 0.5 * LANE_WIDTH, 1.5 * LANE_WIDTH)
    # segments: along_x, lateral, start, end, direction of travel, weight
    seg = []
    zero = np.zeros(n)
    for y in lanes:
        d = 1.0 if y < 0 else -1.0  # right-hand traffic: our side drives away from the camera
        seg.append((1.0 + zero, y + zero, 5.0 + zero, road_length - 5.5, d + zero, 3.0 + zero))
    for y in lanes:
        d = 1.0 if y < 0 else -1.0
        seg.append((1.0 + zero, y + zero, J1 + 5.0, J1 + 70.0, d + zero, (junction == 0) * 1.0))
    cx = road_length + R
    for arm in (1.0, -1.0):
        present = (junction != 2) | (turn == arm)
        a, b = sorted((arm * (R + 5.0), arm * (R + 55.0)))
        for dx in lanes:
            seg.append((zero, cx + dx, a + zero, b + zero, arm * (1.0 if dx > 0 else -1.0) + zero, present * 1.0))
    along_x, lateral, s_start, s_end, s_dir, s_w = (np.stack([s[i] for s in seg], 1) for i in range(6))
    n_seg = along_x.shape[1]
    seg_len = np.maximum(s_end - s_start, 0.0)
    weight = seg_len * s_w
    weight = weight / np.maximum(weight.sum(1, keepdims=True), 1e-9)

    active = np.arange(M)[None, :] < n_cars[:, None]
    ctype = _categorical(v[..., 0], np.repeat(pt[:, None, :], M, 1))
    jit = 1.0 + _SPEC["size_jitter"][ctype] * (2.0 * v[..., 1] - 1.0)
    length = _SPEC["length"][ctype] * jit
    width = _SPEC["width"][ctype] * jit
    sid = _categorical(v[..., 2], np.repeat(weight[:, None, :], M, 1))
    rows = np.arange(n)[:, None]
    onehot = (sid[..., None] == np.arange(n_seg)) & active[..., None]  # (n, M, n_seg)
    need = onehot * (length + _CAR_GAP)[..., None]
    before = np.cumsum(need, 1) - need  # room taken by earlier cars of the same segment
    fits = (before + length[..., None] <= seg_len[:, None, :]) & onehot
    kept = fits.any(-1)
    room_before = (before * fits).sum(-1)
    kept_need = (need * fits).sum(1)  # (n, n_seg)
    free = np.maximum(seg_len - kept_need + _CAR_GAP, 0.0)  # slack to spread the cars over
    # sorted uniform offsets in each segment, handed out to its cars in index order
    sid_k = np.where(kept, sid, n_seg)
    by_u = np.argsort(sid_k + 0.999 * v[..., 3], axis=1, kind="stable")
    by_i = np.argsort(sid_k, axis=1, kind="stable")
    offs = np.empty_like(v[..., 3])
    offs[rows, by_i] = v[..., 3][rows, by_u]
    seg_of = np.minimum(sid, n_seg - 1)
    pos = s_start[rows, seg_of] + offs * free[rows, seg_of] + room_before
    lat = lateral[rows, seg_of] + _lerp(-0.2, 0.2, v[..., 4])
    direction = s_dir[rows, seg_of]
    ax = along_x[rows, seg_of] > 0

    pal = _PALETTE[ctype, np.minimum((v[..., 5] * _PALETTE_N[ctype]).astype(int), _PALETTE_N[ctype] - 1)]
    pal = np.minimum(pal * _lerp(0.9, 1.08, v[..., 6])[..., None], 1.0)
    truck = ctype == _TRUCK
    s0, s1 = pos, pos + length
    rear = np.where(direction > 0, s0, s1)
    front = np.where(direction > 0, s1, s0)
    scale = jit
    # box 1: the body (a truck's cab); box 2: the cabin (a truck's cargo box)
    cab_len = (_SPEC["length"][ctype] - _SPEC["cabin_length"][ctype] - 0.25) * scale
    b_lo = np.where(truck, np.minimum(front, front - direction * cab_len), s0)
    b_hi = np.where(truck, np.maximum(front, front - direction * cab_len), s1)
    b_half = np.where(truck, width * 0.485, width * 0.5)
    k0 = np.where(truck, rear, rear + direction * _SPEC["cabin_rear"][ctype] * scale)
    k1 = k0 + direction * _SPEC["cabin_length"][ctype] * scale
    c_lo, c_hi = np.minimum(k0, k1), np.maximum(k0, k1)
    c_half = np.where(truck, width * 0.5, _SPEC["cabin_width"][ctype] * 0.5 * scale)
    bh = _SPEC["body_height"][ctype]
    c_z0 = np.where(truck, 0.0, bh)
    c_z1 = np.where(truck, _SPEC["cabin_height"][ctype], bh + _SPEC["cabin_height"][ctype])
    sem = np.where(truck, L.TRUCK, L.CAR)
    inst = np.cumsum(kept, 1) * kept
    facing = np.where(ax, -direction, 0.0)
    cargo = _TRUCK_CARGO[np.minimum((v[..., 7] * len(_TRUCK_CARGO)).astype(int), len(_TRUCK_CARGO) - 1)]

    def xy(lo: np.ndarray, hi: np.ndarray, half: np.ndarray) -> dict[str, np.ndarray]:
        return dict(
            x0=np.where(ax, lo, lat - half),
            x1=np.where(ax, hi, lat + half),
            y0=np.where(ax, lat - half, lo),
            y1=np.where(ax, lat + half, hi),
        )

    out = _empty_boxes(n, M, 2)
    _fill(
        out[:, :, 0], kept, **xy(b_lo, b_hi, b_half), z0=0.0, z1=bh,
        r=pal[..., 0], g=pal[..., 1], b=pal[..., 2], material=M_CAR_BODY, sem=sem, inst=inst,
        a=facing, b_=np.where(truck, 1.7, 0.0), c=np.where(truck, 2.55, 0.0),
    )  # fmt: skip
    c_col = np.where(truck[..., None], cargo, pal)
    _fill(
        out[:, :, 1], kept, **xy(c_lo, c_hi, c_half), z0=c_z0, z1=c_z1,
        r=c_col[..., 0], g=c_col[..., 1], b=c_col[..., 2], material=np.where(truck, M_CARGO, M_CAR_CABIN),
        sem=sem, inst=inst, main=np.where(truck, 0.0, -1.0), rank=np.where(truck, 0.0, 1.0), a=facing,
        b_=_SPEC["glass"][ctype],
    )  # fmt: skip
    type_of_inst = np.full((n, max_cars + 1), -1, dtype=np.int64)
    placed: list[list[str]] = []
    for i in range(n):
        t = ctype[i][kept[i]]
        type_of_inst[i, 1 : 1 + len(t)] = t
        placed.append([CAR_TYPES[int(x)] for x in t])
    return out.reshape(n, -1, _NBF), type_of_inst, placed
