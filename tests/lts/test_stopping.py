"""The stopper: fires on a flat objective with known noise, not on one that still improves;
a stopped run records why and what it saved, and a resumed run stops where an uninterrupted
one does. Budgets in evaluations and in wall-clock time."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lts.optimize import main as run
from lts.stopping import WINDOW, PlateauStopper, parse_duration, trend_t

HERE = Path(__file__).resolve().parent


def first_stop(means: list[float], stopper: PlateauStopper) -> int | None:
    """The iteration (1-based count of means) after which the stopper fires, or None."""
    for i in range(1, len(means) + 1):
        if stopper.reason(means[:i]) is not None:
            return i
    return None


def test_trend_t_measures_a_slope_in_standard_errors():
    assert trend_t([1.0, 2.0, 3.0, 4.0]) == math.inf
    assert trend_t([4.0, 3.0, 2.0, 1.0]) == -math.inf
    assert trend_t([1.0, 1.0, 1.0]) == -math.inf  # flat: nothing to gain
    y = [0.0, 1.5, 1.5, 3.0]
    t = np.arange(4) - 1.5
    slope = float((t * (np.array(y) - np.mean(y))).sum() / (t * t).sum())
    resid = np.array(y) - np.mean(y) - slope * t
    se = math.sqrt((resid**2).sum() / 2 / (t * t).sum())
    assert trend_t(y) == pytest.approx(slope / se)
    with pytest.raises(ValueError):
        trend_t([1.0, 2.0])


def test_fires_on_a_flat_objective_with_known_noise():
    stopper = PlateauStopper()
    stops = []
    for seed in range(200):
        means = list(1.0 + 0.05 * np.random.default_rng(seed).standard_normal(20))
        stops.append(first_stop(means, stopper))
    assert all(s is None or s >= WINDOW for s in stops)  # never before a window of iterations
    fired = [s for s in stops if s is not None]
    assert len(fired) >= 198  # flat: (nearly) always stops within 20 iterations …
    assert np.median(fired) == WINDOW  # … and mostly at the first chance


def test_does_not_fire_on_an_objective_that_still_improves():
    stopper = PlateauStopper()
    fired = 0
    for seed in range(200):
        noise = 0.05 * np.random.default_rng(seed).standard_normal(20)
        means = list(0.1 * np.arange(20) + noise)  # climbs by two noise sds per iteration
        fired += first_stop(means, stopper) is not None
    # none of 200 runs measured stops (a climb of one sd per iteration is stopped on about
    # 3 runs of 4: the window of 4 trades that for stopping early on plateaus)
    assert fired <= 2


def test_failed_iterations_are_left_out_and_the_reason_names_the_trend():
    stopper = PlateauStopper()
    assert stopper.reason([1.0, None, 1.0, None, 1.0]) is None  # three finite means: no window yet
    reason = stopper.reason([1.0, 0.9, None, 1.0, 0.95])
    assert reason is not None and reason.startswith("plateau") and f"last {WINDOW} iterations" in reason


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), (2, 2.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "-1m", "0", "5d"])
def test_bad_durations_name_the_text(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def flat_args(out: Path, *extra: str) -> list[str]:
    return [
        "--sim", "flat_sim:FlatSim", "--task", "classify", "--target", str(HERE / "flat_target.yaml"),
        "--out", str(out), "--iterations", "12", "--samples", "4", "--scenes", "60", "--quiet",
        "--set", "target_size=200", "--set", "test_size=100", "--set", "final_repeats=1",
        "--set", "task_options.steps=25", *extra,
    ]  # fmt: skip


def rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def flat_sim_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_a_run_on_a_flat_objective_stops_and_says_why(tmp_path, flat_sim_path, capsys):
    out = tmp_path / "run"
    assert run(flat_args(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    done = summary["iterations"]
    assert WINDOW <= done < 12
    assert summary["stopped"].startswith("plateau")
    assert summary["evaluations_saved"] == (12 - done) * 4
    assert summary["evaluations"] == done * 4
    last = rows(out)[-1]
    assert last["stopped"] == summary["stopped"] and all(r["stopped"] is None for r in rows(out)[:-1])
    assert "search stopped early, " in capsys.readouterr().out

    full = tmp_path / "full"
    assert run(flat_args(full, "--no-stop")) == 0
    summary = json.loads((full / "summary.json").read_text())
    assert summary["iterations"] == 12 and summary["stopped"] is None and summary["evaluations_saved"] == 0


def test_a_resumed_run_stops_at_the_same_iteration(tmp_path, flat_sim_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(flat_args(full)) == 0
    stopped_at = json.loads((full / "summary.json").read_text())["iterations"]
    args = flat_args(part)
    args[args.index("--iterations") + 1] = "2"  # cut short, as by a kill after iteration 2
    assert run(args) == 0
    assert run(["--resume", str(part), "--iterations", "12", "--quiet"]) == 0
    assert json.loads((part / "summary.json").read_text())["iterations"] == stopped_at
    assert (full / "policy.json").read_text() == (part / "policy.json").read_text()


def test_an_evaluation_budget_sets_the_iterations(tmp_path, flat_sim_path):
    out = tmp_path / "run"
    assert run(flat_args(out, "--budget", "10", "--no-stop")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2 and summary["evaluations"] == 8  # 2 iterations of 4 fit in 10


def test_a_budget_below_one_iteration_is_a_user_error(tmp_path, flat_sim_path, capsys):
    from lts.cli import run_cli

    assert run_cli(run, flat_args(tmp_path / "run", "--budget", "3")) == 2
    assert "budget 3 does not cover" in capsys.readouterr().err


def test_a_time_budget_spent_before_the_search_goes_straight_to_the_final_evaluation(tmp_path, flat_sim_path):
    out = tmp_path / "run"
    assert run(flat_args(out, "--time-budget", "0.001s")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 0 and summary["stopped"].startswith("time budget")
    assert summary["test"]["lts"] is not None  # the final evaluation still ran


def test_inspect_says_the_search_stopped_and_what_it_could_not_move(tmp_path, flat_sim_path, capsys):
    from lts.cli.inspect import main as inspect_main
    from lts.report import run_notes

    out = tmp_path / "run"
    assert run(flat_args(out)) == 0
    capsys.readouterr()
    assert inspect_main([str(out)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert f"search stopped early, {summary['evaluations_saved']:g} evaluations unspent: plateau" in text
    notes = run_notes(
        {"unmoved": {"town": "samples categorical elements independently"}},
        {"failures": {"evaluations": 3, "by_kind": {"timed out": 2, "crashed": 1}}},
    )
    assert notes == [
        "not moved by the search: town (samples categorical elements independently)",
        "failed evaluations: 3 (timed out 2, crashed 1); their reasons are in metrics.jsonl",
    ]
