"""The Python API: ``lts.optimize`` / ``lts.evaluate`` / ``lts.compare`` as functions."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

import lts
from simulators.errors import UserError


def _small(**kw):
    return {
        "iterations": 2, "samples": 3, "scenes": 60, "target_size": 120, "test_size": 120, "final_repeats": 1,
        "task_options": {"steps": 25}, "search": "reinforce", "warmup": {"phases": []}, **kw,
    }  # fmt: skip


def test_optimize_returns_a_result_that_matches_its_run_directory(tmp_path, gmm_target):
    r = lts.optimize(config=REPO / "configs" / "gmm.yaml", out=tmp_path / "run", target=str(gmm_target), **_small())
    assert isinstance(r, lts.Result) and r.run_dir == tmp_path / "run"
    assert r.summary == json.loads((r.run_dir / "summary.json").read_text())
    assert set(r.summary["test"]) == {"lts", "oracle", "random"}
    assert r.summary["test_metrics"]["oracle"]["accuracy"] > 0.9
    assert r.learned == r.summary["learned"] and set(r.learned) == set(r.policy["params"])
    assert [row["iteration"] for row in r.metrics] == [0, 1]
    png = r.plot(tmp_path / "p.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    # dotted keys as --set: the same run as the command line's
    r2 = lts.optimize(
        config=REPO / "configs" / "gmm.yaml", out=tmp_path / "tpe", target=str(gmm_target),
        **{"search_options.tpe.n_startup_trials": 2}, **_small(search="tpe"),
    )  # fmt: skip
    assert r2.policy["strategy"] == "tpe" and r2.policy["options"]["n_startup_trials"] == 2


def test_the_modules_are_callable_as_the_functions_and_bad_input_is_a_user_error(tmp_path):
    import lts.compare
    import lts.optimize

    assert callable(lts.optimize) and callable(lts.compare) and callable(lts.evaluate)
    with pytest.raises(UserError, match="unknown config key 'sampels'"):
        lts.optimize(config="configs/gmm.yaml", sampels=3, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_compare_returns_the_report(tmp_path, gmm_target):
    report = lts.compare(
        config="configs/gmm.yaml", budget=6, seeds=1, methods=["lts", "random"], out=tmp_path / "cmp",
        target=str(gmm_target), **_small(),
    )  # fmt: skip
    assert report == json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [e for e, _ in report["methods"]["random"]["curve"][0]] == [3.0, 6.0]
