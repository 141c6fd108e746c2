import pytest
import torch

from policies import Policy, moving_average, reinforce_update
from simulators import Categorical, Continuous, ParamSpace, Proportions


def _bandit(psi):
    # Best at x = 0.7 (of [0, 1]), all mass on "b", and arm "z".
    return -((psi["x"] - 0.7) ** 2) * 4 + psi["mix"]["b"] + (0.5 if psi["arm"] == "z" else 0.0)


def test_reinforce_converges_on_a_bandit_with_a_known_optimum():
    space = ParamSpace(x=Continuous(0.0, 1.0), mix=Proportions(("a", "b", "c")), arm=Categorical(("y", "z")))
    pol = Policy(space, init_std=0.2)
    opt = torch.optim.Adam(pol.param_groups(lr=0.03, logit_lr=0.1))
    gen = torch.Generator().manual_seed(0)
    baseline = None
    for _ in range(300):
        s = pol.sample(8, gen)
        r = torch.tensor([_bandit(p) for p in s.params], dtype=torch.float64)
        b = float(r.mean()) if baseline is None else baseline
        reinforce_update(pol, opt, s, r, b, entropy_coef=0.0, max_grad_norm=1.0)
        baseline = moving_average(baseline, r, 0.7)
    m = pol.mean()
    assert abs(m["x"] - 0.7) < 0.05
    assert m["mix"]["b"] > 0.8
    assert m["arm"] == "z"
    assert torch.softmax(pol.logits["arm"], -1)[1] > 0.9


def test_zero_advantage_leaves_the_policy_still():
    space = ParamSpace(x=Continuous(0.0, 1.0))
    pol = Policy(space)
    opt = torch.optim.Adam(pol.param_groups(lr=0.1, logit_lr=0.1))
    before = {k: v.clone() for k, v in pol.state_dict().items()}
    s = pol.sample(4, torch.Generator().manual_seed(0))
    stats = reinforce_update(pol, opt, s, torch.full((4,), 0.5, dtype=torch.float64), 0.5)
    assert stats.advantage_mean == 0.0
    for k, v in pol.state_dict().items():
        assert torch.equal(v, before[k])


def test_moving_average():
    r = torch.tensor([1.0, 3.0])
    assert moving_average(None, r, 0.7) == 2.0
    assert moving_average(1.0, r, 0.7) == pytest.approx(0.7 * 1.0 + 0.3 * 2.0)


def test_entropy_bonus_widens_the_policy():
    space = ParamSpace(x=Continuous(0.0, 1.0))
    pol = Policy(space, init_std=0.1)
    opt = torch.optim.Adam(pol.param_groups(lr=0.05, logit_lr=0.05))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = pol.sample(4, gen)
        reinforce_update(pol, opt, s, torch.zeros(4, dtype=torch.float64), 0.0, entropy_coef=1.0)
    assert float(pol.log_std["x"].exp()) > 0.1
