"""Labelled image directories on disk ↔ `Batch`: the readers of real targets and the
Cityscapes-layout writer used to make fixtures.

Layouts read by `read_labelled_dir` (detected from the directory):

- **Cityscapes**: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` and optionally
  ``…_gtFine_instanceIds.png`` (pixel = classId·1000 + k for instances, k from 0;
  classId alone for pixels that are not one instance).
- **KITTI semantics**: ``training/image_2/<name>.png`` with ``training/semantic/<name>.png``
  (Cityscapes labelIds) and optionally ``training/instance/<name>.png`` (16-bit,
  pixel = classId·256 + k, k ≥ 1 for instances, 0 for none).

Label ids are Cityscapes labelIds, mapped into the lts label space
(`simulators.labels.CITYSCAPES_TO_LTS`; known Cityscapes ids without an lts class become 0,
*unlabeled*), unless the dataset root holds a ``dataset.json`` with
``{"label_space": "lts"}``, in which case they are lts ids already (what
`write_cityscapes` and ``lts.render --cityscapes`` write).  Ids that belong to neither
space become 0 with one warning for the whole read.

Counts from a real directory.  Real labels say *car* or *truck*, not sedan / hatchback /
SUV / van, so a directory's ``counts`` has the two columns ``count_names = ("car",
"truck")``: the number of car instances and of truck instances per image (instances
smaller than ``min_instance_pixels`` at the output resolution are not visible and not
counted, the procedural renderer's rule).  `lts.tasks.counting.CountingTask.score` folds
its per-type predictions into those columns (every type that is not ``truck`` counts as ``car``).

Resizing: images bilinear with antialiasing (PIL), labels nearest.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from simulators import Batch
from simulators import labels as L
from simulators.errors import UserError

__all__ = [
    "REAL_COUNT_NAMES",
    "shared_files",
    "DirInfo",
    "labelled_dir_info",
    "read_labelled_dir",
    "read_image_dir",
    "write_cityscapes",
    "resize_images",
    "resize_labels",
]

#: Column names of ``counts`` read from a real directory.
REAL_COUNT_NAMES: tuple[str, ...] = ("car", "truck")

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CITYSCAPES_MAX_ID = 33  # labelIds 0..33 are Cityscapes classes (-1, license plate, never appears in the PNGs)
_LTS_CAR_TRUCK = (L.CAR, L.TRUCK)
_CITYSCAPES_CAR_TRUCK = (26, 27)
# lts id -> a Cityscapes labelId, for writing in the Cityscapes label space.
_LTS_TO_CITYSCAPES: dict[int, int] = L.LTS_TO_CITYSCAPES


# ----------------------------------------------------------------------------- resizing


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize N×3×H×W images to ``size = (H, W)``, bilinear with antialiasing.

    uint8 in → uint8 out (rounded); float in → float out.  Same size → returned as is.
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    x = images.float()
    y = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    if images.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(images.dtype)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize N×H×W integer label maps to ``size = (H, W)``, nearest (pixel centres)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    h, w = labels.shape[-2:]
    rows = _nearest_index(h, size[0], labels.device)
    cols = _nearest_index(w, size[1], labels.device)
    return labels[..., rows[:, None], cols[None, :]]


def _nearest_index(src: int, dst: int, device: torch.device | str = "cpu") -> torch.Tensor:
    # Pixel-centre sampling, as PIL's NEAREST and torch's "nearest-exact".
    idx = ((torch.arange(dst, device=device, dtype=torch.float64) + 0.5) * (src / dst)).floor().long()
    return idx.clamp_(0, src - 1)


def _resize_label_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if arr.shape == tuple(size):
        return arr
    rows = _nearest_index(arr.shape[0], size[0]).numpy()
    cols = _nearest_index(arr.shape[1], size[1]).numpy()
    return arr[rows[:, None], cols[None, :]]


# ----------------------------------------------------------------------------- layouts


@dataclass
class _Item:
    image: Path
    label: Path | None
    instance: Path | None


@dataclass
class _Layout:
    kind: str  # "cityscapes" | "kitti"
    root: Path
    items: list[_Item]
    label_hint: str  # how a label file is named, for messages
    instance_hint: str
    instance_divisor: int  # classId * divisor + k
    orphan_labels: list[Path]


def _check_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such directory")
    if not p.is_dir():
        raise UserError(f"{p}: not a directory")
    return p


def _images_under(p: Path) -> list[Path]:
    return sorted(f for f in p.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file())


def _cityscapes(root: Path, split: str | None) -> _Layout:
    img_root = root / "leftImg8bit"
    splits = sorted(d.name for d in img_root.iterdir() if d.is_dir())
    if split is None:
        if "val" in splits:
            split = "val"
        elif len(splits) == 1:
            split = splits[0]
        elif not splits:
            raise UserError(f"{root}: leftImg8bit/ holds no split folder (expected leftImg8bit/<split>/<city>/*.png)")
        else:
            raise UserError(f"{root}: several splits ({', '.join(splits)}) and no 'val'; choose one")
    elif split not in splits:
        raise UserError(f"{root}: no split {split!r} under leftImg8bit/ (found: {', '.join(splits) or 'none'})")
    images = sorted((img_root / split).glob("*/*_leftImg8bit.png"))
    gt = root / "gtFine" / split
    items = []
    for img in images:
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = gt / img.parent.name / f"{stem}_gtFine_labelIds.png"
        ins = gt / img.parent.name / f"{stem}_gtFine_instanceIds.png"
        items.append(_Item(img, lab if lab.is_file() else None, ins if ins.is_file() else None))
    have = {it.label for it in items if it.label is not None}
    orphans = sorted(p for p in gt.glob("*/*_gtFine_labelIds.png") if p not in have) if gt.is_dir() else []
    return _Layout(
        "cityscapes",
        root,
        items,
        label_hint=f"gtFine/{split}/<city>/*_gtFine_labelIds.png",
        instance_hint="gtFine/*_instanceIds.png",
        instance_divisor=1000,
        orphan_labels=orphans,
    )


def _kitti(root: Path, split: str | None) -> _Layout:
    if split not in (None, "training"):
        raise UserError(f"{root}: a KITTI semantics directory has labels only for split 'training', not {split!r}")
    tr = root / "training"
    images = sorted(f for f in (tr / "image_2").iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
    items = []
    for img in images:
        lab = tr / "semantic" / f"{img.stem}.png"
        ins = tr / "instance" / f"{img.stem}.png"
        items.append(_Item(img, lab if lab.is_file() else None, ins if ins.is_file() else None))
    stems = {img.stem for img in images}
    sem_dir = tr / "semantic"
    orphans = sorted(p for p in sem_dir.glob("*.png") if p.stem not in stems) if sem_dir.is_dir() else []
    return _Layout(
        "kitti",
        root,
        items,
        label_hint="training/semantic/<name>.png",
        instance_hint="training/instance/*.png",
        instance_divisor=256,
        orphan_labels=orphans,
    )


def _detect(path: Path, split: str | None) -> _Layout:
    if (path / "leftImg8bit").is_dir():
        return _cityscapes(path, split)
    if (path / "training" / "image_2").is_dir():
        return _kitti(path, split)
    if path.name == "training" and (path / "image_2").is_dir():
        return _kitti(path.parent, split)
    if path.name == "leftImg8bit" and (path.parent / "gtFine").is_dir():
        return _cityscapes(path.parent, split)
    expected = (
        "expected Cityscapes layout (leftImg8bit/<split>/<city>/*_leftImg8bit.png with "
        "gtFine/<split>/<city>/*_gtFine_labelIds.png) or KITTI semantics layout "
        "(training/image_2/*.png with training/semantic/*.png)"
    )
    if not _images_under(path):
        raise UserError(f"{path}: no images found; {expected}")
    raise UserError(f"{path}: holds images but no labels in a known layout; {expected}")


def _label_space(root: Path) -> str:
    meta = root / "dataset.json"
    if not meta.is_file():
        return "cityscapes"
    try:
        space = json.loads(meta.read_text()).get("label_space", "cityscapes")
    except (json.JSONDecodeError, AttributeError, OSError) as e:
        raise UserError(f"{meta}: not a JSON object ({e})") from None
    if space not in ("cityscapes", "lts"):
        raise UserError(f"{meta}: label_space {space!r} is not 'cityscapes' or 'lts'")
    return space


@dataclass(frozen=True)
class DirInfo:
    """What `labelled_dir_info` tells about a labelled directory without decoding it."""

    kind: str  # "cityscapes" | "kitti"
    size: tuple[int, int]  # (H, W) of its first image
    files: tuple[str, ...]  # the images that have a label file, relative to the root, sorted


def labelled_dir_info(path: str | Path, split: str | None = None) -> DirInfo:
    """The layout, the first labelled image's size and the labelled images of a directory
    (`read_labelled_dir`'s layouts); `UserError` if it holds no labelled image."""
    root = _check_dir(path)
    layout = _detect(root, split)
    items = [it for it in layout.items if it.label is not None]
    if not items:
        raise UserError(f"{root}: no labelled image in the {layout.kind} layout (expected {layout.label_hint})")
    try:
        with Image.open(items[0].image) as im:
            w, h = im.size
    except OSError as e:
        raise UserError(f"{items[0].image}: cannot read image ({e})") from None
    files = tuple(sorted(str(it.image.relative_to(layout.root)) for it in items))
    return DirInfo(layout.kind, (h, w), files)


# ----------------------------------------------------------------------------- decoding


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise UserError(f"{path}: cannot read image ({e})") from None


def _open_ids(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
                raise UserError(
                    f"{path}: a {im.mode} colour image; {what} must be single-channel ids "
                    "(e.g. *_labelIds.png, not *_color.png)"
                )
            arr = np.asarray(im)
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e})") from None
    return arr.astype(np.int64)


