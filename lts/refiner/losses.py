"""The refiners' losses: least-squares adversarial terms (Mao et al.), SimGAN's
self-regularisation, cycle consistency, and SG-GAN's soft gradient-sensitive loss.

All losses are means over their elements, so weights do not depend on the resolution
or the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "lsgan_d_loss",
    "lsgan_g_loss",
    "self_regularization",
    "cycle_loss",
    "sobel",
    "label_boundaries",
    "soft_gradient_loss",
]


def lsgan_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The discriminator's least-squares loss: real → 1, fake → 0 (each half weighted ½)."""
    return 0.5 * ((real_scores - 1.0).pow(2).mean() + fake_scores.pow(2).mean())


def lsgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's least-squares loss: make the discriminator say 1 on fakes."""
    return (fake_scores - 1.0).pow(2).mean()


def self_regularization(refined: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """SimGAN's self-regularisation with the identity feature map: mean |R(x) − x|."""
    return (refined - synthetic).abs().mean()


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Cycle consistency (CycleGAN, SG-GAN eq. 3) for one direction: mean |F(G(v)) − v|."""
    return (reconstructed - original).abs().mean()


def _filter2(x: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Apply the 3×3 kernels ``kx`` and ``ky`` to every channel of N×C×H×W ``x`` (replicate
    padding, so image borders are not mistaken for edges); returns N×2C×H×W (x then y)."""
    c = x.shape[1]
    k = torch.stack([kx, ky]).to(x.dtype).to(x.device)  # 2×3×3
    k = k.unsqueeze(1).repeat(c, 1, 1, 1)  # (2C)×1×3×3, channel-major: c0x, c0y, c1x, …
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)
    n, _, h, w = out.shape
    out = out.view(n, c, 2, h, w)
    return torch.cat([out[:, :, 0], out[:, :, 1]], dim=1)


# SG-GAN eq. 4: Sobel filters C_i for the image.
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_Y = torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
# SG-GAN eq. 10: central differences C_s for the labels.  On integer label ids the
# response is non-zero exactly where the two neighbours carry different labels.
_DIFF_X = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
_DIFF_Y = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def sobel(images: torch.Tensor) -> torch.Tensor:
    """|C_i * image| per channel and direction: N×3×H×W → N×6×H×W (x gradients, then y)."""
    return _filter2(images, _SOBEL_X, _SOBEL_Y).abs()


def label_boundaries(semantic: torch.Tensor) -> torch.Tensor:
    """|sgn(C_s * s)| per direction: N×H×W label ids → N×2×H×W in {0, 1} (x, then y).

    A pixel is on an x-boundary when its left and right neighbours differ in label, on a
    y-boundary when those above and below do."""
    s = semantic.unsqueeze(1).float()
    # Label ids are small integers: the difference of two distinct ids is at least 1 in
    # magnitude, so the sign test is exact in float32.
    return _filter2(s, _DIFF_X, _DIFF_Y).ne(0).float()


def soft_gradient_loss(
    source: torch.Tensor,
    adapted: torch.Tensor,
    semantic: torch.Tensor,
    *,
    alpha: float = 0.9,
    beta: float = 0.1,
) -> torch.Tensor:
    """SG-GAN's soft gradient-sensitive loss (eq. 6) for a batch:

    ``‖ | |C_i * v| − |C_i * G(v)| | ⊙ (α |sgn(C_s * s_v)| + β) ‖₁`` with α + β = 1,

    averaged over pixels, channels and the batch.  The image gradients of the source
    ``v`` and its adaptation ``G(v)`` must agree in magnitude where the labels change
    (weight α + β) and, with the smaller weight β, everywhere else (texture kept within a
    region).  The x-gradient of each colour channel is weighted by the x-boundary mask,
    the y-gradient by the y-boundary mask.  ``(α, β) = (1, 0)`` is the hard loss (eq. 5).
    """
    if alpha < 0 or beta < 0 or abs(alpha + beta - 1.0) > 1e-6:
        raise ValueError(f"soft_gradient_loss: need alpha, beta >= 0 with alpha + beta = 1, got {alpha}, {beta}")
    diff = (sobel(source) - sobel(adapted)).abs()  # N×6×H×W
    c = source.shape[1]
    edges = label_boundaries(semantic)  # N×2×H×W
    weight = alpha * edges.repeat_interleave(c, dim=1) + beta  # x mask for the c x-gradients, then y
    return (diff * weight).mean()
