"""Readers of labelled directories (Cityscapes and KITTI layouts) on fixtures made here."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lts.datasets import (
    REAL_COUNT_NAMES,
    read_image_dir,
    read_labelled_dir,
    resize_images,
    resize_labels,
    write_cityscapes,
)
from simulators import Batch
from simulators import labels as L
from simulators.errors import UserError

H, W = 16, 32


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _scene(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An RGB image, Cityscapes labelIds and instanceIds: sky (23) over road (7), two cars (26), one truck (27).

    Car 1 is 4×4 pixels, car 2 is 2×2 (tiny), the truck 4×6; a 2×2 'car group' region (id 26, no instance).
    """
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2] = (70, 130, 180)
    img[H // 2 :] = (128, 64, 128)
    img[..., 0] += k  # make images distinguishable
    lab = np.full((H, W), 7, np.uint8)
    lab[: H // 2] = 23
    ins = lab.astype(np.uint16).copy()
    lab[10:14, 2:6] = 26
    ins[10:14, 2:6] = 26000
    lab[10:12, 10:12] = 26
    ins[10:12, 10:12] = 26001
    lab[9:13, 20:26] = 27
    ins[9:13, 20:26] = 27000
    lab[14:16, 28:30] = 26  # a group of cars: class id only
    ins[14:16, 28:30] = 26
    return img, lab, ins


def make_cityscapes(root: Path, n: int = 3, split: str = "val", instances: bool = True) -> Path:
    for k in range(n):
        city = "aachen" if k < 2 else "bonn"
        stem = f"{city}_000000_{k:06d}"
        img, lab, ins = _scene(k)
        _save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", img)
        _save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", lab)
        if instances:
            _save(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", ins)
    return root


def make_kitti(root: Path, n: int = 2, instances: bool = True) -> Path:
    for k in range(n):
        img, lab, _ = _scene(k)
        _save(root / "training" / "image_2" / f"{k:06d}_10.png", img)
        _save(root / "training" / "semantic" / f"{k:06d}_10.png", lab)
        if instances:
            ins = np.zeros((H, W), np.uint16)
            ins[10:14, 2:6] = 26 * 256 + 1
            ins[10:12, 10:12] = 26 * 256 + 2
            ins[9:13, 20:26] = 27 * 256 + 1
            ins[14:16, 28:30] = 26 * 256  # instance 0: not one object
            _save(root / "training" / "instance" / f"{k:06d}_10.png", ins)
    return root


# ----------------------------------------------------------------------------- reading


def test_cityscapes_ids_are_mapped_and_instances_counted(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs")
    b = read_labelled_dir(root, need=("semantic", "counts"), min_instance_pixels=1)
    assert b.images.shape == (3, 3, H, W) and b.images.dtype == torch.uint8
    assert b.semantic.shape == (3, H, W) and b.semantic.dtype == torch.int64
    assert set(b.semantic.unique().tolist()) == {L.ROAD, L.SKY, L.CAR, L.TRUCK}
    assert int(b.semantic[0, 0, 0]) == L.SKY and int(b.semantic[0, -1, 0]) == L.ROAD
    assert b.count_names == REAL_COUNT_NAMES == ("car", "truck")
    assert b.counts.tolist() == [[2, 1]] * 3  # the car group is not an instance
    assert b.attributes["file"][0] == "leftImg8bit/val/aachen/aachen_000000_000000_leftImg8bit.png"
    img, _, _ = _scene(1)
    assert torch.equal(b.images[1], torch.from_numpy(img).permute(2, 0, 1))
    # default visibility: at least 4 pixels at this size, so the 2×2 car just counts
    assert read_labelled_dir(root, need=("counts",)).counts.tolist() == [[2, 1]] * 3
    assert read_labelled_dir(root, need=("counts",), min_instance_pixels=5).counts.tolist() == [[1, 1]] * 3


def test_visibility_rule_is_shared_and_scales_with_the_frame() -> None:
    from simulators.procedural import ProceduralSimulator

    assert ProceduralSimulator(resolution=(64, 128)).min_car_pixels == L.min_visible_pixels(64, 128) == 32
    assert L.min_visible_pixels(256, 512) == 512 and L.min_visible_pixels(16, 32) == 4


def test_cityscapes_static_and_dynamic_keep_their_classes() -> None:
    assert L.CITYSCAPES_TO_LTS[4] == L.STATIC and L.CITYSCAPES_TO_LTS[5] == L.DYNAMIC


def test_resizing_scales_images_labels_and_the_visibility_of_instances(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs")
    b = read_labelled_dir(root, resolution=(8, 16), need=("semantic", "counts"))
    assert b.images.shape == (3, 3, 8, 16) and b.semantic.shape == (3, 8, 16)
    assert set(b.semantic.unique().tolist()) <= {L.ROAD, L.SKY, L.CAR, L.TRUCK}
    assert int(b.semantic[0, 0, 0]) == L.SKY and int(b.semantic[0, -1, 0]) == L.ROAD
    # bilinear on flat regions keeps the colours
    assert b.images[0, :, 0, 0].tolist() == [70, 130, 180]
    # at a quarter of the area the 16-pixel car has 4 pixels (visible), the 4-pixel one 1 (not)
    assert b.counts.tolist() == [[1, 1]] * 3


def test_kitti_layout(tmp_path: Path) -> None:
    root = make_kitti(tmp_path / "kitti")
    b = read_labelled_dir(root, need=("semantic", "counts"), min_instance_pixels=1)
    assert len(b) == 2
    assert set(b.semantic.unique().tolist()) == {L.ROAD, L.SKY, L.CAR, L.TRUCK}
    assert b.counts.tolist() == [[2, 1], [2, 1]]
    assert b.attributes["file"] == ["training/image_2/000000_10.png", "training/image_2/000001_10.png"]
    # pointing at training/ works too
    assert len(read_labelled_dir(root / "training")) == 2


def test_split_choice_and_limit(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=3, split="val")
    make_cityscapes(root, n=2, split="train")
    assert len(read_labelled_dir(root)) == 3  # val by default
    assert len(read_labelled_dir(root, split="train")) == 2
    b = read_labelled_dir(root, limit=2)
    assert [f.split("_")[-2] for f in b.attributes["file"]] == ["000000", "000002"]  # evenly spaced
    with pytest.raises(UserError, match=r"no split 'test'.*train, val"):
        read_labelled_dir(root, split="test")


def test_lts_label_space_roundtrip_through_the_writer(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(1, L.NUM_LABELS, (2, H, W), generator=g)
    inst = torch.zeros(2, H, W, dtype=torch.long)
    sem[:, 2:6, 2:8] = L.CAR
    inst[:, 2:6, 2:8] = 1
    sem[1, 8:12, 10:16] = L.CAR
    inst[1, 8:12, 10:16] = 2
    sem[1, 8:12, 20:26] = L.TRUCK
    inst[1, 8:12, 20:26] = 3
    batch = Batch(
        images=torch.randint(0, 256, (2, 3, H, W), generator=g, dtype=torch.uint8), semantic=sem, instances=inst
    )
    root = write_cityscapes(batch, tmp_path / "out")
    assert json.loads((root / "dataset.json").read_text()) == {"label_space": "lts"}
    back = read_labelled_dir(root, need=("semantic", "counts"))
    assert torch.equal(back.images, batch.images)
    assert torch.equal(back.semantic, sem)
    assert back.counts.tolist() == [[1, 0], [2, 1]]


def test_writer_in_cityscapes_ids_maps_back_through_the_table(tmp_path: Path) -> None:
    sem = torch.full((1, H, W), L.ROAD)
    sem[0, :4] = L.SKY
    sem[0, 4, :] = L.ROAD_LINE  # no Cityscapes class: written as road
    sem[0, 5, :] = L.WATER  # no Cityscapes class at all: written as 0
    batch = Batch(images=torch.zeros(1, 3, H, W, dtype=torch.uint8), semantic=sem)
    root = write_cityscapes(batch, tmp_path / "out", label_space="cityscapes")
    assert not (root / "dataset.json").exists()
    raw = np.asarray(Image.open(next((root / "gtFine").rglob("*_labelIds.png"))))
    assert raw[0, 0] == 23 and raw[4, 0] == 7 and raw[5, 0] == 0 and raw[-1, 0] == 7
    back = read_labelled_dir(root)
    assert back.semantic[0, 0, 0] == L.SKY and back.semantic[0, 4, 0] == L.ROAD and back.semantic[0, 5, 0] == 0


def test_read_image_dir_recursive_png_and_jpg(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "x.png", np.full((H, W, 3), 10, np.uint8))
    _save(tmp_path / "b" / "c" / "y.jpg", np.full((2 * H, 2 * W, 3), 200, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    b = read_image_dir(tmp_path, resolution=(8, 16))
    assert b.images.shape == (2, 3, 8, 16) and b.semantic is None and b.counts is None
    assert b.attributes["file"] == ["a/x.png", "b/c/y.jpg"]
    assert abs(int(b.images[1].float().mean()) - 200) <= 2
    assert read_image_dir(tmp_path).images.shape == (2, 3, H, W)  # the first image's size
    with pytest.raises(UserError, match="no images"):
        read_image_dir(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return d


def test_resize_helpers() -> None:
    lab = torch.arange(16).reshape(1, 4, 4)
    assert resize_labels(lab, (2, 2)).tolist() == [[[5, 7], [13, 15]]]
    assert resize_labels(lab, (8, 8))[0, ::2, ::2].tolist() == lab[0].tolist()
    img = torch.full((1, 3, 4, 4), 100, dtype=torch.uint8)
    out = resize_images(img, (2, 3))
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 3) and bool((out == 100).all())
    assert resize_images(img, (4, 4)) is img


# ----------------------------------------------------------------------------- errors


def _error(path: Path, **kw) -> str:
    with pytest.raises(UserError) as e:
        read_labelled_dir(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    assert "no such directory" in _error(tmp_path / "nope")
    assert "no images found" in _error(_empty(tmp_path))
    _save(tmp_path / "flat" / "a.png", np.zeros((H, W, 3), np.uint8))
    assert "images but no labels" in _error(tmp_path / "flat")
    (tmp_path / "cs" / "leftImg8bit" / "val").mkdir(parents=True)
    assert "no images found" in _error(tmp_path / "cs")


def test_images_without_labels_name_one_image(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=3)
    next((root / "gtFine").rglob("*000001_gtFine_labelIds.png")).unlink()
    msg = _error(root)
    assert "1 of 3 images have no label file" in msg and "aachen_000000_000001_leftImg8bit.png" in msg
    kitti = make_kitti(tmp_path / "k", n=2)
    for f in (kitti / "training" / "semantic").iterdir():
        f.unlink()
    msg = _error(kitti)
    assert "2 of 2 images have no label file" in msg and "000000_10.png" in msg
    # without labels the images alone can still be read with need=()
    assert read_labelled_dir(kitti, need=()).semantic is None


def test_labels_without_images(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=2)
    next((root / "leftImg8bit").rglob("*000001_leftImg8bit.png")).unlink()
    assert "1 label files have no image" in _error(root)


def test_size_mismatch_names_the_file(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=2)
    bad = next((root / "gtFine").rglob("*000001_gtFine_labelIds.png"))
    _save(bad, np.zeros((H, W + 2), np.uint8))
    msg = _error(root)
    assert bad.name in msg and f"{W + 2}×{H}" in msg and f"{W}×{H}" in msg
    kitti = make_kitti(tmp_path / "k", n=1)
    ins = kitti / "training" / "instance" / "000000_10.png"
    _save(ins, np.zeros((H + 1, W), np.uint16))
    assert "000000_10.png" in _error(kitti, need=("counts",))


def test_counts_need_instance_files(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=2, instances=False)
    assert _error(root, need=("counts",)).startswith(f"counting on {root} needs gtFine/*_instanceIds.png")
    assert read_labelled_dir(root).counts is None  # semantic alone is fine
    kitti = make_kitti(tmp_path / "k", n=1, instances=False)
    assert "needs training/instance/*.png" in _error(kitti, need=("counts",))


def test_unknown_ids_become_unlabeled_with_one_warning(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=3)
    for k, f in enumerate(sorted((root / "gtFine").rglob("*_labelIds.png"))):
        lab = np.asarray(Image.open(f)).copy()
        lab[0, 0] = 200 + k  # not a Cityscapes id
        _save(f, lab)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = read_labelled_dir(root)
    assert len(caught) == 1
    assert "200, 201, 202" in str(caught[0].message) and "unlabeled" in str(caught[0].message)
    assert b.semantic[:, 0, 0].tolist() == [0, 0, 0]
    assert b.semantic[:, 0, 1].tolist() == [L.SKY] * 3
    # in the lts label space, ids past the table are unknown too
    (root / "dataset.json").write_text('{"label_space": "lts"}')
    with pytest.warns(UserWarning, match="not lts label ids"):
        b = read_labelled_dir(root)
    assert int(b.semantic[0, 0, 1]) == 23  # 23 is an lts id (water): taken as is


def test_colour_label_images_and_bad_options(tmp_path: Path) -> None:
    root = make_cityscapes(tmp_path / "cs", n=1)
    f = next((root / "gtFine").rglob("*_labelIds.png"))
    _save(f, np.zeros((H, W, 3), np.uint8))
    assert "colour image" in _error(root)
    assert "unknown label kind" in _error(root, need=("depth",))
    assert "resolution" in _error(root, resolution=(0, 4))
    (root / "dataset.json").write_text('{"label_space": "carla"}')
    assert "label_space" in _error(root)
