"""Task ``segmentation``: per-pixel semantic labels in the lts label space.

The net predicts all `simulators.labels.NUM_LABELS` classes (no compact subset: ids are
the same in every source, and classes absent from a target simply do not enter its
metrics).  It is a small U-Net-like encoder–decoder in plain torch: a stride-2 stem,
encoder stages at 1/4 and 1/8, a decoder back to 1/2 with additive skips, and logits
upsampled bilinearly to the label size.  Trained from scratch (or warm-started) for a
fixed number of AdamW steps with class-weighted cross-entropy (weights from the training
batch's label frequencies); horizontal flips as augmentation.

Pixels labelled 0 (*unlabeled*) are ignored in the loss and in the metrics, and the net
never predicts 0.  Metrics (`lts.metrics`), from one confusion matrix over the target
set at the target's own label resolution: ``pixel_acc``, ``class_acc`` (mean per-class
accuracy) and ``miou`` (the reward); classes in neither the truth nor the prediction do
not count.

On a target labelled in Cityscapes labelIds (a Cityscapes or KITTI semantics directory,
whose batch keeps them in ``cityscapes_ids``) the net predicts only the lts classes those
labels can hold (`target_classes`: no road line, water or *other*; the logits of the rest
are masked at prediction time), and the metrics add ``cityscapes_miou``: the Cityscapes
benchmark's 19-class mIoU (`lts.metrics.cityscapes_scores`, with the predictions written
as Cityscapes labelIds), at the target's resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from lts.datasets import resize_images, resize_labels
from lts.metrics import cityscapes_scores, confusion_matrix, lts_to_cityscapes, segmentation_metrics
from simulators import Batch
from simulators.errors import UserError
from simulators.labels import CITYSCAPES_TO_LTS, NUM_LABELS, UNLABELED

# The training helpers are shared with the counting task.
from .counting import (
    ImageTaskOptions,
    build_seeded,
    channel_stats,
    conv_block,
    minibatches,
    warmup_cosine,
)

__all__ = ["SegmentationTask", "SegNet", "class_weights", "target_classes"]


def target_classes(target: Batch) -> list[int] | None:
    """The lts classes ``target``'s labels can hold, or ``None`` for all of them: a target
    labelled in Cityscapes labelIds holds only the lts classes some Cityscapes id maps to."""
    if target.cityscapes_ids is None:
        return None
    return sorted(set(CITYSCAPES_TO_LTS.values()) - {UNLABELED})


class SegNet(nn.Module):
    """Encoder–decoder: 1/2 → 1/4 → 1/8 and back to 1/2 with additive skips; logits at 1/2."""

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, num_classes: int = NUM_LABELS, width: int = 16) -> None:
        super().__init__()
        w = width
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("std", torch.ones(3))
        self.stem = conv_block(3, w, stride=2)
        self.enc1 = nn.Sequential(conv_block(w, 2 * w, stride=2), conv_block(2 * w, 2 * w))
        self.enc2 = nn.Sequential(conv_block(2 * w, 4 * w, stride=2), conv_block(4 * w, 4 * w))
        self.lat1 = nn.Conv2d(4 * w, 2 * w, 1)
        self.dec1 = conv_block(2 * w, 2 * w)
        self.lat0 = nn.Conv2d(2 * w, w, 1)
        self.dec0 = conv_block(w, w)
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (N×3×H×W) → logits N×K×H×W."""
        size = x.shape[-2:]
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        s0 = self.stem(x)
        s1 = self.enc1(s0)
        s2 = self.enc2(s1)
        d1 = self.dec1(s1 + F.interpolate(self.lat1(s2), size=s1.shape[-2:], mode="bilinear", align_corners=False))
        d0 = self.dec0(s0 + F.interpolate(self.lat0(d1), size=s0.shape[-2:], mode="bilinear", align_corners=False))
        return F.interpolate(self.head(d0), size=size, mode="bilinear", align_corners=False)


def class_weights(labels: torch.Tensor, power: float) -> torch.Tensor:
    """Cross-entropy weights ∝ frequency^-power over the classes present in ``labels`` (mean 1),
    0 for absent ones and for unlabeled.  Rare classes (cars, poles, lines) otherwise hardly
    move the loss; frequencies are floored at 1e-4 so a handful of pixels cannot dominate."""
    counts = torch.bincount(labels.reshape(-1), minlength=NUM_LABELS)[:NUM_LABELS].float()
    counts[UNLABELED] = 0
    present = counts > 0
    freq = (counts / counts.sum().clamp_min(1)).clamp_min(1e-4)
    w = torch.where(present, freq.pow(-power), torch.zeros_like(freq))
    return w / w[present].mean() if bool(present.any()) else torch.ones_like(freq)


