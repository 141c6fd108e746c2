"""The refiner networks: SimGAN's ResNet refiner and local patch discriminator, SG-GAN's
U-Net generators and semantic-aware PatchGAN discriminator, and the semantic groups.

Images enter and leave every generator as float N×3×H×W in [0, 1].  Generators are
*residual to their input in logit space*: ``out = sigmoid(logit(x) + r(x))`` with the
layer that makes ``r`` initialised to zero, so a fresh generator is exactly the identity
(what SimGAN's pre-training toward identity reaches after its first phase) and its
output always stays inside [0, 1] without clipping away gradients.

Weights are initialised from an explicit ``torch.Generator`` (normal(0, 0.02) for
convolutions, as pix2pix / CycleGAN do); building a net never touches the global RNG.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from simulators import labels as L

__all__ = [
    "GROUP_NAMES",
    "NUM_GROUPS",
    "group_of",
    "group_masks",
    "SimGANRefiner",
    "PatchDiscriminator",
    "SemanticPatchDiscriminator",
    "UNetGenerator",
    "init_weights",
]

# The semantic groups of SG-GAN's discriminator (the paper clusters Cityscapes' 30 classes
# into 8 so that no channel is starved of pixels).  Ids not listed fall into "void".
_GROUPS: dict[str, tuple[int, ...]] = {
    "flat": (L.ROAD, L.SIDEWALK, L.ROAD_LINE, L.GROUND, L.TERRAIN, L.RAIL_TRACK),
    "construction": (L.BUILDING, L.WALL, L.FENCE, L.BRIDGE, L.GUARD_RAIL),
    "object": (L.POLE, L.TRAFFIC_LIGHT, L.TRAFFIC_SIGN),
    "nature": (L.VEGETATION, L.WATER),
    "sky": (L.SKY,),
    "vehicle": (L.CAR, L.TRUCK, L.BUS, L.TRAIN, L.MOTORCYCLE, L.BICYCLE),
    "human": (L.PEDESTRIAN, L.RIDER),
    "void": (L.UNLABELED, L.STATIC, L.DYNAMIC, L.OTHER),
}
GROUP_NAMES: tuple[str, ...] = tuple(_GROUPS)
NUM_GROUPS: int = len(GROUP_NAMES)
_VOID = GROUP_NAMES.index("void")
_LUT = [_VOID] * L.NUM_LABELS
for _g, _ids in enumerate(_GROUPS.values()):
    for _i in _ids:
        _LUT[_i] = _g

_EPS = 1e-3  # keeps logit(x) finite; 1e-3 * 255 rounds back to the same uint8 value


def group_of(semantic: torch.Tensor) -> torch.Tensor:
    """Group index (0..NUM_GROUPS-1) of every pixel of an N×H×W label-id map."""
    lut = torch.tensor(_LUT, dtype=torch.long, device=semantic.device)
    ids = semantic.long()
    valid = (ids >= 0) & (ids < L.NUM_LABELS)
    return torch.where(valid, lut[ids.clamp(0, L.NUM_LABELS - 1)], torch.full_like(ids, _VOID))


def group_masks(groups: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The one-hot group masks of an N×H×W group map, resized to ``size``: N×G×h×w.

    Resizing averages over each output cell (area interpolation), so a cell holds the
    fraction of its pixels in each group: the paper's 0/1 mask inside uniform patches,
    and small objects (poles, signs) are not dropped as nearest-neighbour resizing would.
    Each cell sums to 1, and a group absent from a cell has weight exactly 0 there.
    """
    onehot = F.one_hot(groups.long(), NUM_GROUPS).permute(0, 3, 1, 2).float()
    if tuple(onehot.shape[-2:]) == tuple(size):
        return onehot
    return F.interpolate(onehot, size=size, mode="area")


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Convolutions ~ normal(0, 0.02), biases 0 (pix2pix); norms' scales 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) and m.weight is not None:
            with torch.no_grad():
                m.weight.fill_(1.0)
                m.bias.zero_()


def _keeps_global_rng(init: Callable[..., None]) -> Callable[..., None]:
    """Run a constructor with the global CPU RNG saved and restored: torch's default layer
    initialisation draws from it, and we overwrite those values from our own generator."""

    @functools.wraps(init)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with torch.random.fork_rng(devices=[]):
            init(*args, **kwargs)

    return wrapper


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    with torch.no_grad():
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


class _ColourPath(nn.Module):
    """A 1×1 convolution on the input's logits, added to the residual: global colour
    mixing, gain (contrast / tone) and offset in one linear layer that learns in a few
    hundred steps, where the deep path alone needs thousands to carry colour through.
    Zero-initialised, so the generator still starts as the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _zero(nn.Conv2d(3, 3, 1))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.conv(logits)


def _logits(x: torch.Tensor) -> torch.Tensor:
    return torch.logit(x.clamp(_EPS, 1.0 - _EPS))


def _residual_out(x: torch.Tensor, r: torch.Tensor, colour: _ColourPath | None = None) -> torch.Tensor:
    lx = _logits(x)
    if colour is not None:
        r = r + colour(lx)
    return torch.sigmoid(lx + r)


class _ResBlock(nn.Module):
    """SimGAN's block: conv3×3 → ReLU → conv3×3, added to the input, ReLU."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1, padding_mode="replicate")
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1, padding_mode="replicate")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h + self.c2(F.relu(self.c1(h))))


