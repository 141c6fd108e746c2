"""``python -m lts.render``: look at what a simulator makes.

Renders ``--n`` scenes from one ψ and writes, under ``--out DIR``:

- ``rgb/NNNN.png`` the frames, ``labels/NNNN.png`` the semantic labels in the colours
  of `simulators.labels.PALETTE`, ``depth/NNNN.png`` the depth (log scale, near bright);
- ``contact_sheet.png``: every frame as RGB | labels | depth, in a grid;
- ``scenes.jsonl``: one line per frame: its file stem, the attributes drawn for it and
  the per-type counts of visible cars;
- with ``--cityscapes``, a labelled dataset in Cityscapes layout in DIR itself:
  ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``,
  ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` and ``…_gtFine_instanceIds.png``
  (classId·1000 + k for each car).  The label ids are **lts ids** (CARLA's
  ``CityObjectLabel``, `simulators.labels`), not Cityscapes trainIds or labelIds, which
  ``dataset.json`` (``{"label_space": "lts"}``) at the root says to readers
  (`lts.datasets.read_labelled_dir` honours it).

ψ: the simulator's default, then the ``params`` of ``--target FILE``, then each
``--set key=value`` (the value is YAML: ``--set 'weather={clear_noon: 1.0}'``,
``--set cars_per_scene=8``).  ``--camera`` passes the frames through a camera model
(`lts.camera`: colour cast, tone curve, vignetting, blur, noise) and leaves the labels: with
``--cityscapes``, a target directory that looks like a real camera's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from simulators import labels as L
from simulators.errors import UserError

from ..camera import parse_camera
from . import ArgumentParser, parse_resolution, parse_set, run_cli

__all__ = ["main", "colour_labels", "colour_depth", "contact_sheet"]


def colour_labels(semantic: np.ndarray) -> np.ndarray:
    """H×W label ids → H×W×3 uint8 in the colours of `simulators.labels.PALETTE`."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for k, c in L.PALETTE.items():
        lut[k] = c
    return lut[np.clip(semantic, 0, 255)]


def colour_depth(depth: np.ndarray, far: float = 1000.0) -> np.ndarray:
    """H×W metres → H×W×3 uint8: log scale from 1 m (bright) to ``far`` (dark)."""
    from matplotlib import colormaps

    t = 1.0 - np.log(np.clip(depth, 1.0, far)) / np.log(far)
    lut = (colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    return lut[np.clip((t * 255).round().astype(int), 0, 255)]


def contact_sheet(tiles: list[list[np.ndarray]], columns: int = 2, gap: int = 2) -> np.ndarray:
    """Rows of images (each tile: a list of H×W×3 arrays shown side by side) in a grid."""
    if not tiles:
        raise ValueError("nothing to put on a contact sheet")
    strips = [np.concatenate([np.pad(im, ((0, 0), (0, gap), (0, 0))) for im in t], 1) for t in tiles]
    h, w = strips[0].shape[:2]
    rows = (len(strips) + columns - 1) // columns
    sheet = np.full((rows * (h + gap), columns * (w + gap), 3), 255, dtype=np.uint8)
    for i, s in enumerate(strips):
        r, c = divmod(i, columns)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = s
    return sheet


def _params(sim: Any, args: Any) -> dict[str, Any]:
    from simulators import load_target_file

    params: dict[str, Any] = sim.param_space.default()
    if args.target:
        spec = load_target_file(args.target)
        if spec.simulator is not None and spec.simulator not in (args.sim, getattr(sim, "name", None)):
            raise UserError(
                f"target file {args.target!r} is for simulator {spec.simulator!r}, not {args.sim!r} (use --sim)"
            )
        params.update(spec.params)
    params.update(parse_set(args.set or []))
    return sim.param_space.validate(params)


# What lts.render writes at the top of --out (and what --overwrite removes first).
_OUTPUTS = ("rgb", "labels", "depth", "scenes.jsonl", "contact_sheet.png", "params.json", "dataset.json")


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty --out (stale frames of an earlier, longer render would mix in)
    unless ``overwrite`` is given."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {str(out)!r} is not empty (pass --overwrite to replace an earlier render there)")


