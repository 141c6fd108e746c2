"""Parameter spaces: the named elements of ψ that a simulator exposes.

Four kinds of element (docs/design.md): ``Continuous(low, high)``, ``Integer(low, high)``,
``Categorical(choices)`` (one choice for the whole dataset) and ``Proportions(choices)``
(a probability vector from which the simulator draws each scene's attribute).

A ψ is a plain dict, exactly as in a target file: a number for continuous and integer
elements, a choice for a categorical one, a mapping choice → probability for proportions.
`ParamSpace.validate` checks one and returns it normalised; every message names the
element, what is allowed and the value given.

Two Gymnasium views of a space: `ParamSpace.to_gym`, a ``Dict`` whose entries are ψ's
own values, and `ParamSpace.normalized_gym`, one flat ``Box(-1, 1)`` (what RL libraries
expect of an action) that `ParamSpace.from_normalized` maps onto ψ: numbers linearly,
integers in equal bins, a categorical choice by argmax, proportions by stick-breaking.
The zero vector maps to the midpoint of each number and to uniform proportions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParamError, UnknownNameError, UserError, did_you_mean

__all__ = [
    "Continuous",
    "Integer",
    "Categorical",
    "Proportions",
    "Element",
    "ParamSpace",
    "TargetSpec",
    "load_target_file",
    "PROB_TOL",
]

PROB_TOL = 1e-3  # how far a probability vector may sum from 1 before it is refused


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParamError(f"parameter {name!r}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ParamError(f"parameter {name!r}: expected a finite number, got {value!r}")
    return v


def _unit(a: np.ndarray) -> np.ndarray:
    """A slice of a normalised action as float64, clipped to [-1, 1] (NaN is refused)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if np.isnan(a).any():
        raise ParamError(f"normalised action: expected numbers in [-1, 1], got {a.tolist()}")
    return np.clip(a, -1.0, 1.0)


