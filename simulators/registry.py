"""Finding simulators by name: built-ins, ``package.module:Class`` paths, and the
``lts.simulators`` entry-point group (scanned when a name is looked up, never on import).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from .base import Simulator
from .errors import SetupError, UnknownNameError, UserError, did_you_mean

__all__ = ["check_workers", "make", "register", "available", "resolve", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "lts.simulators"

# Built-ins as "module:attr" strings so that importing the registry imports no simulator.
_BUILTIN: dict[str, str] = {
    "procedural": "simulators.procedural:ProceduralSimulator",
    "gmm": "simulators.gmm:GaussianMixtureSimulator",
    "rings": "simulators.mixed:RingsSimulator",
    "carla": "simulators.carla:CarlaSimulator",
}
_REGISTERED: dict[str, Callable[..., Simulator] | str] = {}


def register(name: str, factory: Callable[..., Simulator] | str) -> None:
    """Make ``name`` resolve to ``factory`` (a class, a callable or a ``module:attr`` string)."""
    _REGISTERED[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every name ``make`` accepts (besides ``module:Class`` paths)."""
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_points()))


def _load_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UserError(f"simulator {path!r}: expected 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UserError(
                f"simulator {path!r}: module {module_name!r} not found (is it installed or on PYTHONPATH?)"
            ) from None
        raise
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(module) if not n.startswith("_")]
            raise UserError(
                f"simulator {path!r}: module {module_name!r} has no attribute {attr!r}" + did_you_mean(attr, names)
            ) from None
    return obj


def resolve(name: str) -> Callable[..., Simulator]:
    """The class or factory behind a name or ``module:Class`` path."""
    if ":" in name:
        return _load_path(name)
    if name in _REGISTERED:
        f = _REGISTERED[name]
        return _load_path(f) if isinstance(f, str) else f
    if name in _BUILTIN:
        return _load_path(_BUILTIN[name])
    eps = _entry_points()
    if name in eps:
        return eps[name].load()
    known = available()
    raise UnknownNameError(
        f"unknown simulator {name!r}; known: {', '.join(known)}, or 'package.module:Class'" + did_you_mean(name, known)
    )


def make(name: str, **options: Any) -> Simulator:
    """Build a simulator from a short name or a ``package.module:Class`` path.

    >>> sim = make("gmm")
    >>> batch = sim.generate(sim.param_space.sample(seed=0), 8, seed=0)
    """
    factory = resolve(name)
    try:
        sim = factory(**options)
    except UserError:
        raise
    except TypeError as e:
        # A wrong option name is the user's mistake; say which simulator refused it.
        if "unexpected keyword argument" in str(e) or "got an unexpected" in str(e):
            raise UserError(f"simulator {name!r}: {e}") from None
        raise _setup_error(name, e) from e
    except Exception as e:
        # a plug-in that crashes while building itself: one line, its traceback behind --debug
        raise _setup_error(name, e) from e
    if not hasattr(sim, "param_space") or not hasattr(sim, "generate"):
        raise UserError(f"simulator {name!r} does not provide 'param_space' and 'generate'")
    return sim


def check_workers(name: str, options: Mapping[str, Any], workers: int) -> None:
    """Refuse, before anything is built or rendered, ``workers`` copies of simulator ``name``
    with ``options`` running at once where the simulator says it cannot serve them (its
    optional ``check_workers(options, workers)`` hook; a CARLA server serves one client)."""
    hook = getattr(resolve(name), "check_workers", None)
    if callable(hook):
        hook(options, int(workers))


def _setup_error(name: str, e: Exception) -> SetupError:
    said = " ".join(str(e).split())
    return SetupError(
        f"simulator {name} failed while building itself: {type(e).__name__}: {said} (--debug shows where)"
    )
