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
    assert r_good > 0.85 and info["metrics"]["accuracy"] == r_good and obs[0] == pytest.approx(r_good)
    _, r_bad, _, _, _ = env.step(swapped)
    assert r_bad < 0.3
    _, _, term, trunc, _ = env.step(good)
    assert not term and trunc
