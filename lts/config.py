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

from . import tasks
from .stopping import parse_duration

__all__ = [
    "Config", "load_config", "load_experiment", "run_hint", "config_to_dict", "describe_config", "resolve_path",
    "REPO_ROOT", "QUICK", "QUICK_TASK", "Warmup", "phase_spec", "legacy_config",
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


#: The keys a warm-up phase takes, with their defaults (``warmup.phases``).
PHASE_KEYS: dict[str, Any] = {
    "search": "reinforce",  # the phase's strategy; moments: the mixes by their moments
    "objective": None,  # what it is told: match (−MMD², the default), moments (the default for moments), task
    "iterations": "auto",  # a number, or auto: until its iteration means plateau (`PlateauStopper`), at most `auto_cap`
    "samples": 8,  # ψ per iteration (moments: one per choice of each mix, whatever this says)
    "scenes": 32,  # scenes per ψ (charged scenes / M each)
    "options": {},  # the strategy's options
}
OBJECTIVES = ("match", "moments", "task")
AUTO = "auto"
# auto's cap: the warm-up's auto phases spend at most this share of the run's budget (without a
# budget: of the warm-up and the search's evaluations together)
AUTO_SHARE = 0.5


@dataclass
class Warmup:
    """The warm-up: phases before the search on the task's reward, each a strategy and the
    objective it is told, each handing its recommendation and the mixes it settled to the next."""

    phases: list[dict] = _f(
        [{"search": "moments"}, {"search": "cma-mean"}],
        "the warm-up's phases in order, each {search, objective, iterations, samples, scenes, options} (keys "
        "left out: search reinforce, objective match (moments: moments), iterations auto (until the phase's "
        "iteration means plateau, at most half the run's evaluations), samples 8, scenes 32; []: no warm-up). "
        "The default: the mixes by their moments, then CMA-ES on the match until it stops improving "
        "(docs/experiments.md, 2026-12-07, One set of defaults)",
    )
    look: list | None = _f(
        None,
        "the elements matched by how rendered frames look (null: the simulator's own, the street simulators' weather)",
    )
    labels: list | None = _f(
        None,
        "the elements matched by how close the rendered labels are to the target's (car counts per type, class "
        "fractions; null: the simulator's own, the street simulators' car types, cars per scene and road "
        "length; []: none)",
    )
    classes: bool = _f(
        False,
        "compare labelled points (the toy's) class by class, by each class's mean and covariance and the class "
        "frequencies, instead of by MMD² of (point, class) pairs: measured better with three classes in 3-D, "
        "worse with two in 2-D",
    )
    hold: bool = _f(
        True,
        "the task's iterations leave the mixes (proportions, categorical elements) the warm-up moved where it left "
        "them; continuous elements go on (false: the task moves all)",
    )

    def validate(self) -> None:
        for i, ph in enumerate(self.phases):
            where = f"warmup.phases[{i}]"
            if not isinstance(ph, dict):
                raise UserError(f"{where}: expected a mapping of {', '.join(PHASE_KEYS)}, got {ph!r}")
            for key in ph:
                if key not in PHASE_KEYS:
                    raise UserError(f"{where}: unknown key {key!r}" + did_you_mean(key, PHASE_KEYS))
            p = phase_spec(ph)
            if p["search"] not in STRATEGIES:
                raise UserError(
                    f"{where}.search must be one of {', '.join(STRATEGIES)}; got {p['search']!r}"
                    + did_you_mean(str(p["search"]), STRATEGIES)
                )
            if p["objective"] not in OBJECTIVES:
                raise UserError(f"{where}.objective must be one of {', '.join(OBJECTIVES)}; got {p['objective']!r}")
            if (p["search"] == "moments") != (p["objective"] == "moments"):
                raise UserError(f"{where}: the moments strategy and the moments objective go together")
            for key in ("iterations", "samples", "scenes"):
                v, least = p[key], 0 if key == "iterations" else 1
                if key == "iterations" and v == AUTO:
                    continue
                if not isinstance(v, int) or isinstance(v, bool) or v < least:
                    raise UserError(
                        f"{where}.{key} must be an integer >= {least}{' or auto' if key == 'iterations' else ''}, got {v!r}"
                    )
            if not isinstance(p["options"], dict):
                raise UserError(f"{where}.options: expected a mapping of {p['search']}'s options, got {p['options']!r}")
        self.phases = [phase_spec(p) for p in self.phases]  # resolved, as config.yaml records it

    def with_iterations(self, n: int) -> list[dict[str, Any]]:
        """The phases with ``n`` warm-up iterations in all (``--warmup-iterations``): a moments
        phase keeps its one, the last other phase takes the rest and earlier ones none; 0: none."""
        if n == 0:
            return []
        specs = [phase_spec(p) for p in self.phases]
        moments = sum(1 for p in specs if p["objective"] == "moments")
        searched = [i for i, p in enumerate(specs) if p["objective"] != "moments"]
        out = [dict(p) for p in self.phases]
        for i in searched:
            out[i]["iterations"] = max(n - moments, 0) if i == searched[-1] else 0
        return out


def phase_spec(phase: dict[str, Any]) -> dict[str, Any]:
    """A warm-up phase's entry with its defaults filled in."""
    p = {**PHASE_KEYS, **phase}
    if p["objective"] is None:
        p["objective"] = "moments" if p["search"] == "moments" else "match"
    if p["objective"] == "moments" and p["iterations"] == AUTO:
        p["iterations"] = 1  # the moments render once
    return p


@dataclass
class Config:
    sim: str = _f("procedural", "simulator: a registered name or package.module:Class")
    sim_options: dict = _f({}, "keyword options for the simulator (e.g. resolution: [64, 128])")
    task: str = _f("counting", "downstream task: counting, segmentation or classify")
    task_options: dict = _f({}, "keyword options for the task (training budget, lr, …)")
    target: str = _f("configs/targets/default.yaml", "target parameter file (YAML) or a labelled image directory")
    target_size: int = _f(
        256,
        "validation samples (the reward) rendered from ψ* when the target is a parameter file (the task's own "
        "where it has one: classify 1000)",
    )
    test_size: int = _f(
        256,
        "held-out test samples rendered from ψ* with a seed of their own (the figures to report; never a reward; "
        "classify 1000)",
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
    warmup: Warmup = field(
        default_factory=lambda: Warmup(), metadata={"doc": "the warm-up before the search (its phases and options)"}
    )
    samples: int = _f(4, "K: parameter vectors ψ drawn per iteration (classify: 8)")
    scenes: int = _f(256, "M: scenes (samples) rendered per ψ (classify: 400)")
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
            self.search != "moments",
            "search moments is told mean features, not the task's reward: put it in warmup.phases ({search: moments})",
        )
        self.warmup.validate()
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
    elif typing.get_origin(tp) is list:  # list[dict]: checked by its owner (`Warmup.validate`)
        if isinstance(value, list):
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
        if key in OLD_WARMUP_KEYS and prefix == "":
            raise UserError(
                f"config key {key!r} is now part of the warmup: section ({OLD_WARMUP_KEYS[key]}); "
                "see python -m lts.optimize --help-config"
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
    """Defaults, then the YAML file, then each layer, then dotted ``overrides``.  A layer that
    sets ``iterations`` and no ``budget`` drops an earlier layer's budget: the later one wins."""
    cfg = Config()
    datas = ([read_yaml(path)] if path is not None else []) + list(layers) + ([_nest(overrides)] if overrides else [])
    # the task's own sizes come first: what the file, the layers and --set name wins
    task = next((d["task"] for d in reversed(datas) if isinstance(d.get("task"), str)), cfg.task)
    datas = [tasks.run_sizes(task), *datas]
    for data in datas:
        if "iterations" in data and "budget" not in data:
            cfg.budget = None
        _apply(cfg, data)
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


# The flat keys the warm-up had before its section (``warmup:``): where each went.
OLD_WARMUP_KEYS: dict[str, str] = {
    "match_iterations": "warmup.phases[i].iterations; warmup.phases: [] for none",
    "match_samples": "warmup.phases[i].samples",
    "match_scenes": "warmup.phases[i].scenes",
    "match_search": "warmup.phases[i].search",
    "match_moments": "a phase {search: moments} first in warmup.phases",
    "match_elements": "warmup.look",
    "match_labels": "warmup.labels",
    "match_classes": "warmup.classes",
    "match_hold": "warmup.hold",
}


def legacy_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A configuration saved before the ``warmup:`` section (a run directory's) in today's
    form: its flat ``match_*`` keys become the warm-up they ran (a run from before
    ``match_moments`` ran without the moments)."""
    if not any(k in saved for k in OLD_WARMUP_KEYS):
        return saved
    old = {k: saved[k] for k in OLD_WARMUP_KEYS if k in saved}
    out = {k: v for k, v in saved.items() if k not in OLD_WARMUP_KEYS}
    n = int(old.get("match_iterations", 1))
    searched = {
        "search": old.get("match_search", "reinforce"),
        "samples": int(old.get("match_samples", 8)),
        "scenes": int(old.get("match_scenes", 32)),
    }
    if old.get("match_moments", False):
        phases = [{"search": "moments", "scenes": searched["scenes"]}, {**searched, "iterations": max(n - 1, 0)}]
    else:
        phases = [{**searched, "iterations": n}]
    out["warmup"] = {
        "phases": [phase_spec(p) for p in phases] if n else [],
        "look": old.get("match_elements"),
        "labels": old.get("match_labels"),
        "classes": bool(old.get("match_classes", False)),
        "hold": bool(old.get("match_hold", True)),
    }
    return out


# --quick: the chosen experiment at a tiny budget (a smoke run: under a minute on 2 cores)
QUICK: dict[str, Any] = {
    "iterations": 2,
    "samples": 2,
    "scenes": 32,
    "target_size": 32,
    "final_repeats": 1,
}
# ... and the warm-up's phases: 4 iterations in all (`Warmup.with_iterations`) of 4 ψ × 8 scenes
QUICK_WARMUP = {"iterations": 4, "samples": 4, "scenes": 8}
# per task, a training budget to match (steps of each task's own trainer)
QUICK_TASK = {"counting": {"steps": 40}, "segmentation": {"steps": 40}, "classify": {"steps": 30}}


def load_experiment(
    config: str | Path | None,
    layer: dict[str, Any],
    overrides: dict[str, Any],
    *,
    quick: bool = False,
    warmup_iterations: int | None = None,
) -> Config:
    """What the command lines and the API run: the defaults, the YAML experiment ``config``
    (checked to exist), the `QUICK` preset under ``layer`` when ``quick``, then the dotted
    ``overrides`` (``--set``).  ``warmup_iterations``: the warm-up's iterations in all
    (`Warmup.with_iterations`), over the file's and the preset's."""
    path = None
    if config is not None:
        path = resolve_path(config)
        if not path.is_file():
            raise UserError(f"config file {str(config)!r} does not exist")
    layers = [layer]
    if quick or warmup_iterations is not None:
        base = load_config(path)
        task = layer.get("task") or base.task
        warm = base.warmup
        if quick:
            small = {k: v for k, v in QUICK_WARMUP.items() if k != "iterations"}
            warm = Warmup(phases=[{**p, **small} for p in warm.with_iterations(QUICK_WARMUP["iterations"])])
        if warmup_iterations is not None:
            warm = Warmup(phases=warm.with_iterations(warmup_iterations))
        quick_layer = {**QUICK, "task_options": QUICK_TASK.get(task, {})} if quick else {}
        layers = [{**quick_layer, "warmup": {"phases": warm.phases}}, layer]
    return load_config(path, *layers, overrides=overrides)


def run_hint(config: Config) -> str:
    """The ``SIM-TASK`` part of a new run directory's name."""
    return f"{Path(str(config.sim).split(':')[-1]).name}-{config.task}"
