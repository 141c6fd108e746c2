"""Tests of the CARLA adapter against a fake server (carla_fakes.py) and the real `carla`
client module; one test, skipped unless CARLA_HOST is set, uses a live server."""

from __future__ import annotations

import os
import pickle
import socket
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np
import pytest

carla = pytest.importorskip("carla", reason='the CARLA client is an extra: pip install -e ".[carla]"')

import simulators  # noqa: E402
from simulators import labels as L  # noqa: E402
from simulators.carla import (  # noqa: E402
    HATCHBACK_MAX_LENGTH,
    SUV_MIN_HEIGHT,
    WEATHER_PRESETS,
    CarlaSimulator,
    classify_vehicle,
    decode_depth,
    find_junctions,
    parse_ports,
    probe_server,
)
from simulators.errors import SimulatorUnavailable, UserError  # noqa: E402
from simulators.space import load_target_file  # noqa: E402
from simulators.street import CAR_TYPES, INTERSECTIONS, WEATHERS, street_param_space  # noqa: E402

try:  # the fakes live next to this file; tests may or may not be a package
    from . import carla_fakes as F
except ImportError:
    import carla_fakes as F

RES = (32, 64)
MIN_PX = 4


@pytest.fixture
def server():
    srv = F.FakeServer(seed=0)
    yield srv
    srv.close()


def make_sim(srv: F.FakeServer, **kw) -> CarlaSimulator:
    opts = dict(client_factory=srv.factory, resolution=RES, warmup_ticks=2, min_visible_pixels=MIN_PX, timeout=2.0)
    opts.update(kw)
    return CarlaSimulator(**opts)


def psi(**over):
    p = {
        "weather": {w: 1 / len(WEATHERS) for w in WEATHERS},
        "intersection": {s: 1 / len(INTERSECTIONS) for s in INTERSECTIONS},
        "car_type": {t: 1 / len(CAR_TYPES) for t in CAR_TYPES},
        "cars_per_scene": 6.0,
        "road_length": 60.0,
    }
    p.update(over)
    return p


def truth_counts(srv: F.FakeServer, frame: int, min_px: int = MIN_PX) -> np.ndarray:
    out = np.zeros(len(CAR_TYPES), dtype=np.int64)
    for actor_id, px in srv.visible[frame].items():
        if px >= min_px:
            out[CAR_TYPES.index(F.EXPECTED_TYPE[srv.blueprint_of[actor_id]])] += 1
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- ψ → carla objects


def test_weather_presets_are_real_carla_presets():
    assert tuple(WEATHER_PRESETS) == WEATHERS
    for preset in WEATHER_PRESETS.values():
        assert isinstance(getattr(carla.WeatherParameters, preset), carla.WeatherParameters)
    # HardRainNoon is the rainy one; ClearSunset has a low sun: the names map to what they say.
    assert carla.WeatherParameters.HardRainNoon.precipitation > 50
    assert carla.WeatherParameters.ClearSunset.sun_altitude_angle < carla.WeatherParameters.ClearNoon.sun_altitude_angle


def test_label_ids_match_installed_carla():
    names = carla.CityObjectLabel.names
    assert int(names["Roads"]) == L.ROAD and int(names["Car"]) == L.CAR and int(names["Truck"]) == L.TRUCK
    assert int(names["Sky"]) == L.SKY and int(names["Poles"]) == L.POLE


def test_param_space_is_the_procedural_one_and_a_procedural_target_file_is_accepted(tmp_path, server):
    space = CarlaSimulator.param_space
    ref = street_param_space()
    assert list(space) == list(ref)
    assert [space[k].kind for k in space] == [ref[k].kind for k in ref]
    try:
        from simulators.procedural import ProceduralSimulator
    except ImportError:
        pass
    else:
        assert list(ProceduralSimulator(resolution=(16, 16)).param_space) == list(space)
    target = tmp_path / "target.yaml"
    target.write_text(
        "simulator: procedural\n"
        "params:\n"
        "  weather: {clear_noon: 0.7, hard_rain_noon: 0.3}\n"
        "  intersection: {X: 0.5, T: 0.5}\n"
        "  car_type: {sedan: 0.4, suv: 0.3, truck: 0.3}\n"
        "  cars_per_scene: 5\n"
        "  road_length: 60\n"
    )
    spec = load_target_file(target)
    validated = CarlaSimulator.param_space.validate(spec.params)
    assert validated["weather"]["cloudy_noon"] == 0.0
    with make_sim(server) as sim:
        batch = sim.generate(spec.params, 3, seed=0)
    assert len(batch) == 3 and set(batch.attributes["intersection"]) <= {"X", "T"}
    default = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "targets", "default.yaml")
    if os.path.exists(default):
        CarlaSimulator.param_space.validate(load_target_file(default).params)


def test_registry_builds_it(server):
    sim = simulators.make("carla", client_factory=server.factory, resolution=RES)
    try:
        assert isinstance(sim, CarlaSimulator) and sim.address == "localhost:2000"
    finally:
        sim.close()


# ----------------------------------------------------------------------------- connection failures


