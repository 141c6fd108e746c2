"""Distribution matching: how far rendered frames look from the target's.

The loop's optional warm-up (``match_iterations``, Meta-Sim's advice) moves the policy by
REINFORCE on −MMD² between the appearance of frames rendered from ψ and the target's
frames, before the task reward takes over.  It needs no training, so an iteration costs
a render; it sees what changes the look of whole frames (the weather above all), which a
task net may barely care about.

Features are the frames' coarse colour layout (RGB averaged over a 4 × 8 grid) and
edge energy (mean absolute horizontal and vertical differences over the same grid);
MMD² is the biased (V-statistic) estimate with a Gaussian kernel whose width is the
median distance between target features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from simulators.errors import UserError

__all__ = ["AppearanceMatch", "appearance_features"]

_GRID = (4, 8)


def appearance_features(images: torch.Tensor) -> torch.Tensor:
    """N × 160 features of N × 3 × H × W frames (uint8 0..255 or float 0..1)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    colour = F.adaptive_avg_pool2d(x, _GRID).flatten(1)
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(1, keepdim=True)
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(1, keepdim=True)
    # edges are a few times fainter than colours; scaled so both count in the kernel
    edges = torch.cat([F.adaptive_avg_pool2d(gx, _GRID).flatten(1), F.adaptive_avg_pool2d(gy, _GRID).flatten(1)], 1)
    return torch.cat([colour, 4.0 * edges], 1).double()


class AppearanceMatch:
    """``match(images)``: MMD² between the frames' appearance and the target frames'."""

    def __init__(self, target_images: torch.Tensor) -> None:
        if target_images.dim() != 4 or target_images.shape[1] != 3 or len(target_images) < 2:
            raise UserError(
                "match_iterations needs a target of at least two RGB frames (N×3×H×W); "
                f"this target's images have shape {tuple(target_images.shape)}"
            )
        self.target = appearance_features(target_images)
        d = torch.cdist(self.target, self.target)
        positive = d[d > 0]
        self.bandwidth = float(positive.median()) if positive.numel() else 1.0
        self._k_tt = float(self._kernel(self.target, self.target).mean())

    def _kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(a, b).square() / (2.0 * self.bandwidth**2))

    def __call__(self, images: torch.Tensor) -> float:
        f = appearance_features(images).to(self.target.device)  # rendered on a GPU, a target read from disk
        return float(self._kernel(f, f).mean() + self._k_tt - 2.0 * self._kernel(f, self.target).mean())
