"""lts — learning to simulate.

The outer loop (`lts.loop`) over a chain of phases (`lts.phases`), downstream tasks
(`lts.tasks`), targets, the GAN refiner, Ray execution, run directories, the Python API
(`lts.api`), and the command lines in `lts.cli` (`python -m lts.optimize`, `lts.inspect`,
`lts.render`, `lts.evaluate`, `lts.refine`, `lts.compare`, `lts.bench`).

Importing the package registers two Gymnasium environments, built only by
``gymnasium.make``: ``"lts/LTS-v0"`` (`lts.env.LTSEnv`, one step = one evaluation of ψ)
and ``"lts/Scene-v0"`` (`simulators.gym.SceneEnv`, one step = one rendered scene).
Without importing anything first, ``gymnasium.make("lts:lts/LTS-v0")`` does the same.
"""

__version__ = "0.1.0"
__all__ = ["__version__", "GYM_ENVS", "register_envs", "optimize", "evaluate", "compare", "Result"]

# id → entry point; strings, so that registering imports neither torch nor the simulators
GYM_ENVS = {"lts/LTS-v0": "lts.env:LTSEnv", "lts/Scene-v0": "simulators.gym:SceneEnv"}


def register_envs() -> None:
    """Register `GYM_ENVS` with Gymnasium, leaving ids that are registered already."""
    from gymnasium.envs.registration import register, registry

    for env_id, entry_point in GYM_ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point)


register_envs()


def __getattr__(name: str) -> object:
    # The API (`lts.api`), imported on first use: ``lts.optimize(...)``, ``lts.Result``.
    # ``lts.optimize`` is also the package ``python -m lts.optimize`` runs; once imported it
    # takes the name, and is callable as the same function (`lts.cli.command_module`).
    if name in ("optimize", "evaluate", "compare", "Result"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'lts' has no attribute {name!r}")