def test_missing_carla_module_names_the_install_command(monkeypatch, server):
    monkeypatch.setitem(sys.modules, "carla", None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[carla\]"'):
        CarlaSimulator(client_factory=server.factory)


def test_no_server_is_one_line_user_error_within_the_timeout():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(SimulatorUnavailable) as info:
        CarlaSimulator(host="localhost", port=port, timeout=1.0)
    assert time.monotonic() - t0 < 2.0
    msg = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in msg
    assert f"localhost:{port}" in msg and "CarlaUE4.sh -RenderOffScreen" in msg and "--sim procedural" in msg


def test_no_server_through_the_real_client_times_out_not_hangs():
    # Without the port probe: the real carla.Client's own time-out, turned into the same error.
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(SimulatorUnavailable, match=f"localhost:{port}"):
        CarlaSimulator(port=port, timeout=1.0, client_factory=lambda h, p: carla.Client(h, p))
    assert time.monotonic() - t0 < 4.0


def _serve_once(reply: bytes) -> int:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        with conn:
            conn.recv(64)
            conn.sendall(reply)
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def test_a_non_carla_service_is_refused_before_the_client_can_abort():
    # The carla client aborts the process (std::bad_cast) on such a reply; the probe refuses it first.
    port = _serve_once(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
    with pytest.raises(SimulatorUnavailable, match="not as a CARLA server"):
        CarlaSimulator(host="127.0.0.1", port=port, timeout=2.0)
    port = _serve_once(b"\x94\x01\x00\xc0\xa60.9.16")  # a msgpack-rpc reply passes
    probe_server("127.0.0.1", port, 2.0)


def test_version_mismatch_and_old_servers_warn():
    for version, pattern in (("0.9.15", "differ"), ("0.9.13", "0.9.14 or newer")):
        srv = F.FakeServer(version=version)
        try:
            with pytest.warns(UserWarning, match=pattern):
                make_sim(srv).close()
        finally:
            srv.close()
    srv = F.FakeServer()  # same version: silent
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            make_sim(srv).close()
    finally:
        srv.close()


def test_ports_per_worker():
    assert parse_ports(2000) == [2000]
    assert parse_ports("2000, 3000") == [2000, 3000]
    assert parse_ports([2000, 3000]) == [2000, 3000]
    for bad in ("20x0", 0, 70000, [], "2000,", True):
        with pytest.raises(UserError, match="CARLA port"):
            parse_ports(bad)
    srv = F.FakeServer()  # one fake behind every port: one client at a time
    try:
        for i in range(3):
            make_sim(srv, port="2000,3000", worker_index=i).close()
        assert [c.port for c in srv.clients] == [2000, 3000, 2000]
    finally:
        srv.close()


# ----------------------------------------------------------------------------- settings & batches


def test_synchronous_settings_applied_and_restored_on_close(server):
    original = dict(server.settings)
    assert original["no_rendering_mode"] and not original["synchronous_mode"]
    with make_sim(server, fixed_delta=0.05) as sim:
        assert server.settings == {"synchronous_mode": True, "no_rendering_mode": False, "fixed_delta_seconds": 0.05}
        sim.generate(psi(), 2, seed=0)
    assert server.settings == original
    sim.close()  # a second close does nothing
    assert server.settings_log[-1] == original and len(server.settings_log) == 2
    assert not server.violations  # every tick happened in synchronous mode


def test_batch_fields_match_the_contract(server):
    with make_sim(server) as sim:
        batch = sim.generate(psi(), 4, seed=3)
        empty = sim.generate(psi(), 0, seed=3)
    h, w = RES
    assert batch.images.shape == (4, 3, h, w) and str(batch.images.dtype) == "torch.uint8"
    assert batch.semantic.shape == (4, h, w) and str(batch.semantic.dtype) == "torch.int64"
    assert batch.depth.shape == (4, h, w) and str(batch.depth.dtype) == "torch.float32"
    assert batch.instances.shape == (4, h, w) and str(batch.instances.dtype) == "torch.int64"
    assert batch.counts.shape == (4, 5) and str(batch.counts.dtype) == "torch.int64"
    assert batch.count_names == CAR_TYPES
    for key in ("weather", "intersection", "car_types", "n_cars", "road_length", "frame"):
        assert len(batch.attributes[key]) == 4
    assert int(batch.semantic.max()) < L.NUM_LABELS
    assert float(batch.depth.min()) > 0 and float(batch.depth.max()) <= 1000.0
    assert len(empty) == 0 and empty.counts.shape == (0, 5)


def test_depth_decoding():
    metres = np.array([[0.0, 1.0, 12.5, 1000.0]])
    n = np.round(metres / 1000.0 * (256**3 - 1)).astype(np.int64)
    bgra = np.stack([(n >> 16) & 255, (n >> 8) & 255, n & 255, np.full_like(n, 255)], axis=-1).astype(np.uint8)
    np.testing.assert_allclose(decode_depth(bgra), metres, atol=1e-3)


def test_frames_matched_although_images_arrive_late_and_out_of_order():
    srv = F.FakeServer(seed=1, late_prob=0.5, stale_prob=0.5, late_delay=0.01)
    try:
        with make_sim(srv) as sim:
            batch = sim.generate(psi(cars_per_scene=4.0), 12, seed=1)
        w = RES[1]
        for i, frame in enumerate(batch.attributes["frame"]):
            assert frame == srv.scenes[i].ticks[-1]  # the last tick of that scene
            col = frame % w
            top = batch.semantic[i, 0].numpy()
            assert top[col] == L.POLE and (np.delete(top, col) != L.POLE).all()
            assert abs(float(batch.depth[i, 0, col]) - 1.0) < 1e-3
            assert int(batch.images[i, 1, 0, col]) == frame & 255
    finally:
        srv.close()


@pytest.mark.filterwarnings("ignore:.*no car lts placed:UserWarning")
def test_counts_are_visible_placed_cars_by_type_and_parked_cars_never_count():
    server = F.FakeServer(seed=0, parked_layer=False)  # parked cars that are part of the map
    with server, make_sim(server) as sim:
        batch = sim.generate(psi(cars_per_scene=10.0), 30, seed=2)
    parked_seen = 0
    for i, frame in enumerate(batch.attributes["frame"]):
        np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(server, frame))
        # one instance label per counted car, covering exactly its visible pixels
        inst = batch.instances[i].numpy()
        labels_present = set(np.unique(inst[inst > 0]).tolist())
        assert len(labels_present) == int(batch.counts[i].sum())
        visible_px = sum(px for px in server.visible[frame].values() if px >= MIN_PX)
        assert int((inst > 0).sum()) == visible_px
        assert int(batch.counts[i].sum()) <= batch.attributes["n_cars"][i]
        parked_seen += server.visible_parked[frame] > 0
    assert parked_seen >= 3  # the check above met the map's parked cars
    assert int(batch.counts.sum()) >= 30  # and many placed cars


def test_vehicle_blueprints_grouped_by_base_type_and_size(server):
    assert classify_vehicle("car", (HATCHBACK_MAX_LENGTH / 2 - 0.05, 0.9, 0.7), 4) == "hatchback"
    assert classify_vehicle("car", (HATCHBACK_MAX_LENGTH / 2 + 0.05, 0.9, 0.7), 4) == "sedan"
    assert classify_vehicle("car", (2.4, 1.0, SUV_MIN_HEIGHT / 2 + 0.01), 4) == "suv"
    assert classify_vehicle("motorcycle", (1.0, 0.4, 0.7), 2) is None
    assert classify_vehicle("bus", None, 4) is None and classify_vehicle("truck", None, 4) == "truck"
    assert classify_vehicle(None, None, 4) == "sedan"
    with make_sim(server) as sim:
        groups = sim._blueprint_groups()
    got = {bp.id: kind for kind, bps in groups.items() for bp in bps}
    assert got == {k: v for k, v in F.EXPECTED_TYPE.items() if v is not None}
    assert not server.lts_actors() and not server.actors  # the size probes were destroyed


def test_car_blueprints_option_overrides_the_heuristic(server):
    with make_sim(server, car_blueprints={"sedan": ["vehicle.fake.hatch_*"]}) as sim:
        batch = sim.generate(psi(car_type={"sedan": 1.0}, cars_per_scene=6.0), 3, seed=0)
    placed = [server.blueprint_of[i] for rec in server.scenes for i in rec.vehicles]
    assert placed and all(b.startswith("vehicle.fake.hatch_") for b in placed)
    assert all(t == "sedan" for types in batch.attributes["car_types"] for t in types)


def test_missing_car_type_falls_back_with_one_warning():
    lib = F.make_library(vehicles=[v for v in F.VEHICLES if v.expected != "van"])
    srv = F.FakeServer(library=lib)
    try:
        with make_sim(srv) as sim, pytest.warns(UserWarning, match="no van blueprint") as rec:
            batch = sim.generate(psi(car_type={"van": 1.0}, cars_per_scene=5.0), 5, seed=0)
        assert sum("no van blueprint" in str(w.message) for w in rec) == 1
        assert {t for types in batch.attributes["car_types"] for t in types} == {"suv"}
    finally:
        srv.close()


# ----------------------------------------------------------------------------- placement


def test_spawn_failures_are_retried_and_never_counted():
    srv = F.FakeServer(seed=4, spawn_fail_prob=0.5)
    try:
        with make_sim(srv, spawn_attempts=4) as sim:
            batch = sim.generate(psi(cars_per_scene=8.0), 20, seed=4)
        for i, rec in enumerate(srv.scenes):
            assert batch.attributes["n_cars"][i] == len(rec.vehicles) == len(batch.attributes["car_types"][i])
            assert rec.spawn_tries == len(rec.vehicles) + rec.spawn_failures
            assert rec.spawn_tries <= 4 * batch.attributes["n_requested"][i]  # bounded
            np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(srv, batch.attributes["frame"][i]))
        failures = sum(r.spawn_failures for r in srv.scenes)
        requested, placed = sum(batch.attributes["n_requested"]), sum(batch.attributes["n_cars"])
        assert failures > 20 and placed > 0.8 * requested  # retried elsewhere: most still placed
    finally:
        srv.close()
    srv = F.FakeServer(seed=5, spawn_fail_prob=1.0)
    try:
        with make_sim(srv, spawn_attempts=2) as sim:
            batch = sim.generate(psi(cars_per_scene=6.0), 5, seed=5)
        assert sum(batch.attributes["n_requested"]) > 0
        assert batch.attributes["n_cars"] == [0] * 5 and int(batch.counts.sum()) == 0
        assert all(r.spawn_tries == 2 * n for r, n in zip(srv.scenes, batch.attributes["n_requested"], strict=True))
    finally:
        srv.close()


