import math

import numpy as np
import pytest
import torch

from policies import Policy, column_order, orthogonal_signs
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
    assert js["x"] == {
        "kind": "continuous",
        "low": -4.0,
        "high": 4.0,
        "mean": pytest.approx(0.0),
        "std": pytest.approx(0.8),
    }  # 0.1 of the range by default
    assert js["n"]["kind"] == "integer" and js["n"]["mean"] == pytest.approx(5.0)
    assert js["town"] == {"kind": "categorical", "choices": ["a", "b", "c"], "probs": pytest.approx([1 / 3] * 3)}
    assert js["w"]["kind"] == "proportions" and sum(js["w"]["mean"]) == pytest.approx(1.0)


def test_init_starts_at_a_given_psi(space):
    pol = Policy(space, init={"x": 3.0, "w": {"p": 0.7, "q": 0.2, "r": 0.1}}, init_std=0.01, init_logit_std=0.01)
    m = pol.mean()
    assert m["x"] == pytest.approx(3.0, abs=1e-6)
    assert m["w"]["p"] == pytest.approx(0.7, abs=0.01)


# -- the orthogonal design ---------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_orthogonal_signs_are_balanced_and_orthogonal(size):
    h = orthogonal_signs(size)
    assert h.shape == (size, size - 1)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(h.sum(0), torch.zeros(size - 1, dtype=h.dtype))
    assert torch.equal(h.T @ h, size * torch.eye(size - 1, dtype=h.dtype))
    with pytest.raises(ValueError, match="power of two"):
        orthogonal_signs(6)


