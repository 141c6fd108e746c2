"""What the answer is sure of (`lts.determination`): target, reward or free, per element."""

import json

import numpy as np
import pytest
from conftest import REPO

from lts.cli import run_cli
from lts.cli.inspect import main as inspect_main
from lts.cli.optimize import main as optimize_main
from lts.determination import determine, mark
from lts.report import policy_table, run_notes

SPECS = {
    "a": {"kind": "continuous", "low": 0.0, "high": 10.0, "mean": 3.0, "std": 0.0},
    "b": {"kind": "continuous", "low": 0.0, "high": 10.0, "mean": 5.0, "std": 0.0},
    "mix": {"kind": "proportions", "choices": ["x", "y", "z"], "mean": [0.2, 0.3, 0.5]},
    "town": {"kind": "categorical", "choices": ["p", "q"], "probs": [1.0, 0.0]},
}
POLICY = {"strategy": "cma-mean", "params": SPECS}


def history(rng, *, iterations=12, k=8, effect=1.0, town_effect=0.0, phase="task", move=("a", "b", "mix", "town")):
    """Rows of a search on a reward −effect·(a − 3)² + a shift per iteration + noise (sd 0.3):
    ``b`` and the mix never enter it; ``town`` adds ``town_effect`` when it is ``q``."""
    rows = []
    for it in range(iterations):
        shift = rng.normal(scale=2.0)
        params, rewards = [], []
        for _ in range(k):
            a = 3.0 + rng.normal(scale=1.0) if "a" in move else 3.0
            b = float(np.clip(5.0 + rng.normal(scale=1.0), 0, 10)) if "b" in move else 5.0
            m = rng.dirichlet([5, 5, 5]) if "mix" in move else np.array([0.2, 0.3, 0.5])
            town = str(rng.choice(["p", "q"])) if "town" in move else "p"
            params.append({"a": a, "b": b, "mix": dict(zip("xyz", map(float, m))), "town": town})
            r = -effect * (a - 3.0) ** 2 + town_effect * (town == "q") + shift + rng.normal(scale=0.3)
            rewards.append(float(r))
        rows.append({"iteration": it, "phase": phase, "params": params, "rewards": rewards, "policy": POLICY})
    return rows


def test_a_quadratic_reward_element_is_reward_and_an_unseen_one_is_free():
    """At its optimum the reward's slope in ``a`` is zero: the squared term finds it; ``b``, the
    mix and the town, which the reward never reads, stay free but for the rare false alarm
    (family-wise 5 % per history: 40 histories, about two)."""
    false_alarms = 0
    for seed in range(40):
        det = determine(history(np.random.default_rng(seed)), POLICY)
        assert det["a"]["by"] == "reward" and det["a"]["p"] < 1e-6
        assert det["a"]["effect"] > det["b"]["effect"]
        false_alarms += any(det[n]["by"] != "free" for n in ("b", "mix", "town"))
        if det["b"]["by"] == "free":
            assert det["b"]["why"].startswith("not determined: no effect on the reward shown: p = ")
    assert false_alarms <= 6


def test_a_categorical_the_reward_sees_is_reward():
    det = determine(history(np.random.default_rng(1), effect=0.0, town_effect=1.0), POLICY)
    assert det["town"]["by"] == "reward" and det["a"]["by"] == "free"


def test_the_shift_per_iteration_is_not_taken_for_an_effect():
    """The search's mean of ``b`` drifts with the iterations while the rewards rise: without an
    intercept per iteration, ``b`` would look like it raised the reward."""
    rng = np.random.default_rng(0)
    rows = history(rng, effect=0.0)
    for it, row in enumerate(rows):
        for p, _ in zip(row["params"], row["rewards"]):
            p["b"] = float(np.clip(p["b"] - 5.0 + 0.5 * it, 0, 10))
        row["rewards"] = [r + 3.0 * it for r in row["rewards"]]
    assert determine(rows, POLICY)["b"]["by"] == "free"


def test_an_element_nothing_moved_is_free_and_says_so():
    rows = history(np.random.default_rng(0), move=("a", "mix", "town"))
    policy = {**POLICY, "unmoved": {"b": "this strategy cannot move it"}}
    det = determine(rows, policy)
    assert det["b"]["by"] == "free" and det["b"]["why"] == "not determined: this strategy cannot move it"
    det = determine(rows, POLICY)
    assert det["b"]["by"] == "free" and "nothing moved it" in det["b"]["why"]


def test_held_elements_are_the_targets():
    rng = np.random.default_rng(0)
    rows = history(rng, move=("a", "b", "town"))
    # recorded by the run (summary or rows), with why
    det = determine(rows, POLICY, {"held": {"mix": "residual 0.02"}})
    assert det["mix"]["by"] == "target" and "residual 0.02" in det["mix"]["why"]
    rows[-1]["held"] = {"b": "fitted"}
    assert determine(rows, POLICY)["b"]["by"] == "target"
    # an older run: the warm-up moved the mix, the search never did
    warm = history(rng, iterations=3, phase="match")
    det = determine([*warm, *history(rng, move=("a", "b", "town"))], POLICY)
    assert det["mix"]["by"] == "target" and det["mix"]["why"] == "held at the warm-up's fit to the target"
    assert det["a"]["by"] == "reward"


