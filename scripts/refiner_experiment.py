"""Does refining rendered frames help a segmentation net on a differently-styled target?

The experiment of issue 6 ("what done looks like"), end to end on one machine:

1. **Target domain.**  ``python -m lts.render --cityscapes`` renders frames from the
   project's hidden target ψ* (``configs/targets/default.yaml``) with seeds nothing else
   uses; the images are then *restyled* — a colour cast, a flat tone curve with lifted
   blacks, blur and sensor noise — into a Cityscapes-layout target: a ``train`` split the
   refiners see and a ``val`` split the segmentation nets are scored on.
2. **Refiners.**  SimGAN and SG-GAN are trained with ``python -m lts.refine train`` (the
   default budget unless ``--refiner-steps``; rendered frames with ψ drawn per scene)
   against the target ``train`` split (SG-GAN also once with the target's labels ignored).
3. **Segmentation.**  Frames rendered from ψ* (another seed), raw or refined by each refiner, train
   `lts.tasks.segmentation.SegmentationTask` (same budget and seeds); each net is scored
   on the target ``val`` split: pixel accuracy, class accuracy, mIoU.  An oracle row
   trains on the labelled target ``train`` split itself.
4. **Semantics kept.**  The net trained on raw frames segments *refined* rendered frames;
   its agreement with their original labels, next to its agreement on the raw frames,
   shows whether refinement changed what is where.
5. **Domain gap** (`lts.refiner.gap`) of raw and refined frames to the target ``val`` split.

Writes ``results.json`` and ``results.md`` under ``--out`` and prints the table.
Usage: ``python scripts/refiner_experiment.py --out runs/refiner_exp`` (about an hour of
2 CPU cores with default budgets; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import simulators
from lts.datasets import read_labelled_dir
from lts.refiner import domain_gap, load_refiner
from lts.tasks.segmentation import SegmentationTask
from simulators import Batch
from simulators import labels as L

RES = (64, 128)
TARGET_PSI = str(Path(__file__).resolve().parents[1] / "configs" / "targets" / "default.yaml")
SEED_TARGET_TRAIN = 9001
SEED_TARGET_VAL = 9002
SEED_SEG_TRAIN = 9003
SEED_KEPT = 9004


def render(n: int, seed: int) -> Batch:
    """``n`` frames from the target ψ* (the appearance is what differs, not the content)."""
    sim = simulators.make("procedural", resolution=RES)
    params = sim.param_space.validate(simulators.load_target_file(TARGET_PSI).params, fill_defaults=True)
    return sim.generate(params, n, seed=seed)


def restyle(images: torch.Tensor, seed: int) -> torch.Tensor:
    """The target camera: a cool-green cast, a flat low-contrast tone curve with lifted
    blacks, a Gaussian blur (σ ≈ 1 px) and sensor noise (σ = 4 grey levels).  uint8 in/out."""
    g = torch.Generator().manual_seed(seed)
    x = images.float() / 255.0
    x = (
        x * torch.tensor([0.80, 1.05, 0.95])[None, :, None, None]
        + torch.tensor([0.02, 0.05, 0.06])[None, :, None, None]
    )
    x = x.clamp(0, 1) ** 0.7 * 0.75 + 0.12  # lifted blacks, compressed highlights
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k1[:, None] * k1[None]) / 256.0
    x = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.expand(3, 1, 5, 5).contiguous(), groups=3)
    x = x + (4.0 / 255.0) * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def make_target(root: Path, n_train: int, n_val: int) -> None:
    """Render with ``lts.render --cityscapes``, restyle the images, keep the labels."""
    from PIL import Image

    for split, n, seed in (("train", n_train, SEED_TARGET_TRAIN), ("val", n_val, SEED_TARGET_VAL)):
        scratch = root.parent / f"_render_{split}"
        cmd = [sys.executable, "-m", "lts.render", "--n", str(n), "--out", str(scratch), "--cityscapes", "--overwrite"]
        cmd += ["--split", split, "--seed", str(seed), "--target", TARGET_PSI, "--resolution", f"{RES[0]}x{RES[1]}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        shutil.copytree(scratch / "gtFine" / split, root / "gtFine" / split, dirs_exist_ok=True)
        shutil.copy(scratch / "dataset.json", root / "dataset.json")
        files = sorted((scratch / "leftImg8bit" / split).rglob("*.png"))
        for k, f in enumerate(files):
            img = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None]
            styled = restyle(img, seed * 100_000 + k)[0].permute(1, 2, 0).numpy()
            dst = root / "leftImg8bit" / split / f.relative_to(scratch / "leftImg8bit" / split)
            dst.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(styled).save(dst)
        shutil.rmtree(scratch)


def train_refiner_cli(method: str, target: Path, out: Path, steps: int | None, extra: list[str], threads: int) -> float:
    """``python -m lts.refine train …``; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "lts.refine", "train", "--sim", "procedural", "--target", str(target)]
    cmd += ["--split", "train", "--method", method, "--out", str(out), "--device", "cpu", "--quiet"]
    cmd += ["--threads", str(threads), *extra]
    if steps:
        cmd += ["--steps", str(steps)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def seg_scores(train: Batch, val: Batch, seeds: list[int], steps: int) -> tuple[dict[str, float], Any]:
    """Mean metrics over ``seeds`` of segmentation nets trained on ``train``, scored on ``val``."""
    task = SegmentationTask(steps=steps)
    runs, model = [], None
    for s in seeds:
        model = task.fit(train, seed=s)
        runs.append(task.score(model, val))
    keys = ("pixel_acc", "class_acc", "miou")
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}, model


