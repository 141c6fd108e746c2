"""A warm-up phase of ``iterations: auto`` ends when its iteration means plateau (its
iterations a cap); what it leaves of a budget goes to the search; a resumed run keeps its end;
the next phase's first step is the phase's spread where it moved an element, the default elsewhere."""

from __future__ import annotations

import pytest
from test_phases import Quadratic, _experiment

from lts.config import load_config
from lts.phases import MATCH_STOPPER, Phase, auto_cap
from policies.cma_mean import SIGMA0

CENTRES = ("c0_x", "c0_y", "c1_x", "c1_y", "std")


class Climb(Quadratic):
    """A fake match: the iteration means rise for six iterations, then stay within ±0.05
    (its calls counted, told and checkpointed as `Quadratic`'s)."""

    def map(self, specs, on_result):
        from lts.evaluation import EvalResult

        value = min(self.calls, 6) + 0.05 * (-1) ** self.calls
        self.calls += 1
        return [EvalResult(index=s.index, params=s.params, reward=value) for s in specs]


def _chain(exp, budget: float) -> None:
    import dataclasses

    exp.phases = [
        Phase(name="match", search="cma-mean", objective=Climb(), iterations=30, samples=4, scenes=10, seed=1,
              moves=CENTRES, stopper=MATCH_STOPPER),
        Phase(name="task", search="cma-mean", objective=Quadratic(), iterations=4, samples=4, scenes=20, seed=2),
    ]  # fmt: skip
    exp.started, exp.stopper = 0, None
    exp.config = dataclasses.replace(exp.config, budget=budget, scenes=40)
    exp.fit_budget(budget)


def test_an_auto_phase_ends_at_its_plateau_and_the_search_gets_the_rest(tmp_path, gmm_target):
    exp = _experiment(tmp_path / "run", gmm_target)
    _chain(exp, budget=40.0)  # the match: up to 30 iterations charged 4 × 10 / 40 = 1 each
    assert exp.phases[1].iterations == 5  # (40 − 30) / (4 × 20 / 40) before the match ran
    rows = []
    while exp.iteration < exp.total_iterations:
        rows.append(exp.step())
    match, task = exp.phases
    # the means climb for six iterations, then the trend over the last half (at least 8) is flat at 14
    assert match.iterations == 14 and match.ended.startswith("plateau: the reward's trend over the last 8")
    assert [r["phase"] for r in rows] == ["match"] * 14 + ["task"] * 13
    assert [r["ended"] for r in rows[:14]] == [None] * 13 + [match.ended]
    assert task.iterations == 13  # (40 − 14) / 2: the renders the match did not spend
    assert rows[-1]["evaluations"] == pytest.approx(40.0)


def test_the_search_starts_with_the_warm_ups_spread(tmp_path, gmm_target):
    exp = _experiment(tmp_path / "run", gmm_target)
    _chain(exp, budget=40.0)
    for _ in range(14):
        exp.step()
    match = exp.phases[0].strategy
    spread = match.spread()
    assert set(spread) == set(CENTRES) and all(0 < v < SIGMA0 for v in spread.values())
    task = exp.searcher  # the search, started from the match's hand-over, before it is told anything
    assert task.init == match.recommend()
    assert task.spread() == pytest.approx({**spread, "balance:c0": SIGMA0})  # balance: the match did not move it


def test_a_resumed_run_keeps_where_the_auto_phase_ended(tmp_path, gmm_target):
    whole = _experiment(tmp_path / "whole", gmm_target)
    _chain(whole, budget=40.0)
    rows = [whole.step() for _ in range(16)]
    part = _experiment(tmp_path / "part", gmm_target)
    _chain(part, budget=40.0)
    for _ in range(15):
        part.step()
    state = part.state_dict()
    resumed = _experiment(tmp_path / "resumed", gmm_target)
    _chain(resumed, budget=40.0)
    resumed.load_state_dict(state)
    assert [p.iterations for p in resumed.phases] == [14, 13]
    assert resumed.phases[0].ended == part.phases[0].ended
    assert resumed.step()["params"] == rows[15]["params"]


def test_auto_is_the_default_phase_length_with_a_cap_of_half_the_run():
    cfg = load_config(None, {"sim": "gmm", "task": "classify", "budget": 160, "samples": 8, "scenes": 400})
    assert [p["search"] for p in cfg.warmup.phases] == ["moments", "cma-mean"]
    assert [p["iterations"] for p in cfg.warmup.phases] == [1, "auto"]
    assert auto_cap(cfg, 8, 32) == 125  # 80 evaluations of 8 renders × 32 / 400 = 0.64 each
    no_budget = load_config(None, {"iterations": 16, "samples": 4, "scenes": 256})
    assert auto_cap(no_budget, 8, 32) == 64  # as many evaluations as the search's 16 × 4


def test_the_match_stoppers_window_is_the_last_half_of_its_iterations():
    rising = [float(i) for i in range(20)]
    assert MATCH_STOPPER.reason(rising[:7]) is None  # fewer than 8 means: too early to tell
    assert MATCH_STOPPER.reason(rising) is None
    bent = rising[:12] + [12.0 + 0.1 * (-1) ** i for i in range(12)]  # 24 means, flat over the last 12
    assert "last 12 iterations" in MATCH_STOPPER.reason(bent)
    assert (
        MATCH_STOPPER.reason(rising[:12] + [12.0 + 0.1 * (-1) ** i for i in range(6)]) is None
    )  # still climbing over 9
