"""A run as a chain of phases, as Nevergrad's ``Chaining``: each phase is a strategy and the
objective it is told about, with its budget and its charge per evaluation.

- **moments** (`MomentsObjective`): each choice of a mix rendered alone, told its mean
  features; the strategy (`policies.moments.Moments`) fits the mixes.
- **match** (`MatchObjective`): a render each, told −MMD² of how the frames look and how
  far their labels are from the target's (`lts.matching`); nothing is trained.
- **task** (`TaskObjective`): render, train, score on the target's validation split.

The warm-up's phases (``warmup.phases``) come first, the search on the task's reward
(``search``, ``iterations``) last.  A phase hands its recommendation, and the elements it
determined (the mixes it settled, with ``warmup.hold``), to the next as ``init`` and
``fixed``.  The loop (`lts.loop`) runs phases without knowing which they are.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import simulators
from policies import Strategy, make_strategy, strategy_options
from policies.moments import Moment, split_groups
from policies.partial import HeldInPart, part_space, searched_groups

from .config import AUTO, AUTO_SHARE, Config, phase_spec
from .evaluation import EvalResult, EvalSpec, Evaluator, Executor
from .matching import TargetMatch
from .seeding import derive_seed
from .stopping import PlateauStopper
from .targets import Target

MOMENT_TRIES = 3  # seeds the moments try for a choice whose render fails
# an ``auto`` phase ends when the trend of its last half of iteration means (at least 8) is below one
# standard error: a match keeps falling slowly under its noise, and the search's window of 4 ended
# the toys' at 4–14 iterations where 20 and 60 were measured best (docs/experiments.md, 2026-12-07,
# "One set of defaults")
MATCH_STOPPER = PlateauStopper(window=8, share=0.5)

__all__ = [
    "Phase", "Objective", "TaskObjective", "MatchObjective", "MomentsObjective", "build_phases", "from_version_2", "summary_counts",
]  # fmt: skip


class Objective(Protocol):
    """What a phase's strategy is told about: evaluations of the asked ψ, and the value told of each."""

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None) -> list[EvalResult]: ...

    def told(self, result: EvalResult) -> Any: ...


class TaskObjective:
    """The task's reward, by the run's executor (threads or Ray); with ``warm_start`` each
    training starts from the best model of the iteration before."""

    def __init__(self, executor: Callable[[], Executor], *, warm_start: bool) -> None:
        self.executor, self.warm_start = executor, warm_start
        self.best_state: dict[str, Any] | None = None

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None) -> list[EvalResult]:
        for s in specs:
            s.init, s.keep_state = (self.best_state, True) if self.warm_start else (None, False)
        results = self.executor().map(specs, on_result=on_result)
        if self.warm_start and any(r.ok for r in results):
            self.best_state = max((r for r in results if r.ok), key=lambda r: r.reward).state
        return results

    def told(self, result: EvalResult) -> Any:
        return result.reward if result.ok else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"best_state": self.best_state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_state = state.get("best_state")


class MatchObjective:
    """−the distances of a render to the target (`TargetMatch`), one after another in this
    process.  ``signals``: told one reward per signal (REINFORCE's update per signal), else their sum."""

    def __init__(self, evaluator: Callable[[], Evaluator], match: TargetMatch, *, signals: bool) -> None:
        self.evaluator, self.match, self.signals = evaluator, match, signals

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None) -> list[EvalResult]:
        ev = self.evaluator()
        look = functools.partial(ev.look, match=self.match)
        out = []
        for spec in specs:
            out.append(ev.safe(spec, look))
            if on_result:
                on_result(out[-1])
        return out

    def told(self, result: EvalResult) -> Any:
        if not result.ok:
            return math.nan
        if not self.signals:
            return result.reward
        return {k: -result.metrics[m] for k, m in self.match.metrics.items() if m in result.metrics}