class SimGANRefiner(nn.Module):
    """SimGAN's refiner: full-resolution ResNet (no down-sampling), so it can only make
    local changes and keeps the scene's layout (and so its labels)."""

    @_keeps_global_rng
    def __init__(
        self,
        channels: int = 32,
        blocks: int = 4,
        colour_path: bool = True,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1, padding_mode="replicate")
        self.blocks = nn.Sequential(*[_ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 3, 1)
        init_weights(self, generator if generator is not None else torch.Generator().manual_seed(0))
        _zero(self.tail)
        self.colour = _ColourPath() if colour_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.head(x * 2.0 - 1.0))
        return _residual_out(x, self.tail(self.blocks(h)), self.colour)


class PatchDiscriminator(nn.Module):
    """A local (patch) discriminator: stride-2 4×4 convolutions, LeakyReLU, instance norm
    after the first layer (PatchGAN), and a 3×3 head with ``out_channels`` score maps.

    Each output cell scores one receptive field of the input (about 38 pixels across
    for 3 layers), which is SimGAN's local adversarial loss."""

    @_keeps_global_rng
    def __init__(
        self,
        channels: int = 32,
        layers: int = 3,
        out_channels: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.InstanceNorm2d(ch * 2, affine=True), nn.LeakyReLU(0.2)]
            ch *= 2
        self.body = nn.Sequential(*mods)
        self.head = nn.Conv2d(ch, out_channels, 3, padding=1)
        self.out_channels = out_channels
        init_weights(self, generator if generator is not None else torch.Generator().manual_seed(0))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel score maps T (N×out_channels×h×w)."""
        return self.head(self.body(x * 2.0 - 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SemanticPatchDiscriminator(PatchDiscriminator):
    """SG-GAN's semantic-aware discriminator: one score channel per semantic group,
    multiplied by the resized one-hot group masks and summed over channels.

    Without labels (``groups=None``) every cell takes the average of the channels (a
    uniform mask).  The trainer passes ``groups=None`` for *both* inputs of a
    discriminator whenever one side is unlabelled: masking only the labelled side would
    let the discriminator win by segmenting (score the predicted class's channel low)
    instead of judging realism, and the generator would then learn to change semantics.
    """

    def __init__(self, channels: int = 32, layers: int = 3, *, generator: torch.Generator | None = None) -> None:
        super().__init__(channels, layers, NUM_GROUPS, generator=generator)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        t = self.features(x)
        if groups is None:
            return t.mean(dim=1, keepdim=True)
        return (t * group_masks(groups, (t.shape[-2], t.shape[-1]))).sum(dim=1, keepdim=True)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, 2, 1)
        self.norm = nn.InstanceNorm2d(cout, affine=True) if norm else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(h)), 0.2)


class _Up(nn.Module):
    # Up-sampling then a 3×3 convolution instead of a transposed convolution: no
    # checkerboard artefacts, which a segmentation net trained on the output would learn.
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, padding_mode="replicate")
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.norm(self.conv(torch.cat([h, skip], dim=1))))


class UNetGenerator(nn.Module):
    """The U-Net generator of SG-GAN (pix2pix's encoder–decoder with skip connections),
    narrowed for small images: ``depth`` stride-2 levels from ``channels`` features,
    doubling up to 8×.  Inputs of any size are padded to a multiple of 2**depth and the
    output cropped back."""

    @_keeps_global_rng
    def __init__(
        self,
        channels: int = 16,
        depth: int = 4,
        colour_path: bool = True,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.depth = depth
        chs = [min(channels * 2**i, channels * 8) for i in range(depth)]
        self.inc = nn.Conv2d(3, channels, 3, padding=1, padding_mode="replicate")
        downs, prev = [], channels
        for i, c in enumerate(chs):
            downs.append(_Down(prev, c, norm=i > 0))
            prev = c
        self.downs = nn.ModuleList(downs)
        ups = []
        skips = [channels] + chs[:-1]
        for c_skip in reversed(skips):
            ups.append(_Up(prev + c_skip, c_skip))
            prev = c_skip
        self.ups = nn.ModuleList(ups)
        self.tail = nn.Conv2d(prev, 3, 1)
        init_weights(self, generator if generator is not None else torch.Generator().manual_seed(0))
        _zero(self.tail)
        self.colour = _ColourPath() if colour_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h0) % m, (-w0) % m
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        h = F.leaky_relu(self.inc(xp * 2.0 - 1.0), 0.2)
        skips = [h]
        for d in self.downs:
            h = d(h)
            skips.append(h)
        skips.pop()  # the bottleneck is h itself
        for u in self.ups:
            h = u(h, skips.pop())
        r = self.tail(h)[..., :h0, :w0]
        return _residual_out(x, r, self.colour)