def test_weather_presets_applied_per_scene_in_proportion():
    srv = F.FakeServer(seed=6, max_delay=0.0002, late_prob=0.0, stale_prob=0.0)
    p = dict(zip(WEATHERS, (0.5, 0.3, 0.15, 0.05), strict=True))
    n = 400
    try:
        with make_sim(srv, warmup_ticks=0, resolution=(8, 16)) as sim:
            batch = sim.generate(psi(weather=p, cars_per_scene=0.0), n, seed=6)
        drawn = batch.attributes["weather"]
        assert len(srv.scenes) == n
        for name, rec in zip(drawn, srv.scenes, strict=True):  # the preset set in that very scene
            assert rec.weather == getattr(carla.WeatherParameters, WEATHER_PRESETS[name])
        for name, prob in p.items():
            freq = drawn.count(name) / n
            assert abs(freq - prob) < 4 * np.sqrt(prob * (1 - prob) / n), (name, freq, prob)
    finally:
        srv.close()


def test_junction_shapes_from_topology():
    shapes = find_junctions(F.main_town(), carla.LaneType.Driving)
    assert {k: [j.id for j in v] for k, v in shapes.items()} == {"X": [1, 5], "T": [2], "L": [3]}
    # 4: two arms in line (no corner), 6: five arms: neither is X, T or L.


