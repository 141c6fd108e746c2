"""Targets: the validation part (the reward) and the held-out test part."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import simulators
from lts.datasets import write_cityscapes
from lts.evaluation import EvalContext, EvalSpec
from lts.seeding import derive_seed
from lts.targets import load_target, split_files
from simulators.errors import UserError


@pytest.fixture
def street_sim():
    sim = simulators.make("procedural", resolution=(16, 32))
    yield sim
    sim.close()


def _cityscapes_dir(root: Path, sim, n: int, seed: int, cities: tuple[str, ...] = ("aachen",)) -> Path:
    for k, city in enumerate(cities):
        write_cityscapes(sim.generate(sim.param_space.default(), n, seed=seed + k), root, city=city)
    return root


def _kitti_dir(root: Path, n: int, size: tuple[int, int] = (16, 32)) -> Path:
    for sub in ("image_2", "semantic"):
        (root / "training" / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(root / "training" / "image_2" / f"{i:06d}_10.png")
        Image.fromarray(np.full(size, 7, np.uint8)).save(root / "training" / "semantic" / f"{i:06d}_10.png")
    return root


def test_a_rendered_target_has_a_test_part_from_another_seed(gmm_target) -> None:
    sim = simulators.make("gmm")
    tgt = load_target(gmm_target, sim, task_name="classify", size=50, run_seed=7, test_size=30)
    assert derive_seed(7, "target") != derive_seed(7, "target-test")
    assert len(tgt.batch) == 50 and tgt.test is not None and len(tgt.test) == 30
    # The validation part is what it was before there was a test part; the test part is
    # ψ* rendered with the test seed, and its frames are other frames.
    assert torch.equal(tgt.batch.features, sim.generate(tgt.params, 50, seed=derive_seed(7, "target")).features)
    assert torch.equal(tgt.test.features, sim.generate(tgt.params, 30, seed=derive_seed(7, "target-test")).features)
    assert not torch.equal(tgt.batch.features[:30], tgt.test.features)
    # The same seed gives the same target; test_size defaults to size.
    again = load_target(gmm_target, sim, task_name="classify", size=50, run_seed=7, test_size=30)
    assert torch.equal(again.test.features, tgt.test.features)
    assert len(load_target(gmm_target, sim, task_name="classify", size=50, run_seed=7).test) == 50


def test_split_files_is_deterministic_disjoint_and_covers_all() -> None:
    files = [f"c{i % 3}/f{i:02d}.png" for i in range(11)][::-1]  # not sorted on input
    val, test = split_files(files, 0.5)
    assert (val, test) == split_files(list(files), 0.5)
    assert set(val).isdisjoint(test) and sorted(val + test) == list(range(11))
    assert len(val) == round(0.5 * 11)
    # by name, not by position: the same names in another order split the same way
    names = sorted(files)
    sv, _ = split_files(names, 0.5)
    assert sorted(files[i] for i in val) == [names[i] for i in sv]
    v25, t25 = split_files(files, 0.25)
    assert len(v25) == 3 and len(t25) == 8
    # at least one image on each side
    assert [len(x) for x in split_files(files, 0.01)] == [1, 10]
    assert [len(x) for x in split_files(files, 0.99)] == [10, 1]


def test_split_files_spreads_validation_evenly() -> None:
    files = [f"{i:02d}" for i in range(8)]
    assert split_files(files, 0.5) == ([1, 3, 5, 7], [0, 2, 4, 6])
    assert split_files(files, 0.25) == ([3, 7], [0, 1, 2, 4, 5, 6])


def test_a_directory_target_is_split_by_file_name(tmp_path, street_sim) -> None:
    root = _cityscapes_dir(tmp_path / "cs", street_sim, 5, seed=1, cities=("aachen", "bochum"))
    tgt = load_target(root, street_sim, task_name="segmentation", size=99, run_seed=0, split=0.6)
    assert tgt.params is None and tgt.test is not None
    val_files, test_files = tgt.batch.attributes["file"], tgt.test.attributes["file"]
    assert len(val_files) == 6 and len(test_files) == 4
    assert set(val_files).isdisjoint(test_files) and len(set(val_files) | set(test_files)) == 10
    assert {f.split("/")[2] for f in test_files} == {"aachen", "bochum"}  # both cities in both parts
    again = load_target(root, street_sim, task_name="segmentation", size=99, run_seed=5, split=0.6)
    assert again.batch.attributes["file"] == val_files and torch.equal(again.test.images, tgt.test.images)


def test_a_separate_test_directory(tmp_path, street_sim) -> None:
    val_root = _cityscapes_dir(tmp_path / "val", street_sim, 3, seed=1)
    test_root = _cityscapes_dir(tmp_path / "test", street_sim, 2, seed=9)
    tgt = load_target(val_root, street_sim, task_name="segmentation", size=1, run_seed=0, test_dir=test_root)
    assert len(tgt.batch) == 3 and len(tgt.test) == 2
    assert tgt.test.cityscapes_ids is None  # written in lts ids


def test_bad_split_and_test_directories_are_one_line_errors(tmp_path, street_sim, gmm_target) -> None:
    val_root = _cityscapes_dir(tmp_path / "val", street_sim, 3, seed=1)
    kw = {"task_name": "segmentation", "size": 1, "run_seed": 0}
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(UserError, match=rf"target split {bad}: expected .* in \(0, 1\)"):
            load_target(val_root, street_sim, split=bad, **kw)
    with pytest.raises(UserError, match=r"test directory .* is in kitti layout; expected cityscapes"):
        load_target(val_root, street_sim, test_dir=_kitti_dir(tmp_path / "kitti", 2), **kw)
    big = simulators.make("procedural", resolution=(32, 64))
    other = _cityscapes_dir(tmp_path / "big", big, 2, seed=3)
    with pytest.raises(UserError, match=r"holds 64×32 images; expected 32×16"):
        load_target(val_root, street_sim, test_dir=other, **kw)
    unlabelled = tmp_path / "unlabelled"
    (unlabelled / "leftImg8bit" / "val" / "x").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(unlabelled / "leftImg8bit/val/x/x_0_0_leftImg8bit.png")
    with pytest.raises(UserError, match=r"test directory: .* no labelled image"):
        load_target(val_root, street_sim, test_dir=unlabelled, **kw)
    one = _cityscapes_dir(tmp_path / "one", street_sim, 1, seed=1)
    with pytest.raises(UserError, match="1 labelled image"):
        load_target(one, street_sim, **kw)
    with pytest.raises(UserError, match="goes with a directory target"):
        load_target(gmm_target, simulators.make("gmm"), task_name="classify", size=5, run_seed=0, test_dir=val_root)
    for msg in _messages(tmp_path, street_sim, val_root):
        assert "\n" not in msg


def _messages(tmp_path, street_sim, val_root) -> list[str]:
    out = []
    for bad in ({"split": 2.0}, {"test_dir": tmp_path / "kitti"}):
        try:
            load_target(val_root, street_sim, task_name="segmentation", size=1, run_seed=0, **bad)
        except UserError as e:
            out.append(str(e))
    assert len(out) == 2
    return out


def test_a_rendered_target_missing_what_the_task_needs_blames_the_simulator(gmm_target) -> None:
    sim = simulators.make("gmm")  # features only: no images
    with pytest.raises(UserError, match=r"^task counting needs images; simulator mysim:MySim renders none$"):
        load_target(gmm_target, sim, task_name="counting", size=4, run_seed=0, sim_name="mysim:MySim")
    with pytest.raises(UserError, match=r"simulator simulators\.gmm:\w+ renders none"):
        load_target(gmm_target, sim, task_name="segmentation", size=4, run_seed=0)


def test_the_evaluator_scores_the_split_a_spec_asks_for(gmm_target) -> None:
    sim = simulators.make("gmm")
    tgt = load_target(gmm_target, sim, task_name="classify", size=200, run_seed=0, test_size=100)
    ctx = EvalContext("gmm", {}, "classify", {"steps": 20}, tgt.batch, test=tgt.test)
    ctx = pickle.loads(pickle.dumps(ctx))  # Ray ships it
    ev = ctx.build()
    spec = {"index": 0, "params": tgt.params, "n": 100, "data_seed": 1, "train_seed": 2}
    val, test = ev(EvalSpec(**spec)), ev(EvalSpec(**spec, split="test"))
    model = ev.task.fit(sim.generate(tgt.params, 100, seed=1), seed=2)
    assert val.metrics == {k: float(v) for k, v in ev.task.score(model, tgt.batch).items()}
    assert test.metrics == {k: float(v) for k, v in ev.task.score(model, tgt.test).items()}
    assert val.metrics != test.metrics
    with pytest.raises(ValueError, match="split 'train'"):
        EvalSpec(**spec, split="train")
    no_test = EvalContext("gmm", {}, "classify", {"steps": 20}, tgt.batch).build()
    with pytest.raises(UserError, match="test split, and this target has none"):
        no_test(EvalSpec(**spec, split="test"))
