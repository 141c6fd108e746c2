"""Typed experiment configuration: defaults, YAML files, ``--set key=value`` overrides.

Every field has a one-line doc (``lts.optimize --help-config`` prints them).  Unknown
keys and wrong types are `UserError`s that name the key and suggest the closest one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies import STRATEGIES, strategy_options
from simulators.errors import UserError, did_you_mean
from simulators.space import read_yaml as read_yaml_file

from .stopping import parse_duration

__all__ = [
    "Config", "load_config", "load_experiment", "run_hint", "config_to_dict", "describe_config", "resolve_path",
    "REPO_ROOT", "QUICK", "QUICK_TASK",
]  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parents[1]

# eval_timeout's default with Ray workers.  There a hung worker (a simulator that stopped
# answering: CARLA's "time-out while waiting for the simulator") holds the run forever, and
# ending it costs only its set-up.  Half an hour: far above an evaluation of the default
# experiment (docs/robustness.md), with room for CARLA's slower renders, yet a hang costs a
# run at most that much per evaluation.  In this process no thread can be stopped, so the
# default there is no limit.
RAY_EVAL_TIMEOUT = 1800.0


def _f(default: Any, doc: str) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class Config:
    sim: str = _f("procedural", "simulator: a registered name or package.module:Class")
    sim_options: dict = _f({}, "keyword options for the simulator (e.g. resolution: [64, 128])")
    task: str = _f("counting", "downstream task: counting, segmentation or classify")
    task_options: dict = _f({}, "keyword options for the task (training budget, lr, …)")
    target: str = _f("configs/targets/default.yaml", "target parameter file (YAML) or a labelled image directory")
    target_size: int = _f(256, "validation samples (the reward) rendered from ψ* when the target is a parameter file")
    test_size: int = _f(
        256, "held-out test samples rendered from ψ* with a seed of their own (the figures to report; never a reward)"
    )
    target_split: float = _f(
        0.5, "a directory target: the fraction of its files (by name) that is validation; the rest is the test split"
    )
    test_target: str | None = _f(
        None, "a directory target's test split as a directory of its own (target_split unused)"
    )
    search: str = _f(
        "cma-mean", "search strategy: " + ", ".join(STRATEGIES) + " (python -m lts.optimize --help lists them)"
    )
    search_options: dict = _f(
        {},
        "options of the search strategy (python -m lts.optimize --help lists each one's); a key that names a strategy "
        "holds that strategy's options, used when it is the search",
    )
    iterations: int = _f(
        16, "iterations of the search (K evaluations each, on the task's reward); with budget set, as many as fit"
    )
    budget: float | None = _f(
        None,
        "evaluations to spend, counted as lts.compare counts them (an evaluation of M scenes 1, a warm-up render "
        "of m scenes m/M); sets the search's iterations",
    )
    time_budget: str | None = _f(
        None,
        "wall-clock limit such as 90s, 10m or 1.5h: the search stops in time for the final evaluation to end within it",
    )
    stop: bool = _f(
        True,
        "stop the search when its rewards stop climbing beyond their own noise (a trend over the last iterations, "
        "lts/stopping.py); false: spend the whole budget",
    )
    match_iterations: int = _f(
        1,
        "distribution-matching warm-up: iterations before the task's, rewarded by how close rendered frames and "
        "their labels are to the target's (a render each, no training). With match_moments the first solves the "
        "mixes and the others move the remaining elements by −MMD²; 0: none",
    )
    match_scenes: int = _f(
        32,
        "scenes rendered per choice of a mix in the warm-up's moments, and per ψ in its later iterations (on "
        "counting, 32 a choice fit the weather and car-type mixes to TV 0.03–0.09 for 1.1 evaluations)",
    )
    match_samples: int = _f(
        8, "parameter vectors ψ drawn per warm-up iteration (more draws: each element its own sign column)"
    )
    match_elements: list | None = _f(
        None,
        "the elements the warm-up moves (null: the simulator's own, the street simulators' weather; none named, no "
        "warm-up); the others stay where they start until the task's iterations",
    )
    match_labels: list | None = _f(
        None,
        "the elements the warm-up moves by how close the rendered labels are to the target's (−MMD² of the task's "
        "labels: car counts per type, class fractions; null: the simulator's own, the street simulators' car types, "
        "cars per scene and road length; []: none)",
    )
    match_search: str = _f(
        "reinforce",
        "the warm-up's search when it has one signal (the toy's points and labels); two signals (the street "
        "simulators' look and labels) always take REINFORCE, one update per signal",
    )
    match_classes: bool = _f(
        False,
        "the warm-up compares labelled points (the toy's) class by class, by each class's mean and covariance and "
        "the class frequencies, instead of by MMD² of (point, class) pairs: measured better with three classes in "
        "3-D, worse with two in 2-D",
    )
    match_moments: bool = _f(
        True,
        "the warm-up's first iteration solves its mixes (weather, car types) outright: each choice rendered alone "
        "(match_scenes scenes), the mix whose mean features fit the target's; its later iterations move the rest, "
        "and there are none when only mixes are matched (false: REINFORCE moves the mixes too, for match_iterations "
        "of match_samples renders: set those as well, counting measured 120 × 8 of 8 scenes)",
    )
    match_hold: bool = _f(
        True,
        "the task's iterations leave the mixes (proportions, categorical elements) the warm-up moved where it left "
        "them, the street simulators' weather and car types; continuous elements go on (false: the task moves all)",
    )
    samples: int = _f(4, "K: parameter vectors ψ drawn per iteration")
    scenes: int = _f(256, "M: scenes (samples) rendered per ψ")
    seed: int = _f(0, "run seed; every other seed is derived from it")
    device: str = _f("cpu", "device for rendering and training: cpu or cuda")
    threads: int = _f(
        0,
        "torch CPU threads the in-process evaluations share (0: one per core); with `parallel` 0 it also caps how "
        "many run at once, so 1 runs everything on one core (use it on a machine busy with other jobs)",
    )
    parallel: int = _f(
        0,
        "in-process evaluations run at once, each in a thread of its own with threads/parallel torch threads "
        "(0: one per core or per `threads`, at most K; 1: one after another); unused with Ray workers. The "
        "numbers depend slightly on the torch threads per evaluation",
    )
    workers: int = _f(0, "Ray workers for the K evaluations (0: in-process)")
    ray_address: str | None = _f(None, "address of an existing Ray cluster to join (e.g. auto)")
    refiner: str | None = _f(None, "GAN refiner checkpoint applied to every rendered batch")
    warm_start: bool = _f(False, "start each training from the previous iteration's best model")
    common_seeds: bool = _f(
        True, "the K draws of an iteration share data and training seeds, so their rewards differ by ψ, not by luck"
    )
    final_repeats: int = _f(2, "seeds averaged for the final lts / oracle / random rewards")
    eval_timeout: float | None = _f(
        None,
        "seconds one evaluation may take; past it the evaluation is recorded as failed (timed out), the search is "
        f"told so and the run goes on (null: none in this process, {RAY_EVAL_TIMEOUT:g} with Ray workers, whose hung "
        "worker is ended and replaced; 0: none). In this process a timed-out evaluation's thread cannot be stopped: "
        "it is left running, its result dropped",
    )
    setup_timeout: float = _f(
        900.0,
        "seconds a set-up step may take (rendering the target, each Ray worker building its simulator: a CARLA "
        "connection) before the run stops with one line (0: none)",
    )
    tensorboard: bool = _f(False, "also write TensorBoard logs under RUN_DIR/tensorboard")

    def validate(self) -> Config:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(self.iterations >= 0, f"iterations must be >= 0, got {self.iterations}")
        need(self.budget is None or self.budget > 0, f"budget must be > 0 evaluations, got {self.budget}")
        if self.time_budget is not None:
            try:
                parse_duration(self.time_budget)
            except ValueError as e:
                raise UserError(f"time_budget: expected {e}") from None
        need(self.match_iterations >= 0, f"match_iterations must be >= 0, got {self.match_iterations}")
        need(self.match_samples >= 1, f"match_samples must be >= 1, got {self.match_samples}")
        need(self.match_scenes >= 1, f"match_scenes must be >= 1, got {self.match_scenes}")
        need(self.samples >= 1, f"samples (K) must be >= 1, got {self.samples}")
        need(self.scenes >= 1, f"scenes (M) must be >= 1, got {self.scenes}")
        need(self.target_size >= 1, f"target_size must be >= 1, got {self.target_size}")
        need(self.test_size >= 1, f"test_size must be >= 1, got {self.test_size}")
        need(0 < self.target_split < 1, f"target_split must be in (0, 1), got {self.target_split}")
        need(self.workers >= 0, f"workers must be >= 0, got {self.workers}")
        need(self.threads >= 0, f"threads must be >= 0, got {self.threads}")
        need(self.parallel >= 0, f"parallel must be >= 0, got {self.parallel}")
        need(self.final_repeats >= 0, f"final_repeats must be >= 0, got {self.final_repeats}")
        need(
            self.eval_timeout is None or self.eval_timeout >= 0,
            f"eval_timeout must be >= 0 seconds (0: none) or null, got {self.eval_timeout}",
        )
        need(self.setup_timeout >= 0, f"setup_timeout must be >= 0 seconds (0: none), got {self.setup_timeout}")
        need(
            self.device in ("cpu", "cuda") or self.device.startswith("cuda:"),
            f"device must be cpu or cuda, got {self.device!r}",
        )
        need(
            self.search in STRATEGIES,
            f"search must be one of {', '.join(STRATEGIES)}; got {self.search!r}{did_you_mean(self.search, STRATEGIES)}",
        )
        need(
            self.match_search in STRATEGIES,
            f"match_search must be one of {', '.join(STRATEGIES)}; got {self.match_search!r}"
            + did_you_mean(self.match_search, STRATEGIES),
        )
        for name, opts in self.search_options.items():
            need(
                name not in STRATEGIES or isinstance(opts, dict),
                f"search_options.{name}: expected a mapping of {name}'s options, got {opts!r}",
            )
        for name in {self.search, *(k for k in self.search_options if k in STRATEGIES)}:
            known = strategy_options(name)
            for key in self.options_of(name):
                need(
                    key in known,
                    f"search {name}: unknown option {key!r} (options: {', '.join(known) or 'none'})"
                    + did_you_mean(key, known),
                )
        return self

    def eval_limit(self, ray: bool) -> float | None:
        """Seconds one evaluation may take on Ray (``ray``) or in this process; None: no limit."""
        if self.eval_timeout is None:
            return RAY_EVAL_TIMEOUT if ray else None
        return self.eval_timeout or None

    def options_of(self, search: str) -> dict[str, Any]:
        """The options ``search`` takes from ``search_options``: those under its own name, and
        over them the flat keys when it is the search (``--set search_options.lr=…``)."""
        flat = {k: v for k, v in self.search_options.items() if k not in STRATEGIES} if search == self.search else {}
        return {**self.search_options.get(search, {}), **flat}


def _check_type(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
        if value is None:
            return {}
    name = getattr(tp, "__name__", str(tp))
    raise UserError(f"config key {key!r}: expected {name}, got {value!r}")


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key == "policy" and prefix == "" and "search" in names:
            raise UserError(
                "config key 'policy' is now 'search_options' (the options of search: reinforce; policy.columns is gone)"
            )
        if key not in names:
            known = [f"{prefix}{n}" for n in names]
            raise UserError(f"unknown config key {full!r}" + did_you_mean(full, known))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"config key {full!r}: expected a mapping, got {value!r}")
            _apply(current, value, prefix=f"{full}.")
        elif hints[key] is dict and isinstance(current, dict) and isinstance(value, dict) and prefix == "":
            setattr(obj, key, _merge(current, value))
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, mapping into mapping (``--set search_options.reinforce.lr=…``
    keeps the file's other reinforce options)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"policy.lr": 1}`` → ``{"policy": {"lr": 1}}``; ``sim_options.x`` likewise."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise UserError(f"config key {key!r}: {p!r} is not a mapping")
        d[parts[-1]] = value
    return out


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    data = read_yaml_file(path, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {str(path)!r}: expected a mapping of keys to values")
    return data


def load_config(
    path: str | Path | None = None, *layers: dict[str, Any], overrides: dict[str, Any] | None = None
) -> Config:
    """Defaults, then the YAML file, then each layer, then dotted ``overrides``."""
    cfg = Config()
    if path is not None:
        _apply(cfg, read_yaml(path))
    for layer in layers:
        _apply(cfg, layer)
    if overrides:
        _apply(cfg, _nest(overrides))
    return cfg.validate()


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def describe_config() -> str:
    """Every key with its default and doc, for ``--help-config``."""
    lines = []

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                walk(v, f"{prefix}{f.name}.")
            else:
                lines.append(f"  {prefix + f.name:<24} {v!r:<32} {f.metadata.get('doc', '')}")

    walk(Config(), "")
    return "\n".join(lines)


def resolve_path(path: str | Path) -> Path:
    """A path as given if it exists, else relative to the repository (for configs/…)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    alt = REPO_ROOT / p
    return alt if alt.exists() else p