def test_camera_is_road_length_before_a_junction_of_the_drawn_shape(server):
    shape_of = {1: "X", 5: "X", 2: "T", 3: "L"}
    p = {"X": 0.2, "T": 0.5, "L": 0.3}
    n = 150
    with make_sim(server, warmup_ticks=0, resolution=(8, 16)) as sim:
        batch = sim.generate(psi(intersection=p, cars_per_scene=0.0, road_length=80.0), n, seed=7)
    a = batch.attributes
    for shape, jid, d, cam in zip(a["intersection"], a["junction"], a["road_length"], a["camera"], strict=True):
        assert shape_of[jid] == shape and abs(d - 80.0) <= 1.0
        centre = np.array(server.world._map.specs[jid].center)
        offset = centre - np.array(cam[:2])
        along = np.hypot(*offset)
        assert abs(along - (F.JUNCTION_RADIUS + d)) < 0.2  # on the lane, d metres before the border
        heading = np.degrees(np.arctan2(offset[1], offset[0]))
        assert abs((heading - cam[3] + 180) % 360 - 180) < 3.0  # looking at the junction
        assert abs(cam[2] - 1.7) < 1e-6
    for shape, prob in p.items():
        freq = a["intersection"].count(shape) / n
        assert abs(freq - prob) < 4 * np.sqrt(prob * (1 - prob) / n)


def test_missing_shape_falls_back_to_the_nearest_with_one_warning():
    town = F.FakeMap(
        "Carla/Maps/TownXT", [F.JunctionSpec(1, (0, 0), (0, 90, 180, 270)), F.JunctionSpec(2, (900, 0), (0, 90, 270))]
    )
    srv = F.FakeServer(towns={"TownXT": town})
    try:
        with make_sim(srv, warmup_ticks=0) as sim, pytest.warns(UserWarning, match="no L junction") as rec:
            batch = sim.generate(psi(intersection={"L": 1.0}, cars_per_scene=0.0), 6, seed=0)
        assert sum("no L junction" in str(w.message) for w in rec) == 1
        assert batch.attributes["intersection"] == ["T"] * 6
        assert batch.attributes["intersection_requested"] == ["L"] * 6
    finally:
        srv.close()


def test_road_length_is_cut_where_the_road_meets_another_junction():
    town = F.FakeMap(
        "Carla/Maps/TownShort",
        [
            F.JunctionSpec(1, (0, 0), (0, 90, 270), arm_length=30.0, far_junction=2),
            F.JunctionSpec(2, (500, 500), (0, 90)),
        ],
    )
    srv = F.FakeServer(towns={"TownShort": town})
    try:
        with make_sim(srv, warmup_ticks=0) as sim:
            batch = sim.generate(psi(intersection={"T": 1.0}, road_length=110.0, cars_per_scene=0.0), 4, seed=0)
        assert all(20.0 <= d <= 30.0 for d in batch.attributes["road_length"])
    finally:
        srv.close()


def test_same_seed_same_scenes():
    out = []
    for _ in range(2):
        srv = F.FakeServer(seed=11)
        try:
            with make_sim(srv) as sim:
                b = sim.generate(psi(cars_per_scene=7.0), 5, seed=42)
            out.append(b)
        finally:
            srv.close()
    for key in ("weather", "intersection", "car_types", "camera", "road_length"):
        assert out[0].attributes[key] == out[1].attributes[key]
    assert (out[0].counts == out[1].counts).all() and (out[0].images == out[1].images).all()


