"""The moments hold only what the target determines: choices its features cannot tell
apart are held as one total (`HeldInPart`), a fit no mix reproduces (a domain gap) is not
held, and a clean fit is held whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import make_strategy
from policies.moments import Moment, Moments, separable_groups, split_groups
from policies.partial import HeldInPart, part_space
from simulators.space import Continuous, ParamSpace, Proportions

TYPES = ("sedan", "hatchback", "suv", "van", "truck")
SPACE = ParamSpace({"car_type": Proportions(TYPES), "cars": Continuous(0.0, 10.0)})
TRUTH = {"sedan": 0.25, "hatchback": 0.05, "suv": 0.05, "van": 0.05, "truck": 0.60}


def _folded(mix: dict[str, float]) -> torch.Tensor:
    """Mean car and truck counts per scene (5 cars): the labels fold four types into car."""
    return torch.tensor([5.0 * (1 - mix["truck"]), 5.0 * mix["truck"]], dtype=torch.float64)


def _fit(features, target, se=0.05, target_se=0.03, rounds=1, seed=0, scale=True) -> Moments:
    """The moments told each choice alone: ``features(mix)`` with noise of ``se``."""
    rng = np.random.default_rng(seed)
    s = Moments(SPACE, seed=0)
    for _ in range(rounds):
        ps = s.ask(s.renders)
        told = []
        for p in ps:
            f = features(p["car_type"])
            noisy = f + se * torch.tensor(rng.standard_normal(len(f)))
            told.append({"labels": Moment(noisy, target, scale, torch.full_like(f, se), torch.full_like(f, target_se))})
        s.tell(ps, told)
    return s


def test_separable_groups_joins_choices_within_their_noise():
    cols = torch.tensor([[5.0, 5.1, 4.9, 5.05, 0.0], [0.0, 0.02, -0.01, 0.0, 5.0]], dtype=torch.float64)
    assert separable_groups(cols, torch.full_like(cols, 0.05)) == [[0, 1, 2, 3], [4]]
    assert separable_groups(cols, torch.full_like(cols, 0.001)) == [[0], [1], [2], [3], [4]]
    assert separable_groups(cols, None) == [[0], [1], [2], [3], [4]]  # no standard errors: equal columns only


def test_folded_labels_hold_the_truck_share_and_leave_the_car_types():
    s = _fit(_folded, _folded(TRUTH))
    v = s.verdicts["car_type"]
    assert v["hold"] == "part"
    assert v["groups"] == [["sedan", "hatchback", "suv", "van"], ["truck"]]
    assert v["totals"][1] == pytest.approx(0.60, abs=0.03)
    rec = s.recommend()["car_type"]
    assert rec["truck"] == pytest.approx(0.60, abs=0.03)
    # the four car types split as init splits them (evenly), not as the fit's arbitrary split
    assert [rec[c] for c in TYPES[:4]] == pytest.approx([rec["sedan"]] * 4)
    assert "cannot tell apart sedan, hatchback, suv, van" in v["why"]


def test_a_fit_no_mix_reproduces_is_not_held():
    columns = torch.eye(5, dtype=torch.float64)  # each type its own feature: all told apart
    target = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6], dtype=torch.float64) + 0.3  # off the simplex
    mix = lambda m: columns @ torch.tensor([m[c] for c in TYPES], dtype=torch.float64)  # noqa: E731
    s = _fit(mix, target, se=0.01, target_se=0.01, scale=False)
    v = s.verdicts["car_type"]
    assert v["hold"] == "none" and "domain gap" in v["why"] and v["residual_se"] > 2
    assert s.recommend()["car_type"] == SPACE.default()["car_type"]  # left where it started


def test_a_clean_fit_is_held_whole():
    columns = torch.eye(5, dtype=torch.float64)
    mix = lambda m: columns @ torch.tensor([m[c] for c in TYPES], dtype=torch.float64)  # noqa: E731
    s = _fit(mix, mix(TRUTH), se=0.01, target_se=0.01, rounds=4, scale=False)
    v = s.verdicts["car_type"]
    assert v["hold"] == "all" and v["residual_se"] < 2
    assert s.recommend()["car_type"]["sedan"] == pytest.approx(0.25, abs=0.03)
    # the verdicts survive a checkpoint
    t = Moments(SPACE, seed=0)
    t.load_state_dict(s.state_dict())
    assert t.verdicts == s.verdicts and t.recommend() == s.recommend()


def test_split_groups_keeps_each_total():
    init = {"sedan": 0.4, "hatchback": 0.1, "suv": 0.0, "van": 0.0, "truck": 0.5}
    out = split_groups(init, [["sedan", "hatchback"], ["suv", "van"], ["truck"]], [0.3, 0.2, 0.5])
    assert out == pytest.approx({"sedan": 0.24, "hatchback": 0.06, "suv": 0.1, "van": 0.1, "truck": 0.5})


def test_a_search_held_in_part_keeps_the_totals_and_moves_the_split():
    parts = {"car_type": {"groups": [["sedan", "hatchback", "suv", "van"], ["truck"]], "totals": [0.4, 0.6]}}
    inner_space = part_space(SPACE, parts)
    assert list(inner_space) == ["car_type~0", "cars"]
    s = HeldInPart(make_strategy("cma-mean", inner_space, seed=0, batch=8, budget=160), SPACE, parts)
    best = {"sedan": 0.3, "hatchback": 0.1, "suv": 0.0, "van": 0.0}

    def reward(p):
        return -sum((p["car_type"][c] - b) ** 2 for c, b in best.items()) - 0.001 * (p["cars"] - 6) ** 2

    for _ in range(20):
        ps = s.ask(8)
        for p in ps:
            assert SPACE.validate(p) == p and p["car_type"]["truck"] == pytest.approx(0.6)
        s.tell(ps[::-1], [reward(p) for p in ps[::-1]])  # in any order
    rec = s.recommend()
    assert rec["car_type"]["truck"] == pytest.approx(0.6)
    assert (
        rec["car_type"]["sedan"] > 0.2 and rec["car_type"]["suv"] < 0.05
    )  # the split moved toward 0.3 / 0 (start 0.1)
    d = s.describe()
    assert set(d["params"]) == set(SPACE) and d["strategy"] == "cma-mean"
    assert sum(d["params"]["car_type"]["mean"]) == pytest.approx(1.0)
    assert d["params"]["car_type"]["held_totals"][1] == {"choices": ["truck"], "total": 0.6}
    with pytest.raises(ValueError):
        s.tell([{**ps[0], "cars": 1.2345}], [0.0])


def test_a_group_held_at_nothing_is_not_searched_and_asks_stay_distinct():
    parts = {"car_type": {"groups": [["sedan", "hatchback"], ["suv", "van"], ["truck"]], "totals": [0.0, 0.4, 0.6]}}
    inner_space = part_space(SPACE, parts)
    assert list(inner_space) == ["car_type~1", "cars"]  # no split to search in a group at 0
    s = HeldInPart(make_strategy("cma-mean", inner_space, seed=0, batch=8, budget=16), SPACE, parts)
    ps = s.ask(8)
    assert all(p["car_type"]["sedan"] == 0.0 and p["car_type"]["truck"] == pytest.approx(0.6) for p in ps)
    s.tell(ps, [float(i) for i in range(8)])  # each ψ told back to the inner ψ it came from


def test_a_phase_held_in_part_starts_from_the_split_it_is_handed():
    from lts.phases import Phase

    parts = {"car_type": {"groups": [["sedan", "hatchback", "suv", "van"], ["truck"]], "totals": [0.4, 0.6]}}
    init = {**SPACE.default(), "car_type": {"sedan": 0.3, "hatchback": 0.1, "suv": 0.0, "van": 0.0, "truck": 0.6}}
    ph = Phase(name="task", search="cma-mean", objective=None, iterations=2, samples=4, scenes=8, seed=0)
    s = ph.start(SPACE, init, (), parts)
    assert s.recommend()["car_type"] == pytest.approx(
        init["car_type"], abs=0.01
    )  # cma-mean keeps off the bounds by 1e-3


def test_moments_pad_features_a_target_lacks():
    """Labelled points of a class the target has none of: the render has one column more."""
    s = Moments(ParamSpace({"mix": Proportions(("a", "b", "c"))}), seed=0)
    ps = s.ask(s.renders)
    target = torch.tensor([0.5, 0.5], dtype=torch.float64)
    told = [{"labels": Moment(torch.eye(3, dtype=torch.float64)[i][: 2 if i < 2 else 3], target)} for i in range(3)]
    s.tell(ps, told)
    assert s.recommend()["mix"] == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.0}, abs=1e-3)
    assert s.verdicts["mix"]["hold"] == "all"