@dataclass(frozen=True)
class Continuous:
    """A real number in ``[low, high]``."""

    low: float
    high: float
    name: str = ""
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Continuous {self.name!r}: low {self.low} must be below high {self.high}")

    kind = "continuous"

    def validate(self, value: Any) -> float:
        v = _as_number(self.name, value)
        if not self.low <= v <= self.high:
            raise ParamError(
                f"parameter {self.name!r}: expected a number in [{self.low:g}, {self.high:g}], got {value!r}"
            )
        return v

    def default(self) -> float:
        return (self.low + self.high) / 2.0

    def uniform(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def to_gym(self) -> Any:
        from gymnasium import spaces

        return spaces.Box(low=np.float32(self.low), high=np.float32(self.high), shape=(1,), dtype=np.float32)

    def from_gym(self, action: Any) -> float:
        return float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], self.low, self.high))

    def to_gym_value(self, value: float) -> Any:
        return np.array([value], dtype=np.float32)

    @property
    def normalized_size(self) -> int:
        return 1

    def from_normalized(self, a: np.ndarray) -> float:
        """-1 → ``low``, 1 → ``high``, linear between."""
        return float(self.low + (_unit(a)[0] + 1.0) / 2.0 * (self.high - self.low))

    def to_normalized(self, value: float) -> np.ndarray:
        return np.array([2.0 * (value - self.low) / (self.high - self.low) - 1.0])

    def describe(self) -> str:
        return f"continuous in [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Integer:
    """An integer in ``[low, high]`` (both included)."""

    low: int
    high: int
    name: str = ""
    doc: str = ""

    kind = "integer"

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Integer {self.name!r}: low {self.low} must be below high {self.high}")

    def validate(self, value: Any) -> int:
        v = _as_number(self.name, value)
        if v != round(v):
            raise ParamError(f"parameter {self.name!r}: expected an integer, got {value!r}")
        if not self.low <= v <= self.high:
            raise ParamError(
                f"parameter {self.name!r}: expected an integer in [{self.low}, {self.high}], got {value!r}"
            )
        return int(round(v))

    def default(self) -> int:
        return (self.low + self.high) // 2

    def uniform(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def to_gym(self) -> Any:
        from gymnasium import spaces

        return spaces.Discrete(self.high - self.low + 1, start=self.low)

    def from_gym(self, action: Any) -> int:
        return int(np.clip(int(action), self.low, self.high))

    def to_gym_value(self, value: int) -> Any:
        return np.int64(value)

    @property
    def normalized_size(self) -> int:
        return 1

    def from_normalized(self, a: np.ndarray) -> int:
        """[-1, 1] cut into ``high - low + 1`` equal bins, one per integer (-1 → ``low``, 1 → ``high``)."""
        n = self.high - self.low + 1
        return self.low + min(int((_unit(a)[0] + 1.0) / 2.0 * n), n - 1)

    def to_normalized(self, value: int) -> np.ndarray:
        n = self.high - self.low + 1
        return np.array([(2.0 * (value - self.low) + 1.0) / n - 1.0])  # the middle of its bin

    def describe(self) -> str:
        return f"integer in [{self.low}, {self.high}]"


def _check_choices(kind: str, name: str, choices: Sequence[str]) -> tuple[str, ...]:
    choices = tuple(str(c) for c in choices)
    if len(choices) < 1 or len(set(choices)) != len(choices):
        raise ValueError(f"{kind} {name!r}: choices must be distinct and non-empty, got {choices}")
    return choices


@dataclass(frozen=True)
class Categorical:
    """One choice, the same for the whole dataset (a town, a camera rig…)."""

    choices: tuple[str, ...]
    name: str = ""
    doc: str = ""

    kind = "categorical"

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", _check_choices("Categorical", self.name, self.choices))

    def validate(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.choices:
            raise ParamError(
                f"parameter {self.name!r}: expected one of {list(self.choices)}, got {value!r}"
                + did_you_mean(str(value), self.choices)
            )
        return value

    def default(self) -> str:
        return self.choices[0]

    def uniform(self, rng: np.random.Generator) -> str:
        return self.choices[int(rng.integers(len(self.choices)))]

    def to_gym(self) -> Any:
        from gymnasium import spaces

        return spaces.Discrete(len(self.choices))

    def from_gym(self, action: Any) -> str:
        return self.choices[int(np.clip(int(action), 0, len(self.choices) - 1))]

    def to_gym_value(self, value: str) -> Any:
        return np.int64(self.choices.index(value))

    @property
    def normalized_size(self) -> int:
        return len(self.choices) if len(self.choices) > 1 else 0

    def from_normalized(self, a: np.ndarray) -> str:
        """The choice with the largest score (the first of equal ones): a score per choice
        orders no choice before another, as one number cut into bins would."""
        if self.normalized_size == 0:
            return self.choices[0]
        return self.choices[int(np.argmax(_unit(a)))]

    def to_normalized(self, value: str) -> np.ndarray:
        a = np.full(self.normalized_size, -1.0)
        if a.size:
            a[self.choices.index(value)] = 1.0
        return a

    def describe(self) -> str:
        return f"one of {list(self.choices)}"


@dataclass(frozen=True)
class Proportions:
    """A probability vector over choices; each scene draws its attribute from it."""

    choices: tuple[str, ...]
    name: str = ""
    doc: str = ""

    kind = "proportions"

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", _check_choices("Proportions", self.name, self.choices))

    def validate(self, value: Any) -> dict[str, float]:
        """Accept a mapping choice → probability (missing choices are 0) or a list in
        the order of ``choices``; return the mapping with every choice, summing to 1."""
        if isinstance(value, Mapping):
            unknown = [k for k in value if k not in self.choices]
            if unknown:
                raise ParamError(
                    f"parameter {self.name!r}: unknown choice {unknown[0]!r}, expected some of "
                    f"{list(self.choices)}" + did_you_mean(str(unknown[0]), self.choices)
                )
            probs = [_as_number(f"{self.name}.{c}", value.get(c, 0.0)) for c in self.choices]
        elif isinstance(value, (list, tuple, np.ndarray)):
            if len(value) != len(self.choices):
                raise ParamError(
                    f"parameter {self.name!r}: expected {len(self.choices)} probabilities "
                    f"(for {list(self.choices)}), got {len(value)}"
                )
            probs = [_as_number(f"{self.name}[{i}]", v) for i, v in enumerate(value)]
        else:
            raise ParamError(
                f"parameter {self.name!r}: expected a mapping of {list(self.choices)} to probabilities, got {value!r}"
            )
        neg = [(c, p) for c, p in zip(self.choices, probs) if p < 0]
        if neg:
            raise ParamError(f"parameter {self.name!r}: probabilities must be >= 0, got {neg[0][0]}={neg[0][1]:g}")
        total = sum(probs)
        if abs(total - 1.0) > PROB_TOL:
            raise ParamError(f"parameter {self.name!r}: probabilities must sum to 1, got a sum of {total:.6g}")
        if abs(total - 1.0) > 1e-12:  # keep a valid ψ bit-identical (validate is idempotent)
            probs = [p / total for p in probs]
        return dict(zip(self.choices, probs))

    def default(self) -> dict[str, float]:
        return {c: 1.0 / len(self.choices) for c in self.choices}

    def uniform(self, rng: np.random.Generator) -> dict[str, float]:
        # Uniform on the simplex.
        p = rng.dirichlet(np.ones(len(self.choices)))
        return {c: float(x) for c, x in zip(self.choices, p)}

    def to_gym(self) -> Any:
        from gymnasium import spaces

        return spaces.Box(low=0.0, high=1.0, shape=(len(self.choices),), dtype=np.float32)

    def from_gym(self, action: Any) -> dict[str, float]:
        """Project any point of the Box onto the simplex (an RL agent's raw action)."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), 0.0, None)
        total = a.sum()
        a = a / total if total > 0 else np.full(len(self.choices), 1.0 / len(self.choices))
        return {c: float(x) for c, x in zip(self.choices, a)}

    def to_gym_value(self, value: Mapping[str, float]) -> Any:
        return np.array([value[c] for c in self.choices], dtype=np.float32)

    @property
    def normalized_size(self) -> int:
        return len(self.choices) - 1

    def _even_breaks(self) -> np.ndarray:
        # the fraction of what is left that each choice but the last takes under uniform proportions
        n = len(self.choices)
        return 1.0 / (n - np.arange(n - 1, dtype=np.float64))

    def from_normalized(self, a: np.ndarray) -> dict[str, float]:
        """Stick-breaking: choice i takes a fraction of what choices before it left, -1 → none,
        0 → the uniform share, 1 → all (piecewise linear), and the last choice takes the rest.
        All -1 is the last choice alone; 1 at i after -1s is choice i alone; zeros are uniform."""
        c = self._even_breaks()
        u = _unit(a)
        frac = np.where(u < 0, c * (1.0 + u), c + (1.0 - c) * u)
        probs, rest = [], 1.0
        for f in frac:
            probs.append(rest * f)
            rest -= probs[-1]
        probs.append(max(rest, 0.0))
        return {ch: float(p) for ch, p in zip(self.choices, probs)}

    def to_normalized(self, value: Mapping[str, float]) -> np.ndarray:
        c = self._even_breaks()
        a, rest = np.zeros(len(c)), 1.0
        for i, ch in enumerate(self.choices[:-1]):
            # nothing left to share: any fraction gives the same ψ; take the uniform one
            f = min(value[ch] / rest, 1.0) if rest > 1e-12 else c[i]
            a[i] = f / c[i] - 1.0 if f < c[i] else (f - c[i]) / (1.0 - c[i])
            rest -= value[ch]
        return a

    def vector(self, value: Mapping[str, float]) -> np.ndarray:
        """The probabilities in the order of ``choices``."""
        return np.array([value[c] for c in self.choices], dtype=np.float64)

    def describe(self) -> str:
        return f"probabilities over {list(self.choices)} summing to 1"


Element = Continuous | Integer | Categorical | Proportions


class ParamSpace(Mapping[str, Element]):
    """An ordered, named collection of elements.  Build it with keyword arguments:

    >>> space = ParamSpace(std=Continuous(0.1, 3.0), balance=Proportions(("c0", "c1")))
    """

    def __init__(self, elements: Mapping[str, Element] | None = None, /, **kw: Element) -> None:
        items = dict(elements or {})
        items.update(kw)
        if not items:
            raise ValueError("a parameter space needs at least one element")
        self._elements: dict[str, Element] = {}
        for name, el in items.items():
            # Elements know their own name so that their messages can say it.
            if el.name != name:
                el = type(el)(**{**el.__dict__, "name": name})
            self._elements[name] = el
        self.priority: tuple[str, ...] = ()
        self.look: tuple[str, ...] = ()
        self.content: tuple[str, ...] = ()

    def prioritise(self, *names: str) -> ParamSpace:
        """Name the elements to serve first when draws are laid out (returns the space).

        With orthogonal draws (`policies.Policy.sample`) a block of ``P`` draws has
        ``P - 1`` sign columns; the elements that get none share the last one, so their
        gradients see that element's effect on the reward, amplified.  Naming the
        elements whose draws move the reward most, and leaving last the ones whose
        effect is small, keeps that blur small.  The rest follow in space order.
        """
        if len(set(names)) != len(names):
            raise ValueError(f"priority names an element twice: {list(names)}")
        self.priority = self.column_names(names, "priority")
        return self

    def looks(self, *names: str) -> ParamSpace:
        """Name the elements that change how whole frames look (returns the space): the
        loop's distribution-matching warm-up (``warmup.phases``) moves these by default."""
        self.look = self.element_names(names, "look")
        return self

    def contents(self, *names: str) -> ParamSpace:
        """Name the elements that change what frames contain, so their labels (returns the
        space): the warm-up moves these by how close the rendered labels are to the target's."""
        self.content = self.element_names(names, "contents")
        return self

    def element_names(self, names: Sequence[str], what: str) -> tuple[str, ...]:
        """``names`` checked as elements of this space: known, each once."""
        for i, name in enumerate(names):
            if name not in self._elements:
                raise UnknownNameError(
                    f"{what}: unknown parameter {name!r}; this simulator has {list(self._elements)}"
                    + did_you_mean(name, self._elements)
                )
            if name in names[:i]:
                raise ParamError(f"{what} names {name!r} twice: {list(names)}")
        return tuple(names)

    def column_names(self, names: Sequence[str], what: str) -> tuple[str, ...]:
        """``names`` checked as elements to give orthogonal columns first: known, each
        once, none categorical (one choice per dataset has no direction to move in)."""
        for name in self.element_names(names, what):
            if isinstance(self._elements[name], Categorical):
                raise ParamError(
                    f"{what}: {name!r} is categorical (one choice per dataset) and takes no column; "
                    "name continuous, integer or proportions elements"
                )
        return tuple(names)

    # Mapping protocol
    def __getitem__(self, name: str) -> Element:
        try:
            return self._elements[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown parameter {name!r}; known: {list(self._elements)}" + did_you_mean(name, self._elements)
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._elements)

    def __len__(self) -> int:
        return len(self._elements)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v.describe()}" for k, v in self._elements.items())
        return f"ParamSpace({inner})"

    def validate(self, params: Mapping[str, Any], *, fill_defaults: bool = False) -> dict[str, Any]:
        """Check ψ and return it normalised (proportions as full mappings summing to 1).

        With ``fill_defaults`` a missing element takes its default (midpoint, first
        choice, uniform proportions); otherwise a missing element is an error.
        """
        if not isinstance(params, Mapping):
            raise ParamError(f"parameters: expected a mapping of name to value, got {type(params).__name__}")
        unknown = [k for k in params if k not in self._elements]
        if unknown:
            k = unknown[0]
            raise ParamError(
                f"unknown parameter {k!r}; this simulator has {list(self._elements)}" + did_you_mean(k, self._elements)
            )
        out: dict[str, Any] = {}
        for name, el in self._elements.items():
            if name in params:
                out[name] = el.validate(params[name])
            elif fill_defaults:
                out[name] = el.default()
            else:
                raise ParamError(f"parameter {name!r} is missing ({el.describe()})")
        return out

    def default(self) -> dict[str, Any]:
        return {name: el.default() for name, el in self._elements.items()}

    def sample(self, seed: int | np.random.Generator | None = None) -> dict[str, Any]:
        """A ψ drawn uniformly from the space (proportions uniformly on the simplex)."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return {name: el.uniform(rng) for name, el in self._elements.items()}

    def to_gym(self) -> Any:
        """The space as a Gymnasium ``Dict`` space."""
        from gymnasium import spaces

        return spaces.Dict({name: el.to_gym() for name, el in self._elements.items()})

    def from_gym(self, action: Mapping[str, Any]) -> dict[str, Any]:
        """A valid ψ from an element of ``to_gym()`` (proportions projected onto the simplex)."""
        return {name: el.from_gym(action[name]) for name, el in self._elements.items()}

    def to_gym_value(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {name: el.to_gym_value(params[name]) for name, el in self._elements.items()}

    @property
    def normalized_size(self) -> int:
        """The length of a normalised action (`normalized_gym`)."""
        return sum(el.normalized_size for el in self._elements.values())

    def normalized_gym(self) -> Any:
        """The space as one flat ``Box(-1, 1)``, the elements' slices in space order
        (`from_normalized` says what each slice means)."""
        from gymnasium import spaces

        return spaces.Box(low=-1.0, high=1.0, shape=(self.normalized_size,), dtype=np.float32)

    def from_normalized(self, action: Any) -> dict[str, Any]:
        """A valid ψ from any vector of `normalized_size` numbers (clipped to [-1, 1]): a
        number maps linearly from its range, an integer by equal bins, a categorical element
        takes the choice of the largest of its scores (one per choice) and proportions are
        stick-broken from ``len(choices) - 1`` numbers.  Zeros give each number's midpoint
        and uniform proportions."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.size != self.normalized_size:
            raise ParamError(f"normalised action: expected {self.normalized_size} numbers, got {a.size}")
        out: dict[str, Any] = {}
        start = 0
        for name, el in self._elements.items():
            out[name] = el.from_normalized(a[start : start + el.normalized_size])
            start += el.normalized_size
        return out

    def to_normalized(self, params: Mapping[str, Any]) -> np.ndarray:
        """A normalised action that `from_normalized` maps back to ``params`` (validated
        first; an integer lands mid-bin, a categorical choice at +1 among -1s)."""
        psi = self.validate(params)
        parts = [el.to_normalized(psi[name]) for name, el in self._elements.items()]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


@dataclass(frozen=True)
class TargetSpec:
    """A target parameter file: ``{"simulator": NAME, "params": {NAME: value}}``."""

    params: dict[str, Any]
    simulator: str | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def read_yaml(path: str | Path, what: str) -> Any:
    """A YAML file's content; a missing, unreadable or malformed file is a `UserError`
    that names ``what`` it is and the path."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {str(p)!r} does not exist" if not p.exists() else f"{what} {str(p)!r} is not a file")
    try:
        return yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {str(p)!r} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise UserError(f"{what} {str(p)!r} is not valid YAML: {first}") from None


def load_target_file(path: str | Path) -> TargetSpec:
    """Read a target parameter file (YAML or JSON).  Values are checked against a
    simulator's space later, by `ParamSpace.validate`."""
    p = Path(path)
    data = read_yaml(p, "target file")
    if not isinstance(data, Mapping) or "params" not in data:
        raise UserError(f"target file {str(p)!r}: expected a mapping with 'params' (and 'simulator'), got {data!r:.80}")
    params = data["params"]
    if not isinstance(params, Mapping):
        raise UserError(f"target file {str(p)!r}: 'params' must be a mapping of parameter name to value")
    sim = data.get("simulator")
    extra = {k: v for k, v in data.items() if k not in ("params", "simulator")}
    return TargetSpec(params=dict(params), simulator=None if sim is None else str(sim), path=str(p), extra=extra)