def test_town_is_loaded_and_an_unknown_town_is_named():
    towns = {
        "Town99": F.main_town(),
        "Town98": F.FakeMap("Carla/Maps/Town98", [F.JunctionSpec(1, (0, 0), (0, 90, 270))]),
    }
    srv = F.FakeServer(towns=towns)
    try:
        with make_sim(srv, town="Town98", warmup_ticks=0) as sim, pytest.warns(UserWarning, match="no (X|L) junction"):
            batch = sim.generate(psi(cars_per_scene=0.0), 2, seed=0)
        assert srv.loads == ["Town98"] and batch.attributes["town"] == ["Carla/Maps/Town98"] * 2
        with pytest.raises(UserError, match="'Town97' is not on the server.*Town98, Town99 .did you mean"):
            make_sim(srv, town="Town97")
    finally:
        srv.close()


# ----------------------------------------------------------------------------- failures and clean-up


def test_tick_timeout_is_a_clear_error_and_the_simulator_goes_on_afterwards(server):
    with make_sim(server) as sim:
        sim.generate(psi(), 1, seed=0)
        server.inject("tick", F.timeout_error(ms=2000), skip=1)
        with pytest.raises(SimulatorUnavailable) as info:
            sim.generate(psi(), 3, seed=1)
        msg = str(info.value)
        assert "localhost:2000" in msg and "did not answer tick" in msg and "resume the run" in msg and "\n" not in msg
        assert isinstance(info.value, UserError)
        assert not server.lts_actors() and not server.listening_sensors()  # cameras too, on errors
        assert len(sim.generate(psi(), 2, seed=2)) == 2  # the server is back
    assert not server.violations


def test_images_that_never_arrive_time_out(server):
    with make_sim(server, timeout=0.3) as sim:
        server.drop_images = True
        t0 = time.monotonic()
        with pytest.raises(SimulatorUnavailable, match="no rgb image for frame"):
            sim.generate(psi(), 1, seed=0)
        assert time.monotonic() - t0 < 1.5
        assert not server.lts_actors()


def test_keyboard_interrupt_destroys_everything(server):
    with make_sim(server) as sim:
        server.inject("tick", KeyboardInterrupt(), skip=1)
        with pytest.raises(KeyboardInterrupt):
            sim.generate(psi(cars_per_scene=8.0), 2, seed=0)
        assert not server.lts_actors() and not server.listening_sensors()
    assert server.settings == server.original_settings


def test_server_dying_mid_scene_leaks_nothing_once_it_is_back(server):
    with make_sim(server) as sim:
        sim.generate(psi(), 1, seed=0)

        def die():
            server.dead = True
            raise F.timeout_error()

        server.inject("tick", die)
        with pytest.raises(SimulatorUnavailable):
            sim.generate(psi(cars_per_scene=6.0), 1, seed=1)
        assert sim._leaked and server.lts_actors()  # could not be destroyed while it was down
        server.dead = False
        sim.generate(psi(cars_per_scene=0.0), 1, seed=2)
        assert not sim._leaked and not server.lts_vehicles() and len(server.lts_sensors()) == 4  # the new cameras
    assert server.settings == server.original_settings


def test_close_on_a_dead_server_warns_instead_of_raising(server):
    sim = make_sim(server)
    server.dead = True
    with pytest.warns(UserWarning, match="could not restore"):
        sim.close()


