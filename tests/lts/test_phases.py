"""The run as a chain of phases: the loop runs any phases it is given (here on a fake
objective, in-process), each phase starts where the one before ended, holding what it
determined; the budget, the plan and the checkpoint come from the phases; a third phase
is a config entry; the warm-up's old keys are one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import REPO

from lts.cli import run_cli
from lts.cli.optimize import main as optimize_main
from lts.cli.optimize import plan_line
from lts.config import load_config
from lts.evaluation import EvalResult
from lts.loop import Experiment
from lts.phases import Phase
from lts.rundir import RunDir
from simulators.errors import UserError

STAR = {"c0_x": -2.0, "c0_y": 1.0, "c1_x": 1.5, "c1_y": -1.5, "std": 1.0}


class Quadratic:
    """A fake objective: −the squared distance of ψ's centres to ψ*'s; nothing rendered."""

    def __init__(self) -> None:
        self.calls = 0

    def map(self, specs, on_result):
        self.calls += 1
        out = []
        for s in specs:
            r = EvalResult(index=s.index, params=s.params)
            r.reward = -sum((s.params[k] - v) ** 2 for k, v in STAR.items())
            out.append(r)
        return out

    def told(self, r):
        return r.reward if r.ok else math.nan

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def _experiment(path: Path, gmm_target: Path, **overrides) -> Experiment:
    cfg = load_config(
        REPO / "configs" / "gmm.yaml",
        {"target": str(gmm_target), "target_size": 60, "test_size": 60, "samples": 4, "scenes": 40,
         "iterations": 3, "final_repeats": 0, "task_options": {"steps": 5}},
        overrides=overrides,
    )  # fmt: skip
    exp = Experiment(cfg, RunDir(path).make())
    exp.start_fresh()
    return exp


def _fake_chain(exp: Experiment) -> list[Phase]:
    """Two phases on the fake objective: a random screen holding nothing, then CMA-ES."""
    return [
        Phase(name="screen", search="random", objective=Quadratic(), iterations=3, samples=8, scenes=10, seed=1,
              holds=False),
        Phase(name="fit", search="cma-mean", objective=Quadratic(), iterations=4, samples=4, scenes=20, seed=2,
              options={"sigma0": 0.1}),
    ]  # fmt: skip


def test_the_loop_runs_any_phases_each_from_where_the_one_before_ended(tmp_path, gmm_target):
    exp = _experiment(tmp_path / "run", gmm_target)
    exp.phases = _fake_chain(exp)
    exp.started = 0
    rows = [exp.step() for _ in range(exp.total_iterations)]
    assert [r["phase"] for r in rows] == ["screen"] * 3 + ["fit"] * 4
    assert [r["search"] for r in rows] == ["random"] * 3 + ["cma-mean"] * 4
    # the screen's best ψ is where CMA-ES starts
    screen, fit = exp.phases[0].strategy, exp.phases[1].strategy
    assert fit.init == screen.recommend() == rows[2]["recommended"]
    assert fit.fixed == ()  # the screen holds nothing
    # charged by what each renders: 8 × 10 and 4 × 20 scenes an iteration, against M = 40
    assert [r["evaluations"] for r in rows] == pytest.approx([2, 4, 6, 8, 10, 12, 14])
    assert exp.phases[0].objective.calls == 3 and exp.phases[1].objective.calls == 4
    dist = lambda psi: sum((psi[k] - v) ** 2 for k, v in STAR.items())  # noqa: E731
    assert dist(fit.recommend()) < dist(screen.recommend())  # the second phase went on from the first
    # the plan and the charge ask the phases
    assert [n for _, n in exp.charge(0)] == [24, 16] and [n for _, n in exp.charge(5)] == [0, 8]
    assert plan_line(exp).startswith("plan: warm-up random 3 it × 8 renders of 10 scenes (no training) → cma-mean 4")


def test_a_phase_holds_the_mixes_it_determined_for_the_next(tmp_path, gmm_target):
    exp = _experiment(tmp_path / "run", gmm_target)
    exp.phases = _fake_chain(exp)
    exp.phases[0].holds = True
    exp.started = 0
    rows = [exp.step() for _ in range(exp.total_iterations)]
    assert exp.phases[1].strategy.fixed == ("balance",)  # the gmm's one mix
    assert all(p["balance"] == rows[2]["recommended"]["balance"] for r in rows[3:] for p in r["params"])


def test_a_checkpoint_mid_chain_resumes_to_the_same_next_step(tmp_path, gmm_target):
    whole = _experiment(tmp_path / "whole", gmm_target)
    whole.phases = _fake_chain(whole)
    whole.started = 0
    rows = [whole.step() for _ in range(5)]
    part = _experiment(tmp_path / "part", gmm_target)
    part.phases = _fake_chain(part)
    part.started = 0
    for _ in range(4):  # into the second phase
        part.step()
    state = part.state_dict()
    assert [p["search"] for p in state["phases"]] == ["random", "cma-mean"]  # one list of phase states
    resumed = _experiment(tmp_path / "resumed", gmm_target)
    resumed.phases = _fake_chain(resumed)
    resumed.load_state_dict(state)
    assert resumed.step()["params"] == rows[4]["params"]


def test_a_third_phase_is_a_config_entry(tmp_path, gmm_target):
    """A random screen before the toy's warm-up, by configuration alone: three phases."""
    phases = [
        {"search": "random", "iterations": 2, "samples": 4, "scenes": 20},
        {"search": "cma-mean", "iterations": 2, "samples": 4, "scenes": 20},
    ]
    exp = _experiment(tmp_path / "run", gmm_target, **{"warmup.phases": phases, "search": "reinforce"})
    assert [(p.name, p.search, p.iterations) for p in exp.phases] == [
        ("match", "random", 2), ("match", "cma-mean", 2), ("task", "reinforce", 3)
    ]  # fmt: skip
    exp.run(final=False)
    rows = exp.run_dir.read_metrics()
    assert [r["search"] for r in rows] == ["random"] * 2 + ["cma-mean"] * 2 + ["reinforce"] * 3
    assert all(set(m) == {"mmd2_labels"} for r in rows[:4] for m in r["metrics"])  # told −MMD², nothing trained
    assert exp.phases[1].strategy.init == rows[1]["recommended"]  # the warm-up starts from the screen's ψ
    assert exp.phases[2].strategy.init == rows[3]["recommended"]  # and the search from the warm-up's
    assert rows[3]["evaluations"] == pytest.approx(4 * 4 * 20 / 40)
    assert plan_line(exp).startswith(
        "plan: warm-up random 2 it × 4 renders of 20 scenes, then cma-mean 2 it × 4 renders of 20 scenes (no training)"
    )


