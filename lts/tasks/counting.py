"""Task ``counting``: how many cars of each type are visible in an image (the paper's task).

A small conv net (encoder to 1/8 resolution) predicts a non-negative density map per
car type; a type's count is the sum of its map (density counting: the answer is built
from local evidence, which generalises from a few hundred images better than a global
regression head).  It is trained from scratch for a fixed number of AdamW steps (or
continued from a previous model's state) on a smooth-L1 loss on the counts, plus — when
the training batch carries ``instances`` that are exactly the counted cars, as the
procedural renderer's do — a squared-error loss pulling the summed map towards each
car's footprint (mass 1 spread over its pixels).  Inputs are standardised by the
training set's per-channel mean and std, kept in the model, so a target in another
weather is *not* re-standardised: the domain gap is what the reward should see.

Metrics: ``mae`` (mean absolute error over images and count columns — the reward, negated)
and ``total_mae`` (over the total per image).  Predictions are real-valued (not rounded),
which keeps the reward smooth in ψ.

Targets whose count columns are coarser than the training columns — a real directory
says only ``("car", "truck")`` (see `lts.datasets`) — are scored on those columns: each
training type is summed into the target column of the same name, or into ``car``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from lts.datasets import resize_images, resize_labels
from simulators import Batch
from simulators.errors import UserError

__all__ = ["CountingTask", "CountingNet", "fold_columns", "instance_density"]


# ----------------------------------------------------------------------------- shared training helpers
# (segmentation uses them too)


def check_options(steps: int, batch_size: int, lr: float, width: int, resolution: Sequence[int] | None) -> None:
    if int(steps) < 1:
        raise UserError(f"steps must be at least 1, got {steps}")
    if int(batch_size) < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}")
    if not float(lr) > 0:
        raise UserError(f"lr must be positive, got {lr}")
    if int(width) < 1:
        raise UserError(f"width must be at least 1, got {width}")
    if resolution is not None and (len(resolution) != 2 or min(int(v) for v in resolution) < 1):
        raise UserError(f"resolution must be [height, width] with positive entries, got {resolution!r}")


PRECISIONS = ("auto", "bf16", "fp32")


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (CPU: AVX-512 BF16 or AMX
    through oneDNN; CUDA: compute capability 8.0 or newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training (``None``: plain float32)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32" or (precision == "auto" and not bf16_native(device)):
        return None
    return torch.bfloat16


_GLOBAL_RNG = threading.Lock()


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def build_seeded(factory: Callable[[], ModuleT], seed: int) -> ModuleT:
    """Build a module with its initial weights drawn from ``seed`` (global RNG left
    untouched).  Module initialisers draw from torch's global generator, so builds in
    evaluations running side by side (threads) take turns."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over 10% of the steps, then cosine decay to 5%."""
    warm = max(1, steps // 10)

    def f(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        t = (i - warm) / max(1, steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def minibatches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``steps`` index tensors: epochs of a seeded permutation, ``batch_size`` at a time."""
    out: list[torch.Tensor] = []
    bs = min(batch_size, n)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    while len(out) < steps:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        out.append(perm[pos : pos + bs])
        pos += bs
    return out


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of float N×3×H×W images."""
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean, std


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device must be 'cpu' or 'cuda', got {str(device)!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for but torch sees no CUDA device (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"device must be 'cpu' or 'cuda', got {str(device)!r}")
    return dev


# ----------------------------------------------------------------------------- the net


class CountingNet(nn.Module):
    """Conv encoder to 1/8 resolution and a non-negative density map per type; a type's
    count is the sum of its map over the image.

    Inputs are standardised with the training images' channel statistics (kept as
    buffers, so a target in another weather is not re-standardised).
    """

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor
    count_names: tuple[str, ...]  # set by `CountingTask.fit`: the columns and the input size it trained on
    resolution: tuple[int, int]

    def __init__(self, num_types: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.register_buffer("mean", torch.zeros(3))
        self.register_buffer("std", torch.ones(3))
        self.features = nn.Sequential(
            conv_block(3, w, stride=2),
            conv_block(w, 2 * w, stride=2),
            conv_block(2 * w, 2 * w),
            conv_block(2 * w, 4 * w, stride=2),
            conv_block(4 * w, 4 * w),
        )
        self.head = nn.Conv2d(4 * w, num_types, 1)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (N×3×H×W) → per-type density N×C×⌈H/8⌉×⌈W/8⌉."""
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return F.softplus(self.head(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (N×3×H×W) → predicted counts N×C (non-negative)."""
        return self.density(x).sum(dim=(2, 3))

    def init_counts(self, mean_counts: torch.Tensor, size: tuple[int, int]) -> None:
        """Set the head's bias so that an untrained net predicts about ``mean_counts``."""
        cells = _grid(size[0]) * _grid(size[1])
        per_cell = (mean_counts.float() / cells).clamp_min(1e-4)
        bias = self.head.bias
        assert bias is not None  # the head is built with one
        with torch.no_grad():
            bias.copy_(torch.log(torch.expm1(per_cell)))


def _encode_names(names: Sequence[str]) -> torch.Tensor:
    return torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)


def _decode_names(coded: torch.Tensor) -> tuple[str, ...]:
    text = bytes(coded.tolist()).decode()
    return tuple(text.split("\n")) if text else ()


def _grid(n: int) -> int:
    for _ in range(3):  # three stride-2 convolutions with padding 1
        n = (n + 1) // 2
    return n


def instance_density(instances: torch.Tensor, counts: torch.Tensor) -> torch.Tensor | None:
    """The total-count density the net's map should sum to, from instance ids: each
    instance spreads a mass of 1 uniformly over its pixels, summed over 8×8 cells.

    ``None`` when the instances are not the counted cars (their number per image differs
    from the counts' total in some image), so that the auxiliary loss is only used when
    it is right.
    """
    n = len(instances)
    flat = instances.reshape(n, -1).long()
    if flat.numel() == 0 or int(flat.min()) < 0:
        return None
    width = int(flat.max()) + 1
    keys = flat + torch.arange(n, device=flat.device)[:, None] * width
    area = torch.bincount(keys.reshape(-1), minlength=n * width).reshape(n, width)
    area[:, 0] = 0
    if not torch.equal((area > 0).sum(1), counts.sum(1).to(area.device)):
        return None
    mass = torch.where(area > 0, 1.0 / area.clamp_min(1).float(), torch.zeros_like(area, dtype=torch.float32))
    per_pixel = torch.gather(mass, 1, flat).reshape(instances.shape)
    return F.avg_pool2d(per_pixel[:, None], 8, stride=8, ceil_mode=True, divisor_override=1)[:, 0]


# ----------------------------------------------------------------------------- the task


def fold_columns(pred: torch.Tensor, pred_names: Sequence[str], target_names: Sequence[str]) -> torch.Tensor:
    """Sum predicted columns into the target's columns.

    Same names (or unnamed columns of the same number) → unchanged.  Otherwise each
    predicted column goes to the target column of the same name, or else to ``car``.
    """
    pred_names, target_names = tuple(pred_names), tuple(target_names)
    if pred_names == target_names or not pred_names or not target_names:
        return pred
    out = pred.new_zeros(pred.shape[0], len(target_names))
    for j, name in enumerate(pred_names):
        if name in target_names:
            out[:, target_names.index(name)] += pred[:, j]
        elif "car" in target_names:
            out[:, target_names.index("car")] += pred[:, j]
        else:
            raise UserError(
                f"target counts {list(target_names)} have no column for the trained type {name!r} "
                "(and no 'car' column to fold it into)"
            )
    return out


class ImageTaskOptions:
    """The training options the image tasks share (all from the config)."""

    def __init__(
        self,
        device: str,
        steps: int,
        batch_size: int,
        lr: float,
        width: int,
        resolution: Sequence[int] | None,
        weight_decay: float,
        flip: bool,
        precision: str = "auto",
    ) -> None:
        check_options(steps, batch_size, lr, width, resolution)
        self.device = resolve_device(device)
        self.amp_dtype = resolve_precision(str(precision), self.device)
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.width = int(width)
        # check_options made sure it is [height, width]
        self.resolution = (int(resolution[0]), int(resolution[1])) if resolution is not None else None
        self.weight_decay = float(weight_decay)
        self.flip = bool(flip)

    def place(self, model: nn.Module) -> nn.Module:
        """The model on the task's device, channels-last (oneDNN's and cuDNN's faster layout)."""
        # torch's stub for Module.to lacks the memory_format keyword that Module.to documents and takes
        return model.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward_train(self, fn: Callable[[torch.Tensor], torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        """``fn(xb)`` in training: channels-last input, bfloat16 autocast when ``precision``
        asks for it (``auto``: where the hardware computes bfloat16 natively), a float32 result."""
        xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            return fn(xb).float()


class CountingTask(ImageTaskOptions):
    """Count visible cars per type.  Options (all from the config):

    ``steps`` optimiser steps per fit (the training budget), ``batch_size``, ``lr``
    (AdamW, warm-up + cosine), ``width`` (channels of the first layer), ``resolution``
    (``[H, W]`` the net sees; ``None`` = the training batch's own), ``device``,
    ``precision`` (``auto``: bfloat16 autocast in training where the CPU or GPU computes
    it natively, else float32; ``bf16``; ``fp32``), ``density_weight`` (weight of the
    auxiliary loss on the density map, used when the training batch has ``instances``
    that are exactly the counted cars; 0 turns it off).
    """

    name: ClassVar[str] = "counting"
    metric: ClassVar[str] = "mae"
    higher_is_better: ClassVar[bool] = False
    label_field: ClassVar[str] = "counts"  # the `Batch` field of its labels (the warm-up compares them)

    def __init__(
        self,
        device: str = "cpu",
        steps: int = 300,
        batch_size: int = 32,
        lr: float = 5e-3,
        width: int = 16,
        resolution: Sequence[int] | None = None,
        weight_decay: float = 1e-4,
        flip: bool = True,
        density_weight: float = 1.0,
        precision: str = "auto",
    ) -> None:
        super().__init__(device, steps, batch_size, lr, width, resolution, weight_decay, flip, precision)
        if not float(density_weight) >= 0:
            raise UserError(f"density_weight must be non-negative, got {density_weight}")
        self.density_weight = float(density_weight)

    # -- protocol

    def check_target(self, target: Batch) -> None:
        if len(target) == 0:
            raise UserError("the target set is empty")
        if target.images is None:
            raise UserError("the counting task needs target images; this target has none")
        if target.counts is None:
            raise UserError(
                "the counting task needs per-image car counts in the target; this target has none "
                "(a directory needs gtFine/*_instanceIds.png or training/instance/*.png)"
            )

    def fit(self, batch: Batch, *, seed: int, init: dict[str, Any] | None = None) -> CountingNet:
        if batch.images is None or batch.counts is None or len(batch) == 0:
            raise UserError("the counting task trains on images with per-type car counts; this data has none")
        x = batch.images_float().to(self.device)
        y = batch.counts.float().to(self.device)
        target_density = None
        if batch.instances is not None and self.density_weight > 0:
            inst = batch.instances.to(self.device)
            if self.resolution is not None:
                inst = resize_labels(inst, self.resolution)
            target_density = instance_density(inst, batch.counts)
        if self.resolution is not None:
            x = resize_images(x, self.resolution)
        names = tuple(batch.count_names)
        if init is not None:
            init = dict(init)
            coded = init.pop("count_names", None)
            names = _decode_names(coded) if coded is not None else names
            num_types = int(init["head.weight"].shape[0])
            if num_types != y.shape[1] and not (names and batch.count_names):
                raise UserError(
                    f"cannot continue a model of {num_types} count columns on data with {y.shape[1]} (no column names)"
                )
        else:
            num_types = y.shape[1]
        model = build_seeded(lambda: CountingNet(num_types, self.width), seed)
        if init is not None:
            model.load_state_dict(init)
        else:
            model.mean, model.std = channel_stats(x)
            model.init_counts(y.mean(0), (x.shape[-2], x.shape[-1]))
        self.place(model)
        # A warm-started model keeps its own (finer) columns; on coarser data such as a real
        # directory's ("car", "truck") its predictions are folded into the data's columns.
        fold = names != tuple(batch.count_names) and bool(names) and bool(batch.count_names)
        if fold:
            fold_columns(torch.zeros(1, num_types), names, batch.count_names)  # UserError if impossible
        model.count_names = names
        model.resolution = (x.shape[-2], x.shape[-1])

        gen = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.steps))
        model.train()
        for idx in minibatches(len(x), self.batch_size, self.steps, gen):
            flip = torch.rand(len(idx), generator=gen) < 0.5 if self.flip else None
            idx = idx.to(self.device)
            xb, yb = x[idx], y[idx]
            db = target_density[idx] if target_density is not None else None
            if flip is not None:
                flip = flip.to(self.device)
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                if db is not None:
                    db = torch.where(flip[:, None, None], db.flip(-1), db)
            density = self.forward_train(model.density, xb)
            pred = density.sum(dim=(2, 3))
            if fold:
                pred = fold_columns(pred, names, batch.count_names)
            loss = F.smooth_l1_loss(pred, yb, beta=0.5)
            if db is not None:
                # squared error per cell, summed over the image: on the scale of a count error
                loss = loss + self.density_weight * (density.sum(1) - db).pow(2).sum(dim=(1, 2)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        return model

    @torch.no_grad()
    def predict(self, model: CountingNet, images: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """Predicted counts (N×C float, CPU) for uint8 or float images."""
        model.eval()
        out = []
        for i in range(0, len(images), chunk):
            xb = images[i : i + chunk]
            xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
            xb = resize_images(xb.to(self.device), model.resolution)
            out.append(model(xb).cpu())
        return torch.cat(out)

    def score(self, model: CountingNet, target: Batch) -> dict[str, float]:
        self.check_target(target)
        assert target.images is not None and target.counts is not None
        pred = self.predict(model, target.images)
        true = target.counts.float().cpu()
        pred = fold_columns(pred, getattr(model, "count_names", ()), target.count_names)
        if pred.shape[1] != true.shape[1]:
            raise UserError(f"target has {true.shape[1]} count columns but the model predicts {pred.shape[1]}")
        return {
            "mae": float((pred - true).abs().mean()),
            "total_mae": float((pred.sum(1) - true.sum(1)).abs().mean()),
        }

    def state_of(self, model: CountingNet) -> dict[str, Any]:
        """The weights (CPU tensors) plus ``count_names``, the column names encoded as a
        uint8 tensor (so that the state stays a plain dict of tensors)."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state["count_names"] = _encode_names(getattr(model, "count_names", ()))
        return state

    # -- helpers

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        if self.resolution is not None:
            x = resize_images(x, self.resolution)
        return x