@pytest.mark.parametrize("size", [2, 4, 8, 16, 32, 64])
def test_column_order_keeps_two_element_terms_off_other_columns(size):
    """Every column once, the generating ones (Sylvester 1, 2, 4, …) first; in blocks of
    eight or more no column among the first ``size / 2`` is the product of two others
    there (checked on the signs themselves).  A block of four has no such room."""
    h, order = orthogonal_signs(size), column_order(size)
    assert sorted(order) == list(range(size - 1))
    gen = [(1 << j) - 1 for j in range(size.bit_length() - 1)]
    assert order[: len(gen)] == gen
    first = h[:, order[: max(size // 2, 3 if size == 4 else 1)]]
    products = {tuple((first[:, a] * first[:, b]).tolist()) for a in range(first.shape[1]) for b in range(a)}
    clashes = [c for c in range(first.shape[1]) if tuple(first[:, c].tolist()) in products]
    assert clashes == ([0, 1, 2] if size == 4 else [])


def test_two_element_rewards_give_other_elements_no_gradient_in_blocks_of_eight():
    """With four Gaussian elements and K = 8, a reward of the weather and car mixes
    together (their interaction included, softmax and all) gives the cars' and road's
    logits and locations exactly zero gradient: neither holds the product of the
    weather's and the car's columns."""
    space = ParamSpace(
        weather=Proportions(("a", "b", "c", "d")),
        car=Proportions(("s", "h", "u", "v", "k")),
        cars=Continuous(0.0, 16.0),
        road=Continuous(20.0, 120.0),
    )
    pol = Policy(space)
    for seed in range(5):
        s = pol.sample(8, torch.Generator().manual_seed(seed), design="orthogonal")
        r = torch.tensor(
            [10.0 * p["weather"]["a"] * p["car"]["s"] + p["car"]["u"] for p in s.params], dtype=torch.float64
        )
        pol.zero_grad()
        (-((r - r.mean()) * pol.log_prob(s)).mean()).backward()
        assert pol.loc["cars"].grad.abs().max() < 1e-12 and pol.loc["road"].grad.abs().max() < 1e-12
        assert pol.loc["weather"].grad.abs().max() > 1e-4 and pol.loc["car"].grad.abs().max() > 1e-4


def _street_like() -> ParamSpace:
    return ParamSpace(
        weather=Proportions(("a", "b", "c", "d")),
        junction=Proportions(("x", "t", "l")),
        car=Proportions(("s", "h", "u", "v", "k")),
        cars=Continuous(0.0, 16.0),
        road=Continuous(20.0, 120.0),
    )


def test_orthogonal_draws_keep_the_policy_distribution():
    pol = Policy(_street_like(), init_std=0.1, init_logit_std=0.5)
    with torch.no_grad():
        pol.loc["car"].copy_(torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0]))
    s = pol.sample(20000, torch.Generator().manual_seed(3), design="orthogonal")
    for name in pol.loc:
        raw = s.raw[name]
        assert raw.mean(0) == pytest.approx(pol.loc[name].detach(), abs=1e-9)  # each block is balanced
        assert raw.std(0) == pytest.approx(pol.log_std[name].exp().detach(), rel=0.06)  # 2500+ directions each


def _check_columns(d: dict, order: list, k: int) -> None:
    """Every element balanced around its mean; two elements orthogonal exactly when they
    hold different columns: the i-th of ``order`` holds column min(i, k − 2)."""
    col = {n: min(i, k - 2) for i, n in enumerate(order)}
    for n in d:
        assert d[n].sum(0).abs().max() < 1e-12, n
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            cross = (d[a].T @ d[b]).abs().max()
            assert (cross < 1e-12) == (col[a] != col[b]), (a, b)


@pytest.mark.parametrize("k", [4, 8])
def test_orthogonal_draws_cancel_between_elements(k):
    pol = Policy(_street_like())
    s = pol.sample(k, torch.Generator().manual_seed(0), design="orthogonal")
    d = {n: s.raw[n] - pol.loc[n].detach() for n in pol.loc}
    # k = 4 has three columns for five elements: the first three get one each, and cars
    # and road share the last (car's).  k = 8 gives all five a column.
    _check_columns(d, list(d), k)


def test_named_columns_go_first():
    """``columns`` hands the K = 4 block's three columns to the named elements (road and
    cars, last in space order, and car); weather and junction share the last one."""
    pol = Policy(_street_like())
    s = pol.sample(4, torch.Generator().manual_seed(0), design="orthogonal", columns=("road", "car", "cars"))
    d = {n: s.raw[n] - pol.loc[n].detach() for n in pol.loc}
    _check_columns(d, ["road", "car", "cars", "weather", "junction"], 4)
    # names the policy has no Gaussian for are passed over; no names is space order
    twice = pol.sample(4, torch.Generator().manual_seed(0), design="orthogonal", columns=("road", "road"))
    assert all(twice.raw[n].shape[0] == 4 for n in pol.loc)  # a repeated name counts once
    same = pol.sample(4, torch.Generator().manual_seed(0), design="orthogonal", columns=("nope",))
    plain = pol.sample(4, torch.Generator().manual_seed(0), design="orthogonal")
    assert all(torch.equal(same.raw[n], plain.raw[n]) for n in pol.loc)


def test_space_priority_is_checked():
    space = _street_like()
    assert space.priority == ()
    assert space.prioritise("cars", "car") is space and space.priority == ("cars", "car")
    with pytest.raises(KeyError, match="did you mean 'road'"):
        space.prioritise("roaf")
    with pytest.raises(ValueError, match="names an element twice"):
        space.prioritise("car", "car")


def test_orthogonal_design_removes_other_elements_from_the_gradient():
    """A reward of the car mix alone (linear and quadratic terms) gives the weather's
    logits exactly zero REINFORCE gradient with the orthogonal design, and a noisy
    non-zero one with independent draws."""
    pol = Policy(_street_like())

    def reward(p):
        return 3.0 * p["car"]["s"] - 5.0 * p["car"]["u"] ** 2

    def weather_grad(design, seed):
        s = pol.sample(8, torch.Generator().manual_seed(seed), design=design)
        r = torch.tensor([reward(p) for p in s.params], dtype=torch.float64)
        pol.zero_grad()
        (-((r - r.mean()) * pol.log_prob(s)).mean()).backward()
        return pol.loc["weather"].grad.abs().max().item(), pol.loc["car"].grad.abs().max().item()

    orth = [weather_grad("orthogonal", seed) for seed in range(20)]
    ind = [weather_grad("independent", seed) for seed in range(20)]
    assert max(w for w, _ in orth) < 1e-6  # cross terms up to second order cancel: only higher orders remain
    assert min(c for _, c in orth) > 1e-3  # the car mix still gets its gradient
    assert np.mean([w for w, _ in ind]) > 0.05


def test_design_is_reproducible_and_checked():
    pol = Policy(_street_like())
    a = pol.sample(6, torch.Generator().manual_seed(9), design="orthogonal").params
    b = pol.sample(6, torch.Generator().manual_seed(9), design="orthogonal").params
    assert a == b and len(a) == 6
    for k in (1, 3, 5, 7, 12):  # blocks of powers of two (12 = 8 + 4); a block of one is a plain draw
        s = pol.sample(k, torch.Generator().manual_seed(k), design="orthogonal")
        assert len(s) == k and all(v.shape[0] == k for v in s.raw.values())
        if k == 12:
            weather = s.raw["weather"] - pol.loc["weather"].detach()
            assert weather[:8].sum(0).abs().max() < 1e-12 and weather[8:].sum(0).abs().max() < 1e-12
    with pytest.raises(ValueError, match="design must be one of"):
        pol.sample(4, design="latin")
