"""lts.compare and the ψ coordinates: the search-space conversion, the band count, and tiny
comparisons on the toy experiment in which every method gets the same budget and final seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from conftest import REPO

from lts.cli import run_cli
from lts.cli.compare import main as compare_main
from lts.comparison import evals_to_band, format_table, in_band
from lts.config import load_config
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


def test_band_count_on_a_hand_made_curve():
    curve = [[8, -0.30], [16, -0.16], [24, -0.1421], [32, -0.15], [40, -0.12]]
    # oracle −0.141: the band is [−0.14382, …]; −0.1421 is inside, −0.16 is not
    assert evals_to_band(curve, -0.141) == 24
    assert evals_to_band(curve, -0.141, rel=0.2) == 16
    assert evals_to_band(curve, -0.05) is None and evals_to_band(curve, None) is None
    assert in_band(0.99, 0.95) and not in_band(None, 0.5) and not in_band(math.nan, 0.5)  # better than R* counts
    assert evals_to_band([[2.5, None], [6.5, 0.5]], 0.5) == 6.5  # fractional counts (a warm-up's renders)


def _args(gmm_target, out, *extra):
    return [
        "--config", str(REPO / "configs" / "gmm.yaml"), "--target", str(gmm_target), "--out", str(out), "--quiet",
        "--set", "samples=3", "--set", "scenes=60", "--set", "target_size=120", "--set", "final_repeats=2",
        "--set", "task_options.steps=25", "--set", "search=reinforce", "--set", "warmup.phases=[]", *extra,
    ]  # fmt: skip


def test_every_method_runs_as_an_lts_run_and_is_rescored_with_the_final_seeds(tmp_path, gmm_target, capsys):
    pytest.importorskip("optuna")
    from lts.loop import Experiment, mean_metrics
    from lts.rundir import RunDir

    out = tmp_path / "cmp"
    args = _args(gmm_target, out, "--budget", "7", "--seeds", "2", "--methods", "lts,random,cmaes")
    assert run_cli(compare_main, args) == 0
    table = capsys.readouterr().out
    report = json.loads((out / "comparison.json").read_text())
    assert report["band"] == {"rel": 0.02} and report["seeds"] == [0, 1] and report["split"] == "test"
    assert list(report["methods"]) == ["lts", "random", "cmaes"]
    assert report["methods"]["cmaes"]["options"]["popsize"] == 3  # a generation per iteration of K = 3
    for m, d in report["methods"].items():
        assert len(d["evals_to_band"]) == len(d["final"]) == len(d["oracle"]) == len(d["curve"]) == 2, m
        for curve, final in zip(d["curve"], d["final"]):
            assert [e for e, _ in curve] == [3.0, 6.0]  # a re-scored point every K evaluations, 7 → 2 iterations
            assert final == curve[-1][1]
    # Each method wrote an lts run; the last point is its recommended ψ scored with the run's final seeds.
    for m in ("lts", "random"):
        run = RunDir(out / f"{m}-seed1")
        rows = run.read_metrics()
        assert (
            len(rows) == 2
            and rows[-1]["evaluations"] == 6.0
            and rows[-1]["search"] == ("reinforce" if m == "lts" else m)
        )
        cfg = load_config(None, run.read_config())
        exp = Experiment(dataclasses.replace(cfg, target=str(gmm_target)), RunDir(tmp_path / "x"))
        ev = exp.context.build()
        reward, _ = mean_metrics([ev(s) for s in exp.final_specs(rows[-1]["recommended"])], "test")
        assert reward == pytest.approx(report["methods"][m]["curve"][1][-1][1], abs=1e-12)
        oracle, _ = mean_metrics([ev(s) for s in exp.final_specs(exp.target.params)], "test")
        assert report["methods"][m]["oracle"][1] == pytest.approx(oracle, abs=1e-12)
    # random search hands over its best ψ seen
    rows = RunDir(out / "random-seed0").read_metrics()
    seen = [(r, p) for row in rows for r, p in zip(row["rewards"], row["params"])]
    assert rows[-1]["recommended"] == max(seen, key=lambda x: x[0])[1]
    assert "evaluations to band" in table and "cmaes" in table and "popsize=3" in table
    assert (out / "comparison.png").stat().st_size > 5000
    assert format_table(report).splitlines()[0].startswith("gmm / classify: budget 7 evaluations per method")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "6", "--methods", "lts,gridsearch"], "unknown method 'gridsearch'"),
        (
            ["--budget", "6", "--methods", "lts,tpe", "--set", "search_options.tpe.n_startup=2"],
            "search tpe: unknown option 'n_startup'",
        ),
        (["--budget", "6", "--methods", "cmaes", "--set", "search_options.cmaes.popsize=1"], "popsize must be >= 2"),
        (["--budget", "2"], "below one iteration"),
        (["--budget", "6", "--seeds", "0"], "--seeds must be >= 1"),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, gmm_target, capsys, extra, message):
    assert run_cli(compare_main, _args(gmm_target, tmp_path / "cmp", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "cmp").exists()


def test_lts_runs_its_warm_up_charged_by_what_it_renders_and_the_other_methods_none(tmp_path, gmm_target):
    pytest.importorskip("cmaes")
    from lts.rundir import RunDir

    out = tmp_path / "cmp"
    stage = ["--set", "warmup.phases=[{search: cma-mean, iterations: 2, samples: 3, scenes: 6}]"]
    args = _args(gmm_target, out, "--budget", "7", "--seeds", "1", "--methods", "lts,random", "--no-plot", *stage)
    assert run_cli(compare_main, args) == 0
    report = json.loads((out / "comparison.json").read_text())
    # the warm-up: 2 iterations × 3 renders of 6 points, against evaluations of 60 points: 0.6;
    # its last ψ (where the search starts) is re-scored there, then each iteration's
    curve = report["methods"]["lts"]["curve"][0]
    assert [e for e, _ in curve] == pytest.approx([0.6, 3.6, 6.6])
    assert all(math.isfinite(r) for _, r in curve)
    assert [e for e, _ in report["methods"]["random"]["curve"][0]] == [3.0, 6.0]
    assert [r["phase"] for r in RunDir(out / "random-seed0").read_metrics()] == ["task", "task"]


def test_an_interrupted_comparison_keeps_the_seeds_it_finished(tmp_path, gmm_target, monkeypatch, capsys):
    import lts.comparison as compare_mod

    run_method = compare_mod._run_method

    def interrupted_on_seed_1(method, config, *args):
        if config.seed == 1:
            raise KeyboardInterrupt
        return run_method(method, config, *args)

    monkeypatch.setattr(compare_mod, "_run_method", interrupted_on_seed_1)
    out = tmp_path / "cmp"
    code = run_cli(compare_main, _args(gmm_target, out, "--budget", "6", "--seeds", "2", "--methods", "lts,random"))
    assert code == 130
    report = json.loads((out / "comparison.json").read_text())
    assert report["seeds"] == [0] and [len(d["curve"]) for d in report["methods"].values()] == [1, 1]
    assert report["methods"]["random"]["curve"][0][-1][0] == 6.0