# Keys a run directory written before they existed ran without: read into its saved config
# (config.yaml and the checkpoint's) on --resume, so that it resumes as it ran.
LEGACY_DEFAULTS: dict[str, Any] = {"match_moments": False}

# --quick: the chosen experiment at a tiny budget (a smoke run: under a minute on 2 cores)
QUICK: dict[str, Any] = {
    "iterations": 2,
    "samples": 2,
    "scenes": 32,
    "match_iterations": 4,
    "match_samples": 4,
    "match_scenes": 8,
    "target_size": 32,
    "final_repeats": 1,
}
# per task, a training budget to match (steps of each task's own trainer)
QUICK_TASK = {"counting": {"steps": 40}, "segmentation": {"steps": 40}, "classify": {"steps": 30}}


def load_experiment(
    config: str | Path | None, layer: dict[str, Any], overrides: dict[str, Any], *, quick: bool = False
) -> Config:
    """What the command lines and the API run: the defaults, the YAML experiment ``config``
    (checked to exist), the `QUICK` preset under ``layer`` when ``quick``, then the dotted
    ``overrides`` (``--set``)."""
    path = None
    if config is not None:
        path = resolve_path(config)
        if not path.is_file():
            raise UserError(f"config file {str(config)!r} does not exist")
    layers = [layer]
    if quick:
        task = layer.get("task") or load_config(path).task
        layers = [{**QUICK, "task_options": QUICK_TASK.get(task, {})}, layer]
    return load_config(path, *layers, overrides=overrides)


def run_hint(config: Config) -> str:
    """The ``SIM-TASK`` part of a new run directory's name."""
    return f"{Path(str(config.sim).split(':')[-1]).name}-{config.task}"
