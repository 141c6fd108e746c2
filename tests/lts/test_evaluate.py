import json

from conftest import tiny_gmm_args

from lts.cli import run_cli
from lts.evaluate import main as evaluate_main
from lts.optimize import main as optimize_main


def test_evaluate_trains_learned_random_and_oracle(tmp_path, gmm_target, capsys):
    run = tmp_path / "run"
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, run)) == 0
    capsys.readouterr()
    assert run_cli(evaluate_main, [str(run), "--target", str(gmm_target), "--scenes", "200", "--steps", "40",
                                   "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "lts" in out and "oracle" in out and "random" in out
    ev = json.loads((run / "evaluation.json").read_text())
    assert set(ev["metrics"]) == {"lts", "oracle", "random"}
    assert ev["scenes"] == 200 and ev["task_options"]["steps"] == 40
    assert ev["metrics"]["oracle"]["accuracy"] > 0.9 > ev["metrics"]["random"]["accuracy"]
    summary = json.loads((run / "summary.json").read_text())
    assert ev["params"]["lts"] == summary["learned"]


def test_evaluate_errors(tmp_path, gmm_target, capsys):
    assert run_cli(evaluate_main, [str(tmp_path), "--target", str(gmm_target)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    run = tmp_path / "run"
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, run)) == 0
    assert run_cli(evaluate_main, [str(run), "--target", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(evaluate_main, [str(run), "--target", str(gmm_target), "--repeats", "0"]) == 2