def test_zero_leaked_actors_over_100_scenes_with_injected_failures():
    srv = F.FakeServer(seed=8)
    rng = np.random.default_rng(8)
    outcomes: dict[str, int] = {}
    try:
        with make_sim(srv, warmup_ticks=1, resolution=(16, 32)) as sim:
            sim.generate(psi(), 1, seed=0)  # fills the per-town caches
            for i in range(100):
                kind = ["none", "tick", "spawn", "sensor", "listen", "ctrl-c", "weather", "dead"][i % 8]
                expect: type[BaseException] | None = None
                if kind == "tick":
                    srv.inject("tick", F.timeout_error(), skip=int(rng.integers(0, 2)))
                    expect = SimulatorUnavailable
                elif kind == "spawn":
                    srv.inject("try_spawn_actor", RuntimeError("rpc failed"), skip=int(rng.integers(0, 4)))
                    expect = SimulatorUnavailable
                elif kind == "sensor":
                    srv.inject("spawn_actor", RuntimeError("rpc failed"), skip=int(rng.integers(0, 4)))
                    expect = SimulatorUnavailable
                elif kind == "listen":
                    srv.inject("listen", ValueError("a bug in a callback"), skip=int(rng.integers(0, 4)))
                    expect = ValueError
                elif kind == "ctrl-c":
                    srv.inject("tick", KeyboardInterrupt(), skip=int(rng.integers(0, 2)))
                    expect = KeyboardInterrupt
                elif kind == "weather":
                    srv.inject("set_weather", KeyboardInterrupt())
                    expect = KeyboardInterrupt
                elif kind == "dead":

                    def die():
                        srv.dead = True
                        raise F.timeout_error()

                    srv.inject("tick", die)
                    expect = SimulatorUnavailable
                raised = None
                had_cameras = bool(srv.lts_sensors())  # then no camera is spawned or listened to
                try:
                    sim.generate(psi(cars_per_scene=float(rng.uniform(0, 10))), 1, seed=i)
                except BaseException as e:  # noqa: BLE001 - the point is to see what escapes
                    raised = e
                if expect is None:
                    assert raised is None
                elif kind in ("sensor", "listen") and had_cameras:
                    assert raised is None, (kind, raised)  # cameras are moved, not spawned: never fired
                elif not (kind == "spawn" and raised is None):  # no car to spawn: the fault never fired
                    assert isinstance(raised, expect), (kind, raised)
                srv.faults.clear()
                if raised is not None:
                    outcomes[kind] = outcomes.get(kind, 0) + 1
                if kind == "dead":
                    assert srv.lts_actors()  # left while the server was down...
                    srv.dead = False
                else:
                    assert not srv.lts_vehicles(), (i, kind)
                # the cameras: kept (and listening) after a good scene, destroyed after a failed one
                cams = srv.lts_sensors()
                assert len(cams) == (4 if raised is None else 0) or kind == "dead", (i, kind)
                assert {a.id for a in srv.listening_sensors()} <= {a.id for a in cams}
                # every scene starts on an empty world (the previous scene cleaned up)
                assert srv.scenes[-1].live_at_start == 0 or kind in ("weather",)
        # every planted fault but a spawn fault in a scene without cars made its scene fail
        fixed = ("tick", "ctrl-c", "weather", "dead")
        assert all(outcomes[k] == 12 + (k == "tick") for k in fixed)
        assert outcomes["spawn"] >= 8 and outcomes["sensor"] >= 6 and outcomes["listen"] >= 6
        assert "none" not in outcomes
        assert not srv.lts_actors() and not srv.actors  # ...and destroyed once it was back
        assert sorted(srv.destroyed_ids) == sorted(srv.spawned_ids)
        assert not srv.violations  # no sensor destroyed while listening, no tick outside sync mode
        assert srv.settings == srv.original_settings
    finally:
        srv.close()


def test_a_copy_reconnects_on_first_use(server):
    sim = make_sim(server, shared=True)
    state = sim.__getstate__()
    assert "client_factory" in state and pickle.dumps({k: v for k, v in state.items() if k != "client_factory"})
    assert state["shared"] is True
    copy = CarlaSimulator.__new__(CarlaSimulator)
    copy.__setstate__(state)
    assert copy._client is None
    assert len(copy.generate(psi(), 1, seed=0)) == 1
    copy.close()
    sim.close()
    assert len(server.clients) == 2 and server.settings == server.original_settings


def test_leftovers_of_a_killed_run_are_reported():
    srv = F.FakeServer()
    try:
        bp = srv.library.find("vehicle.fake.sedan_mid")
        bp.set_attribute("role_name", "lts")
        srv.spawn(bp, carla.Transform(carla.Location(5000, 0, 0.5)))
        bp.set_attribute("role_name", "autopilot")
        with pytest.warns(UserWarning, match="earlier lts run"):
            make_sim(srv).close()
        srv.settings["synchronous_mode"] = True  # and left synchronous: --carla-shared goes on, warning
        with pytest.warns(UserWarning, match="synchronous mode outside lts' turns"):
            with make_sim(srv, shared=True) as sim:
                sim.generate(psi(), 1, seed=0)
    finally:
        srv.close()


# ----------------------------------------------------------------------------- a live server


@pytest.mark.skipif(not os.environ.get("CARLA_HOST"), reason="set CARLA_HOST (and CARLA_PORT) to test a live server")
def test_one_scene_on_a_live_server():
    host, port = os.environ["CARLA_HOST"], int(os.environ.get("CARLA_PORT", "2000"))
    sim = CarlaSimulator(host=host, port=port, town=os.environ.get("CARLA_TOWN") or None, timeout=30.0)
    try:
        world = sim._world
        before = {a.id for a in world.get_actors()}
        batch = sim.generate(psi(cars_per_scene=6.0), 1, seed=0)
        after = {a.id for a in world.get_actors()}
    finally:
        sim.close()
    assert after <= before  # everything spawned is gone
    assert batch.images.shape == (1, 3, 64, 128)
    assert (batch.semantic == L.ROAD).any()
    assert float(batch.depth.min()) > 0
    assert int(batch.counts.sum()) <= batch.attributes["n_cars"][0]
    client = carla.Client(host, port)
    client.set_timeout(10.0)
    assert client.get_world().get_settings().synchronous_mode == sim._original_settings.synchronous_mode


# ----------------------------------------------------------------------------- what a real 0.9.16 server does (#38)


