"""A Gymnasium environment in which one step is one LTS evaluation.

Action: ψ in the simulator's ``Dict`` space (proportions are projected onto the
simplex, so any point of the space is a valid action), or with ``normalize_actions=True``
one flat ``Box(-1, 1)`` vector mapped onto ψ by `simulators.ParamSpace.from_normalized`.  Reward: the task's reward on
the target for a model trained on M scenes rendered from ψ.  Observation: the last
reward (a bandit has no state), so any RL library can drive the same loop.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

import simulators

from .evaluation import EvalContext, EvalSpec
from .seeding import derive_seed
from .targets import load_target

__all__ = ["LTSEnv"]


class LTSEnv(gym.Env[np.ndarray, Any]):
    """One step = render ψ → train → score.  Registered as ``"lts/LTS-v0"``."""

    # nothing to render: the observation is a number
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        sim: str = "gmm",
        task: str = "classify",
        target: str = "configs/targets/gmm.yaml",
        *,
        scenes: int = 200,
        target_size: int = 500,
        max_steps: int = 10,
        sim_options: dict[str, Any] | None = None,
        task_options: dict[str, Any] | None = None,
        device: str = "cpu",
        target_seed: int = 0,
        normalize_actions: bool = False,
    ) -> None:
        if scenes < 1 or max_steps < 1:
            raise simulators.UserError(f"scenes and max_steps must be >= 1, got {scenes} and {max_steps}")
        self._sim = simulators.make(sim, **(sim_options or {}))
        self._space = self._sim.param_space
        tgt = load_target(target, self._sim, task_name=task, size=target_size, run_seed=target_seed, sim_name=sim)
        ctx = EvalContext(sim, sim_options or {}, task, task_options or {}, tgt.batch, device=device)
        self._evaluator = ctx.build(sim=self._sim)
        self.normalize_actions = bool(normalize_actions)
        self.action_space = self._space.normalized_gym() if normalize_actions else self._space.to_gym()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
        self.scenes, self.max_steps = scenes, max_steps
        self._seed = 0
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._seed = int(seed)
        else:
            self._seed = int(self.np_random.integers(2**31 - 1))
        self._t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.normalize_actions:
            params = self._space.from_normalized(action)
        else:
            params = self._space.from_gym(action)
        spec = EvalSpec(
            index=self._t,
            params=params,
            n=self.scenes,
            data_seed=derive_seed(self._seed, "env-data", self._t),
            train_seed=derive_seed(self._seed, "env-train", self._t),
        )
        res = self._evaluator(spec)
        self._t += 1
        obs = np.array([res.reward], dtype=np.float32)
        info = {"params": params, "metrics": res.metrics}
        return obs, float(res.reward), False, self._t >= self.max_steps, info

    def close(self) -> None:
        self._evaluator.close()
