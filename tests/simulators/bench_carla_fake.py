"""Scenes per second of the CARLA adapter against the fake server's cost model (not a test).

    PYTHONPATH=. python tests/simulators/bench_carla_fake.py [--scenes 40]

The costs (`COSTS`) are assumed figures for what a server spends per call, not measured on
CARLA: the figure this prints compares the adapter's call patterns (how many cameras it
spawns, listens to and destroys, how many ticks it makes), not CARLA's speed.  Point
PYTHONPATH at another checkout to time its adapter against the same fake.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import carla_fakes as F  # noqa: E402

from simulators.carla import CarlaSimulator  # noqa: E402
from simulators.street import CAR_TYPES, INTERSECTIONS, WEATHERS  # noqa: E402

COSTS = F.Costs(
    rpc=0.0002, spawn_sensor=0.020, listen=0.002, destroy=0.002, tick=0.005, tick_per_camera=0.003, spawn_vehicle=0.003
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--cars", type=float, default=6.0)
    args = ap.parse_args()
    psi = {
        "weather": {w: 1 / len(WEATHERS) for w in WEATHERS},
        "intersection": {s: 1 / len(INTERSECTIONS) for s in INTERSECTIONS},
        "car_type": {t: 1 / len(CAR_TYPES) for t in CAR_TYPES},
        "cars_per_scene": args.cars,
        "road_length": 60.0,
    }
    srv = F.FakeServer(seed=0, costs=COSTS)
    warnings.simplefilter("ignore")
    try:
        sim = CarlaSimulator(client_factory=srv.factory)  # the defaults: 64×128, 10 warm-up ticks
        sim.generate(psi, 2, seed=0)  # map analysis and blueprint sizes, outside the timing
        spawned, listens = srv.sensors_spawned, srv.listen_calls
        t = time.perf_counter()
        sim.generate(psi, args.scenes, seed=1)
        dt = time.perf_counter() - t
        sim.close()
    finally:
        srv.close()
    print(
        f"{args.scenes} scenes in {dt:.2f} s: {args.scenes / dt:.2f} scenes/s; "
        f"cameras spawned {srv.sensors_spawned - spawned}, listens {srv.listen_calls - listens} "
        f"(in all, with the 2 warm-up scenes: {srv.sensors_spawned} cameras, {srv.stream_leaks} leaked streams)"
    )


if __name__ == "__main__":
    main()
