"""Every search strategy behind the ask/tell interface: it improves on its noisy objective,
round-trips its state mid-run, holds fixed elements, takes failures as failures.

Every strategy is told a reward (−a noisy quadratic), except the moments, which are told
mean features: here features linear in the mix, as a render's mean features are."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from policies import STRATEGIES, make_strategy, point_json
from policies.moments import Moment
from simulators.errors import UserError
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

SPACE = ParamSpace(
    a=Continuous(0.0, 1.0),
    b=Continuous(-2.0, 2.0),
    mix=Proportions(("x", "y", "z")),
    town=Categorical(("p", "q")),
)
BEST = {"a": 0.8, "b": -1.0, "mix": {"x": 0.6, "y": 0.3, "z": 0.1}, "town": "q"}


def loss(p: dict) -> float:
    """Distance to BEST: a quadratic in the unit coordinates (0 at the optimum)."""
    mix = sum((p["mix"][c] - BEST["mix"][c]) ** 2 for c in "xyz")
    return (p["a"] - 0.8) ** 2 + ((p["b"] + 1.0) / 4) ** 2 + mix + 0.05 * (p["town"] != "q")


# every element kind, each free, the optimum away from every default (the categorical's is
# its first choice; the integer's and continuous's the middle; the mix's uniform)
KINDS = ParamSpace(
    a=Continuous(0.0, 1.0),
    n=Integer(0, 6),
    mix=Proportions(("x", "y", "z")),
    town=Categorical(("p", "q", "r")),
)
KINDS_BEST = {"a": 0.85, "n": 5, "mix": {"x": 0.6, "y": 0.3, "z": 0.1}, "town": "r"}


def distances(p: dict) -> dict[str, float]:
    """Each element's distance to KINDS_BEST in its unit coordinates."""
    return {
        "a": abs(p["a"] - KINDS_BEST["a"]),
        "n": abs(p["n"] - KINDS_BEST["n"]) / 6,
        "mix": math.sqrt(sum((p["mix"][c] - KINDS_BEST["mix"][c]) ** 2 for c in "xyz")),
        "town": float(p["town"] != KINDS_BEST["town"]),
    }


# the moments' features of a ψ: a fixed linear map of the mix (5 features of a 3-way mix)
FEATURES = torch.tensor(np.random.default_rng(7).uniform(0, 1, (5, 3)))


def _features(p: dict) -> torch.Tensor:
    return FEATURES @ torch.tensor([p["mix"][c] for c in "xyz"], dtype=torch.float64)


def mix_loss(p: dict) -> float:
    """The moments' part of `loss`: they determine the mix, and nothing else."""
    return sum((p["mix"][c] - BEST["mix"][c]) ** 2 for c in "xyz")


def _told(name: str, ps: list[dict], rng: np.random.Generator) -> list:
    """What ``name`` is told of each ψ: −loss with noise, or for the moments noisy mean features."""
    if name == "moments":
        target = _features(BEST)
        return [{"features": Moment(_features(p) + 0.01 * torch.tensor(rng.standard_normal(5)), target)} for p in ps]
    return [-loss(p) + 0.01 * rng.standard_normal() for p in ps]


def _loss(name: str):
    return mix_loss if name == "moments" else loss


def _needs(name: str) -> None:
    if name in ("tpe", "cmaes", "gp"):
        pytest.importorskip("optuna")
    if name == "cmaes":
        pytest.importorskip("cmaes")