def _cell(row: dict[str, Any], key: str, pct: bool = True) -> str:
    if key not in row:
        return ""
    return f"{100 * row[key]:.1f}" if pct else f"{row[key]:.3f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/refiner_exp"))
    p.add_argument("--frames", type=int, default=400, help="rendered frames the segmentation nets train on")
    p.add_argument("--target-train", type=int, default=400, help="target images the refiners see")
    p.add_argument("--target-val", type=int, default=200, help="target images the nets are scored on")
    p.add_argument("--refiner-steps", type=int, help="refiner steps (default: the refiners' defaults)")
    p.add_argument("--seg-steps", type=int, default=300, help="segmentation training steps")
    p.add_argument("--seeds", type=int, default=2, help="segmentation seeds to average")
    p.add_argument("--methods", nargs="+", default=["simgan", "sggan", "sggan-unlabelled"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.frames, args.target_train, args.target_val = 32, 32, 16
        args.refiner_steps, args.seg_steps, args.seeds = 4, 10, 1
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    target = out / "target"
    if not (target / "leftImg8bit" / "val").is_dir():
        log(f"making the styled target in {target}")
        make_target(target, args.target_train, args.target_val)
    val = read_labelled_dir(target, resolution=RES, split="val", need=("semantic",))

    times_file = out / "refiner_train_s.json"
    refiner_s: dict[str, float] = json.loads(times_file.read_text()) if times_file.exists() else {}
    ckpts: dict[str, Path] = {}
    for m in args.methods:
        method = m.split("-")[0]
        ck = out / f"{m}.pt"
        extra = ["--ignore-target-labels"] if m.endswith("unlabelled") else []
        if not ck.exists():
            log(f"training refiner {m}")
            refiner_s[m] = train_refiner_cli(method, target, ck, args.refiner_steps, extra, args.threads)
            times_file.write_text(json.dumps(refiner_s, indent=2) + "\n")
        ckpts[m] = ck

    seg_train = render(args.frames, SEED_SEG_TRAIN)
    held_out = render(args.target_val, SEED_KEPT)  # rendered frames no net trains on
    seeds = list(range(args.seeds))
    task = SegmentationTask(steps=args.seg_steps)
    rows: dict[str, dict[str, Any]] = {}
    log("segmentation on the target train split (oracle)")
    tgt_train = read_labelled_dir(target, resolution=RES, split="train", need=("semantic",))
    oracle, oracle_model = seg_scores(tgt_train, val, seeds, args.seg_steps)
    log("segmentation on raw frames")
    rows["raw"], raw_model = seg_scores(seg_train, val, seeds, args.seg_steps)
    frames = {"raw": held_out}
    for m, ck in ckpts.items():
        log(f"segmentation on {m} frames")
        rows[m], _ = seg_scores(load_refiner(ck)(seg_train), val, seeds, args.seg_steps)
        frames[m] = load_refiner(ck)(held_out)
    for m, b in frames.items():
        # Semantics kept: nets that never saw these frames segment them; scored against the
        # labels the frames were rendered with (refinement leaves labels unchanged).
        rows[m]["kept_raw_net"] = task.score(raw_model, b)["pixel_acc"]
        rows[m]["kept_target_net"] = task.score(oracle_model, b)["pixel_acc"]
        gap = domain_gap(b.images, val.images, seed=0)
        rows[m]["gap_classifier_acc"], rows[m]["gap_frechet"] = gap.classifier_accuracy, gap.frechet_distance
        if m in refiner_s:
            rows[m]["refiner_train_s"] = refiner_s[m]
    rows["oracle (target train)"] = oracle
    rows["oracle (target train)"]["kept_target_net"] = task.score(oracle_model, val)["pixel_acc"]
    # Chance: the most frequent class everywhere.
    counts = torch.bincount(held_out.semantic.flatten(), minlength=L.NUM_LABELS)[1:]
    chance = float(counts.max() / counts.sum())

    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "kept_chance_pixel_acc": chance,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| training frames | pixel acc | class acc | mIoU | kept: raw net | kept: target net | gap clf acc | gap FD |",
        "|---" * 8 + "|",
    ]
    for name, r in rows.items():
        cells = [_cell(r, "pixel_acc"), _cell(r, "class_acc"), _cell(r, "miou")]
        cells += [_cell(r, "kept_raw_net"), _cell(r, "kept_target_net")]
        cells += [_cell(r, "gap_classifier_acc", pct=False), _cell(r, "gap_frechet", pct=False)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "pixel acc / class acc / mIoU (%): nets trained on those frames, scored on the styled target val split "
        f"(mean of {len(seeds)} seeds). kept: pixel acc (%) of a net trained on raw frames / on the target "
        "train split, segmenting held-out rendered frames (raw or refined) against their rendered labels "
        f"(chance, the most frequent class: {100 * chance:.1f}); for the oracle row, the target net on the "
        "target val split. gap: domain-classifier accuracy (0.5 = indistinguishable) and Fréchet distance in "
        "fixed random conv features, of the held-out frames to the target val split."
    )
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