class MomentsObjective:
    """Each render's mean features per signal, with the target's (`policies.moments.Moment`).
    A render that fails is tried again with the next seed (`MOMENT_TRIES` in all; each
    failure recorded), then stops the run with one line: the fit needs every choice."""

    def __init__(self, evaluator: Callable[[], Evaluator], match: TargetMatch, mixes: Mapping[str, str]) -> None:
        self.evaluator, self.match, self.mixes = evaluator, match, mixes
        self.signals = sorted(set(mixes.values()))
        self.features: dict[int, dict[str, Moment]] = {}
        self._target: dict[str, tuple[Any, Any]] = {}  # signal → the target's mean features and their standard errors

    def map(self, specs: Sequence[EvalSpec], on_result: Callable[[EvalResult], None] | None) -> list[EvalResult]:
        ev, out = self.evaluator(), []
        self.features = {}
        for spec in specs:
            for attempt in range(MOMENT_TRIES):  # a failed render: the next seed
                tried = (
                    spec
                    if not attempt
                    else dataclasses.replace(
                        spec, data_seed=derive_seed(spec.data_seed, "retry", attempt), train_seed=spec.train_seed
                    )
                )
                frames: list[simulators.Batch] = []

                def rendered(s: EvalSpec, frames: list[simulators.Batch] = frames) -> EvalResult:
                    r = EvalResult(index=s.index, params=s.params, reward=0.0)
                    frames.append(ev.frames(s, r))
                    return r

                res = ev.safe(tried, rendered)  # a failure, with its reason, in the row's errors
                if frames:
                    break
                out.append(res)  # the failed render, recorded
                if on_result:
                    on_result(res)
            else:
                raise simulators.UserError(
                    f"the warm-up's moments could not render {self._alone(spec.params)} alone with {MOMENT_TRIES} "
                    f"seeds ({' '.join(str(res.error).split())}); fix the simulator and --resume, or start a run without the moments "
                    "phase in warmup.phases"
                )
            self.features[spec.index] = {s: self._moment(frames[0], s) for s in self.signals}
            out.append(res)
            if on_result:
                on_result(res)
        return out

    def _moment(self, frames: simulators.Batch, signal: str) -> Moment:
        m = self.match
        if signal not in self._target:
            self._target[signal] = m.mean_and_se(m.target, signal)
        mean, se = m.mean_and_se(frames, signal)
        t, tse = self._target[signal]
        return Moment(mean.cpu(), t.cpu(), m.scale_free(signal), se.cpu(), tse.cpu())

    def _alone(self, psi: Mapping[str, Any] | None) -> str:
        """``name = 'choice'`` of the mix that ``psi`` renders alone."""
        for name in self.mixes:
            mix = (psi or {}).get(name) or {}
            hot = [c for c, p in mix.items() if p == 1.0]
            if len(hot) == 1:
                return f"{name} = {hot[0]!r}"
        return str(psi)

    def told(self, result: EvalResult) -> Any:
        return self.features.get(result.index, math.nan) if result.ok else math.nan