def _clear_earlier_render(out: Path, split: str, city: str) -> None:
    """Remove what this render is about to write into ``out``: the top-level outputs and
    the Cityscapes folders of this split and city (other splits stay, so one root can
    take a train and a val render)."""
    for path in [out / name for name in _OUTPUTS] + [out / top / split / city for top in ("leftImg8bit", "gtFine")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m lts.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--sim", default="procedural", help="simulator name or package.module:Class (default procedural)")
    p.add_argument("--n", type=int, default=16, help="number of scenes (default 16)")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="directory to write into (created if needed; must be empty)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace what an earlier lts.render wrote into a non-empty --out"
    )
    p.add_argument("--target", metavar="FILE", help="a target parameter file whose params start ψ")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set one parameter (YAML value); repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the scenes (default 0)")
    p.add_argument("--resolution", metavar="HxW", help="frame size, e.g. 128x256 (default: the simulator's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--cityscapes", action="store_true", help="also write a Cityscapes-layout dataset into DIR")
    p.add_argument("--split", default="val", help="Cityscapes split folder (default val)")
    p.add_argument("--city", default="lts", help="Cityscapes city folder and file prefix (default lts)")
    p.add_argument("--columns", type=int, default=2, help="frames per row of the contact sheet (default 2)")
    p.add_argument(
        "--camera",
        metavar="SPEC",
        help="pass the frames through a camera model (colour cast, tone curve, vignetting, blur, noise; lts/camera.py): "
        "'default', or key=value pairs joined by commas, e.g. 'cast=1.1/1/0.9,gamma=0.9,blur=0'; the labels are "
        "untouched (a target that looks like real data)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    import simulators

    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise UserError(f"--n {args.n}: expected at least one scene")
    if args.columns < 1:
        raise UserError(f"--columns {args.columns}: expected a positive number")
    out = Path(args.out)
    camera = parse_camera(args.camera) if args.camera is not None else None
    _check_out(out, args.overwrite)  # before rendering: a refusal costs nothing
    options: dict[str, Any] = {"device": args.device}
    if args.resolution:
        options["resolution"] = parse_resolution(args.resolution)
    sim = simulators.make(args.sim, **options)
    try:
        psi = _params(sim, args)
        batch = sim.generate(psi, args.n, seed=args.seed)
    finally:
        sim.close()
    if batch.images is None:
        raise UserError(f"simulator {args.sim!r} renders no images")
    if camera is not None:
        batch = dataclasses.replace(batch, images=camera(batch.images, seed=args.seed))
    assert batch.images is not None
    _clear_earlier_render(out, args.split, args.city)  # only now: a render that fails leaves the earlier one in place
    for sub in ("rgb", "labels", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    images = batch.images
    if images.dtype.is_floating_point:
        images = (images.float().clamp(0, 1) * 255).round().byte()
    rgb = images.permute(0, 2, 3, 1).cpu().numpy()
    tiles = []
    with open(out / "scenes.jsonl", "w") as fh:
        for i in range(len(batch)):
            stem = f"{i:04d}"
            tile = [rgb[i]]
            Image.fromarray(rgb[i]).save(out / "rgb" / f"{stem}.png")
            if batch.semantic is not None:
                lab = colour_labels(batch.semantic[i].cpu().numpy())
                Image.fromarray(lab).save(out / "labels" / f"{stem}.png")
                tile.append(lab)
            if batch.depth is not None:
                dep = colour_depth(batch.depth[i].cpu().numpy())
                Image.fromarray(dep).save(out / "depth" / f"{stem}.png")
                tile.append(dep)
            tiles.append(tile)
            record: dict[str, Any] = {"frame": stem, "seed": args.seed, "index": i}
            record["attributes"] = {k: v[i] for k, v in batch.attributes.items()}
            if batch.counts is not None:
                record["counts"] = dict(zip(batch.count_names, batch.counts[i].tolist()))
            fh.write(json.dumps(record) + "\n")
    Image.fromarray(contact_sheet(tiles, columns=args.columns)).save(out / "contact_sheet.png")
    written: dict[str, Any] = {"simulator": args.sim, "params": psi}
    if camera is not None:
        written["camera"] = camera.describe()
    (out / "params.json").write_text(json.dumps(written, indent=2) + "\n")
    wrote = "rgb/, labels/, depth/, contact_sheet.png, scenes.jsonl"
    if args.cityscapes:
        from ..datasets import write_cityscapes

        write_cityscapes(batch, out, split=args.split, city=args.city, label_space="lts")
        wrote += f", leftImg8bit/{args.split}/{args.city}/, gtFine/{args.split}/{args.city}/, dataset.json"
    print(f"wrote {len(batch)} frames to {out}: {wrote}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
