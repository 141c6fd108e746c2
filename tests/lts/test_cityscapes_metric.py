"""`lts.metrics.cityscapes_scores` against cityscapesscripts' own evaluation, on frames that
``lts.render --cityscapes`` wrote, and the segmentation task's ``cityscapes_miou``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lts.cli.render import main as render_main
from lts.metrics import cityscapes_scores, lts_to_cityscapes
from simulators import labels as L

PARKING, POLEGROUP, CARAVAN, EGO, STATIC_CS, POLE_CS, BUS_CS, TRAIN_CS, ROAD_CS = 9, 18, 29, 1, 4, 17, 28, 31, 7


@pytest.fixture
def np_in1d():
    """cityscapesscripts 2.3.0 calls ``np.in1d`` (its per-image pixel-accuracy and
    instance branches), which numpy 2.4 removed; ``np.isin`` is its documented
    replacement.  Put it back only when missing, and take it away again afterwards."""
    missing = not hasattr(np, "in1d")
    if missing:
        np.in1d = np.isin  # type: ignore[attr-defined]
    yield
    if missing:
        del np.in1d


def _cityscapes_gt_and_preds(tmp_path: Path) -> tuple[list[Path], list[Path], np.ndarray, np.ndarray]:
    """Frames rendered by lts.render --cityscapes, their labels rewritten as Cityscapes labelIds
    with void and ignoreInEval pixels added, and corrupted predictions."""
    out = tmp_path / "render"
    assert render_main(["--n", "4", "--resolution", "32x64", "--seed", "3", "--cityscapes", "--out", str(out)]) == 0
    rng = np.random.default_rng(0)
    gt_files, pred_files, gts, preds = [], [], [], []
    for i, f in enumerate(sorted((out / "gtFine" / "val" / "lts").glob("*_gtFine_labelIds.png"))):
        lts_ids = np.asarray(Image.open(f)).astype(np.int64)
        gt = lts_to_cityscapes(lts_ids)
        gt[gt == STATIC_CS] = ROAD_CS  # no static in the truth: its predictions below are on other classes
        # Void and ignoreInEval truth that must not count at all (nor as false positives).
        gt[0:2, :] = EGO
        gt[2:4, 0:16] = PARKING
        gt[4:6, 0:8] = CARAVAN
        gt[:, 60:62] = POLEGROUP  # not merged into pole
        gt[:, 62:64] = POLE_CS
        pred = gt.copy()
        noise = rng.random(gt.shape) < 0.25
        choices = np.array([c for c in L.CITYSCAPES_EVAL_IDS if c != TRAIN_CS] + [0, PARKING, POLEGROUP])
        pred[noise] = rng.choice(choices, size=int(noise.sum()))
        pred[10:14, 20:40] = STATIC_CS  # a class that is not evaluated, on evaluated truth: false negatives
        pred[:, 62:63] = POLEGROUP  # polegroup predicted on pole: false negatives for pole
        pred[0:2, 0:10] = POLE_CS  # pole predicted on ego vehicle: no false positive
        if i == 0:
            pred[16:20, 0:10] = BUS_CS  # bus predicted where the truth has none: IoU 0, in the mean
        gt_path = tmp_path / "cs" / "gtFine" / "val" / "lts" / f.name
        pred_path = tmp_path / "results" / f.name.replace("_gtFine_labelIds", "_pred")
        for path, arr in ((gt_path, gt), (pred_path, pred)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(path)
        gt_files.append(gt_path)
        pred_files.append(pred_path)
        gts.append(gt)
        preds.append(pred)
    assert len(gt_files) == 4
    return gt_files, pred_files, np.stack(gts), np.stack(preds)


def test_cityscapes_scores_equal_cityscapesscripts(tmp_path, monkeypatch, np_in1d) -> None:
    pytest.importorskip("cityscapesscripts", reason="the test extra installs cityscapesscripts==2.3.0")
    gt_files, pred_files, gt, pred = _cityscapes_gt_and_preds(tmp_path)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "cs"))
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    saved = dict(vars(args))
    try:
        args.cityscapesPath = str(tmp_path / "cs")
        args.JSONOutput = False
        args.quiet = True
        args.evalInstLevelScore = False  # the instance files hold lts ids; IoU does not use them
        args.evalPixelAccuracy = True  # the script's np.in1d branch runs too
        args.colorized = False
        result = official.evaluateImgLists([str(p) for p in pred_files], [str(p) for p in gt_files], args)
    finally:
        vars(args).clear()
        vars(args).update(saved)

    ours = cityscapes_scores(pred, gt)
    theirs = {k: v for k, v in result["classScores"].items() if k in ours["iou"]}
    assert set(ours["iou"]) == set(theirs) and len(theirs) == 19
    for name, v in theirs.items():
        if math.isnan(v):
            assert math.isnan(ours["iou"][name]), name
        else:
            assert ours["iou"][name] == pytest.approx(v, abs=1e-6), name
    assert ours["miou"] == pytest.approx(result["averageScoreClasses"], abs=1e-6)
    # The cases the data was built for: train absent everywhere (NaN, out of the mean), bus
    # only predicted (0, in the mean), road well above the rest (its truth is large).
    assert math.isnan(ours["iou"]["train"]) and ours["iou"]["bus"] == 0.0
    assert ours["iou"]["road"] > 0.5 > ours["miou"] > 0.1
    # Tensors give the same numbers.
    again = cityscapes_scores(torch.from_numpy(pred), torch.from_numpy(gt))
    assert again["miou"] == ours["miou"]


def test_cityscapes_scores_by_hand() -> None:
    # road: TP 2, FN 1 (predicted static), FP 1 (on sidewalk), not the pixel on polegroup truth.
    gt = np.array([[7, 7, 7, 8, 18, 0]])
    pred = np.array([[7, 7, 4, 7, 7, 8]])
    s = cityscapes_scores(pred, gt)
    assert s["iou"]["road"] == pytest.approx(2 / 4)
    assert s["iou"]["sidewalk"] == 0.0  # FN 1; its prediction on unlabeled is no false positive
    assert math.isnan(s["iou"]["car"])
    assert s["miou"] == pytest.approx((0.5 + 0.0) / 2)
    with pytest.raises(ValueError, match="labelIds must be in 0..33"):
        cityscapes_scores(np.array([34]), np.array([7]))
    with pytest.raises(ValueError, match="shape"):
        cityscapes_scores(np.array([7, 7]), np.array([7]))


def test_lts_to_cityscapes_maps_the_19_classes_and_nothing_else_to_them() -> None:
    assert lts_to_cityscapes(np.array([L.ROAD, L.ROAD_LINE, L.POLE, L.CAR, L.WATER, L.OTHER])).tolist() == [
        7,
        7,
        17,
        26,
        0,
        0,
    ]
    scored = {cs for cs in L.LTS_TO_CITYSCAPES.values() if cs in L.CITYSCAPES_EVAL_IDS}
    assert scored == set(L.CITYSCAPES_EVAL_IDS)


def _street_dir(tmp_path: Path, label_space: str) -> Path:
    import simulators
    from lts.datasets import write_cityscapes

    sim = simulators.make("procedural", resolution=(32, 64))
    root = tmp_path / label_space
    write_cityscapes(sim.generate(sim.param_space.default(), 4, seed=5), root, label_space=label_space)
    return root


def test_segmentation_on_a_cityscapes_directory_predicts_its_classes_and_reports_cityscapes_miou(tmp_path) -> None:
    from lts.datasets import read_labelled_dir
    from lts.tasks.segmentation import SegmentationTask, target_classes

    cs = _street_dir(tmp_path, "cityscapes")
    gt_file = sorted((cs / "gtFine").rglob("*_labelIds.png"))[0]
    ids = np.asarray(Image.open(gt_file)).copy()
    ids[:, :3] = POLEGROUP
    Image.fromarray(ids).save(gt_file)
    target = read_labelled_dir(cs)
    assert target.cityscapes_ids is not None
    assert (target.cityscapes_ids[0, :, :3] == POLEGROUP).all() and (target.semantic[0, :, :3] == L.POLE).all()
    classes = target_classes(target)
    assert classes is not None and L.ROAD_LINE not in classes and L.WATER not in classes and L.OTHER not in classes
    assert L.ROAD in classes and L.CAR in classes and L.POLE in classes

    task = SegmentationTask(steps=1, batch_size=4)
    model = task.fit(target, seed=0)
    with torch.no_grad():  # a net that would call every pixel a road line, water second
        model.head.bias.zero_()
        model.head.bias[L.ROAD_LINE] = 100.0
        model.head.bias[L.WATER] = 90.0
        model.head.bias[L.ROAD] = 80.0
    assert (task.predict(model, target.images) == L.ROAD_LINE).all()  # unrestricted
    pred = task.predict(model, target.images, classes=classes)
    assert (pred == L.ROAD).all()
    m = task.score(model, target)
    road_share = float((target.cityscapes_ids == ROAD_CS).sum()) / float(
        np.isin(target.cityscapes_ids.numpy(), L.CITYSCAPES_EVAL_IDS).sum()
    )
    # Every evaluated pixel predicted road: road's IoU is its share, the other present classes 0.
    expected = cityscapes_scores(lts_to_cityscapes(pred), target.cityscapes_ids)
    assert m["cityscapes_miou"] == expected["miou"]
    assert expected["iou"]["road"] == pytest.approx(road_share)

    # A directory in lts ids (what lts.render --cityscapes writes) holds every lts class.
    lts_target = read_labelled_dir(_street_dir(tmp_path, "lts"))
    assert lts_target.cityscapes_ids is None and target_classes(lts_target) is None
    assert "cityscapes_miou" not in task.score(model, lts_target)


def test_a_kitti_semantics_directory_keeps_its_cityscapes_ids(tmp_path) -> None:
    from lts.datasets import read_labelled_dir

    for sub in ("image_2", "semantic"):
        (tmp_path / "training" / sub).mkdir(parents=True)
    ids = np.full((8, 16), ROAD_CS, np.uint8)
    ids[:, :4] = POLEGROUP
    ids[:, 4:6] = 255  # not a Cityscapes id: void for the metric, unlabeled for lts
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "training/image_2/000000_10.png")
    Image.fromarray(ids).save(tmp_path / "training/semantic/000000_10.png")
    with pytest.warns(UserWarning, match="255"):
        batch = read_labelled_dir(tmp_path)
    expected = np.where(ids == 255, 0, ids)
    assert batch.cityscapes_ids is not None and batch.cityscapes_ids[0].numpy().tolist() == expected.tolist()
    assert (batch.semantic[0, :, :4] == L.POLE).all() and (batch.semantic[0, :, 4:6] == L.UNLABELED).all()
    pred = torch.full((1, 8, 16), L.ROAD)
    assert cityscapes_scores(lts_to_cityscapes(pred), batch.cityscapes_ids)["iou"]["road"] == 1.0