@dataclass
class Phase:
    """A strategy, the objective it is told about, and its budget: ``iterations`` of
    ``samples`` ψ, each of ``scenes`` scenes (charged scenes / M)."""

    name: str  # the metrics rows' "phase"
    search: str
    objective: Any  # an `Objective`
    iterations: int
    samples: int
    scenes: int
    seed: int  # the strategy's
    options: dict[str, Any] = field(default_factory=dict)
    moves: tuple[str, ...] | None = None  # the elements it may move (None: every one)
    holds: bool = True  # whether the mixes it moved stay for the phases after it
    data_stream: str | None = None  # None: data seeds per iteration and draw; a name: one seed for every render
    strategy: Strategy | None = None
    # with a stopper, ``iterations`` is a cap: the phase ends once its iteration means plateau
    # (the loop then cuts ``iterations`` to those run and records why in ``ended``)
    stopper: PlateauStopper | None = None
    means: list[float | None] = field(default_factory=list)
    ended: str | None = None

    def start(
        self,
        space: simulators.ParamSpace,
        init: dict[str, Any] | None,
        fixed: Sequence[str],
        parts: Mapping[str, Mapping[str, Any]] | None = None,
        steps: Mapping[str, float] | None = None,
    ) -> Strategy:
        """Build the strategy from ``init``, holding ``fixed`` and whatever it does not move;
        ``parts``: mixes held in part ({name: {"groups", "totals"}}, `policies.partial`);
        ``steps``: the phase before's spread per unit coordinate (`Strategy.spread`), the first
        step of a strategy that takes one (``steps``) and is given no step of its own (``sigma0``)."""
        outside = [n for n in space if self.moves is not None and n not in self.moves]
        held = [n for n in space if n in fixed or n in outside]
        parts = {n: v for n, v in (parts or {}).items() if n not in held}
        searched = part_space(space, parts) if parts else space
        if parts and init is not None:
            whole, init = init, {n: v for n, v in init.items() if n not in parts}
            for name, spec in parts.items():
                mix = whole.get(name) or space.validate({}, fill_defaults=True)[name]
                for k, group in searched_groups(spec):
                    init[f"{name}~{k}"] = split_groups(mix, [group], [1.0])
        options = self.options
        if steps and "steps" in strategy_options(self.search) and "sigma0" not in options:
            options = {**options, "steps": dict(steps)}
        strategy = make_strategy(
            self.search,
            searched,
            seed=self.seed,
            budget=max(self.iterations, 1) * self.samples,
            batch=self.samples,
            init=init,
            fixed=[n for n in held if n in searched],
            options=options,
        )
        self.strategy = HeldInPart(strategy, space, parts) if parts else strategy  # type: ignore[assignment]
        if hasattr(strategy, "renders"):  # a phase that renders a fixed set (the moments)
            self.samples = int(strategy.renders)
        assert self.strategy is not None
        return self.strategy

    def determined(self, space: simulators.ParamSpace) -> tuple[str, ...]:
        """The mixes (proportions, categorical elements) it moved and holds whole, which stay
        where it left them (a fit's mix only where it holds all of it, `held`)."""
        return tuple(n for n, v in self.held(space).items() if v["hold"] == "all")

    def held(self, space: simulators.ParamSpace) -> dict[str, dict[str, Any]]:
        """Each mix it moved: {"hold": "all" | "part" | "none", "why", …}; a fit's verdict
        (`policies.moments.Moments.verdict`), else held whole (``warmup.hold``)."""
        assert self.strategy is not None
        if not self.holds:
            return {}
        mixes = (simulators.Proportions, simulators.Categorical)
        verdicts = getattr(self.strategy, "verdicts", None) or {}
        how = "fit by the moments" if self.search == "moments" else f"matched to the target by {self.search}"
        # a categorical element a match moved starts the next phase at the match's choice and goes
        # on being searched (its first generation draws every choice again): a match looks, it is
        # not the reward, and its choice can be wrong where the look of two choices is alike
        # (docs/experiments.md, 2026-12-07, "The plain config")
        drawn_on = {
            "hold": "none",
            "why": f"{self.search}'s choice on the match starts the search, which draws the others too",
        }
        whole = {"hold": "all", "why": how}
        return {
            n: verdicts.get(n) or dict(drawn_on if isinstance(space[n], simulators.Categorical) else whole)
            for n in space
            if n not in self.strategy.fixed and isinstance(space[n], mixes)
        }

    @property
    def trains(self) -> bool:
        """Whether its evaluations train the task (else they render only)."""
        return isinstance(self.objective, TaskObjective)

    def plan(self) -> str:
        """What it does, for the plan line."""
        if self.search == "moments":
            return f"{self.samples} renders (mixes by moments) of {self.scenes} scenes"
        unit = "evaluations" if self.trains else "renders"
        upto = "up to " if self.stopper is not None and self.ended is None else ""
        return f"{self.search} {upto}{self.iterations} it × {self.samples} {unit} of {self.scenes} scenes"

    @property
    def evaluations(self) -> int:
        """ψ evaluated in all."""
        return self.iterations * self.samples

    def spec(self, run_seed: int, it: int, k: int, psi: dict[str, Any], common: bool) -> EvalSpec:
        """Evaluation ``k`` of iteration ``it`` (iterations counted over the whole run)."""
        if self.data_stream is not None:  # common seeds: the choices differ, the scenes not
            data = train = derive_seed(run_seed, self.data_stream)
        else:
            data = derive_seed(run_seed, "data", it, 0 if common else k)
            train = derive_seed(run_seed, "train", it, 0 if common else k)
        return EvalSpec(index=k, params=psi, n=self.scenes, data_seed=data, train_seed=train)


