import math

import numpy as np
import pytest
import torch

from policies import Policy
from simulators import Categorical, Continuous, Integer, ParamSpace, Proportions


@pytest.fixture
def space() -> ParamSpace:
    return ParamSpace(
        x=Continuous(-4.0, 4.0),
        n=Integer(0, 10),
        town=Categorical(("a", "b", "c")),
        w=Proportions(("p", "q", "r")),
    )


def test_sampling_matches_analytic_moments(space):
    pol = Policy(space, init_std=0.05, init_logit_std=0.5)
    with torch.no_grad():
        pol.loc["x"].fill_(0.75)  # ψ mean = -4 + 0.75 * 8 = 2
        pol.logits["town"].copy_(torch.tensor([0.0, math.log(2.0), math.log(3.0)]))
    s = pol.sample(20000, torch.Generator().manual_seed(0))
    xs = np.array([p["x"] for p in s.params])
    assert xs.mean() == pytest.approx(2.0, abs=0.01)
    assert xs.std() == pytest.approx(0.05 * 8, rel=0.03)
    towns = np.array([p["town"] for p in s.params])
    assert [(towns == c).mean() for c in "abc"] == pytest.approx([1 / 6, 2 / 6, 3 / 6], abs=0.01)
    # Symmetric logits: each proportion has mean 1/3; mean() agrees with the draws.
    w = np.array([[p["w"][c] for c in "pqr"] for p in s.params])
    assert w.mean(0) == pytest.approx([1 / 3] * 3, abs=0.005)
    assert pol.mean()["w"] == pytest.approx({"p": 1 / 3, "q": 1 / 3, "r": 1 / 3}, abs=2e-3)
    assert all(0 <= p["n"] <= 10 and isinstance(p["n"], int) for p in s.params)


def test_mean_is_the_expected_psi_even_when_clipped(space):
    pol = Policy(space, init_std=0.3)
    with torch.no_grad():
        pol.loc["x"].fill_(0.9)
        pol.loc["w"].copy_(torch.tensor([1.0, 0.0, -1.0]))
    s = pol.sample(40000, torch.Generator().manual_seed(1))
    xs = np.array([p["x"] for p in s.params])
    m = pol.mean()
    assert m["x"] == pytest.approx(xs.mean(), abs=0.02)
    w = np.array([[p["w"][c] for c in "pqr"] for p in s.params]).mean(0)
    assert [m["w"][c] for c in "pqr"] == pytest.approx(w, abs=0.01)
    assert m["town"] in ("a", "b", "c")


def test_log_prob_is_consistent_with_sampling(space):
    pol = Policy(space, init_std=0.1, init_logit_std=0.4)
    s = pol.sample(50000, torch.Generator().manual_seed(2))
    lp = pol.log_prob(s).detach()
    # E[log p(x)] under the policy's own draws is minus its entropy.
    assert float(lp.mean()) == pytest.approx(-pol.entropy().item(), abs=0.02)
    # And matches the closed-form Gaussian density for one element.
    x = s.raw["x"][:5, 0]
    loc, std = 0.5, 0.1
    manual = -0.5 * ((x - loc) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
    one = Policy(ParamSpace(x=Continuous(-4.0, 4.0)), init_std=0.1)
    assert one.log_prob({"x": s.raw["x"][:5]}).detach() == pytest.approx(manual, abs=1e-9)


def test_same_generator_seed_same_draws(space):
    pol = Policy(space)
    a = pol.sample(4, torch.Generator().manual_seed(9)).params
    b = pol.sample(4, torch.Generator().manual_seed(9)).params
    assert a == b


def test_policy_json_has_the_contract_shape(space):
    js = Policy(space).to_json()["params"]
    assert js["x"] == {"kind": "continuous", "low": -4.0, "high": 4.0, "mean": pytest.approx(0.0), "std": 2.0}
    assert js["n"]["kind"] == "integer" and js["n"]["mean"] == pytest.approx(5.0)
    assert js["town"] == {"kind": "categorical", "choices": ["a", "b", "c"], "probs": pytest.approx([1 / 3] * 3)}
    assert js["w"]["kind"] == "proportions" and sum(js["w"]["mean"]) == pytest.approx(1.0)


def test_init_starts_at_a_given_psi(space):
    pol = Policy(space, init={"x": 3.0, "w": {"p": 0.7, "q": 0.2, "r": 0.1}}, init_std=0.01, init_logit_std=0.01)
    m = pol.mean()
    assert m["x"] == pytest.approx(3.0, abs=1e-6)
    assert m["w"]["p"] == pytest.approx(0.7, abs=0.01)
