"""Gymnasium wrapper: a simulator as a scene-generator environment.

The agent's action is a ψ (an element of the simulator's parameter space as a Gymnasium
``Dict`` space, `ParamSpace.to_gym`); each step renders one scene from it.  The
observation is that frame (``uint8`` H×W×3); its labels (semantic ids, depth, per-type
counts of visible cars, instance ids) and the attributes drawn for the scene are in
``info``.  The reward is 0: what a ψ is worth is decided outside (e.g. by a task trained
on the frames), as in learning to simulate.  An episode lasts ``episode_length`` steps.
With ``normalize_actions=True`` the action is instead one flat ``Box(-1, 1)`` vector,
mapped onto ψ by `ParamSpace.from_normalized` (what most RL libraries expect).

Importing `simulators` registers the environment with Gymnasium as ``"lts/Scene-v0"``
(`register_envs`; the class is imported only when an environment is made), so
``gymnasium.make("lts/Scene-v0", resolution=(64, 128))`` builds one; without importing
anything first, ``gymnasium.make("simulators:lts/Scene-v0")`` does.

>>> env = SceneEnv("procedural", resolution=(64, 128))
>>> obs, info = env.reset(seed=0)
>>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .base import Batch, Simulator
from .errors import UserError
from .registry import make

__all__ = ["SceneEnv", "SCENE_ENV_ID", "register_envs"]

SCENE_ENV_ID = "lts/Scene-v0"


def register_envs() -> None:
    """Register ``"lts/Scene-v0"`` with Gymnasium unless it is registered already (an entry
    point string: nothing is built or imported until `gymnasium.make`)."""
    from gymnasium.envs.registration import register, registry

    if SCENE_ENV_ID not in registry:
        register(id=SCENE_ENV_ID, entry_point="simulators.gym:SceneEnv")


class SceneEnv(gym.Env[np.ndarray, Any]):
    """One rendered scene per step, from the ψ given as the action.

    ``sim``: a simulator name (or ``package.module:Class``), built with ``**options``,
    or a `Simulator` instance.  ``episode_length``: steps before ``truncated``.
    ``render_mode``: ``"rgb_array"`` makes `render` return the last frame.
    ``normalize_actions``: the action space is ``Box(-1, 1, (param_space.normalized_size,))``
    instead of ψ's ``Dict`` space; `ParamSpace.from_normalized` says what each entry means.

    ``reset(seed=…, options={"params": ψ})`` renders a first frame from ψ (default: the
    space's default ψ).  ``info`` holds ``semantic`` (H×W int64), ``depth`` (H×W float32,
    metres), ``instances`` (H×W int64), ``counts`` (int64, one per ``count_names``),
    ``count_names``, ``params`` (the ψ used) and ``attributes`` (what the scene drew)
    — the labels the simulator has.
    """

    # Frames are independent scenes, not a motion: 4 per second lets a recorded episode be watched.
    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        sim: str | Simulator = "procedural",
        *,
        episode_length: int = 16,
        render_mode: str | None = None,
        normalize_actions: bool = False,
        **options: Any,
    ) -> None:
        if isinstance(sim, str):
            self.sim = make(sim, **options)
        else:
            if options:
                raise UserError(f"SceneEnv: options {sorted(options)} given with a simulator instance; pass a name")
            self.sim = sim
        if isinstance(episode_length, bool) or not isinstance(episode_length, int) or episode_length < 1:
            raise UserError(f"episode_length {episode_length!r}: expected a positive integer")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UserError(f"render_mode {render_mode!r}: expected None or 'rgb_array'")
        self.episode_length = episode_length
        self.render_mode = render_mode
        self.param_space = self.sim.param_space
        self.normalize_actions = bool(normalize_actions)
        self.action_space = self.param_space.normalized_gym() if normalize_actions else self.param_space.to_gym()
        probe = self.sim.generate(self.param_space.default(), 1, seed=0)
        if probe.images is None or probe.images.dim() != 4:
            raise UserError(f"SceneEnv needs a simulator that renders images; {type(self.sim).__name__} does not")
        h, w = int(probe.images.shape[2]), int(probe.images.shape[3])
        self.observation_space = spaces.Box(low=0, high=255, shape=(h, w, 3), dtype=np.uint8)
        self._t = 0
        self._last: np.ndarray | None = None

    # ------------------------------------------------------------------ gym API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        params = (options or {}).get("params")
        psi = self.param_space.default() if params is None else self.param_space.validate(params)
        return self._shoot(psi)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """``action``: an element of ``action_space`` (ψ's ``Dict`` space, or the normalised
        ``Box``); proportions off the simplex are projected onto it."""
        psi = self.param_space.from_normalized(action) if self.normalize_actions else self.param_space.from_gym(action)
        self._t += 1
        obs, info = self._shoot(psi)
        return obs, 0.0, False, self._t >= self.episode_length, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return None if self._last is None else self._last.copy()
        return None

    def close(self) -> None:
        self.sim.close()

    # ------------------------------------------------------------------ internals

    def _shoot(self, psi: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        # every frame's seed comes from the env's generator: reset(seed=s) replays an episode
        seed = int(self.np_random.integers(0, 2**31 - 1))
        batch = self.sim.generate(psi, 1, seed=seed)
        obs = _frame(batch)
        self._last = obs
        return obs, _labels(batch, psi)


def _frame(batch: Batch) -> np.ndarray:
    images = batch.images
    if images is None:
        raise ValueError("the simulator returned no images")
    if images.dtype.is_floating_point:
        images = (images.float().clamp(0, 1) * 255).round()
    return np.ascontiguousarray(images[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8))


def _labels(batch: Batch, psi: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"params": psi, "attributes": {k: v[0] for k, v in batch.attributes.items()}}
    for name in ("semantic", "depth", "instances", "counts"):
        t = getattr(batch, name)
        if t is not None:
            info[name] = t[0].cpu().numpy()
    if batch.count_names:
        info["count_names"] = tuple(batch.count_names)
    return info
