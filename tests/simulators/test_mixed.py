import math

import numpy as np
import pytest

import simulators
from simulators.space import Categorical, Continuous, Integer, Proportions, load_target_file

PSI = {
    "layout": "line",
    "rotation": 90.0,
    "radius": 2.0,
    "spread": 0.5,
    "stretch": 3,
    "mix": {"c0": 0.5, "c1": 0.3, "c2": 0.2},
}


def test_the_space_holds_every_element_kind_and_the_warm_up_may_match_them():
    space = simulators.make("rings").param_space
    kinds = {type(el) for el in space.values()}
    assert kinds == {Categorical, Continuous, Integer, Proportions}
    assert set(space.content) == set(space)


def test_points_sit_on_the_turned_layout_stretched_along_it():
    b = simulators.make("rings").generate(PSI, 30000, seed=2)
    x, y = b.features.numpy(), b.labels.numpy()
    assert np.bincount(y) / len(y) == pytest.approx([0.5, 0.3, 0.2], abs=0.01)
    # a line turned by 90°: the centres (-2, 0), (0, 0), (2, 0) go to (0, -2), (0, 0), (0, 2),
    # and the stretch (3 × 0.5 along the line) to the y axis
    for c, centre in enumerate([(0, -2), (0, 0), (0, 2)]):
        assert x[y == c].mean(0) == pytest.approx(centre, abs=0.05)
        assert x[y == c].std(0) == pytest.approx([0.5, 1.5], rel=0.04)
    ring = simulators.make("rings").generate({**PSI, "layout": "ring", "rotation": 0.0}, 30000, seed=2)
    xr, yr = ring.features.numpy(), ring.labels.numpy()
    assert xr[yr == 0].mean(0) == pytest.approx((0, 2), abs=0.05)  # the ring's first centre at 90°
    assert xr[yr == 1].mean(0) == pytest.approx((2 * math.cos(math.radians(210)), -1), abs=0.05)


def test_same_seed_same_points_and_per_scene_params():
    sim = simulators.make("rings")
    assert np.array_equal(sim.generate(PSI, 64, seed=1).features, sim.generate(PSI, 64, seed=1).features)
    per = sim.generate_per_scene([PSI, {**PSI, "layout": "ring"}] * 8, seed=1)
    assert per.features.shape == (16, 2) and per.labels.shape == (16,)


@pytest.mark.parametrize("name, layout", [("ring", "ring"), ("line", "line"), ("arc", "arc")])
def test_the_shipped_targets_are_valid_and_name_their_layout(name, layout):
    spec = load_target_file(f"configs/targets/rings_{name}.yaml")
    assert spec.simulator == "rings"
    assert simulators.make("rings").param_space.validate(spec.params)["layout"] == layout


def _held_out(name: str, path: str):
    """A held-out target's plug-in, loaded by its path, and its valid ψ*; the plug-in has every kind."""
    spec = load_target_file(f"configs/targets/{name}.yaml")
    assert spec.simulator == path
    sim = simulators.make(spec.simulator)
    kinds = {type(e).__name__ for e in sim.param_space.values()}
    assert kinds == {"Categorical", "Continuous", "Integer", "Proportions"}
    return sim, sim.param_space.validate(spec.params)


@pytest.mark.parametrize("name, shape", [("heldout_blobs", "cross"), ("heldout_blobs_tee", "tee")])
def test_the_held_out_plug_in_loads_by_its_path_and_its_shape_decides_the_classes_places(name, shape):
    sim, psi = _held_out(name, "heldout.blobs:BlobsSimulator")
    assert psi["shape"] == shape
    b = sim.generate({**psi, "tails": 5, "noise": 0.1}, 4000, seed=3)
    centre = lambda k: b.features[b.labels == k].median(0).values.numpy()  # noqa: E731
    # classes sit at the shape's corners, scaled and shifted along x
    corners = {"cross": [(-1, -1), (1, 1), (1, -1), (-1, 1)], "tee": [(-1, 1), (0, 1), (1, 1), (0, -1)]}[shape]
    for k, (x, y) in enumerate(corners):
        assert centre(k) == pytest.approx([psi["scale"] * x + psi["shift"], psi["scale"] * y], abs=0.05)


@pytest.mark.parametrize("name, pattern", [("heldout_helix", "corner"), ("heldout_helix_fan", "fan")])
def test_the_second_held_out_plug_in_places_its_classes_by_its_pattern_tilt_and_lumps(name, pattern):
    sim, psi = _held_out(name, "heldout.helix:HelixSimulator")
    assert psi["pattern"] == pattern
    # one lump per class, little spread: each class sits at its pattern point × gap, turned by tilt
    b = sim.generate({**psi, "lumps": 1, "spread": 0.1}, 3000, seed=4)
    t = np.radians(psi["tilt"])
    points = {"corner": [(1, 0, 0), (0, 1, 0), (0, 0, 1)], "fan": [(1, 0, 0), (-0.5, 0, 0.87), (-0.5, 0, -0.87)]}
    for k, (x, y, z) in enumerate(points[pattern]):
        want = psi["gap"] * np.array([x, np.cos(t) * y - np.sin(t) * z, np.sin(t) * y + np.cos(t) * z])
        assert b.features[b.labels == k].mean(0).numpy() == pytest.approx(want, abs=0.02)

    # lumps strung along y (before the tilt): more lumps, a class wider along y
    def y_spread(lumps: int) -> float:
        b = sim.generate({**psi, "lumps": lumps, "spread": 0.1, "tilt": 0.0}, 3000, seed=4)
        return float(b.features[b.labels == 0, 1].std())

    assert y_spread(1) == pytest.approx(0.1, abs=0.02) and y_spread(4) > 0.8  # lumps 0.8 apart: sd ≈ 0.9
