"""The strategies lts adds for fewer evaluations, cma-mean (the default) and ppo, beyond what
every strategy must do (test_strategies.py): a tight budget on a noisy quadratic, PPO's weights."""

import numpy as np
import pytest
import torch

from policies import Policy, reinforce_update
from policies.coords import unit_vector
from policies.distribution import PolicySample
from policies.ppo import clipped_surrogate
from policies.registry import make_strategy
from simulators import Continuous, ParamSpace, Proportions

SPACE = ParamSpace(a=Continuous(-1, 1), b=Continuous(0, 10), c=Continuous(-5, 5), mix=Proportions(("p", "q", "r")))
OPTIMUM = {"a": 0.5, "b": 2.0, "c": -1.0, "mix": {"p": 0.6, "q": 0.3, "r": 0.1}}
NEW = ("cma-mean", "ppo")


def _reward(psi):
    return -float(np.sum((unit_vector(SPACE, psi) - unit_vector(SPACE, OPTIMUM)) ** 2))


def _run(strategy, iterations, rng, k=8):
    for _ in range(iterations):
        ps = strategy.ask(k)
        shared = rng.normal(0, 0.05)  # a batch's common luck (common random numbers)
        strategy.tell(ps, [_reward(p) + shared + rng.normal(0, 0.005) for p in ps])


@pytest.mark.parametrize("name", NEW)
def test_improves_on_a_noisy_quadratic_within_a_small_budget(name):
    finals = []
    for seed in range(3):
        s = make_strategy(name, SPACE, seed=seed, budget=160, batch=8)
        start = _reward(s.recommend())
        _run(s, 20, np.random.default_rng(seed))
        finals.append(_reward(s.recommend()))
        assert finals[-1] > start
    assert start == pytest.approx(-0.306, abs=0.03)  # the space's default ψ
    assert np.median(finals) > -0.03  # a tenth of the start's distance² or better


def test_ppo_on_policy_weights_are_one_and_the_update_is_reinforce():
    space = ParamSpace(x=Continuous(0, 1), mix=Proportions(("a", "b", "c")))
    pol = Policy(space, init_std=0.2)
    s = pol.sample(8, torch.Generator().manual_seed(0))
    r = torch.linspace(-1, 1, 8, dtype=torch.float64)
    old = pol.log_prob(s).detach()
    assert torch.equal((pol.log_prob(s) - old).exp(), torch.ones(8, dtype=torch.float64))
    pol.zero_grad()
    clipped_surrogate(pol.log_prob(s), old, r - 0.1, 0.2).backward()
    ppo_grads = [p.grad.clone() for p in pol.parameters() if p.grad is not None]
    # one plain REINFORCE step with the same advantages, from the same policy
    ref = Policy(space, init_std=0.2)
    ref.load_state_dict(pol.state_dict())
    opt = torch.optim.SGD(ref.parameters(), lr=0.0)
    reinforce_update(ref, opt, PolicySample(raw=s.raw, params=s.params), r, 0.1, max_grad_norm=None)
    ref_grads = [p.grad for p in ref.parameters() if p.grad is not None]
    assert len(ppo_grads) == len(ref_grads) == 4
    for g, h in zip(ppo_grads, ref_grads):
        assert torch.allclose(g, h)


def test_ppo_clip_stops_the_gradient_beyond_the_trust_ratio():
    lp = torch.tensor([0.5, -0.5], requires_grad=True)
    clipped_surrogate(lp, torch.zeros(2), torch.tensor([1.0, -1.0]), 0.2).backward()
    # ρ = e^0.5 > 1.2 with A > 0 and ρ = e^-0.5 < 0.8 with A < 0: both clipped
    assert lp.grad.tolist() == [0.0, 0.0]


def test_cma_mean_hands_over_the_average_over_the_generations_it_cannot_tell_apart():
    space = ParamSpace(x=Continuous(0.0, 1.0), y=Continuous(0.0, 1.0))

    def run(reward):
        s = make_strategy("cma-mean", space, seed=0, batch=4, init={"x": 0.5, "y": 0.5})
        rng = np.random.default_rng(0)
        for g in range(8):
            ps = s.ask(4)
            s.tell(ps, [reward(g, p) + 0.01 * rng.standard_normal() for p in ps])
        return s

    flat = run(lambda g, p: 0.0)  # the reward cannot tell any ψ apart: every generation is tied
    tied = flat.handover_generations()
    assert len(tied) >= 6 and tied[-4:] == [4, 5, 6, 7]  # all but a generation or two the noise sank
    assert flat.recommend()["x"] == pytest.approx(float(np.mean([flat.means[i][0] for i in tied])))
    climbing = run(lambda g, p: float(g))  # every generation better than the last
    assert climbing.handover_generations() == [4, 5, 6, 7]  # the last `average`, as before
    assert climbing.recommend()["x"] == pytest.approx(float(np.mean([m[0] for m in climbing.means[-4:]])))
    jump = run(lambda g, p: 0.0 if g else -1.0)  # a bad first generation, then a plateau
    assert jump.handover_generations() == list(range(1, 8))