def _signals(config: Config, space: simulators.ParamSpace, task: Any, target: Target) -> dict[str, tuple[str, ...]]:
    """The warm-up's signals: the elements matched by how frames look and by their labels."""
    warm = config.warmup
    looks = space.element_names(space.look if warm.look is None else warm.look, "warmup.look")
    contents = space.element_names(space.content if warm.labels is None else warm.labels, "warmup.labels")
    label_field = getattr(task, "label_field", None)
    if label_field is None or getattr(target.batch, label_field, None) is None:
        contents = ()  # nothing to compare them by
    if warm.labels is None:  # elements named for the look keep it as their reward
        contents = tuple(n for n in contents if n not in looks)
    elif warm.phases and (both := sorted(set(looks) & set(contents))):
        raise simulators.UserError(f"warmup.look and warmup.labels both name {both}; an element has one reward")
    return {k: v for k, v in (("look", looks), ("labels", contents)) if v}


def build_phases(
    config: Config,
    space: simulators.ParamSpace,
    task: Any,
    target: Target,
    *,
    evaluator: Callable[[], Evaluator],
    executor: Callable[[], Executor],
) -> list[Phase]:
    """The configuration's chain: the warm-up's phases (none when there is nothing to
    match, or no search to start), then the search on the task's reward.  Every strategy is
    built once here, so that a bad search or option fails before anything is written."""
    task_objective = TaskObjective(executor, warm_start=config.warm_start)
    phases: list[Phase] = []
    signals = _signals(config, space, task, target) if config.warmup.phases and config.iterations else {}
    if signals:
        label_field = getattr(task, "label_field", None)
        settled: set[str] = set()  # mixes the moments before a phase settle
        first_search = True
        match: TargetMatch | None = None
        for i, entry in enumerate(config.warmup.phases):
            p = phase_spec(entry)
            common = {
                "iterations": p["iterations"],
                "samples": p["samples"],
                "scenes": p["scenes"],
                "search": p["search"],
                "holds": config.warmup.hold,
            }
            if p["objective"] == "moments":
                mixes = {
                    n: k
                    for k, names in signals.items()
                    for n in names
                    if isinstance(space[n], simulators.Proportions) and n not in settled
                }
                if not mixes:
                    continue  # no mix to fit
                moments = TargetMatch(
                    target.batch, label_field if "labels" in signals else None, look="look" in signals
                )
                moments.look = moments.labels = None  # the moments take means, no distances
                settled |= set(mixes)
                by_signal: dict[str, list[str]] = {}
                for n, k in mixes.items():
                    by_signal.setdefault(k, []).append(n)
                phases.append(
                    Phase(
                        name="match",
                        objective=MomentsObjective(evaluator, moments, mixes),
                        seed=derive_seed(config.seed, "moments"),
                        options={**p["options"], "signals": by_signal},
                        moves=tuple(mixes),
                        data_stream="moments",
                        **{**common, "iterations": 1},
                    )
                )
                continue
            rest = {k: [n for n in names if n not in settled] for k, names in signals.items()}
            rest = {k: v for k, v in rest.items() if v}
            if not rest:
                continue  # the moments settled everything there was
            per_signal = len(rest) > 1 or p["search"] == "reinforce"
            if per_signal and p["search"] != "reinforce":
                p["search"] = "reinforce"  # two signals always take REINFORCE, one update per signal
            objective: Any
            if p["objective"] == "task":
                objective = task_objective
            else:
                if match is None:
                    match = TargetMatch(
                        target.batch,
                        label_field if "labels" in signals else None,
                        look="look" in signals,
                        classes=config.warmup.classes,
                        distances=tuple(rest),
                    )
                objective = MatchObjective(evaluator, match, signals=per_signal)
            stopper = None
            if p["iterations"] == AUTO:  # until the match stops improving, at most a share of the run
                stopper, common["iterations"] = MATCH_STOPPER, auto_cap(config, p["samples"], p["scenes"])
            options = dict(p["options"])
            if "handover" in strategy_options(p["search"]):
                # a warm-up hands over its most recent centre: its distances keep falling, and
                # generations tied with the best would pull in centres it has since left
                options.setdefault("handover", "recent")
            if per_signal and p["objective"] != "task":
                options["signals"] = rest
            phases.append(
                Phase(
                    name="match",
                    objective=objective,
                    seed=derive_seed(config.seed, "match" if first_search else f"match-{i}"),
                    options=options,
                    moves=tuple(n for names in rest.values() for n in names),
                    stopper=stopper,
                    **common,
                )
            )
            first_search = False
    phases.append(
        Phase(
            name="task",
            search=config.search,
            objective=task_objective,
            iterations=config.iterations,
            samples=config.samples,
            scenes=config.scenes,
            seed=derive_seed(config.seed, "search"),
            options=config.options_of(config.search),
        )
    )
    held: list[str] = []
    for ph in phases[:-1]:  # built now to fail early; each is built again from its start when it starts
        ph.start(space, None, held)
        held += [n for n in ph.determined(space) if n not in held]
    if len(held) == len(space):
        raise simulators.UserError(
            f"warmup.hold holds {held}, every element there is: the search would have nothing to move"
        )
    phases[-1].start(space, None, held)
    return phases


