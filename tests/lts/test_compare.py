"""lts.compare and lts.tune_space: the search-space conversion, and tiny comparisons on the toy
experiment in which every method gets the same evaluations and the same final seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from conftest import REPO

from lts.cli import run_cli
from lts.compare import best_so_far, eval_spec, final_specs, format_table
from lts.compare import main as compare_main
from lts.config import load_config
from lts.evaluation import EvalContext
from lts.tune_space import coordinate_names, coords_to_params, params_to_coords, stick_break, unbreak
from simulators.space import Categorical, Continuous, Integer, ParamSpace, Proportions

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SPACE = ParamSpace(
    x=Continuous(-2.0, 3.0),
    n=Integer(0, 16),
    town=Categorical(("a", "b", "c")),
    weather=Proportions(("sun", "rain", "fog", "night")),
    one=Proportions(("only",)),
)


def _random_coords(rng: np.random.Generator) -> dict:
    return {
        "x": rng.uniform(-2, 3),
        "n": int(rng.integers(0, 17)),
        "town": str(rng.choice(["a", "b", "c"])),
        **{k: rng.uniform() for k in ("weather:sun", "weather:rain", "weather:fog")},
    }


def test_coordinates_round_trip_to_valid_params():
    assert coordinate_names(SPACE) == ["x", "n", "town", "weather:sun", "weather:rain", "weather:fog"]
    rng = np.random.default_rng(0)
    for _ in range(200):
        coords = _random_coords(rng)
        psi = coords_to_params(SPACE, coords)
        assert SPACE.validate(psi) == psi
        assert psi["one"] == {"only": 1.0}
        back = params_to_coords(SPACE, psi)
        for k, v in coords.items():
            assert back[k] == pytest.approx(v, abs=1e-9) if isinstance(v, float) else back[k] == v
        psi2 = SPACE.sample(rng)
        again = coords_to_params(SPACE, params_to_coords(SPACE, psi2))
        assert again["weather"] == pytest.approx(psi2["weather"], abs=1e-12)
        assert again["x"] == psi2["x"] and again["n"] == psi2["n"] and again["town"] == psi2["town"]


def test_out_of_range_proposals_are_clipped_into_the_space():
    psi = coords_to_params(SPACE, {"x": 9.0, "n": -3, "town": "b", "weather:sun": 1.2, "weather:rain": -1,
                                   "weather:fog": 0.5})  # fmt: skip
    assert psi["x"] == 3.0 and psi["n"] == 0 and psi["weather"]["sun"] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_stick_breaking_maps_uniform_to_uniform_on_the_simplex(k):
    # Dirichlet(1, …, 1): mean 1/k, variance (k − 1) / (k² (k + 1)), the law of ParamSpace.sample.
    u = np.random.default_rng(k).random((40000, k - 1))
    p = np.array([stick_break(x) for x in u])
    assert np.allclose(p.sum(1), 1.0) and (p >= 0).all()
    assert np.allclose(p.mean(0), 1 / k, atol=0.006)
    assert np.allclose(p.var(0), (k - 1) / (k**2 * (k + 1)), rtol=0.05)
    assert np.abs(np.array([unbreak(x) for x in p[:500]]) - u[:500]).max() < 1e-9


def test_tune_domains_cover_the_space():
    pytest.importorskip("ray.tune")
    from lts.tune_space import tune_search_space

    dom = tune_search_space(SPACE)
    assert list(dom) == coordinate_names(SPACE)
    n = [dom["n"].sample() for _ in range(400)]
    assert min(n) == 0 and max(n) == 16  # randint's exclusive upper end is handled
    assert (dom["x"].lower, dom["x"].upper) == (-2.0, 3.0)
    assert set(dom["town"].categories) == {"a", "b", "c"}
    for _ in range(50):
        coords = {k: d.sample() for k, d in dom.items()}
        assert SPACE.validate(coords_to_params(SPACE, coords))


def test_best_so_far_skips_failures():
    out = best_so_far([math.nan, 0.2, 0.1, math.nan, 0.5])
    assert math.isnan(out[0]) and out[1:] == [0.2, 0.2, 0.2, 0.5]


def _args(gmm_target, out, *extra):
    return [
        "--config", str(REPO / "configs" / "gmm.yaml"), "--target", str(gmm_target), "--out", str(out), "--quiet",
        "--set", "samples=3", "--set", "scenes=60", "--set", "target_size=120", "--set", "final_repeats=2",
        "--set", "task_options.steps=25", "--set", "policy.lr=0.1", *extra,
    ]  # fmt: skip


def _context(report: dict, gmm_target, seed: int):
    from lts.loop import Experiment
    from lts.rundir import RunDir

    cfg = load_config(None, report["config"])
    cfg = dataclasses.replace(cfg, seed=seed, target=str(gmm_target))
    exp = Experiment(cfg, RunDir("/nonexistent"))
    return cfg, exp.context


def test_lts_and_random_search_on_equal_budgets(tmp_path, gmm_target, capsys):
    out = tmp_path / "cmp"
    assert (
        run_cli(compare_main, _args(gmm_target, out, "--budget", "7", "--seeds", "2", "--methods", "lts,random")) == 0
    )
    table = capsys.readouterr().out
    report = json.loads((out / "comparison.json").read_text())
    assert report["budget"] == 6 and report["seeds"] == [0, 1]  # rounded down to whole LTS iterations
    assert set(report["methods"]) == {"lts", "random"}
    for m, d in report["methods"].items():
        assert d["evaluations"] == [6, 6], m
        for run in d["runs"]:
            assert len(run["rewards"]) == len(run["best_so_far"]) == 6
            assert run["best_so_far"][-1] == max(r for r in run["rewards"] if r is not None)
            assert 0.0 <= run["final_reward"] <= 1.0
    for s in (0, 1):
        summary = json.loads((out / f"lts-seed{s}" / "summary.json").read_text())
        assert summary["iterations"] == 2
        # The oracle re-evaluated here uses exactly the loop's final seeds: the loop's number.
        assert report["oracle"]["per_seed"][s] == summary["reward"]["oracle"]
        assert report["methods"]["lts"]["runs"][s]["final_reward"] == summary["reward"]["lts"]
    # Random search's first evaluation uses the loop's first data/training seeds.
    cfg, ctx = _context(report, gmm_target, 0)
    ev = EvalContext.build(ctx)
    run = report["methods"]["random"]["runs"][0]
    assert ev(eval_spec(cfg, 0, 4, run["params"][4])).reward == run["rewards"][4]
    chosen = run["chosen"]
    assert chosen == run["params"][int(np.nanargmax([np.nan if r is None else r for r in run["rewards"]]))]
    finals = [ev(s).reward for s in final_specs(cfg, 0, chosen)]
    assert run["final_reward"] == pytest.approx(float(np.mean(finals)), abs=1e-12)
    assert "lts" in table and "random" in table and "oracle" in table and "± " in table
    assert (out / "comparison.png").stat().st_size > 5000
    assert format_table(report).splitlines()[0].startswith("gmm / classify: 6 simulator evaluations")


def test_all_methods_through_ray_tune(tmp_path, gmm_target):
    pytest.importorskip("ray.tune")
    pytest.importorskip("optuna")
    out = tmp_path / "cmp"
    assert run_cli(compare_main, _args(gmm_target, out, "--budget", "6", "--seeds", "1", "--no-plot")) == 0
    report = json.loads((out / "comparison.json").read_text())
    assert list(report["methods"]) == ["lts", "random", "tpe", "bayesopt"]
    assert {m: d["evaluations"] for m, d in report["methods"].items()} == {m: [6] for m in report["methods"]}
    cfg, ctx = _context(report, gmm_target, 0)
    ev = EvalContext.build(ctx)
    for m in ("tpe", "bayesopt"):
        run = report["methods"][m]["runs"][0]
        assert all(r is not None and 0 <= r <= 1 for r in run["rewards"]) and not run["errors"]
        assert len({json.dumps(p, sort_keys=True) for p in run["params"]}) == 6  # six distinct proposals
        # A Tune trial is the same evaluation as the loop's of the same index (same ψ, same seeds).
        j = 5
        assert ev(eval_spec(cfg, 0, j, run["params"][j])).reward == run["rewards"][j]
        assert run["final_reward"] is not None
    import ray

    assert not ray.is_initialized()  # the comparison shut down the Ray it started


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "6", "--methods", "lts,gridsearch"], "unknown method 'gridsearch'"),
        (["--budget", "2"], "below one LTS iteration"),
        (["--budget", "6", "--seeds", "0"], "--seeds must be >= 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, gmm_target, capsys, extra, message):
    assert run_cli(compare_main, _args(gmm_target, tmp_path / "cmp", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
