"""Domain-gap measures that need no downloaded weights.

- `classifier_accuracy`: a small CNN is trained here to tell the two image sets apart
  on half of each and scored on the other half (balanced accuracy).  0.5 means it cannot
  tell them apart; 1.0 that they are trivially separable.  Directly answers "can a
  network see which domain a frame comes from?", but saturates at 1.0 for large gaps
  and depends on its own training budget.
- `frechet_distance`: the Fréchet distance between Gaussians fitted to the features of a
  *fixed, randomly initialised* conv net (seed 0): per-channel means and standard
  deviations of three ReLU conv stages, a colour / tone / texture summary (FID's
  recipe without Inception, whose weights are not available here).  The net is fixed, not
  trained on the pair, so raw and refined frames are measured with the same ruler and
  the numbers are comparable across refiners; random conv features are known to keep
  much of what trained ones separate at this level (colour, contrast, noise, blur).
  The value has no absolute scale: compare it between sets, not to published FIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GapReport", "domain_gap", "classifier_accuracy", "frechet_distance", "random_features"]


@dataclass(frozen=True)
class GapReport:
    """Domain gap between a source and a target image set."""

    classifier_accuracy: float  #: held-out balanced accuracy of a domain classifier (0.5 = indistinguishable)
    frechet_distance: float  #: Fréchet distance in fixed random conv features (0 = same Gaussian)
    n_source: int
    n_target: int


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N×3×H×W images, got shape {tuple(images.shape)}")
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class _DomainClassifier(nn.Module):
    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, 2, 1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, 2, 1),
                nn.ReLU(),
            )
            self.head = nn.Linear(64, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                with torch.no_grad():
                    nn.init.kaiming_uniform_(m.weight, a=5**0.5, generator=generator)
                    if m.bias is not None:
                        m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x * 2.0 - 1.0).mean(dim=(2, 3))).squeeze(1)


def classifier_accuracy(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> float:
    """Held-out balanced accuracy of a small domain classifier (see the module docstring).

    Each set is split in half at random (``seed``); the classifier trains ``steps`` Adam
    steps on balanced minibatches of the first halves and is scored on the second.
    """
    xs, xt = _as_float(source), _as_float(target)
    if len(xs) < 2 or len(xt) < 2:
        raise ValueError("classifier_accuracy needs at least 2 images per set")
    g = torch.Generator().manual_seed(seed)
    ps, pt = torch.randperm(len(xs), generator=g), torch.randperm(len(xt), generator=g)
    hs, ht = len(xs) // 2, len(xt) // 2
    tr_s, te_s, tr_t, te_t = xs[ps[:hs]], xs[ps[hs:]], xt[pt[:ht]], xt[pt[ht:]]
    dev = torch.device(device)
    net = _DomainClassifier(g).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    half = max(1, batch_size // 2)
    labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(dev)
    for _ in range(steps):
        i = torch.randint(0, len(tr_s), (half,), generator=g)
        j = torch.randint(0, len(tr_t), (half,), generator=g)
        x = torch.cat([tr_s[i], tr_t[j]]).to(dev)
        loss = F.binary_cross_entropy_with_logits(net(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc_s = torch.cat([(net(c.to(dev)) < 0).float().cpu() for c in te_s.split(256)]).mean()
        acc_t = torch.cat([(net(c.to(dev)) > 0).float().cpu() for c in te_t.split(256)]).mean()
    return float((acc_s + acc_t) / 2)


class _RandomFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)  # fixed: the same ruler for every comparison
        with torch.random.fork_rng(devices=[]):
            convs = [nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(16, 32, 3, 2, 1), nn.Conv2d(32, 32, 3, 2, 1)]
        self.stages = nn.ModuleList(convs)
        for m in convs:  # the list, not the ModuleList: its items are typed Conv2d
            with torch.no_grad():
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
                if m.bias is not None:
                    m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, feats = x * 2.0 - 1.0, []
        for conv in self.stages:
            h = F.relu(conv(h))
            feats += [h.mean(dim=(2, 3)), h.std(dim=(2, 3))]
        return torch.cat(feats, dim=1)  # 2 × (16 + 32 + 32) = 160 features


def random_features(images: torch.Tensor, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """The fixed random-net features of N×3×H×W images: N×160 float64 (on the CPU)."""
    net = _RandomFeatures().to(device).eval()
    x = _as_float(images)
    with torch.no_grad():
        return torch.cat([net(c.to(device)).double().cpu() for c in x.split(256)])


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr(sqrt(Ca Cb)) through the symmetric form sqrt(Ca) Cb sqrt(Ca), whose eigenvalues
    # are those of Ca Cb; stable where scipy's sqrtm of a singular product is not.
    wa, va = np.linalg.eigh(ca)
    ra = (va * np.sqrt(np.clip(wa, 0, None))) @ va.T
    m = ra @ cb @ ra
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * tr_sqrt)


def frechet_distance(source: torch.Tensor, target: torch.Tensor, *, device: str | torch.device = "cpu") -> float:
    """Fréchet distance between the two sets in fixed random conv features (see above)."""
    if len(source) < 2 or len(target) < 2:
        raise ValueError("frechet_distance needs at least 2 images per set")
    fa = random_features(source, device=device).numpy()
    fb = random_features(target, device=device).numpy()
    return max(0.0, _frechet(fa, fb))


def domain_gap(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    seed: int = 0,
    classifier_steps: int = 300,
    device: str | torch.device = "cpu",
) -> GapReport:
    """Both measures for ``source`` vs ``target`` images (N×3×H×W, uint8 or float)."""
    acc = classifier_accuracy(source, target, seed=seed, steps=classifier_steps, device=device)
    fd = frechet_distance(source, target, device=device)
    return GapReport(acc, fd, int(len(source)), int(len(target)))
