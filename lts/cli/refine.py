"""``python -m lts.refine``: train a GAN refiner, apply one to images, measure the domain gap.

Subcommands:

- ``train --sim procedural --target DIR --method simgan|sggan --out CKPT``: renders a pool
  of labelled frames (ψ drawn afresh for every scene, so the refiner works for whatever
  ψ the loop later asks for; or ``--params FILE`` for one ψ), reads the target images
  (their labels too where the directory has them), trains, writes CKPT and sample grids
  in ``<CKPT stem>_samples/``.  ``--resume`` continues CKPT.
- ``apply CKPT --in DIR --out DIR``: refines every image under DIR (same relative names,
  written as PNG).
- ``gap --sim procedural --target DIR [--refiner CKPT]``: the domain gap between rendered
  frames (and refined ones) and the target (`lts.refiner.gap`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simulators import Batch
from simulators.errors import UserError

from . import ArgumentParser, parse_resolution, parse_set, progress_bar, run_cli, set_threads

if TYPE_CHECKING:  # for annotations; the commands import torch where they use it
    import torch

__all__ = ["main", "build_parser", "render_pool", "read_target"]

GAP_SEED = 1_000_003  # rendering seed for `gap`: frames the refiner was not trained on


def render_pool(
    sim_name: str,
    n: int,
    *,
    resolution: tuple[int, int],
    seed: int,
    params_file: str | None = None,
    device: str = "cpu",
) -> Batch:
    """``n`` labelled frames from ``sim_name``: ψ drawn uniformly for every scene, or the
    ψ of ``params_file`` (a target parameter file) for all of them."""
    import simulators

    if n < 1:
        raise UserError(f"--frames must be at least 1, got {n}")
    options: dict[str, Any] = {"resolution": resolution}
    if device != "cpu":
        options["device"] = device
    sim = simulators.make(sim_name, **options)
    try:
        if params_file:
            spec = simulators.load_target_file(params_file)
            params = sim.param_space.validate(spec.params, fill_defaults=True)
            batch = sim.generate(params, n, seed=seed)
        else:
            rng = np.random.default_rng(seed)
            per_scene = [sim.param_space.sample(rng) for _ in range(n)]
            batch = sim.generate_per_scene(per_scene, seed=seed)
    finally:
        sim.close()
    return batch.to("cpu")


def read_target(path: str, resolution: tuple[int, int], *, split: str | None = None, labels: bool = True) -> Batch:
    """The target images of ``path`` at ``resolution``: a labelled (Cityscapes / KITTI)
    layout gives its images, with their ``semantic`` labels when ``labels`` is true; any
    other directory is read as plain images."""
    from ..datasets import read_image_dir, read_labelled_dir

    root = Path(path)
    if not root.is_dir():
        raise UserError(f"--target {path!r}: not a directory")
    if (root / "leftImg8bit").is_dir() or (root / "training" / "image_2").is_dir():
        # Read as a labelled layout even without labels: a plain recursive read of a
        # Cityscapes root would take the gtFine label images for photos.
        batch = read_labelled_dir(root, resolution=resolution, split=split, need=("semantic",))
    else:
        batch = read_image_dir(root, resolution)
    return Batch(images=batch.images, semantic=batch.semantic if labels else None, attributes=batch.attributes)


def _config_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as `RefinerConfig` fields, each checked against its type."""
    from dataclasses import fields

    from simulators.errors import did_you_mean

    from ..refiner import RefinerConfig

    reserved = {"method", "steps", "batch_size", "seed"}  # have their own flags
    types = {f.name: f.type for f in fields(RefinerConfig) if f.name not in reserved}
    out = {}
    for k, v in parse_set(items).items():
        if k not in types:
            names = sorted(types)
            raise UserError(f"--set {k!r}: not a refiner setting; known: {', '.join(names)}" + did_you_mean(k, names))
        kind = str(types[k])
        ok = {
            "bool": isinstance(v, bool),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "float": isinstance(v, (int, float)) and not isinstance(v, bool),
        }.get(kind, isinstance(v, str))
        if not ok:
            raise UserError(f"--set {k}={v!r}: expected a value of type {kind}")
        out[k] = float(v) if kind == "float" else v
    return out


