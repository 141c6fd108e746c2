"""The Gymnasium scene-generator environment."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

import simulators
from simulators import labels as L
from simulators.errors import UserError
from simulators.gym import SceneEnv
from simulators.street import CAR_TYPES

ROOT = Path(simulators.__file__).resolve().parents[1]  # this checkout, not another installed copy


@pytest.fixture
def env() -> SceneEnv:
    return SceneEnv("procedural", resolution=(32, 64), episode_length=3)


def test_passes_check_env(env: SceneEnv) -> None:
    # ψ's own ranges (road_length in [20, 120]) are not the [-1, 1] RL libraries like: normalize_actions is the fix
    with pytest.warns(UserWarning, match="symmetric and normalized"):
        check_env(env, skip_render_check=True)


def test_spaces(env: SceneEnv) -> None:
    assert env.observation_space.shape == (32, 64, 3) and env.observation_space.dtype == np.uint8
    assert set(env.action_space.spaces) == set(env.sim.param_space)


def test_reset_and_step_labels(env: SceneEnv) -> None:
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 64, 3) and obs.dtype == np.uint8
    assert info["semantic"].shape == (32, 64) and info["depth"].shape == (32, 64)
    assert info["counts"].shape == (len(CAR_TYPES),) and info["count_names"] == CAR_TYPES
    assert set(np.unique(info["semantic"]).tolist()) <= set(L.LABELS)
    # the action is ψ; an unnormalised proportion vector is projected onto the simplex
    action = env.action_space.sample()
    action["weather"] = np.array([0.0, 0.0, 2.0, 0.0], dtype=np.float32)
    obs, reward, terminated, truncated, info = env.step(action)
    assert reward == 0.0 and not terminated and not truncated
    assert info["attributes"]["weather"] == "hard_rain_noon"
    assert info["params"]["weather"]["hard_rain_noon"] == pytest.approx(1.0)
    assert obs.shape == (32, 64, 3)


def test_episodes_truncate_and_replay(env: SceneEnv) -> None:
    actions = [env.action_space.sample() for _ in range(3)]
    runs = []
    for _ in range(2):
        frames = [env.reset(seed=5)[0]]
        flags = []
        for a in actions:
            obs, _, _, truncated, _ = env.step(a)
            frames.append(obs)
            flags.append(truncated)
        runs.append(frames)
        assert flags == [False, False, True]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    other = env.reset(seed=6)[0]
    assert not np.array_equal(other, runs[0][0])


def test_reset_with_params(env: SceneEnv) -> None:
    psi = {**env.sim.param_space.default(), "weather": {"clear_sunset": 1.0}}
    _, info = env.reset(seed=1, options={"params": psi})
    assert info["attributes"]["weather"] == "clear_sunset"
    with pytest.raises(UserError, match="weather"):
        env.reset(seed=1, options={"params": {**psi, "weather": {"fog": 1.0}}})


def test_render_mode() -> None:
    env = SceneEnv(simulators.make("procedural", resolution=(16, 32)), render_mode="rgb_array")
    obs, _ = env.reset(seed=2)
    assert np.array_equal(env.render(), obs)


def test_bad_construction() -> None:
    with pytest.raises(UserError, match="episode_length"):
        SceneEnv("procedural", episode_length=0, resolution=(16, 32))
    with pytest.raises(UserError, match="render_mode"):
        SceneEnv("procedural", render_mode="human", resolution=(16, 32))
    with pytest.raises(UserError, match="images"):
        SceneEnv("gmm")
    with pytest.raises(UserError, match="options"):
        SceneEnv(simulators.make("procedural", resolution=(16, 32)), resolution=(16, 32))


def test_registered_with_gymnasium() -> None:
    env = gymnasium.make("lts/Scene-v0", resolution=(32, 64), episode_length=2)
    assert env.spec is not None and env.spec.entry_point == "simulators.gym:SceneEnv"
    inner = env.unwrapped
    assert isinstance(inner, SceneEnv) and inner.metadata["render_fps"] == 4
    assert env.observation_space == spaces.Box(0, 255, (32, 64, 3), np.uint8)
    assert isinstance(env.action_space, spaces.Dict)
    assert env.action_space["weather"] == spaces.Box(0.0, 1.0, (4,), np.float32)
    assert env.action_space["road_length"] == spaces.Box(20.0, 120.0, (1,), np.float32)
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3] for _ in range(2)]
    assert truncated == [False, True]
    env.close()


def test_normalized_actions_pass_check_env_silently() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gymnasium.make("lts/Scene-v0", normalize_actions=True, resolution=(32, 64), episode_length=3)
        # weather 3 + intersection 2 + car_type 4 stick breaks, cars_per_scene 1, road_length 1
        assert env.action_space == spaces.Box(-1.0, 1.0, (11,), np.float32)
        # unwrapped: check_env warns about the wrappers make adds; the spec lets it remake the env
        # (render modes, close twice), so no check is skipped
        check_env(env.unwrapped)
        env.close()
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    "corner, expected",
    [
        (-1.0, {"weather": "clear_sunset", "intersection": "L", "car_type": "truck", "cars": 0.0, "road": 20.0}),
        (1.0, {"weather": "clear_noon", "intersection": "X", "car_type": "sedan", "cars": 16.0, "road": 120.0}),
    ],
)
def test_normalized_corners_map_to_psi(corner: float, expected: dict) -> None:
    env = SceneEnv("procedural", normalize_actions=True, resolution=(16, 32))
    env.reset(seed=3)
    _, _, _, _, info = env.step(np.full(11, corner, dtype=np.float32))
    psi = info["params"]
    assert psi["cars_per_scene"] == expected["cars"] and psi["road_length"] == expected["road"]
    for name in ("weather", "intersection", "car_type"):
        assert psi[name][expected[name]] == 1.0 and sum(psi[name].values()) == 1.0
    drawn = info["attributes"]
    assert drawn["weather"] == expected["weather"] and drawn["intersection"] == expected["intersection"]
    assert set(drawn["car_types"]) <= {expected["car_type"]}
    assert env.sim.param_space.validate(psi) == psi


def test_normalized_zero_is_the_default_psi() -> None:
    env = SceneEnv("procedural", normalize_actions=True, resolution=(16, 32))
    env.reset(seed=3)
    psi = env.step(np.zeros(11, dtype=np.float32))[4]["params"]
    default = env.sim.param_space.default()
    assert psi["cars_per_scene"] == default["cars_per_scene"] == 8.0
    for name in ("weather", "intersection", "car_type"):
        assert psi[name] == pytest.approx(default[name])


def test_import_registers_without_building() -> None:
    # lts registers both ids from strings: neither torch nor the simulators are imported
    code = (
        "import sys, gymnasium, lts; "
        "print(gymnasium.spec('lts/Scene-v0').entry_point, gymnasium.spec('lts/LTS-v0').entry_point, "
        "'torch' in sys.modules, 'simulators' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["simulators.gym:SceneEnv", "lts.env:LTSEnv", "False", "False"]


def test_module_prefix_registers_without_an_import() -> None:
    # gymnasium >= 1.0 has no plugin entry points: "module:id" imports the module first
    code = (
        "import gymnasium; env = gymnasium.make('lts:lts/Scene-v0', resolution=(16, 32), normalize_actions=True); "
        "print(type(env.unwrapped).__name__, env.action_space.shape[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["SceneEnv", "11"]