def _lookup_table(space: str) -> np.ndarray:
    """Map from a source id (0.._CITYSCAPES_MAX_ID or 0..NUM_LABELS-1) to an lts id; -1 = unknown."""
    if space == "lts":
        return np.arange(L.NUM_LABELS, dtype=np.int64)
    lut = np.zeros(_CITYSCAPES_MAX_ID + 1, dtype=np.int64)
    for cs, lts_id in L.CITYSCAPES_TO_LTS.items():
        lut[cs] = lts_id
    return lut


def _map_ids(arr: np.ndarray, lut: np.ndarray, unknown: set[int]) -> np.ndarray:
    bad = (arr < 0) | (arr >= len(lut))
    if bad.any():
        unknown.update(int(v) for v in np.unique(arr[bad])[:20])
        arr = np.where(bad, 0, arr)
    return lut[arr]


def _count_instances(
    inst: np.ndarray, classes: Sequence[int], divisor: int, min_pixels: float, scale: float
) -> list[int]:
    """Instances of each class in an instance-id map (sizes measured after ``scale``, an area factor)."""
    values, areas = np.unique(inst, return_counts=True)
    cls, k = values // divisor, values % divisor
    # Cityscapes numbers instances from 0 (values < 1000 are class-only regions); KITTI from 1.
    is_inst = values >= divisor if divisor == 1000 else k > 0
    visible = areas * scale >= min_pixels
    return [int(np.sum(is_inst & visible & (cls == c))) for c in classes]


