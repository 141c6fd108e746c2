"""A categorical element through the chain of phases: the match draws every choice in its first
generation, and its choice starts the search, which goes on drawing the others (not held)."""

from __future__ import annotations

from conftest import REPO

from lts.config import load_config
from lts.loop import Experiment
from lts.rundir import RunDir


def test_the_match_screens_a_categorical_and_the_search_goes_on_searching_it(tmp_path):
    cfg = load_config(
        None,
        {"sim": "rings", "task": "classify", "target": str(REPO / "configs/targets/rings_line.yaml"),
         "target_size": 100, "test_size": 60, "samples": 4, "scenes": 40, "iterations": 2, "final_repeats": 0,
         "task_options": {"steps": 5},
         "warmup": {"phases": [{"search": "moments", "scenes": 8},
                               {"search": "cma-mean", "iterations": 2, "samples": 6, "scenes": 8}]}},
    )  # fmt: skip
    exp = Experiment(cfg, RunDir(tmp_path / "run").make())
    exp.start_fresh()
    moments_row = exp.step()
    assert moments_row["search"] == "moments"
    first = exp.step()
    assert {p["layout"] for p in first["params"]} == {"ring", "line", "arc"}  # every choice in its first draws
    exp.step()
    row = exp.step()  # the search's first iteration
    assert row["phase"] == "task"
    held = exp.held()
    assert held["layout"]["hold"] == "none" and "draws the others too" in held["layout"]["why"]
    assert held["mix"]["hold"] == "all"  # the moments' fit of the class mix stays held
    search = exp.phases[-1].strategy
    assert "layout" not in search.fixed  # searched, leaning toward the match's choice
    probs = search.describe()["params"]["layout"]["probs"]
    assert max(probs) < 1.0 and row["recommended"]["layout"] in {p["layout"] for p in row["params"]}
    assert {p["layout"] for p in row["params"]} == {"ring", "line", "arc"}  # its first draws: every choice
