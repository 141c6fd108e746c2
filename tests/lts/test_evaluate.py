import json

from conftest import tiny_gmm_args

from lts.cli import run_cli
from lts.cli.evaluate import main as evaluate_main
from lts.cli.optimize import main as optimize_main


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


def test_final_models_side_by_side_match_one_at_a_time(tmp_path, gmm_target, capsys):
    run = tmp_path / "run"
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, run)) == 0
    common = [str(run), "--target", str(gmm_target), "--scenes", "200", "--steps", "40", "--repeats", "2", "--quiet"]
    assert (
        run_cli(evaluate_main, [*common, "--parallel", "1", "--threads", "1", "--out", str(tmp_path / "a.json")]) == 0
    )
    assert (
        run_cli(evaluate_main, [*common, "--parallel", "3", "--threads", "3", "--out", str(tmp_path / "b.json")]) == 0
    )
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["metrics"] == b["metrics"] and a["metrics_std"] == b["metrics_std"]
    assert a["metrics"]["oracle"]["accuracy"] > 0.9 > a["metrics"]["random"]["accuracy"]
    assert run_cli(evaluate_main, [*common, "--parallel", "-1"]) == 2
    assert "--parallel must be >= 0" in capsys.readouterr().err


def test_segmentation_on_an_unseen_cityscapes_directory_with_finetuning(tmp_path, repo, capsys):
    """The protocol on real-layout data: a Cityscapes directory (Cityscapes labelIds, a
    val split as the target and a train split to fine-tune on) that the run never saw."""
    import numpy as np

    import simulators
    from lts.datasets import read_labelled_dir, write_cityscapes

    sim = simulators.make("procedural", resolution=(32, 64))
    psi = sim.param_space.default()
    cs = tmp_path / "cityscapes"
    write_cityscapes(sim.generate(psi, 24, seed=11), cs, split="val", city="aachen", label_space="cityscapes")
    write_cityscapes(sim.generate(psi, 24, seed=12), cs, split="train", city="bochum", label_space="cityscapes")
    run = tmp_path / "run"
    args = ["--config", str(repo / "configs/segmentation.yaml"), "--target", str(repo / "configs/targets/default.yaml"),
            "--out", str(run), "--iterations", "1", "--samples", "2", "--scenes", "8", "--quiet",
            "--set", "sim_options.resolution=[32, 64]", "--set", "target_size=8", "--set", "final_repeats=1",
            "--set", "task_options.steps=2", "--set", "task_options.batch_size=8", "--set", "warmup.phases=[]", "--set", "budget=null"]  # fmt: skip
    assert run_cli(optimize_main, args) == 0
    capsys.readouterr()
    assert run_cli(evaluate_main, [str(run), "--target", str(cs), "--scenes", "32", "--steps", "80",
                                   "--finetune", str(cs), "--finetune-steps", "40", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "real only" in out and "lts+finetune" in out and "miou" in out
    ev = json.loads((run / "evaluation.json").read_text())
    assert set(ev["metrics"]) == {"lts", "random", "lts+finetune", "real only"}  # no ψ*: no oracle
    # Plausible numbers: better than calling every pixel the target's most common class.
    sem = read_labelled_dir(cs, resolution=(32, 64), split="val").semantic.flatten()
    counts = np.bincount(sem[sem != 0].numpy())
    majority = counts.max() / counts.sum()
    for which in ("lts", "lts+finetune", "real only"):
        assert ev["metrics"][which]["pixel_acc"] > majority + 0.1, (which, ev["metrics"][which], majority)
    # Test figures on half the val split (by file name), validation ones on the other half;
    # a Cityscapes-labelled target also gets the benchmark's own 19-class mIoU.
    assert (ev["test_frames"], ev["validation_frames"]) == (12, 12)
    assert set(ev["validation_metrics"]) == set(ev["metrics"])
    assert ev["metrics"]["lts"] != ev["validation_metrics"]["lts"]
    assert 0 < ev["metrics"]["lts"]["cityscapes_miou"] < 1
    assert "TEST (12 frames" in out and "validation (12 frames" in out
    # --test DIR: a test directory of another layout is refused in one line.
    kitti = tmp_path / "kitti" / "training"
    for sub in ("image_2", "semantic"):
        (kitti / sub).mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(kitti / "image_2" / "000000_10.png")
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(kitti / "semantic" / "000000_10.png")
    assert run_cli(evaluate_main, [str(run), "--target", str(cs), "--test", str(kitti.parent), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: test directory") and "kitti layout; expected cityscapes" in err and "\n" not in err


def test_finetune_refuses_the_test_split_whatever_folder_reaches_it(tmp_path, repo, capsys):
    """--finetune on files of the target's test split is refused by file identity: the
    target's own split, and the same files reached through another folder (a link)."""
    import os

    import simulators
    from lts.datasets import write_cityscapes

    sim = simulators.make("procedural", resolution=(32, 64))
    cs = tmp_path / "cityscapes"
    write_cityscapes(sim.generate(sim.param_space.default(), 6, seed=11), cs, split="val", city="aachen",
                     label_space="cityscapes")  # fmt: skip
    linked = tmp_path / "elsewhere"
    os.symlink(cs, linked)
    run = tmp_path / "run"
    args = ["--config", str(repo / "configs/segmentation.yaml"), "--target", str(repo / "configs/targets/default.yaml"),
            "--out", str(run), "--iterations", "1", "--samples", "2", "--scenes", "4", "--quiet",
            "--set", "sim_options.resolution=[32, 64]", "--set", "target_size=4", "--set", "final_repeats=0",
            "--set", "task_options.steps=1", "--set", "task_options.batch_size=4", "--set", "warmup.phases=[]", "--set", "budget=null"]  # fmt: skip
    assert run_cli(optimize_main, args) == 0
    capsys.readouterr()
    for finetune in (cs, linked):
        argv = [
            str(run),
            "--target",
            str(cs),
            "--scenes",
            "4",
            "--steps",
            "1",
            "--finetune",
            str(finetune),
            "--finetune-split",
            "val",
            "--quiet",
        ]
        assert run_cli(evaluate_main, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --finetune {str(finetune)!r}: 3 of its 6 images are images of the target's test")
        assert err.count("\n") == 1
