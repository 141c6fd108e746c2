import numpy as np
import pytest

import simulators


def test_points_follow_the_parameters():
    sim = simulators.make("gmm")
    psi = {"c0_x": -2, "c0_y": 1, "c1_x": 3, "c1_y": -1, "std": 0.5, "balance": {"c0": 0.25, "c1": 0.75}}
    b = sim.generate(psi, 20000, seed=3)
    x, y = b.features.numpy(), b.labels.numpy()
    assert y.mean() == pytest.approx(0.75, abs=0.01)
    assert x[y == 0].mean(0) == pytest.approx([-2, 1], abs=0.03)
    assert x[y == 1].mean(0) == pytest.approx([3, -1], abs=0.03)
    assert x[y == 1].std(0) == pytest.approx([0.5, 0.5], rel=0.03)
    assert np.array_equal(sim.generate(psi, 50, seed=1).features, sim.generate(psi, 50, seed=1).features)


def test_per_scene_params_draw_each_point_from_its_own_psi():
    sim = simulators.make("gmm")
    a = {"c0_x": -4, "c0_y": 0, "c1_x": -4, "c1_y": 0, "std": 0.1, "balance": {"c0": 1.0, "c1": 0.0}}
    b = {**a, "c0_x": 4, "c1_x": 4}
    batch = sim.generate_per_scene([a, b] * 50, seed=0)
    xs = batch.features[:, 0].numpy()
    assert np.all(xs[0::2] < -3) and np.all(xs[1::2] > 3)


def test_invalid_psi_is_refused():
    sim = simulators.make("gmm")
    with pytest.raises(simulators.ParamError, match="'std': expected a number in \\[0.1, 3\\]"):
        sim.generate({**sim.param_space.default(), "std": 0.0}, 4, seed=0)


def test_three_classes_in_three_dimensions_make_twelve_coordinates():
    from policies.coords import unit_names

    sim = simulators.make("gmm", classes=3, dims=3)
    assert len(unit_names(sim.param_space)) == 12
    psi = {f"c{c}_{a}": float(c) - 1 for c in range(3) for a in "xyz"}
    psi.update(std=0.3, balance={"c0": 0.2, "c1": 0.5, "c2": 0.3})
    b = sim.generate(psi, 20000, seed=0)
    x, y = b.features.numpy(), b.labels.numpy()
    assert np.bincount(y) / len(y) == pytest.approx([0.2, 0.5, 0.3], abs=0.01)
    assert x[y == 2].mean(0) == pytest.approx([1, 1, 1], abs=0.02)
    assert x.shape == (20000, 3)


def test_the_default_simulator_is_the_two_class_one():
    sim = simulators.make("gmm")
    assert list(sim.param_space) == ["c0_x", "c0_y", "c1_x", "c1_y", "std", "balance"]
    psi = {"c0_x": -2, "c0_y": 1, "c1_x": 3, "c1_y": -1, "std": 0.5, "balance": {"c0": 0.25, "c1": 0.75}}
    b = sim.generate(psi, 3, seed=3)
    # pinned draws of the original two-class simulator
    assert b.labels.tolist() == [1, 1, 0]
    assert b.features[0].tolist() == pytest.approx([2.7161152, -1.2263247])
