"""Segmentation metrics from a confusion matrix: pixel accuracy, mean class accuracy, mIoU.

The conventions are those of the GAN papers' tables (and Cityscapes' evaluation): one
confusion matrix is accumulated over the whole target set, then the metrics are read
from it.  Pixels whose true label is ``ignore_index`` (0, *unlabeled*) are left out
entirely; the ignored class never enters a mean.  A class that appears neither in the
truth nor in the prediction does not count in ``miou``; a class absent from the truth
does not count in ``class_acc`` (its accuracy is undefined).

`cityscapes_scores` is the Cityscapes benchmark's own figure, over Cityscapes labelIds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from simulators.labels import CITYSCAPES_EVAL_IDS, CITYSCAPES_LABELS, LTS_TO_CITYSCAPES

__all__ = ["confusion_matrix", "segmentation_metrics", "per_class_iou", "cityscapes_scores", "lts_to_cityscapes"]


def confusion_matrix(
    pred: torch.Tensor, true: torch.Tensor, num_classes: int, ignore_index: int | None = 0
) -> torch.Tensor:
    """``num_classes × num_classes`` int64 counts, rows = true class, columns = predicted.

    ``pred`` and ``true`` are integer tensors of the same shape.  Pixels whose true label
    is ``ignore_index`` are dropped; so are true or predicted ids outside
    ``0..num_classes-1`` in the truth (a prediction outside the range is a bug and raises).
    """
    if pred.shape != true.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != true shape {tuple(true.shape)}")
    pred = pred.reshape(-1).long()
    true = true.reshape(-1).long()
    keep = (true >= 0) & (true < num_classes)
    if ignore_index is not None:
        keep &= true != ignore_index
    pred, true = pred[keep], true[keep]
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        raise ValueError(f"predicted class outside 0..{num_classes - 1}")
    flat = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).cpu()


def per_class_iou(conf: torch.Tensor, ignore_index: int | None = 0) -> torch.Tensor:
    """IoU of each class (float64); NaN where the class is in neither truth nor prediction,
    and for ``ignore_index``."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    if ignore_index is not None and 0 <= ignore_index < len(iou):
        iou[ignore_index] = float("nan")
    return iou


def segmentation_metrics(conf: torch.Tensor, ignore_index: int | None = 0) -> dict[str, float]:
    """``{"pixel_acc", "class_acc", "miou"}`` from a confusion matrix (rows true, columns predicted).

    ``pixel_acc`` = correct / labelled pixels.  ``class_acc`` = mean over classes present in
    the truth of (correct / true pixels of the class).  ``miou`` = mean over classes present
    in truth or prediction of TP / (TP + FP + FN).  ``ignore_index`` is excluded from both
    means (its column still holds wrong predictions, which lower the other metrics).
    An empty matrix gives NaN for all three.
    """
    conf = conf.double()
    total = conf.sum()
    if total == 0:
        nan = float("nan")
        return {"pixel_acc": nan, "class_acc": nan, "miou": nan}
    tp = conf.diag()
    rows = conf.sum(1)
    present = rows > 0
    if ignore_index is not None and 0 <= ignore_index < len(rows):
        present[ignore_index] = False
    class_acc = (tp[present] / rows[present]).mean() if present.any() else torch.tensor(float("nan"))
    iou = per_class_iou(conf, ignore_index)
    valid = ~torch.isnan(iou)
    miou = iou[valid].mean() if valid.any() else torch.tensor(float("nan"))
    return {
        "pixel_acc": float(tp.sum() / total),
        "class_acc": float(class_acc),
        "miou": float(miou),
    }


def _as_int_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(np.int64, copy=False)


def lts_to_cityscapes(pred: Any) -> np.ndarray:
    """lts label ids → the Cityscapes labelIds they are scored as (`simulators.labels.LTS_TO_CITYSCAPES`:
    road markings as road, classes Cityscapes lacks as 0)."""
    lut = np.zeros(max(LTS_TO_CITYSCAPES) + 1, dtype=np.int64)
    for lts_id, cs in LTS_TO_CITYSCAPES.items():
        lut[lts_id] = cs
    arr = _as_int_array(pred)
    if arr.size and (arr.min() < 0 or arr.max() >= len(lut)):
        raise ValueError(f"lts label ids must be in 0..{len(lut) - 1}, got {int(arr.min())}..{int(arr.max())}")
    return lut[arr]


def cityscapes_scores(pred: Any, gt: Any) -> dict[str, Any]:
    """The Cityscapes benchmark's class IoUs and their mean, as ``cityscapesscripts``'
    ``evaluation/evalPixelLevelSemanticLabeling.py`` (2.3.0) computes them.

    ``pred`` and ``gt``: integer arrays or tensors of Cityscapes **labelIds** (0..33) of the
    same shape (N×H×W or H×W).  One confusion matrix over every labelId and pixel; for each
    of the 19 evaluated classes (`simulators.labels.CITYSCAPES_EVAL_IDS`): TP its diagonal,
    FN the rest of its ground-truth row (a prediction of any other id, evaluated or not),
    FP its column over the rows of the *other evaluated* classes only (pixels whose truth
    is void or ignoreInEval — unlabeled, static, parking, polegroup, … — never count, not
    even as false positives).  Polegroup is not merged into pole.  A class with
    TP + FP + FN = 0 gets NaN, and the mean (``"miou"``) is over the others (NaN if none).

    Returns ``{"miou": float, "iou": {Cityscapes class name: float}}`` over the 19 classes.
    """
    p, g = _as_int_array(pred), _as_int_array(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} != gt shape {g.shape}")
    n = max(CITYSCAPES_LABELS) + 1
    for name, arr in (("pred", p), ("gt", g)):
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(
                f"{name}: Cityscapes labelIds must be in 0..{n - 1}, got {int(arr.min())}..{int(arr.max())}"
            )
    conf = np.bincount((g.reshape(-1) * n + p.reshape(-1)), minlength=n * n).reshape(n, n)
    evaluated = list(CITYSCAPES_EVAL_IDS)
    iou: dict[str, float] = {}
    for c in evaluated:
        tp = int(conf[c, c])
        fn = int(conf[c].sum()) - tp
        fp = int(conf[[e for e in evaluated if e != c], c].sum())
        denom = tp + fp + fn
        iou[CITYSCAPES_LABELS[c][0]] = tp / denom if denom else float("nan")
    valid = [v for v in iou.values() if not np.isnan(v)]
    return {"miou": float(np.mean(valid)) if valid else float("nan"), "iou": iou}