# ----------------------------------------------------------------------------- readers


def read_labelled_dir(
    path: str | Path,
    *,
    resolution: tuple[int, int] | None = None,
    split: str | None = None,
    need: Iterable[str] = ("semantic",),
    limit: int | None = None,
    min_instance_pixels: float | None = None,
) -> Batch:
    """Read a Cityscapes- or KITTI-layout directory of labelled images into a `Batch`.

    ``resolution``: ``(H, W)`` of the returned images and labels; ``None`` keeps the first
    image's size (others are resized to it).  ``split``: the Cityscapes split folder
    (default ``val`` if present, else the only one); KITTI has only ``training``.
    ``need``: the labels that must be there, any of ``"semantic"`` and ``"counts"`` —
    ``semantic`` is read whenever label files exist; ``counts`` (columns
    `REAL_COUNT_NAMES`) come from the instance-id files.  ``limit``: keep at most this many
    images, evenly spaced over the sorted list.  ``min_instance_pixels``: an instance
    smaller than this at the output resolution is not visible and not counted (default:
    the procedural renderer's rule, `simulators.labels.min_visible_pixels`: 0.4% of the
    frame, at least 4).

    The batch's ``attributes["file"]`` holds each image's path relative to the root.  A
    directory labelled in Cityscapes labelIds (Cityscapes, KITTI semantics) also keeps them,
    resized as ``semantic``, in ``cityscapes_ids`` (for `lts.metrics.cityscapes_scores`).
    Raises `UserError` (one line) for an empty directory, images without labels, labels
    without images, size mismatches between an image and its labels, and counts asked
    for without instance files.  Unknown label ids become 0 with one warning.
    """
    need = tuple(need)
    for n in need:
        if n not in ("semantic", "counts"):
            raise UserError(f"need: unknown label kind {n!r} (expected 'semantic' or 'counts')")
    if resolution is not None:
        resolution = _check_resolution(resolution)
    root = _check_dir(path)
    layout = _detect(root, split)
    if not layout.items:
        raise UserError(f"{root}: no images found in the {layout.kind} layout")
    items = layout.items
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        if limit < len(items):
            items = [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]

    missing = [it.image for it in items if it.label is None]
    if missing and (len(missing) < len(items) or "semantic" in need):
        raise UserError(
            f"{root}: {len(missing)} of {len(items)} images have no label file, e.g. "
            f"{missing[0].relative_to(root)} (expected {layout.label_hint})"
        )
    if layout.orphan_labels and not missing:
        raise UserError(
            f"{root}: {len(layout.orphan_labels)} label files have no image, e.g. "
            f"{layout.orphan_labels[0].relative_to(root)}"
        )
    has_labels = not missing
    if "counts" in need:
        lacking = [it.image for it in items if it.instance is None]
        if lacking:
            raise UserError(
                f"counting on {root} needs {layout.instance_hint} (none for {lacking[0].relative_to(root)})"
            )

    space = _label_space(layout.root)
    lut = _lookup_table(space)
    car_truck = _LTS_CAR_TRUCK if space == "lts" else _CITYSCAPES_CAR_TRUCK
    unknown: set[int] = set()
    images: list[np.ndarray] = []
    semantic, counts, files, cs_ids = [], [], [], []
    for it in items:
        img = _open_rgb(it.image)
        w0, h0 = img.size
        size = resolution or _first_size(images, (h0, w0))
        if (img.size[1], img.size[0]) != size:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # PIL antialiases when shrinking
        images.append(np.asarray(img))
        files.append(str(it.image.relative_to(layout.root)))
        if has_labels:
            assert it.label is not None
            lab = _open_ids(it.label, "label ids")
            if lab.shape != (h0, w0):
                raise UserError(
                    f"{it.label}: label is {lab.shape[1]}×{lab.shape[0]} but its image {it.image.name} is {w0}×{h0}"
                )
            semantic.append(_resize_label_array(_map_ids(lab, lut, unknown), size))
            if space == "cityscapes":  # kept for the official metric; unknown ids become 0 (void)
                known = (lab >= 0) & (lab <= _CITYSCAPES_MAX_ID)
                cs_ids.append(_resize_label_array(np.where(known, lab, 0), size))
        if "counts" in need:
            assert it.instance is not None
            ins = _open_ids(it.instance, "instance ids")
            if ins.shape != (h0, w0):
                raise UserError(
                    f"{it.instance}: instance map is {ins.shape[1]}×{ins.shape[0]} but its image "
                    f"{it.image.name} is {w0}×{h0}"
                )
            scale = (size[0] * size[1]) / (h0 * w0)
            min_px = min_instance_pixels if min_instance_pixels is not None else L.min_visible_pixels(*size)
            counts.append(_count_instances(ins, car_truck, layout.instance_divisor, min_px, scale))
    if unknown:
        shown = ", ".join(str(v) for v in sorted(unknown)[:10])
        warnings.warn(
            f"{root}: label ids {shown} are not {space} label ids; mapped to 0 (unlabeled)",
            stacklevel=2,
        )
    batch = Batch(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        semantic=torch.from_numpy(np.stack(semantic)).long() if semantic else None,
        counts=torch.tensor(counts, dtype=torch.int64) if counts else None,
        cityscapes_ids=torch.from_numpy(np.stack(cs_ids)).long() if cs_ids else None,
        attributes={"file": files},
        count_names=REAL_COUNT_NAMES if counts else (),
    )
    return batch


