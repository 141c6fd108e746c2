"""A camera model: what a real camera does to a rendered frame, for targets that look like
real data (``python -m lts.render --camera …``).

A renderer's frames are clean; a camera's are not.  `CameraModel` applies, in the order a
camera does: a colour cast (per-channel gains: the white balance), a tone curve (a gamma,
then a contrast about mid-grey), vignetting (the corners darker, by ``vignette`` at the
corner), a Gaussian blur (``blur`` pixels of standard deviation: the lens and the
demosaicing) and sensor noise (Gaussian, ``noise`` of the full range, seeded).  The labels
are untouched: it changes how frames look, not what is in them.  This is the domain gap a
warm-up's match of the look cannot close (`policies.moments`: a fit whose residual says so
is not held).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from simulators.errors import UserError

__all__ = ["CameraModel", "parse_camera"]


@dataclass(frozen=True)
class CameraModel:
    """Colour cast, tone curve, vignetting, blur and noise (see the module docstring);
    the defaults are a warm, contrasty phone camera."""

    cast: tuple[float, float, float] = (1.12, 1.0, 0.82)  # red, green, blue gains
    gamma: float = 0.8  # < 1 brightens the shadows
    contrast: float = 1.25  # about mid-grey
    vignette: float = 0.35  # darkening at the corners (0: none)
    blur: float = 0.8  # Gaussian standard deviation, pixels (0: none)
    noise: float = 0.02  # Gaussian standard deviation, fraction of the range (0: none)

    def __post_init__(self) -> None:
        for f in fields(self):
            values = getattr(self, f.name)
            if not all(math.isfinite(v) for v in (values if isinstance(values, tuple) else (values,))):
                raise UserError(f"camera {f.name} must be finite, got {values!r}")
        if len(self.cast) != 3 or not all(g > 0 for g in self.cast):
            raise UserError(f"camera cast must be three positive gains (red/green/blue), got {self.cast!r}")
        for name, least in (("gamma", 0.0), ("contrast", 0.0)):
            if not getattr(self, name) > least:
                raise UserError(f"camera {name} must be > {least:g}, got {getattr(self, name)!r}")
        for name in ("vignette", "blur", "noise"):
            if not getattr(self, name) >= 0:
                raise UserError(f"camera {name} must be >= 0, got {getattr(self, name)!r}")
        if self.vignette >= 1:
            raise UserError(f"camera vignette must be < 1 (the corner's darkening), got {self.vignette!r}")

    def __call__(self, images: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
        """N × 3 × H × W frames (uint8 0..255 or float 0..1) as the camera would see them, in
        the same dtype."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"the camera model takes N×3×H×W frames, got shape {tuple(images.shape)}")
        as_bytes = images.dtype == torch.uint8
        x = images.float() / 255.0 if as_bytes else images.float()
        x = x * torch.tensor(self.cast, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = x.clamp(0, 1).pow(self.gamma)
        x = ((x - 0.5) * self.contrast + 0.5).clamp(0, 1)
        n, _, h, w = x.shape
        if self.vignette:
            yy = torch.linspace(-1, 1, h, device=x.device).view(h, 1)
            xx = torch.linspace(-1, 1, w, device=x.device).view(1, w)
            r2 = (yy.square() + xx.square()) / 2.0  # 1 at the corners
            x = x * (1.0 - self.vignette * r2)
        if self.blur:
            x = _blur(x, self.blur)
        if self.noise:
            g = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFF)
            x = x + self.noise * torch.randn(x.shape, generator=g).to(x.device)
        x = x.clamp(0, 1)
        return (x * 255).round().to(torch.uint8) if as_bytes else x.to(images.dtype)

    def describe(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of N × C × H × W ``x`` (reflected edges)."""
    r = max(1, min(math.ceil(3 * sigma), x.shape[-1] - 1, x.shape[-2] - 1))  # reflection needs r < the frame
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t.square() / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (r, r, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = torch.nn.functional.pad(x, (0, 0, r, r), mode="reflect")
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def parse_camera(spec: str | Mapping[str, Any]) -> CameraModel:
    """``"default"``, or ``key=value`` pairs joined by commas (``cast=1.1/1/0.9,blur=0``; the
    cast's three gains joined by ``/``), or a mapping; keys left out keep the defaults."""
    names = [f.name for f in fields(CameraModel)]
    if isinstance(spec, str):
        items: dict[str, Any] = {}
        if spec.strip() not in ("", "default"):
            for part in spec.split(","):
                key, eq, value = part.partition("=")
                key = key.strip()
                if not eq or key not in names:
                    raise UserError(f"--camera: expected key=value with key one of {', '.join(names)}; got {part!r}")
                try:
                    items[key] = tuple(float(v) for v in value.split("/")) if key == "cast" else float(value)
                except ValueError:
                    raise UserError(
                        f"--camera: {key} must be a number{' (three, joined by /)' if key == 'cast' else ''}; got {value!r}"
                    ) from None
    else:
        items = dict(spec)
        unknown = [k for k in items if k not in names]
        if unknown:
            raise UserError(f"camera: unknown keys {unknown}; expected some of {', '.join(names)}")
        if "cast" in items:
            items["cast"] = tuple(float(v) for v in items["cast"])
    return CameraModel(**items)
