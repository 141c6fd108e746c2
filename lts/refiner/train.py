"""Training the refiners: SimGAN (one refiner, one local discriminator) and SG-GAN (two
U-Net generators, two semantic-aware discriminators, cycle and gradient-sensitive losses).

`train_refiner` trains on a pool of rendered frames (a `Batch` with images and, for
SG-GAN, semantic labels) and a pool of target images (a `Batch` with images and, when
the target has them, semantic labels).  It writes a checkpoint (atomically: a temporary
file then ``os.replace``) every ``checkpoint_every`` steps and at the end, and a sample
grid (rendered | refined | nearest target image by pixel L2) every ``sample_every``
steps next to it.  The checkpoint holds tensors, numbers, strings, lists and dicts only,
so ``torch.load(path, weights_only=True)`` reads it; it carries the optimiser states,
the step, the image histories and the random generators' states, and
``train_refiner(..., resume=True)`` continues from it where it stopped.

One *step* is, for SimGAN, ``refiner_updates`` (2) refiner updates then one
discriminator update (after ``pretrain_disc_steps`` discriminator-only updates on raw
rendered frames before the first step); for SG-GAN one joint update of both generators
then one update of both discriminators.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simulators import Batch
from simulators.errors import UserError

from .buffer import ImageHistoryBuffer
from .losses import (
    cycle_loss,
    lsgan_d_loss,
    lsgan_g_loss,
    self_regularization,
    soft_gradient_loss,
)
from .nets import (
    PatchDiscriminator,
    SemanticPatchDiscriminator,
    SimGANRefiner,
    UNetGenerator,
    group_of,
)

__all__ = [
    "METHODS",
    "RefinerConfig",
    "default_config",
    "train_refiner",
    "build_generator",
    "samples_dir",
    "CHECKPOINT_FORMAT",
]

METHODS = ("simgan", "sggan")
CHECKPOINT_FORMAT = "lts-refiner/1"

ProgressFn = Callable[[int, int, Mapping[str, float]], None]


@dataclass(frozen=True)
class RefinerConfig:
    """Everything that shapes a refiner's training (saved in its checkpoint)."""

    method: str = "sggan"  #: "simgan" or "sggan"
    steps: int = 600  #: training steps (see the module docstring for what one step is)
    batch_size: int = 4  #: frames per update, from each domain
    seed: int = 0  #: seeds the weights, the batches, the flips and the histories
    lr_g: float = (
        1e-3  #: Adam learning rate of the generators (5× pix2pix: short CPU budgets; identity start keeps it stable)
    )
    lr_d: float = 2e-4  #: Adam learning rate of the discriminators
    beta1: float = 0.5  #: Adam β1 (0.5, as pix2pix / CycleGAN)
    flip: bool = True  #: random horizontal flips of both pools (labels flipped alike)
    buffer_size: int = 50  #: image history per discriminator (SimGAN; CycleGAN uses 50)
    disc_channels: int = 32  #: width of the discriminators' first layer
    disc_layers: int = 3  #: stride-2 layers of the discriminators (3: 8×16 score map at 64×128)
    colour_path: bool = True  #: generators add a zero-initialised 1×1 colour map on the input's logits
    # SimGAN
    refiner_channels: int = 32  #: SimGAN refiner width (full resolution, so the main cost)
    refiner_blocks: int = 4  #: SimGAN refiner residual blocks
    lambda_reg: float = 0.5  #: weight of the self-regularisation L1 |R(x) - x|
    refiner_updates: int = 2  #: refiner updates per discriminator update
    pretrain_disc_steps: int = 50  #: discriminator-only updates on raw frames before step 1
    # SG-GAN
    unet_channels: int = 16  #: U-Net width at full resolution (doubling per level, up to 8×)
    unet_depth: int = 4  #: U-Net levels
    lambda_cycle: float = 10.0  #: λc of SG-GAN eq. 8
    lambda_grad: float = 5.0  #: λg of SG-GAN eq. 8
    grad_alpha: float = 0.9  #: α of the soft gradient loss after the hard phase (β = 1 − α)
    hard_grad_fraction: float = 0.1  #: share of the steps run with (α, β) = (1, 0) first
    semantic_discriminator: bool = True  #: semantic-aware masks when both domains have labels

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown refiner method {self.method!r}; expected one of {', '.join(METHODS)}")
        for name in ("steps", "batch_size", "buffer_size", "refiner_updates"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"refiner {name} must be at least 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.grad_alpha <= 1.0:
            raise UserError(f"refiner grad_alpha must be in [0, 1], got {self.grad_alpha!r}")

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> RefinerConfig:
        known = {f.name for f in fields(RefinerConfig)}
        return RefinerConfig(**{k: v for k, v in d.items() if k in known})


def default_config(method: str, **overrides: Any) -> RefinerConfig:
    """The default configuration of ``method`` (budget sized for 2 CPU cores at 64×128)."""
    base = {
        # Measured at 64×128, batch 4, one torch thread: SimGAN ~0.49 s of CPU a step
        # (two full-resolution refiner updates and one discriminator update), so 1000
        # steps take ~8 minutes; SG-GAN ~0.22 s a step, 2000 steps ~7.5 minutes.
        "simgan": {"steps": 1000, "batch_size": 4},
        "sggan": {"steps": 2000, "batch_size": 4},
    }
    if method not in base:
        raise UserError(f"unknown refiner method {method!r}; expected one of {', '.join(METHODS)}")
    return RefinerConfig(method=method, **{**base[method], **overrides})


def build_generator(kind: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """The inference network described in a checkpoint's ``generator`` entry."""
    if kind == "simgan":
        return SimGANRefiner(**kwargs)
    if kind == "unet":
        return UNetGenerator(**kwargs)
    raise UserError(f"refiner checkpoint names an unknown generator kind {kind!r}")


def samples_dir(out: str | Path) -> Path:
    """Where the sample grids of the checkpoint ``out`` go: ``<stem>_samples/`` beside it."""
    out = Path(out)
    return out.with_name(out.stem + "_samples")


# --------------------------------------------------------------------------- data


@dataclass
class _Pool:
    images: torch.Tensor  # N×3×H×W float in [0, 1], on the device
    semantic: torch.Tensor | None  # N×H×W int64 label ids, on the device

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _pool(batch: Batch, what: str, device: torch.device) -> _Pool:
    if batch.images is None or len(batch) == 0:
        raise UserError(f"the {what} images are empty: need at least one frame")
    if batch.images.dim() != 4 or batch.images.shape[1] != 3:
        raise UserError(f"the {what} images must be N×3×H×W, got shape {tuple(batch.images.shape)}")
    sem = batch.semantic.to(device).long() if batch.semantic is not None else None
    return _Pool(batch.images_float().to(device), sem)


def _fingerprint(pool: _Pool) -> str:
    """A short hash of a pool (to refuse resuming on other data)."""
    h = hashlib.sha256()
    h.update(str(tuple(pool.images.shape)).encode())
    h.update((pool.images * 255).round().to(torch.uint8).cpu().numpy().tobytes())
    if pool.semantic is not None:
        h.update(pool.semantic.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _draw(pool: _Pool, n: int, gen: torch.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    idx = torch.randint(0, len(pool), (n,), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    dev = pool.images.device
    idx_d, flips_d = idx.to(dev), flips.to(dev)
    img = pool.images[idx_d]
    img = torch.where(flips_d[:, None, None, None], img.flip(-1), img)
    sem = None
    if pool.semantic is not None:
        sem = pool.semantic[idx_d]
        sem = torch.where(flips_d[:, None, None], sem.flip(-1), sem)
    return img, sem


# --------------------------------------------------------------------------- state


class _State:
    """The nets, optimisers, histories and generators of one training run."""

    def __init__(self, cfg: RefinerConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        g = torch.Generator().manual_seed(cfg.seed)
        seeds = torch.randint(0, 2**62, (8,), generator=g).tolist()
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.batch_gen = gens[0]
        self.step = 0
        self.pretrained = False
        self.history: list[dict[str, float]] = []
        betas = (cfg.beta1, 0.999)
        if cfg.method == "simgan":
            self.gen_kind = "simgan"
            self.gen_kwargs = {
                "channels": cfg.refiner_channels,
                "blocks": cfg.refiner_blocks,
                "colour_path": cfg.colour_path,
            }
            self.nets: dict[str, nn.Module] = {
                "refiner": SimGANRefiner(**self.gen_kwargs, generator=gens[1]),
                "disc": PatchDiscriminator(cfg.disc_channels, cfg.disc_layers, generator=gens[2]),
            }
            self.opts = {
                "refiner": torch.optim.Adam(self.nets["refiner"].parameters(), lr=cfg.lr_g, betas=betas),
                "disc": torch.optim.Adam(self.nets["disc"].parameters(), lr=cfg.lr_d, betas=betas),
            }
            self.buffers = {"refined": ImageHistoryBuffer(cfg.buffer_size, generator=gens[3])}
        else:
            self.gen_kind = "unet"
            self.gen_kwargs = {"channels": cfg.unet_channels, "depth": cfg.unet_depth, "colour_path": cfg.colour_path}
            self.nets = {
                "G": UNetGenerator(**self.gen_kwargs, generator=gens[1]),  # rendered -> target
                "F": UNetGenerator(**self.gen_kwargs, generator=gens[2]),  # target -> rendered
                "D_target": SemanticPatchDiscriminator(cfg.disc_channels, cfg.disc_layers, generator=gens[3]),
                "D_rendered": SemanticPatchDiscriminator(cfg.disc_channels, cfg.disc_layers, generator=gens[4]),
            }
            gen_params = list(self.nets["G"].parameters()) + list(self.nets["F"].parameters())
            disc_params = list(self.nets["D_target"].parameters()) + list(self.nets["D_rendered"].parameters())
            self.opts = {
                "gen": torch.optim.Adam(gen_params, lr=cfg.lr_g, betas=betas),
                "disc": torch.optim.Adam(disc_params, lr=cfg.lr_d, betas=betas),
            }
            self.buffers = {
                "to_target": ImageHistoryBuffer(cfg.buffer_size, generator=gens[5]),
                "to_rendered": ImageHistoryBuffer(cfg.buffer_size, generator=gens[6]),
            }
        for net in self.nets.values():
            net.to(device)

    @property
    def generator(self) -> nn.Module:
        return self.nets["refiner" if self.cfg.method == "simgan" else "G"]

    def state_dict(self, data: dict[str, Any]) -> dict[str, Any]:
        def cpu(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu() for k, v in sd.items()}

        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.cfg.method,
            "config": asdict(self.cfg),
            "step": self.step,
            "pretrained": self.pretrained,
            "generator": {
                "kind": self.gen_kind,
                "kwargs": dict(self.gen_kwargs),
                "state_dict": cpu(self.generator.state_dict()),
            },
            "nets": {k: cpu(n.state_dict()) for k, n in self.nets.items()},
            "optimizers": {k: _opt_state_cpu(o.state_dict()) for k, o in self.opts.items()},
            "buffers": {k: b.state_dict() for k, b in self.buffers.items()},
            "batch_rng": self.batch_gen.get_state(),
            "history": list(self.history),
            "data": data,
        }

    def load_state_dict(self, ck: Mapping[str, Any]) -> None:
        for k, n in self.nets.items():
            n.load_state_dict(ck["nets"][k])
        for k, o in self.opts.items():
            o.load_state_dict(ck["optimizers"][k])
        for k, b in self.buffers.items():
            b.load_state_dict(ck["buffers"][k], device=self.device)
        self.batch_gen.set_state(ck["batch_rng"])
        self.step = int(ck["step"])
        self.pretrained = bool(ck["pretrained"])
        self.history = [dict(h) for h in ck.get("history", [])]


def _opt_state_cpu(sd: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": {
            k: {n: (v.detach().cpu() if torch.is_tensor(v) else v) for n, v in s.items()}
            for k, s in sd["state"].items()
        },
        "param_groups": [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]
        ],
    }


def _floats(**values: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in values.items()}


def _requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


# --------------------------------------------------------------------------- steps


def _simgan_pretrain_disc(st: _State, syn: _Pool, tgt: _Pool) -> None:
    cfg, disc = st.cfg, st.nets["disc"]
    for _ in range(cfg.pretrain_disc_steps):
        x, _ = _draw(syn, cfg.batch_size, st.batch_gen, cfg.flip)
        y, _ = _draw(tgt, cfg.batch_size, st.batch_gen, cfg.flip)
        loss = lsgan_d_loss(disc(y), disc(x))
        st.opts["disc"].zero_grad(set_to_none=True)
        loss.backward()
        st.opts["disc"].step()
    st.pretrained = True


def _simgan_step(st: _State, syn: _Pool, tgt: _Pool) -> dict[str, float]:
    cfg, ref, disc = st.cfg, st.nets["refiner"], st.nets["disc"]
    _requires_grad(disc, False)
    for _ in range(cfg.refiner_updates):
        x, _ = _draw(syn, cfg.batch_size, st.batch_gen, cfg.flip)
        refined = ref(x)
        adv = lsgan_g_loss(disc(refined))
        reg = self_regularization(refined, x)
        loss_r = adv + cfg.lambda_reg * reg
        st.opts["refiner"].zero_grad(set_to_none=True)
        loss_r.backward()
        st.opts["refiner"].step()
    _requires_grad(disc, True)
    x, _ = _draw(syn, cfg.batch_size, st.batch_gen, cfg.flip)
    y, _ = _draw(tgt, cfg.batch_size, st.batch_gen, cfg.flip)
    with torch.no_grad():
        refined_now = ref(x)
    (mixed,) = st.buffers["refined"].query(refined_now)
    d_real, d_fake = disc(y), disc(mixed)
    loss_d = lsgan_d_loss(d_real, d_fake)
    st.opts["disc"].zero_grad(set_to_none=True)
    loss_d.backward()
    st.opts["disc"].step()
    return _floats(adv=adv, reg=reg, d=loss_d, d_real=d_real.mean(), d_fake=d_fake.mean())


def _sggan_step(st: _State, syn: _Pool, tgt: _Pool, use_sem: bool) -> dict[str, float]:
    cfg = st.cfg
    G, Fn, DT, DR = st.nets["G"], st.nets["F"], st.nets["D_target"], st.nets["D_rendered"]
    hard = st.step < cfg.hard_grad_fraction * cfg.steps
    alpha = 1.0 if hard else cfg.grad_alpha
    v, sv = _draw(syn, cfg.batch_size, st.batch_gen, cfg.flip)
    r, sr = _draw(tgt, cfg.batch_size, st.batch_gen, cfg.flip)
    assert sv is not None  # checked by train_refiner
    gv = group_of(sv) if use_sem else None
    gr = group_of(sr) if (use_sem and sr is not None) else None

    _requires_grad(DT, False)
    _requires_grad(DR, False)
    fake_t = G(v)  # rendered frame made to look like the target
    fake_r = Fn(r)  # target frame made to look rendered
    adv = lsgan_g_loss(DT(fake_t, gv)) + lsgan_g_loss(DR(fake_r, gr))
    cyc = cycle_loss(Fn(fake_t), v) + cycle_loss(G(fake_r), r)
    grad = soft_gradient_loss(v, fake_t, sv, alpha=alpha, beta=1.0 - alpha)
    if sr is not None:
        grad = grad + soft_gradient_loss(r, fake_r, sr, alpha=alpha, beta=1.0 - alpha)
    loss_g = adv + cfg.lambda_cycle * cyc + cfg.lambda_grad * grad
    st.opts["gen"].zero_grad(set_to_none=True)
    loss_g.backward()
    st.opts["gen"].step()
    _requires_grad(DT, True)
    _requires_grad(DR, True)

    # The histories keep each fake with the groups of the frame it came from, so the
    # semantic-aware discriminators mask old fakes with their own labels.
    mt_g: torch.Tensor | None
    mr_g: torch.Tensor | None
    if gv is not None and gr is not None:  # use_sem: train_refiner asks for a labelled target
        mt, mt_g = st.buffers["to_target"].query(fake_t, gv.to(torch.uint8))
        mr, mr_g = st.buffers["to_rendered"].query(fake_r, gr.to(torch.uint8))
        mt_g, mr_g = mt_g.long(), mr_g.long()
    else:
        (mt,) = st.buffers["to_target"].query(fake_t)
        (mr,) = st.buffers["to_rendered"].query(fake_r)
        mt_g = mr_g = None
    dt_real, dt_fake = DT(r, gr), DT(mt, mt_g)
    loss_dt = lsgan_d_loss(dt_real, dt_fake)
    loss_dr = lsgan_d_loss(DR(v, gv), DR(mr, mr_g))
    st.opts["disc"].zero_grad(set_to_none=True)
    (loss_dt + loss_dr).backward()
    st.opts["disc"].step()
    return _floats(adv=adv, cyc=cyc, grad=grad, d=loss_dt + loss_dr, d_real=dt_real.mean(), d_fake=dt_fake.mean())


# --------------------------------------------------------------------------- outputs


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _sample_grid(st: _State, syn: _Pool, tgt: _Pool, shown: torch.Tensor, path: Path) -> None:
    """Rows of (rendered | refined | nearest target image by pixel L2), written as PNG."""
    from PIL import Image

    net = st.generator
    was_training = net.training
    net.eval()
    with torch.no_grad():
        x = syn.images[shown.to(syn.images.device)]
        y = net(x)
        flat_t = tgt.images.flatten(1)
        nearest = torch.cdist(y.flatten(1), flat_t).argmin(dim=1)
        near = tgt.images[nearest]
    net.train(was_training)
    rows = torch.cat([x, y, near], dim=3)  # N×3×H×3W
    grid = torch.cat(list(rows), dim=1)  # 3×NH×3W
    arr = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    Image.fromarray(arr).save(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- entry point


def train_refiner(
    method: str,
    synthetic_source: Batch,
    target_images: Batch,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    out: str | Path,
    progress: ProgressFn | None = None,
    resume: bool = False,
    sample_every: int | None = None,
    checkpoint_every: int | None = None,
    config: RefinerConfig | None = None,
) -> Path:
    """Train a refiner of ``method`` ("simgan" or "sggan") and return its checkpoint path.

    ``synthetic_source``: the rendered frames (images; SG-GAN also needs ``semantic``).
    ``target_images``: the target-domain frames; their ``semantic`` labels, when present,
    feed SG-GAN's target-side gradient loss and semantic-aware discriminators.
    ``steps``/``batch_size``/``seed`` override ``config`` (default: `default_config`).
    ``progress(step, steps, losses)`` is called after every step.  Sample grids go to
    `samples_dir(out)` every ``sample_every`` steps (default: 10 grids a run; 0: none).
    With ``resume=True`` an existing checkpoint at ``out`` is continued (same method,
    configuration and data, else `UserError`); without it an existing ``out`` is refused.
    """
    cfg = config if config is not None else default_config(method)
    if cfg.method != method:
        cfg = replace(cfg, method=method)
    cfg = replace(
        cfg,
        seed=seed,
        steps=cfg.steps if steps is None else steps,
        batch_size=cfg.batch_size if batch_size is None else batch_size,
    )
    out = Path(out)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device here; use --device cpu")

    syn = _pool(synthetic_source, "rendered", dev)
    tgt = _pool(target_images, "target", dev)
    if syn.images.shape[-2:] != tgt.images.shape[-2:]:
        raise UserError(
            f"rendered frames are {tuple(syn.images.shape[-2:])} (H, W) but target images are "
            f"{tuple(tgt.images.shape[-2:])}: read both at the same resolution"
        )
    if cfg.method == "sggan" and syn.semantic is None:
        raise UserError("SG-GAN needs semantic labels for the rendered frames; the simulator gave none")
    target_labelled = tgt.semantic is not None
    use_sem = cfg.method == "sggan" and cfg.semantic_discriminator and target_labelled
    data = {
        "rendered": _fingerprint(syn),
        "target": _fingerprint(tgt),
        "target_labelled": target_labelled,
        "resolution": [int(syn.images.shape[-2]), int(syn.images.shape[-1])],
        "n_rendered": len(syn),
        "n_target": len(tgt),
    }

    st = _State(cfg, dev)
    if out.exists():
        if not resume:
            raise UserError(f"refiner checkpoint {out} exists; pass --resume to continue it or choose another --out")
        ck = torch.load(out, map_location="cpu", weights_only=True)
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{out} is not a refiner checkpoint (format {ck.get('format')!r})")
        saved = RefinerConfig.from_dict(ck["config"])
        if replace(saved, steps=cfg.steps) != cfg:
            diff = [f.name for f in fields(cfg) if f.name != "steps" and getattr(saved, f.name) != getattr(cfg, f.name)]
            raise UserError(f"cannot resume {out}: its configuration differs in {', '.join(diff)}")
        for k in ("rendered", "target"):
            if ck["data"][k] != data[k]:
                raise UserError(f"cannot resume {out}: the {k} frames differ from those it was trained on")
        st.load_state_dict(ck)

    every = sample_every if sample_every is not None else max(1, math.ceil(cfg.steps / 10))
    ck_every = checkpoint_every if checkpoint_every is not None else max(1, math.ceil(cfg.steps / 20))
    shown = torch.arange(min(4, len(syn)))

    for net in st.nets.values():
        net.train()
    try:
        if cfg.method == "simgan" and not st.pretrained:
            _simgan_pretrain_disc(st, syn, tgt)
        while st.step < cfg.steps:
            if cfg.method == "simgan":
                losses = _simgan_step(st, syn, tgt)
            else:
                losses = _sggan_step(st, syn, tgt, use_sem)
            st.step += 1
            st.history.append({"step": float(st.step), **losses})
            if progress is not None:
                progress(st.step, cfg.steps, losses)
            if every and (st.step % every == 0 or st.step == cfg.steps):
                _sample_grid(st, syn, tgt, shown, samples_dir(out) / f"step_{st.step:06d}.png")
            if st.step % ck_every == 0 or st.step == cfg.steps:
                _atomic_save(st.state_dict(data), out)
    except KeyboardInterrupt:
        _atomic_save(st.state_dict(data), out)
        raise
    if not out.exists():  # steps already reached when resuming a finished run
        _atomic_save(st.state_dict(data), out)
    return out