def auto_cap(config: Config, samples: int, scenes: int) -> int:
    """The iterations of an ``auto`` phase at most: `AUTO_SHARE` of the run's budget (without one,
    of the warm-up and the search together: as many evaluations as the search), at least one."""
    search = config.iterations * config.samples
    room = config.budget * AUTO_SHARE if config.budget is not None else search * AUTO_SHARE / (1 - AUTO_SHARE)
    return max(int(room * config.scenes / (samples * scenes) + 1e-9), 1)


def from_version_2(state: dict[str, Any], phases: Sequence[Phase]) -> dict[str, Any]:
    """A version-2 checkpoint (a warm-up stage's ``match`` and ``moments`` keys beside the
    search's ``strategy``) as one list of phase states, for the phases its configuration
    gives today (`lts.config.legacy_config`)."""
    by_phase: list[bytes | None] = []
    for p in phases[:-1]:
        if p.search == "moments":
            solved = state.get("moments")
            by_phase.append(
                None if solved is None else pickle.dumps({"asks": p.samples, "solved": solved, "residual": {}})
            )
        else:
            by_phase.append(state.get("match"))
    by_phase.append(state.get("strategy"))
    # a phase is started once the checkpoint holds its state, or a later one's
    last = max((i for i, s in enumerate(by_phase) if s is not None), default=0)
    objective = {"best_state": state.get("best_state")}
    return {
        **state,
        "version": 3,
        "phases": [
            {"search": p.search, "strategy": s, "objective": objective if p is phases[-1] else None}
            for p, s in zip(phases[: last + 1], by_phase)
        ],
    }


def summary_counts(phases: Sequence[Phase], iteration: int) -> dict[str, int]:
    """``summary.json``'s count of the warm-up's iterations run (``match_iterations``)."""
    return {"match_iterations": min(sum(p.iterations for p in phases[:-1]), iteration)}
