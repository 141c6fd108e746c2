"""--refiner inside the loop and in lts.evaluate: every rendered batch is refined."""

import json

import torch

from lts.cli import run_cli
from lts.cli.evaluate import main as evaluate_main
from lts.cli.optimize import main as optimize_main


def test_optimize_and_evaluate_refine_every_batch(tmp_path, repo):
    import simulators
    from lts.cli.refine import main as refine_main
    from lts.datasets import write_cityscapes

    sim = simulators.make("procedural", resolution=(32, 64))
    tgt = sim.generate(sim.param_space.default(), 6, seed=3)
    write_cityscapes(tgt, tmp_path / "tgt", split="train")
    ck = tmp_path / "r.pt"
    argv = ["train", "--target", str(tmp_path / "tgt"), "--method", "simgan", "--out", str(ck), "--steps", "2",
            "--frames", "6", "--resolution", "32x64", "--quiet"]  # fmt: skip
    assert refine_main(argv) == 0
    run = tmp_path / "run"
    args = ["--target", str(repo / "configs/targets/default.yaml"), "--out", str(run), "--iterations", "1",
            "--samples", "2", "--scenes", "8", "--quiet", "--refiner", str(ck),
            "--set", "sim_options.resolution=[32, 64]", "--set", "target_size=8", "--set", "final_repeats=1",
            "--set", "task_options.steps=2", "--set", "task_options.batch_size=4",
            "--set", "warmup.phases=[{search: moments}]"]  # fmt: skip
    assert run_cli(optimize_main, args) == 0
    match, row = (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
    assert match["phase"] == "match" and match["timing_s"]["refine"] > 0  # the warm-up matches refined frames
    assert row["timing_s"]["refine"] > 0 and len(row["rewards"]) == 2
    assert all(r is not None for r in row["rewards"])
    assert run_cli(evaluate_main, [str(run), "--target", str(repo / "configs/targets/default.yaml"),
                                   "--refiner", str(ck), "--scenes", "8", "--quiet"]) == 0  # fmt: skip
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["refiner"] == str(ck) and set(ev["metrics"]) == {"lts", "oracle", "random"}
    # The refiner really changes the frames the task trains on.
    from lts.refiner import load_refiner

    batch = sim.generate(sim.param_space.default(), 4, seed=0)
    assert not torch.equal(load_refiner(ck)(batch).images, batch.images)


def test_missing_refiner_is_a_one_line_error(tmp_path, gmm_target, capsys):
    from conftest import tiny_gmm_args

    assert (
        run_cli(optimize_main, tiny_gmm_args(gmm_target, tmp_path / "run", "--refiner", str(tmp_path / "no.pt"))) == 2
    )
    assert "refiner checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
