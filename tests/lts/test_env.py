import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lts.env import LTSEnv


@pytest.fixture
def env(gmm_target):
    e = LTSEnv("gmm", "classify", str(gmm_target), scenes=80, target_size=200, max_steps=3,
               task_options={"steps": 25})  # fmt: skip
    yield e
    e.close()


def test_passes_gymnasium_check_env(env):
    check_env(env, skip_render_check=True)


def test_step_is_one_evaluation(env):
    env.reset(seed=1)
    good = {"c0_x": np.array([-2.0], np.float32), "c0_y": np.array([1.0], np.float32),
            "c1_x": np.array([1.5], np.float32), "c1_y": np.array([-1.5], np.float32),
            "std": np.array([1.0], np.float32), "balance": np.array([0.3, 0.7], np.float32)}  # fmt: skip
    swapped = {**good, "c0_x": good["c1_x"], "c0_y": good["c1_y"], "c1_x": good["c0_x"], "c1_y": good["c0_y"]}
    obs, r_good, term, trunc, info = env.step(good)
    # the reward is classify's default, the negated NLL
    assert r_good > -0.1 and info["metrics"]["nll"] == -r_good and obs[0] == pytest.approx(r_good)
    assert info["metrics"]["accuracy"] > 0.95
    _, r_bad, _, _, info = env.step(swapped)
    assert r_bad < -2.0 and info["metrics"]["accuracy"] < 0.3
    _, _, term, trunc, _ = env.step(good)
    assert not term and trunc


def test_registered_and_normalized(gmm_target):
    import gymnasium

    import simulators

    env = gymnasium.make("lts/LTS-v0", sim="gmm", task="classify", target=str(gmm_target), scenes=80,
                         target_size=200, max_steps=2, task_options={"steps": 25}, normalize_actions=True)  # fmt: skip
    inner = env.unwrapped
    assert isinstance(inner, LTSEnv) and env.spec.entry_point == "lts.env:LTSEnv"
    # four centre coordinates, std, one stick break for the balance
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (6,), np.float32)
    good = {"c0_x": -2.0, "c0_y": 1.0, "c1_x": 1.5, "c1_y": -1.5, "std": 1.0, "balance": {"c0": 0.3, "c1": 0.7}}
    action = simulators.make("gmm").param_space.to_normalized(good)
    assert action.tolist() == pytest.approx([-0.5, 0.25, 0.375, -0.375, 0.9 / 2.9 * 2 - 1, -0.4])
    env.reset(seed=1)
    obs, reward, _, truncated, info = env.step(action)
    assert info["params"]["balance"] == pytest.approx(good["balance"]) and info["params"]["std"] == pytest.approx(1.0)
    assert reward > -0.1 and info["metrics"]["accuracy"] > 0.95 and not truncated
    env.close()