def _first_size(images: list[np.ndarray], own: tuple[int, int]) -> tuple[int, int]:
    return (images[0].shape[0], images[0].shape[1]) if images else own


def _check_resolution(resolution: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in resolution)
    except (TypeError, ValueError):
        raise UserError(f"resolution must be (height, width), got {resolution!r}") from None
    if h < 1 or w < 1:
        raise UserError(f"resolution must be positive, got {h}×{w}")
    return h, w


def read_image_dir(path: str | Path, resolution: tuple[int, int] | None = None, *, limit: int | None = None) -> Batch:
    """Every ``*.png`` / ``*.jpg`` under ``path`` (recursively, sorted) as an images-only `Batch`.

    ``resolution``: ``(H, W)``; ``None`` keeps the first image's size.  ``limit``: at most
    this many images, evenly spaced over the sorted list.
    """
    root = _check_dir(path)
    if resolution is not None:
        resolution = _check_resolution(resolution)
    files = _images_under(root)
    if not files:
        raise UserError(f"{root}: no images found (*.png, *.jpg)")
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        if limit < len(files):
            files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    images: list[np.ndarray] = []
    for f in files:
        img = _open_rgb(f)
        size = resolution or _first_size(images, (img.size[1], img.size[0]))
        if (img.size[1], img.size[0]) != size:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        images.append(np.asarray(img))
    return Batch(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        attributes={"file": [str(f.relative_to(root)) for f in files]},
    )