def _device(name: str | None) -> str:
    if name is None:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _cmd_train(args: Any) -> int:
    from ..refiner import default_config, train_refiner
    from ..refiner.train import samples_dir

    set_threads(args.threads)
    resolution = parse_resolution(args.resolution)
    device = _device(args.device)
    out = Path(args.out)
    if out.exists() and not args.resume:
        raise UserError(f"--out {out} exists; pass --resume to continue it or choose another path")
    cfg = default_config(args.method, **_config_overrides(args.set or []))
    t0 = time.perf_counter()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    synthetic = render_pool(
        args.sim, args.frames, resolution=resolution, seed=args.seed, params_file=args.params, device=device
    )
    log(f"rendered {len(synthetic)} frames from {args.sim} in {time.perf_counter() - t0:.1f} s")
    target = read_target(args.target, resolution, split=args.split, labels=not args.ignore_target_labels)
    labelled = "with semantic labels" if target.semantic is not None else "without labels"
    log(f"target: {len(target)} images {labelled} from {args.target}")
    if args.resume and not out.exists():
        log(f"{out} does not exist yet: starting afresh")

    with progress_bar(not args.quiet, total=args.steps or cfg.steps, unit="step", desc=f"refine {args.method}") as bar:

        def progress(step: int, total: int, losses: Mapping[str, float]) -> None:
            if bar is not None:
                bar.total = total
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
                bar.update(step - bar.n)

        path = train_refiner(
            args.method,
            synthetic,
            target,
            steps=args.steps,
            batch_size=args.batch_size,
            device=device,
            seed=args.seed,
            out=out,
            progress=progress,
            resume=args.resume,
            sample_every=args.sample_every,
            config=cfg,
        )
    print(f"refiner written to {path} (samples in {samples_dir(path)}/) in {time.perf_counter() - t0:.0f} s")
    return 0


def _cmd_apply(args: Any) -> int:
    import torch
    from PIL import Image

    from ..refiner import load_refiner

    set_threads(args.threads)
    src, dst = Path(args.input), Path(args.out)
    if not src.is_dir():
        raise UserError(f"--in {str(src)!r}: not a directory")
    if dst.resolve() == src.resolve():
        raise UserError("--out must differ from --in (the originals would be overwritten)")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file())
    if not files:
        raise UserError(f"{src}: no images found (*.png, *.jpg)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    refiner = load_refiner(args.ckpt, _device(args.device), chunk_size=args.batch_size)
    size = (
        None
        if args.resolution == "native"
        else parse_resolution(args.resolution or "x".join(map(str, refiner.resolution)))
    )
    # Fixed size: refine args.batch_size images at a time; native sizes: one by one.
    step = args.batch_size if size is not None else 1
    with progress_bar(not args.quiet, total=len(files), unit="image", desc="apply") as bar:
        for k in range(0, len(files), step):
            chunk = files[k : k + step]
            arrays = []
            for f in chunk:
                img = Image.open(f).convert("RGB")
                if size is not None and (img.size[1], img.size[0]) != size:
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(img))
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
            y = refiner.refine_images(x).permute(0, 2, 3, 1).numpy()
            for f, arr in zip(chunk, y):
                target = (dst / f.relative_to(src)).with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(target)
            if bar is not None:
                bar.update(len(chunk))
    print(f"refined {len(files)} images into {dst}")
    return 0


def _frames(batch: Batch, what: str) -> torch.Tensor:
    """The batch's images; none is a `UserError` naming where the batch came from."""
    if batch.images is None:
        raise UserError(f"{what} gives no images; the domain gap compares frames")
    return batch.images


