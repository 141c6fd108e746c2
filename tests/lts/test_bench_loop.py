"""``python -m lts.bench loop`` on the toy experiment, with a tiny budget."""

import re

from conftest import REPO

from lts import bench
from lts.cli import run_cli


def test_bench_loop_splits_an_iteration_into_stages(gmm_target, capsys):
    argv = [
        "loop", "--config", str(REPO / "configs" / "gmm.yaml"), "--iterations", "3",
        "--set", f"target={gmm_target}", "--set", "samples=3", "--set", "scenes=60",
        "--set", "target_size=120", "--set", "task_options.steps=20", "--set", "parallel=1",
    ]  # fmt: skip
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "sim=gmm task=classify K=3 M=60" in out
    wall = float(
        re.search(r"one iteration \(mean of iterations 2–3\): ([\d.]+) s wall-clock for 3 evaluations", out)[1]
    )
    work = float(re.search(r"summed over its evaluations: ([\d.]+) s", out)[1])
    stages = {m[0]: float(m[1]) for m in re.findall(r"^  (\w+)\s+([\d.]+) s", out, flags=re.M)}
    assert list(stages) == ["render", "refine", "train", "score", "update"]
    assert abs(sum(stages.values()) - work) < 0.01
    assert stages["refine"] == 0.0 and stages["train"] > 0
    # with parallel=1 the evaluations run one after another: the wall-clock covers their work
    assert 0 < work <= wall + 0.01
    assert f"slowest stage: {max(stages, key=stages.get)}" in out


def test_bench_loop_bad_input_is_exit_2(capsys):
    assert run_cli(bench.main, ["loop", "--set", "samples=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "samples" in err