def _run(s, iterations: int, rng: np.random.Generator, k: int = 8) -> None:
    for _ in range(iterations):
        ps = s.ask(k)
        s.tell(ps, _told(s.name, ps, rng))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_strategy_improves_on_a_noisy_quadratic(name):
    _needs(name)
    budget = 48 if name == "gp" else 96
    s = make_strategy(name, SPACE, seed=0, budget=budget, batch=8)
    start = _loss(name)(s.recommend())
    _run(s, budget // 8, np.random.default_rng(1))
    end = _loss(name)(s.recommend())
    assert end < 0.35 * start, (name, start, end)
    desc = s.describe()
    assert desc["strategy"] == name and set(desc["params"]) == set(SPACE)
    assert sum(desc["params"]["mix"]["mean"]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "gp" else n for n in STRATEGIES]
)  # GP: half a minute of model fits
def test_every_element_kind_moves_toward_the_optimum(name):
    """A free element of each kind (continuous, integer, proportions, categorical) ends closer
    to its optimum than it started, or the strategy names it in ``unmoved`` (docs/design.md:
    every strategy searches every element kind it is given, or says so)."""
    _needs(name)
    budget = 48 if name == "gp" else 96
    s = make_strategy(name, KINDS, seed=0, budget=budget, batch=8)
    start = distances(s.recommend())
    if name == "moments":  # told mean features, linear in the mix (FEATURES), not a reward
        target = _features(KINDS_BEST)
        for _ in range(budget // 8):
            ps = s.ask(8)
            s.tell(ps, [{"features": Moment(_features(p), target)} for p in ps])
    else:
        _tell_kinds(s, budget // 8)
    end = distances(s.recommend())
    unmoved = s.unmoved()
    assert set(unmoved) <= set(KINDS) and s.describe().get("unmoved", {}) == unmoved
    for el in KINDS:
        assert el in unmoved or end[el] < start[el], (name, el, start, end)
    assert end["town"] == 0.0 or "town" in unmoved, (name, end)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_state_dict_round_trips_mid_run_to_identical_next_asks(name):
    _needs(name)
    a = make_strategy(name, SPACE, seed=3, budget=64, batch=4)
    _run(a, 3, np.random.default_rng(0), k=4)
    b = make_strategy(name, SPACE, seed=3, budget=64, batch=4)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert a.recommend() == b.recommend()
    assert a.ask(4) == b.ask(4)
    # and the same seed alone gives the same run
    c, d = (make_strategy(name, SPACE, seed=5, budget=64, batch=4) for _ in range(2))
    _run(c, 2, np.random.default_rng(0), k=4)
    _run(d, 2, np.random.default_rng(0), k=4)
    assert c.ask(4) == d.ask(4) and c.recommend() == d.recommend()


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fixed_elements_stay_at_init_and_failures_are_not_rewards(name):
    _needs(name)
    init = {**BEST, "a": 0.1, "mix": {"x": 0.2, "y": 0.2, "z": 0.6}}
    fixed = ["a", "town"] if name == "moments" else ["mix", "town"]  # the moments move the mix alone
    s = make_strategy(name, SPACE, seed=0, budget=32, batch=4, init=init, fixed=fixed)
    rng = np.random.default_rng(0)
    for _ in range(4):
        ps = s.ask(4)
        assert all(p[n] == pytest.approx(init[n]) for p in ps for n in fixed)
        # a failure reported with a huge ψ-independent value would pull a search there: NaN must not
        s.tell(ps, [math.nan if i == 0 else v for i, v in enumerate(_told(name, ps, rng))])
    rec = s.recommend()
    assert all(rec[n] == pytest.approx(init[n]) for n in fixed)
    assert _loss(name)(rec) < _loss(name)(init)


def test_unknown_options_and_bad_values_are_user_errors():
    with pytest.raises(UserError, match=r"search reinforce: unknown option 'lrr'.*did you mean 'lr'"):
        make_strategy("reinforce", SPACE, seed=0, options={"lrr": 1})
    with pytest.raises(UserError, match="unknown search 'tpee'.*did you mean 'tpe'"):
        make_strategy("tpee", SPACE, seed=0)
    with pytest.raises(UserError, match="every element is fixed"):
        make_strategy("reinforce", SPACE, seed=0, fixed=list(SPACE))


def test_point_json_is_the_policy_json_form():
    spec = point_json(SPACE, BEST)["params"]
    assert spec["a"] == {"kind": "continuous", "low": 0.0, "high": 1.0, "mean": 0.8, "std": 0.0}
    assert spec["mix"]["mean"] == [0.6, 0.3, 0.1] and spec["town"]["probs"] == [0.0, 1.0]


def _tell_kinds(s, generations: int, seed: int = 1) -> None:
    """Generations of 8 on KINDS; the categorical weighs as much as the rest together."""
    rng = np.random.default_rng(seed)
    for _ in range(generations):
        ps = s.ask(8)
        s.tell(
            ps,
            [
                -sum(d**2 for d in distances(p).values()) - 0.3 * distances(p)["town"] + 0.01 * rng.standard_normal()
                for p in ps
            ],
        )


@pytest.mark.parametrize("mixed", ["catcma", "split"])
def test_cma_mean_engines_hand_over_the_most_probable_choice_and_resume_exactly(mixed):
    s = make_strategy("cma-mean", KINDS, seed=2, budget=96, batch=8, options={"mixed": mixed})
    assert s.describe()["params"]["town"]["probs"] == pytest.approx([1 / 3] * 3)  # no init: no choice favoured
    _tell_kinds(s, 6)
    desc = s.describe()
    probs = desc["params"]["town"]["probs"]
    assert desc["engine"] == mixed and sum(probs) == pytest.approx(1.0)
    assert s.recommend()["town"] == KINDS["town"].choices[int(np.argmax(probs))] == "r"
    assert max(probs) < 1.0  # a distribution, not the point one-hot of a point strategy
    b = make_strategy("cma-mean", KINDS, seed=2, budget=96, batch=8, options={"mixed": mixed})
    b.load_state_dict(copy.deepcopy(s.state_dict()))
    assert b.recommend() == s.recommend() and b.ask(8) == s.ask(8)


def test_cma_mean_without_categorical_or_integer_elements_is_the_numeric_cma_es():
    numeric = ParamSpace(a=Continuous(0.0, 1.0), mix=Proportions(("x", "y", "z")))
    for mixed in ("catcma", "split"):
        s = make_strategy("cma-mean", numeric, seed=0, batch=8, options={"mixed": mixed})
        assert s.engine == "cma" and "engine" not in s.describe()
    # integers alone: "split" keeps the numeric CMA-ES (rounding), "catcma" gives them a margin
    ints = ParamSpace(a=Continuous(0.0, 1.0), n=Integer(0, 6))
    assert make_strategy("cma-mean", ints, seed=0, options={"mixed": "split"}).engine == "cma"
    assert make_strategy("cma-mean", ints, seed=0).engine == "catcma"
    with pytest.raises(UserError, match="search cma-mean: mixed must be 'catcma' or 'split', got 'both'"):
        make_strategy("cma-mean", KINDS, seed=0, options={"mixed": "both"})


@pytest.mark.parametrize("name", ["reinforce", "ppo", "cma-mean"])
def test_a_categorical_starts_leaning_toward_init(name):
    probs = lambda s: s.describe()["params"]["town"]["probs"]  # noqa: E731
    init = {**KINDS_BEST, "town": "q"}
    assert probs(make_strategy(name, KINDS, seed=0, batch=8, init=init)) == pytest.approx([1 / 6, 2 / 3, 1 / 6])
    assert probs(make_strategy(name, KINDS, seed=0, batch=8)) == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("mixed", ["catcma", "split"])
def test_cma_mean_s_first_generation_draws_every_choice_whatever_the_start_favours(mixed):
    init = {**KINDS_BEST, "town": "p"}
    space = ParamSpace(**{**dict(KINDS.items()), "kind": Categorical(tuple("abcde"))})
    counts = []
    for seed in range(5):
        s = make_strategy("cma-mean", space, seed=seed, batch=8, init={**init, "kind": "a"}, options={"mixed": mixed})
        ps = s.ask(8)
        counts.append([sum(p["town"] == c for p in ps) for c in "pqr"])
        assert {p["kind"] for p in ps} == set("abcde")  # five choices in a generation of eight
        # the draws are the engine's own otherwise, and they are told back as drawn
        s.tell(ps, [-float(p["town"] != "q") for p in ps])
        assert s.describe()["params"]["town"]["probs"][1] > 1 / 6  # q, the best drawn, gained
    assert all(sorted(c) == [2, 3, 3] for c in counts)  # 8 draws over 3 choices, as evenly as can be


def test_optuna_cma_es_says_it_samples_categoricals_at_random():
    _needs("cmaes")
    s = make_strategy("cmaes", KINDS, seed=0, batch=8)
    assert list(s.unmoved()) == ["town"] and "independently" in s.unmoved()["town"]
    assert s.describe()["unmoved"] == s.unmoved()
    assert "unmoved" not in make_strategy("tpe", KINDS, seed=0).describe()