def test_the_warm_ups_old_keys_name_the_new_form_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match=r"config key 'match_iterations' is now part of the warmup: section"):
        load_config(None, {"match_iterations": 3})
    assert run_cli(optimize_main, ["--set", "match_hold=false", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config key 'match_hold' is now part of the warmup: section (warmup.hold)")
    assert "\n" not in err and not (tmp_path / "r").exists()
    with pytest.raises(UserError, match=r"warmup.phases\[0\]: unknown key 'iteratons' \(did you mean 'iterations'"):
        load_config(None, {"warmup": {"phases": [{"iteratons": 3}]}})
    with pytest.raises(UserError, match="search moments is told mean features"):
        load_config(None, {"search": "moments"})


def test_warmup_iterations_puts_the_rest_after_the_moments():
    cfg = load_config(REPO / "configs" / "counting.yaml")
    assert [p["iterations"] for p in cfg.warmup.with_iterations(4)] == [1, 3]
    assert cfg.warmup.with_iterations(0) == []
    one = load_config(None, {"warmup": {"phases": [{"search": "reinforce", "iterations": 80}]}})
    assert [p["iterations"] for p in one.warmup.with_iterations(5)] == [5]


def test_the_loop_never_names_the_warm_up():
    text = (REPO / "lts" / "loop.py").read_text().lower()
    for word in ("warm-up", "warmup", "moments", "match_", "matching", "matchstage", "mmd"):
        assert word not in text, word