class SegmentationTask(ImageTaskOptions):
    """Semantic segmentation.  Options (all from the config):

    ``steps`` optimiser steps per fit (the training budget), ``batch_size``, ``lr``
    (AdamW, warm-up + cosine), ``width`` (channels of the first stage), ``resolution``
    (``[H, W]`` the net sees; ``None`` = the training batch's own), ``device``,
    ``precision`` (``auto``: bfloat16 autocast in training where the hardware computes it
    natively, else float32; ``bf16``; ``fp32``), ``class_weight_power`` (cross-entropy
    weights ∝ class frequency^-power in the training batch; 0.5 raised procedural mIoU
    from 0.35 to 0.41 at 150 steps; 0 = unweighted).
    """

    name: ClassVar[str] = "segmentation"
    metric: ClassVar[str] = "miou"
    higher_is_better: ClassVar[bool] = True
    label_field: ClassVar[str] = "semantic"  # the `Batch` field of its labels (the warm-up compares them)

    def __init__(
        self,
        device: str = "cpu",
        steps: int = 150,
        batch_size: int = 16,
        lr: float = 5e-3,
        width: int = 16,
        resolution: Sequence[int] | None = None,
        weight_decay: float = 1e-4,
        flip: bool = True,
        class_weight_power: float = 0.5,
        precision: str = "auto",
    ) -> None:
        super().__init__(device, steps, batch_size, lr, width, resolution, weight_decay, flip, precision)
        if not 0 <= float(class_weight_power) <= 1:
            raise UserError(f"class_weight_power must be in [0, 1], got {class_weight_power}")
        self.class_weight_power = float(class_weight_power)

    # -- protocol

    def check_target(self, target: Batch) -> None:
        if len(target) == 0:
            raise UserError("the target set is empty")
        if target.images is None:
            raise UserError("the segmentation task needs target images; this target has none")
        if target.semantic is None:
            raise UserError(
                "the segmentation task needs semantic labels in the target; this target has none "
                "(a directory needs gtFine/*_labelIds.png or training/semantic/*.png)"
            )
        if not bool((target.semantic != UNLABELED).any()):
            raise UserError("the target's semantic labels are all 0 (unlabeled): nothing to score")

    def fit(self, batch: Batch, *, seed: int, init: dict[str, Any] | None = None) -> SegNet:
        if batch.images is None or batch.semantic is None or len(batch) == 0:
            raise UserError("the segmentation task trains on images with semantic labels; this data has none")
        x = batch.images_float().to(self.device)
        y = batch.semantic.to(self.device).long()
        if self.resolution is not None:
            x = resize_images(x, self.resolution)
            y = resize_labels(y, self.resolution)
        # Ids outside the label space would crash cross-entropy; they carry no class.
        y = torch.where((y >= 0) & (y < NUM_LABELS), y, torch.zeros_like(y))
        model = build_seeded(lambda: SegNet(NUM_LABELS, self.width), seed)
        if init is not None:
            model.load_state_dict(init)
        else:
            model.mean, model.std = channel_stats(x)
        self.place(model)
        model.resolution = tuple(x.shape[-2:])  # type: ignore[assignment]

        weight = class_weights(y, self.class_weight_power)
        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.steps))
        model.train()
        for idx in minibatches(len(x), self.batch_size, self.steps, gen):
            flip = torch.rand(len(idx), generator=gen) < 0.5 if self.flip else None
            idx = idx.to(self.device)
            xb, yb = x[idx], y[idx]
            if flip is not None:
                flip = flip.to(self.device)
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
            if not bool((yb != UNLABELED).any()):
                continue  # an all-unlabeled minibatch has no loss (cross-entropy would give NaN)
            loss = F.cross_entropy(self.forward_train(model, xb), yb, weight=weight, ignore_index=UNLABELED)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        return model

    @torch.no_grad()
    def predict(
        self,
        model: SegNet,
        images: torch.Tensor,
        size: Sequence[int] | None = None,
        classes: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Label ids (N×H×W int64, CPU) for uint8 or float images, at ``size`` (default: the
        images'); only ids in ``classes`` when given (the logits of the others are masked)."""
        model.eval()
        size = tuple(size) if size is not None else tuple(images.shape[-2:])
        masked = None
        if classes is not None:
            masked = torch.ones(NUM_LABELS, dtype=torch.bool)
            masked[[int(c) for c in classes]] = False
        out = []
        for i in range(0, len(images), 32):
            xb = images[i : i + 32]
            xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
            xb = resize_images(xb.to(self.device), model.resolution)  # type: ignore[arg-type]
            logits = model(xb)
            if tuple(logits.shape[-2:]) != size:
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            logits[:, UNLABELED] = float("-inf")
            if masked is not None:
                logits[:, masked.to(logits.device)] = float("-inf")
            out.append(logits.argmax(1).cpu())
        return torch.cat(out)

    def score(self, model: SegNet, target: Batch) -> dict[str, float]:
        self.check_target(target)
        assert target.images is not None and target.semantic is not None
        pred = self.predict(model, target.images, size=target.semantic.shape[-2:], classes=target_classes(target))
        conf = confusion_matrix(pred, target.semantic.cpu(), NUM_LABELS, ignore_index=UNLABELED)
        metrics = segmentation_metrics(conf, ignore_index=UNLABELED)
        if target.cityscapes_ids is not None:
            metrics["cityscapes_miou"] = cityscapes_scores(lts_to_cityscapes(pred), target.cityscapes_ids)["miou"]
        return metrics

    def state_of(self, model: SegNet) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