def test_cameras_are_spawned_once_per_simulator_and_moved_for_each_scene():
    # Defect 1: four cameras per scene (48 for 12 scenes), each listen leaking on the server.
    srv = F.FakeServer(seed=12, late_prob=0.5, stale_prob=0.5)
    try:
        with make_sim(srv) as sim:
            batches = [sim.generate(psi(cars_per_scene=5.0), 4, seed=s) for s in range(3)]
            assert len(srv.lts_sensors()) == 4 and not srv.lts_vehicles()
        assert srv.sensors_spawned <= 8 and srv.listen_calls <= 8 and srv.stream_leaks <= 8
        assert not srv.lts_actors() and not srv.violations  # stopped, then destroyed, on close
        for batch in batches:
            for frame, cam in zip(batch.attributes["frame"], batch.attributes["camera"], strict=True):
                assert srv.poses[frame] == {cam}  # every camera rendered the kept frame from this scene's pose
                np.testing.assert_array_equal(batch.counts[batch.attributes["frame"].index(frame)].numpy(),
                                              truth_counts(srv, frame))  # fmt: skip
    finally:
        srv.close()


def test_a_server_that_dies_after_many_listens_renders_a_whole_batch():
    # Defect 1: the server crashes after so many listen cycles (carla #7987); 12 scenes used 48.
    srv = F.FakeServer(seed=13, crash_after_listens=20)
    try:
        with make_sim(srv) as sim:
            assert len(sim.generate(psi(), 12, seed=0)) == 12
        assert not srv.dead
    finally:
        srv.close()


def test_only_frames_rendered_from_the_new_pose_are_kept_when_a_move_lands_late():
    srv = F.FakeServer(seed=14, move_lag=2)
    try:
        with make_sim(srv, warmup_ticks=0) as sim:
            batch = sim.generate(psi(cars_per_scene=5.0), 6, seed=1)
        for i, (frame, cam) in enumerate(zip(batch.attributes["frame"], batch.attributes["camera"], strict=True)):
            assert srv.poses[frame] == {cam}
            np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(srv, frame))
    finally:
        srv.close()


def test_rgb_exposure_settles_within_the_warm_up():
    with F.FakeServer() as srv, make_sim(srv, warmup_ticks=4, fixed_delta=0.05) as sim:
        sim.generate(psi(), 1, seed=0)
        (rgb,) = [a for a in srv.lts_sensors() if a.type_id == "sensor.camera.rgb"]
        assert rgb.attributes["exposure_mode"] == "histogram"
        # f-stops per second: at least 10 stops within the 0.2 s of warm-up, either way
        for key in ("exposure_speed_up", "exposure_speed_down"):
            assert float(rgb.attributes[key]) * 4 * 0.05 >= 10.0
    with F.FakeServer() as srv, make_sim(srv, exposure="manual") as sim:
        sim.generate(psi(), 1, seed=0)
        (rgb,) = [a for a in srv.lts_sensors() if a.type_id == "sensor.camera.rgb"]
        assert rgb.attributes["exposure_mode"] == "manual"
    with pytest.raises(UserError, match="exposure: expected 'auto' or 'manual', got 'fixed'"):
        CarlaSimulator(exposure="fixed", connect=False)


def test_the_parked_vehicle_layer_is_unloaded_while_rendering_and_restored_on_close(server):
    # Defect 2: Town10HD_Opt's parked cars (a map layer) were seen in `semantic`, never counted.
    parked = int(carla.MapLayer.ParkedVehicles)
    with make_sim(server) as sim:
        assert not server.parked_loaded and server.layer_log == [("unload", parked)]
        batch = sim.generate(psi(cars_per_scene=10.0), 30, seed=2)
    assert server.parked_loaded and server.layer_log == [("unload", parked), ("load", parked)]
    for i, frame in enumerate(batch.attributes["frame"]):
        assert server.visible_parked[frame] == 0
        assert batch.attributes["unplaced_car_pixels"][i] == 0
        np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(server, frame))
    # every car pixel is a placed car's (counted, or below the visibility threshold)
    cars = np.isin(batch.semantic.numpy(), [L.CAR, L.TRUCK])
    assert int(cars.sum()) == sum(px for f in batch.attributes["frame"] for px in server.visible[f].values())


def test_a_map_without_a_parked_layer_reports_car_pixels_of_no_placed_car():
    srv = F.FakeServer(seed=2, parked_layer=False)
    try:
        with (
            make_sim(srv) as sim,
            pytest.warns(UserWarning, match="car pixels that belong to no car lts placed") as rec,
        ):
            batch = sim.generate(psi(cars_per_scene=10.0), 30, seed=2)
        assert sum("no car lts placed" in str(w.message) for w in rec) == 1
        unplaced = batch.attributes["unplaced_car_pixels"]
        assert unplaced == [srv.visible_parked[f] for f in batch.attributes["frame"]]
        assert sum(u > 0 for u in unplaced) >= 3
    finally:
        srv.close()


def test_a_server_in_synchronous_mode_under_another_client_is_refused():
    # Defect 3: another client's weather and ticks landed in our scenes with only a warning.
    srv = F.FakeServer()
    try:
        srv.settings["synchronous_mode"] = True
        srv.other_client(carla.WeatherParameters.HardRainNoon)
        with pytest.raises(UserError) as info:
            make_sim(srv)
        msg = str(info.value)
        assert "\n" not in msg and "localhost:2000" in msg and "already in synchronous mode" in msg
        assert "--carla-shared" in msg
        assert not srv.scenes and srv.settings["synchronous_mode"]  # nothing rendered, nothing changed
    finally:
        srv.close()


