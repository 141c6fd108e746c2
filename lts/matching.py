"""Distribution matching: how far rendered frames look from the target's.

The loop's optional warm-up (``match_iterations``, Meta-Sim's advice) moves the policy by
REINFORCE on −MMD² between the appearance of frames rendered from ψ and the target's
frames, before the task reward takes over.  It needs no training, so an iteration costs
a render; it sees what changes the look of whole frames (the weather above all), which a
task net may barely care about.

Features are colour histograms of horizontal bands: each frame cut into four bands of
rows (sky, skyline, street, foreground in a street scene), each band's red, green and
blue values counted in eight bins, 96 fractions per frame.  Histograms tell a grey
overcast frame from a mix of bright and dark ones, which averaged colours do not (with
4 × 8 averages and edge energy, the first version, a 50/50 clear/rain mix looked closer
to an overcast target than overcast did).  MMD² is the biased (V-statistic) estimate with
a Gaussian kernel as wide as the median distance between target features.
"""

from __future__ import annotations

import torch

from simulators.errors import UserError

__all__ = ["AppearanceMatch", "appearance_features"]

_BANDS = 4  # horizontal bands of rows
_BINS = 8  # bins per colour channel


def appearance_features(images: torch.Tensor) -> torch.Tensor:
    """N × 96 features of N × 3 × H × W frames (uint8 0..255 or float 0..1): per band of
    rows and colour channel, the fraction of pixels in each of eight intensity bins."""
    n, c, h, w = images.shape
    if images.dtype == torch.uint8:
        q = images.long() // (256 // _BINS)
    else:
        q = (images.float() * _BINS).long().clamp(0, _BINS - 1)
    band = torch.arange(h, device=images.device) * _BANDS // h
    index = (band.view(1, 1, h, 1) * c + torch.arange(c, device=images.device).view(1, c, 1, 1)) * _BINS + q
    counts = torch.zeros(n, _BANDS * c * _BINS, device=images.device, dtype=torch.float64)
    counts.scatter_add_(1, index.flatten(1), torch.ones_like(index, dtype=torch.float64).flatten(1))
    rows = torch.bincount(band, minlength=_BANDS).to(torch.float64)  # rows per band (H need not divide by 4)
    return counts / (rows.repeat_interleave(c * _BINS) * w)


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
