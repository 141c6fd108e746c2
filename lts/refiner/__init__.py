"""The GAN refinement stage: make rendered frames look like the target domain.

Two methods, side by side:

- ``simgan`` (Shrivastava et al. 2017): a full-resolution ResNet refiner, a local patch
  discriminator, self-regularisation L1, an image history, two refiner updates per
  discriminator update;
- ``sggan`` (Li et al., "Semantic-aware Grad-GAN"): two U-Net generators with cycle
  consistency, least-squares adversarial losses, the soft gradient-sensitive loss and
  semantic-aware PatchGAN discriminators.

Train with `train_refiner` (or ``python -m lts.refine train``); use a trained one with
``load_refiner(ckpt, device)``, whose result maps a `Batch` to a `Batch` with refined
images and the labels unchanged.  `domain_gap` (in `lts.refiner.gap`) measures how far
two image sets are apart without any downloaded weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simulators import Batch
from simulators.errors import UserError

from .gap import GapReport, classifier_accuracy, domain_gap, frechet_distance
from .train import CHECKPOINT_FORMAT, METHODS, RefinerConfig, build_generator, default_config, train_refiner

__all__ = [
    "Refiner",
    "load_refiner",
    "train_refiner",
    "RefinerConfig",
    "default_config",
    "METHODS",
    "GapReport",
    "domain_gap",
    "classifier_accuracy",
    "frechet_distance",
]


@dataclass
class Refiner:
    """A trained rendered → target generator, ready to apply.

    ``refiner(batch)`` returns the batch with refined images (same dtype: uint8 stays
    uint8, float stays float in [0, 1]) on the batch's device; every label field is
    untouched.  The net runs on ``device`` in chunks of ``chunk_size`` frames.  The nets
    are fully convolutional, so other resolutions work, though the refiner has only seen
    the scale of ``resolution`` (H, W).
    """

    net: nn.Module
    method: str
    device: torch.device
    resolution: tuple[int, int]
    chunk_size: int = 64
    info: dict[str, Any] = field(default_factory=dict)

    def refine_images(self, images: torch.Tensor) -> torch.Tensor:
        """Refine N×3×H×W images (uint8 0..255 or float 0..1); same dtype and device back."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"refiner: expected N×3×H×W images, got shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            return images.clone()
        is_uint8 = images.dtype == torch.uint8
        outs = []
        with torch.inference_mode():
            for chunk in images.split(self.chunk_size):
                x = chunk.to(self.device)
                x = x.float() / 255.0 if is_uint8 else x.float()
                y = self.net(x)
                if is_uint8:
                    y = (y * 255.0).round().clamp(0, 255).to(torch.uint8)
                else:
                    y = y.to(images.dtype)
                outs.append(y.to(images.device))
        return torch.cat(outs)

    def __call__(self, batch: Batch) -> Batch:
        if batch.images is None:
            raise UserError("refiner: the batch has no images to refine")
        return replace(batch, images=self.refine_images(batch.images))


def load_refiner(ckpt: str | Path, device: str | torch.device = "cpu", *, chunk_size: int = 64) -> Refiner:
    """Load the rendered → target generator of a checkpoint written by `train_refiner`."""
    path = Path(ckpt)
    if not path.is_file():
        raise UserError(f"refiner checkpoint {str(ckpt)!r} does not exist")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("refiner: device 'cuda' asked for, but torch sees no CUDA device here")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, not a pickle traceback
        raise UserError(f"cannot read refiner checkpoint {str(ckpt)!r}: {e}") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{str(ckpt)!r} is not a refiner checkpoint (written by `python -m lts.refine train`)")
    g = ck["generator"]
    net = build_generator(g["kind"], g["kwargs"])
    net.load_state_dict(g["state_dict"])
    net.to(dev).eval()
    res = ck["data"]["resolution"]
    info = {"step": int(ck["step"]), "config": dict(ck["config"]), "data": dict(ck["data"])}
    return Refiner(net, str(ck["method"]), dev, (int(res[0]), int(res[1])), chunk_size, info)