def test_workers_sharing_a_port_are_refused_unless_shared():
    check = simulators.check_workers
    for port, workers in ((2000, 2), ("2000,3000", 3), ([2000, 2000], 2)):
        with pytest.raises(UserError) as info:
            check("carla", {"port": port}, workers)
        msg = str(info.value)
        assert "\n" not in msg and "2000" in msg and "--carla-shared" in msg
        check("carla", {"port": port, "shared": True}, workers)
    check("carla", {"port": "2000,3000"}, 2)
    check("carla", {}, 1)
    check("procedural", {}, 4)  # simulators without the hook take any number
    with pytest.raises(UserError, match="shared: expected true or false"):
        check("carla", {"port": 2000, "shared": "yes"}, 2)


def test_two_workers_given_one_port_exit_2_before_anything_is_rendered(tmp_path, capsys):
    from lts.cli import run_cli
    from lts.optimize import main

    port = free_port()
    out = tmp_path / "run"
    argv = ["--sim", "carla", "--workers", "2", "--carla-port", str(port), "--out", str(out), "--quiet"]
    t0 = time.monotonic()
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err
    assert f"{port}" in err and "2 workers" in err and "--carla-shared" in err
    assert time.monotonic() - t0 < 5.0
    assert not out.exists() or not any(out.iterdir())
    # --carla-shared lets it through to the connection (here: no server)
    assert run_cli(main, [*argv[:-3], "--carla-shared", "--carla-timeout", "1", "--out", str(tmp_path / "b")]) == 2
    assert "no CARLA server at" in capsys.readouterr().err


def test_shared_workers_take_turns_on_one_server():
    srv = F.FakeServer(seed=15)
    weathers = ("clear_noon", "hard_rain_noon")
    out: dict[str, Any] = {}

    def work(w: str) -> None:
        with make_sim(srv, shared=True) as sim:
            out[w] = [sim.generate(psi(weather={w: 1.0}, cars_per_scene=4.0), 3, seed=s) for s in range(3)]

    try:
        threads = [threading.Thread(target=work, args=(w,)) for w in weathers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert set(out) == set(weathers)
        frames = []
        for w in weathers:
            for batch in out[w]:
                for i, frame in enumerate(batch.attributes["frame"]):
                    # the weather the frame was rendered in is the one its label names
                    assert srv.weather_at[frame] == getattr(carla.WeatherParameters, WEATHER_PRESETS[w])
                    np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(srv, frame))
                    frames.append(frame)
        assert len(set(frames)) == len(frames) == 18
        assert srv.settings == srv.original_settings and not srv.lts_actors() and not srv.violations
    finally:
        srv.close()


def test_instance_ids_are_actor_ids_on_0916_even_where_meshes_outgrow_their_boxes():
    # Defect 4: the box-and-depth match missed cars whose mesh is larger than the bounding box.
    srv = F.FakeServer(seed=16, mesh_scale=1.6)
    try:
        with make_sim(srv) as sim:
            batch = sim.generate(psi(cars_per_scene=8.0), 20, seed=3)
        for i, frame in enumerate(batch.attributes["frame"]):
            np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(srv, frame))
            inst = batch.instances[i].numpy()
            assert int((inst > 0).sum()) == sum(px for px in srv.visible[frame].values() if px >= MIN_PX)
        assert int(batch.counts.sum()) >= 20
    finally:
        srv.close()


def test_servers_before_0916_keep_the_projected_box_match():
    srv = F.FakeServer(seed=17, version="0.9.15")
    try:
        with pytest.warns(UserWarning, match="differ"), make_sim(srv) as sim:
            batch = sim.generate(psi(cars_per_scene=8.0), 10, seed=3)
        assert not srv.actor_encoding()
        for i, frame in enumerate(batch.attributes["frame"]):
            np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(srv, frame))
        assert int(batch.counts.sum()) >= 10
    finally:
        srv.close()


def test_a_restarted_server_gets_a_new_client_and_is_set_up_again():
    # Defect 4: world ids restart at 1 in a new server process, and the old client never recovers.
    srv = F.FakeServer(seed=18)
    try:
        with make_sim(srv) as sim:
            sim.generate(psi(), 2, seed=0)
            srv.restart()
            assert srv.world.id == sim._world_id  # the id alone cannot tell
            with pytest.raises(SimulatorUnavailable, match="resume the run"):
                sim.generate(psi(), 1, seed=1)  # the old client times out once
            batch = sim.generate(psi(cars_per_scene=6.0), 3, seed=2)
            assert len(srv.clients) == 2 and srv.settings["synchronous_mode"] and not srv.parked_loaded
            for i, frame in enumerate(batch.attributes["frame"]):
                np.testing.assert_array_equal(batch.counts[i].numpy(), truth_counts(srv, frame))
        assert srv.settings == srv.original_settings and srv.parked_loaded and not srv.lts_actors()
    finally:
        srv.close()
