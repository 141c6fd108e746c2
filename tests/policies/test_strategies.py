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
from simulators.space import Categorical, Continuous, ParamSpace, Proportions

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