# ----------------------------------------------------------------------------- writer


def write_cityscapes(
    batch: Batch,
    root: str | Path,
    split: str = "val",
    city: str = "lts",
    label_space: str = "lts",
) -> Path:
    """Write a batch in Cityscapes layout under ``root``; returns ``root``.

    Images go to ``leftImg8bit/<split>/<city>/<city>_000000_<i>_leftImg8bit.png``; with
    ``semantic``, ``gtFine/…_gtFine_labelIds.png`` (lts ids with ``label_space="lts"``, which
    also writes ``dataset.json``; Cityscapes labelIds with ``"cityscapes"``, lts classes
    without a Cityscapes class becoming 0); with ``instances`` as well,
    ``…_gtFine_instanceIds.png`` (classId·1000 + k for each instance, k from 0 per class
    and image; classId elsewhere).
    """
    if label_space not in ("lts", "cityscapes"):
        raise UserError(f"label_space must be 'lts' or 'cityscapes', got {label_space!r}")
    if batch.images is None:
        raise UserError("write_cityscapes: the batch has no images")
    root = Path(root)
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    if batch.semantic is not None:
        gt_dir.mkdir(parents=True, exist_ok=True)
    if label_space == "lts":
        (root / "dataset.json").write_text(json.dumps({"label_space": "lts"}) + "\n")
        lut = np.arange(max(L.NUM_LABELS, 256), dtype=np.int64)
    else:
        lut = np.zeros(max(L.NUM_LABELS, 256), dtype=np.int64)
        for lts_id, cs in _LTS_TO_CITYSCAPES.items():
            lut[lts_id] = cs
    images = batch.images
    if images.dtype != torch.uint8:
        images = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
    imgs = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(len(batch)):
        stem = f"{city}_000000_{i:06d}"
        Image.fromarray(imgs[i]).save(img_dir / f"{stem}_leftImg8bit.png")
        if batch.semantic is None:
            continue
        sem = lut[batch.semantic[i].cpu().numpy().clip(0, len(lut) - 1)]
        Image.fromarray(sem.astype(np.uint8)).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        if batch.instances is not None:
            ins = batch.instances[i].cpu().numpy()
            out = sem.astype(np.int64).copy()
            next_k: dict[int, int] = {}
            for obj in np.unique(ins[ins > 0]):
                mask = ins == obj
                cls = int(np.bincount(sem[mask]).argmax())  # the object's class: its majority label
                if cls == 0:
                    continue
                k = next_k.get(cls, 0)
                next_k[cls] = k + 1
                out[mask] = cls * 1000 + k
            Image.fromarray(out.astype(np.uint16)).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
    return root


def shared_files(root: Path, files: Sequence[str], other_root: Path, other_files: Sequence[str]) -> list[str]:
    """The ``files`` (relative to ``root``) that are also among ``other_files`` (relative to
    ``other_root``), by file identity (device and inode), not by name: the same image
    reached through another folder, a symbolic link or a hard link counts."""

    def identity(path: Path) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino

    others = {identity(other_root / f) for f in other_files}
    return [f for f in files if identity(root / f) in others]