def _cmd_gap(args: Any) -> int:
    from ..refiner import domain_gap, load_refiner

    set_threads(args.threads)
    device = _device(args.device)
    refiner = load_refiner(args.refiner, device) if args.refiner else None
    if args.resolution:
        resolution = parse_resolution(args.resolution)
    elif refiner is not None:
        resolution = refiner.resolution
    else:
        resolution = (64, 128)
    rendered = render_pool(
        args.sim, args.frames, resolution=resolution, seed=args.seed, params_file=args.params, device=device
    )
    target = read_target(args.target, resolution, split=args.split, labels=False)
    target_frames = _frames(target, f"--target {args.target!r}")
    rows = [
        (
            "rendered",
            domain_gap(
                _frames(rendered, f"--sim {args.sim!r}"),
                target_frames,
                seed=0,
                classifier_steps=args.steps,
                device=device,
            ),
        )
    ]
    if refiner is not None:
        refined = _frames(refiner(rendered), "the refiner")
        rows.append(("refined", domain_gap(refined, target_frames, seed=0, classifier_steps=args.steps, device=device)))
    print(
        f"domain gap to {args.target} ({len(target)} images), {len(rendered)} frames at {resolution[0]}x{resolution[1]}"
    )
    print(f"{'frames':<10} {'classifier acc':>15} {'frechet dist':>13}")
    for name, g in rows:
        print(f"{name:<10} {g.classifier_accuracy:>15.3f} {g.frechet_distance:>13.4f}")
    print("(classifier acc: held-out accuracy of a domain classifier, 0.5 = indistinguishable; "
          "frechet dist: in fixed random conv features, lower = closer)")  # fmt: skip
    return 0


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m lts.refine", description="Train or apply a GAN refiner (SimGAN / SG-GAN).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a refiner on rendered frames and target images")
    t.add_argument("--sim", default="procedural", help="simulator name or module:Class (default procedural)")
    t.add_argument("--target", required=True, metavar="DIR", help="target images (labels used by SG-GAN if present)")
    t.add_argument("--method", choices=["simgan", "sggan"], default="sggan", help="refiner method (default sggan)")
    t.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write (sample grids go beside it)")
    t.add_argument("--steps", type=int, metavar="N", help="training steps (default: simgan 1000, sggan 2000)")
    t.add_argument("--batch-size", type=int, metavar="B", help="frames per update from each domain (default 4)")
    t.add_argument("--resolution", default="64x128", metavar="HxW", help="training resolution (default 64x128)")
    t.add_argument("--frames", type=int, default=400, metavar="N", help="rendered frames in the pool (default 400)")
    t.add_argument("--params", metavar="FILE", help="render every frame from this ψ (default: ψ drawn per scene)")
    t.add_argument("--split", help="split folder of a Cityscapes-layout target (default: val, else the only one)")
    t.add_argument("--ignore-target-labels", action="store_true", help="treat the target as unlabelled")
    t.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    t.add_argument("--seed", type=int, default=0, help="seeds rendering, weights and batches (default 0)")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    t.add_argument("--sample-every", type=int, metavar="N", help="steps between sample grids (default: 10 per run)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="a refiner setting, e.g. lambda_reg=0.3")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch CPU threads (default 1; 0 = torch's default)"
    )

    a = sub.add_parser("apply", help="refine every image of a directory")
    a.add_argument("ckpt", metavar="CKPT")
    a.add_argument("--in", dest="input", required=True, metavar="DIR")
    a.add_argument("--out", required=True, metavar="DIR")
    a.add_argument(
        "--resolution", metavar="HxW|native", help="size to refine at (default: the refiner's training size)"
    )
    a.add_argument("--batch-size", type=int, default=32, metavar="B", help="images refined at once (default 32)")
    a.add_argument("--device", choices=["cpu", "cuda"])
    a.add_argument("--quiet", action="store_true")
    a.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch CPU threads (default 1; 0 = torch's default)"
    )

    g = sub.add_parser("gap", help="domain gap between rendered (and refined) frames and target images")
    g.add_argument("--sim", default="procedural")
    g.add_argument("--target", required=True, metavar="DIR")
    g.add_argument("--refiner", metavar="CKPT", help="also measure the refined frames")
    g.add_argument("--frames", type=int, default=200, metavar="N", help="rendered frames (default 200)")
    g.add_argument("--params", metavar="FILE", help="render from this ψ (default: ψ drawn per scene)")
    g.add_argument("--resolution", metavar="HxW", help="default: the refiner's, else 64x128")
    g.add_argument("--split")
    g.add_argument("--steps", type=int, default=300, help="domain classifier training steps (default 300)")
    g.add_argument("--seed", type=int, default=GAP_SEED, help="rendering seed (default: one training never uses)")
    g.add_argument("--device", choices=["cpu", "cuda"])
    g.add_argument(
        "--threads", type=int, default=1, metavar="N", help="torch CPU threads (default 1; 0 = torch's default)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 0
    return {"train": _cmd_train, "apply": _cmd_apply, "gap": _cmd_gap}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
