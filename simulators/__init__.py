"""Simulators for lts: the parameter space, the interface, the registry and the built-ins.

>>> import simulators
>>> sim = simulators.make("gmm")
>>> psi = sim.param_space.sample(seed=0)
>>> batch = sim.generate(psi, 16, seed=0)

Importing the package registers the Gymnasium environment ``"lts/Scene-v0"``
(`simulators.gym.SceneEnv`, imported only when ``gymnasium.make`` builds one).
"""

from .base import Batch, Simulator
from .errors import ParamError, UnknownNameError, UserError
from .gym import SCENE_ENV_ID, register_envs
from .registry import ENTRY_POINT_GROUP, available, check_workers, make, register, resolve
from .space import (
    Categorical,
    Continuous,
    Integer,
    ParamSpace,
    Proportions,
    TargetSpec,
    load_target_file,
)

__all__ = [
    "Batch",
    "Simulator",
    "ParamSpace",
    "Continuous",
    "Integer",
    "Categorical",
    "Proportions",
    "TargetSpec",
    "load_target_file",
    "make",
    "register",
    "available",
    "resolve",
    "check_workers",
    "ENTRY_POINT_GROUP",
    "UserError",
    "ParamError",
    "UnknownNameError",
    "SCENE_ENV_ID",
]

register_envs()