def test_what_the_warm_up_held_whole_in_part_or_not_at_all():
    """``held`` as the run writes it: {name: {"hold": "all" | "part" | "none", "why"}}."""
    rng = np.random.default_rng(0)
    warm = history(rng, iterations=4, phase="match")  # the warm-up's reward sees ``a``
    rows = [*warm, *history(rng, move=("a", "b", "mix", "town"))]
    held = {
        "mix": {"hold": "all", "why": "fit by the moments"},
        "b": {"hold": "part", "why": "the labels tell the truck share only"},
        "a": {"hold": "none", "why": "residual 0.67: no mix reproduces the target"},
    }
    det = determine(rows, POLICY, {"held": held})
    assert det["mix"]["by"] == "target"
    assert det["mix"]["why"] == "held at the warm-up's fit to the target: fit by the moments"
    assert det["b"]["by"] == "target" and det["b"]["part"] and mark(det["b"]) == "[target in part; the rest free]"
    assert det["b"]["why"].startswith("held in part at the warm-up's fit to the target (the labels tell the truck")
    assert det["a"]["by"] == "reward"  # the reward sees it, whatever the warm-up did
    # a fit not held is no determination: the warm-up's match saw ``a``, the reward does not
    rows = [*warm, *history(rng, effect=0.0)]
    det = determine(rows, POLICY, {"held": {"a": held["a"]}})
    assert det["a"]["p_target"] < 1e-6 and det["a"]["by"] == "free"
    assert det["a"]["why"].startswith("not determined: the warm-up's fit was not held (residual 0.67")
    assert determine(rows, POLICY)["a"]["by"] == "target"  # the same rows, no verdict: the fit counts
    # a short search after a warm-up that fitted ``a``: no failure on the untestable
    det = determine([*warm, *history(rng, iterations=2, k=3, effect=0.0)], POLICY)
    assert det["a"]["by"] == "target" and det["a"]["why"].endswith(
        "no effect on the reward shown (6 draws, too few to tell)"
    )


def test_an_element_fitted_by_the_warm_up_that_the_reward_cannot_tell_is_the_targets():
    """The warm-up's reward (its match to the target) depends on ``a``; the task's does not."""
    rng = np.random.default_rng(3)
    det = determine([*history(rng, phase="match"), *history(rng, effect=0.0)], POLICY)
    assert det["a"]["by"] == "target" and det["a"]["p_target"] < 1e-6
    assert "fitted to the target by the warm-up" in det["a"]["why"]
    assert det["b"]["by"] == "free"


def test_too_few_draws_to_tell_is_free():
    det = determine(history(np.random.default_rng(0), iterations=2, k=3), POLICY)
    assert all(e["by"] == "free" for e in det.values())
    assert det["a"]["why"] == "not determined: 6 draws, too few to tell"
    assert det["a"]["p"] is None and det["a"]["effect"] is None


def test_failed_draws_odd_rows_and_no_rows():
    rows = history(np.random.default_rng(0))
    rows[0]["rewards"][0] = None
    rows[1]["params"][1] = None
    rows.insert(0, {"iteration": -1, "phase": "match", "params": [{}], "rewards": [-0.1, -0.2]})  # the moments
    det = determine(rows, POLICY)
    assert det["a"]["by"] == "reward" and det["a"]["draws"] == 12 * 8 - 2
    assert all(e["by"] == "free" for e in determine([], POLICY).values())


def test_marks_in_the_table_and_the_notes():
    det = {
        "a": {"by": "reward", "why": "the reward depends on it"},
        "mix": {"by": "target", "why": "held"},
        "b": {"by": "free", "why": "not determined: no effect on the reward shown: p = 0.4 over 96 draws"},
        "c": {"by": "free", "why": "not determined: 4 draws, too few to tell"},
        "d": {"by": "free", "why": "not determined: 4 draws, too few to tell"},
    }
    assert mark(det["b"]) == "[free: not determined]" and mark(None) == ""
    text = policy_table(POLICY, determined=det)
    assert "a (continuous in [0, 10])  3.000 ± 0.000   [reward]" in text
    assert (
        "mix (proportions)   [target]" in text
        and "b (continuous in [0, 10])  5.000 ± 0.000   [free: not determined]" in text
    )
    assert "town (categorical)\n" in text  # no verdict, no mark
    notes = run_notes(POLICY, {"determined": det})
    assert notes == [
        "determined by: mix (the target); a (the reward)",
        "not determined (free: not learned, where it started or where the noise left it): "
        "b (no effect on the reward shown: p = 0.4 over 96 draws); c, d (4 draws, too few to tell)",
    ]


@pytest.mark.parametrize("phases", ["[{search: cma-mean, iterations: 2, samples: 4, scenes: 30}]"])
def test_a_toy_run_marks_each_element(tmp_path, gmm_target, capsys, phases):
    """A real run: the toy's warm-up holds the class balance ([target]); a search this short
    cannot tell what its reward sees, so the rest is [free: not determined], and says why."""
    out = tmp_path / "run"
    argv = [
        "--config", str(REPO / "configs" / "gmm.yaml"), "--target", str(gmm_target), "--out", str(out),
        "--iterations", "4", "--samples", "4", "--scenes", "60", "--quiet", "--set", f"warmup.phases={phases}",
        "--set", "target_size=120", "--set", "final_repeats=1", "--set", "task_options.steps=25",
    ]  # fmt: skip
    assert run_cli(optimize_main, argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["determined"]["balance"]["by"] == "target"
    assert summary["determined"]["c0_x"]["by"] == "free"
    capsys.readouterr()
    assert run_cli(inspect_main, [str(out)]) == 0
    text = capsys.readouterr().out
    assert "balance (proportions)   TV to target" in text and "[target]" in text
    assert "c0_x (continuous in [-4, 4])" in text and "[free: not determined]" in text
    assert "determined by: balance (the target)" in text
    assert "not determined (free: not learned, where it started or where the noise left it): c0_x, " in text
    # an older run (no "determined" in its summary) is read off its rows the same way
    del summary["determined"]
    (out / "summary.json").write_text(json.dumps(summary))
    assert run_cli(inspect_main, [str(out)]) == 0
    assert capsys.readouterr().out == text
