"""Segmentation metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lts.metrics import confusion_matrix, per_class_iou, segmentation_metrics


def _t(*v: int) -> torch.Tensor:
    return torch.tensor(v)


def test_confusion_matrix_rows_true_columns_pred_and_ignores_label_0() -> None:
    true = _t(1, 1, 2, 2, 2, 0, 3)
    pred = _t(1, 2, 2, 2, 1, 3, 3)  # the pixel labelled 0 is dropped whatever its prediction
    conf = confusion_matrix(pred, true, 4)
    expected = torch.tensor(
        [
            [0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 2, 0],
            [0, 0, 0, 1],
        ]
    )
    assert torch.equal(conf, expected)
    assert conf.dtype == torch.int64
    # no ignore: the unlabeled pixel counts
    assert int(confusion_matrix(pred, true, 4, ignore_index=None)[0, 3]) == 1


def test_metrics_hand_computed() -> None:
    true = _t(1, 1, 2, 2, 2, 0, 3)
    pred = _t(1, 2, 2, 2, 1, 3, 3)
    m = segmentation_metrics(confusion_matrix(pred, true, 4))
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    assert m["class_acc"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    # IoU: class 1: 1/(2+2-1); class 2: 2/(3+3-2); class 3: 1/1
    assert m["miou"] == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)


def test_class_absent_from_truth_and_prediction_does_not_count() -> None:
    true = _t(1, 1, 1, 1)
    pred = _t(1, 1, 2, 2)
    small = segmentation_metrics(confusion_matrix(pred, true, 3))
    big = segmentation_metrics(confusion_matrix(pred, true, 20))  # 17 more classes seen nowhere
    assert small == pytest.approx(big)
    # class 2 only predicted: counts in miou (IoU 0) but not in class_acc (undefined)
    assert small["miou"] == pytest.approx((2 / 4 + 0) / 2)
    assert small["class_acc"] == pytest.approx(0.5)
    assert small["pixel_acc"] == pytest.approx(0.5)


def test_predicting_the_ignored_class_is_wrong_but_not_averaged() -> None:
    true = _t(1, 1)
    pred = _t(0, 1)
    m = segmentation_metrics(confusion_matrix(pred, true, 3))
    assert m == pytest.approx({"pixel_acc": 0.5, "class_acc": 0.5, "miou": 0.5})
    iou = per_class_iou(confusion_matrix(pred, true, 3))
    assert math.isnan(iou[0]) and iou[1] == pytest.approx(0.5) and math.isnan(iou[2])


def test_perfect_and_empty() -> None:
    y = torch.randint(1, 5, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    assert segmentation_metrics(confusion_matrix(y, y, 5)) == pytest.approx(
        {"pixel_acc": 1.0, "class_acc": 1.0, "miou": 1.0}
    )
    empty = segmentation_metrics(confusion_matrix(_t(0, 0), _t(0, 0), 5))
    assert all(math.isnan(v) for v in empty.values())


def test_shape_mismatch_and_prediction_out_of_range() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(_t(1, 2), _t(1, 2, 3), 4)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(_t(1, 7), _t(1, 2), 4)
