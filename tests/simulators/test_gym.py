"""The Gymnasium scene-generator environment."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import simulators
from simulators import labels as L
from simulators.errors import UserError
from simulators.gym import SceneEnv
from simulators.street import CAR_TYPES


@pytest.fixture
def env() -> SceneEnv:
    return SceneEnv("procedural", resolution=(32, 64), episode_length=3)


def test_passes_check_env(env: SceneEnv) -> None:
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
