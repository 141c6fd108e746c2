"""The camera model (`lts.camera`), ``lts.render --camera``, and a rendered directory's ψ*
(``params.json``) as the oracle of a directory target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lts import render as render_cli
from lts.camera import CameraModel, parse_camera
from simulators.errors import UserError

GREY = torch.full((2, 3, 32, 48), 0.5)


def test_each_part_of_the_camera_does_what_it_says():
    none = dict(cast=(1.0, 1.0, 1.0), gamma=1.0, contrast=1.0, vignette=0.0, blur=0.0, noise=0.0)
    assert torch.allclose(CameraModel(**none)(GREY), GREY)
    warm = CameraModel(**{**none, "cast": (1.2, 1.0, 0.8)})(GREY)
    assert warm[:, 0].mean() == pytest.approx(0.6) and warm[:, 2].mean() == pytest.approx(0.4)
    assert CameraModel(**{**none, "gamma": 0.5})(GREY).mean() == pytest.approx(0.5**0.5, abs=1e-6)
    vig = CameraModel(**{**none, "vignette": 0.4})(GREY)
    assert vig[..., 0, 0].mean() == pytest.approx(0.5 * 0.6, abs=0.01) and vig[..., 16, 24].mean() > 0.49
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1.0
    blurred = CameraModel(**{**none, "blur": 1.5})(edge)
    assert 0.05 < float(blurred[0, 0, 0, 7]) < 0.5 < float(blurred[0, 0, 0, 8]) < 0.95  # the step softened
    a = CameraModel(**{**none, "noise": 0.05})(GREY, seed=3)
    assert float((a - GREY).std()) == pytest.approx(0.05, rel=0.1)
    assert torch.equal(a, CameraModel(**{**none, "noise": 0.05})(GREY, seed=3))  # seeded
    as_bytes = CameraModel()((GREY * 255).round().to(torch.uint8))
    assert as_bytes.dtype == torch.uint8 and as_bytes.shape == GREY.shape


def test_parse_camera_and_its_errors():
    assert parse_camera("default") == CameraModel()
    cam = parse_camera("cast=1.1/1/0.9,blur=0")
    assert cam.cast == (1.1, 1.0, 0.9) and cam.blur == 0.0 and cam.gamma == CameraModel().gamma
    for bad, msg in (("blurr=1", "key=value with key one of"), ("cast=1/1", "three positive gains"),
                     ("gamma=x", "gamma must be a number"), ("vignette=1.5", "vignette must be < 1")):  # fmt: skip
        with pytest.raises(UserError, match=msg):
            parse_camera(bad)


def test_render_camera_changes_the_look_and_keeps_the_labels(tmp_path: Path):
    args = ["--n", "2", "--resolution", "32x64", "--seed", "4", "--cityscapes"]
    assert render_cli.main([*args, "--out", str(tmp_path / "clean")]) == 0
    assert render_cli.main([*args, "--out", str(tmp_path / "cam"), "--camera", "cast=1.3/1/0.7,noise=0"]) == 0
    for sub, same in (("rgb", False), ("labels", True), ("gtFine/val/lts", True)):
        for f in sorted((tmp_path / "clean" / sub).glob("*.png")):
            a, b = np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "cam" / sub / f.name))
            assert np.array_equal(a, b) == same, f
    rgb = np.asarray(Image.open(tmp_path / "cam" / "rgb" / "0000.png")).astype(float)
    assert rgb[..., 0].mean() > rgb[..., 2].mean()
    written = json.loads((tmp_path / "cam" / "params.json").read_text())
    assert written["camera"]["cast"] == [1.3, 1.0, 0.7] and written["simulator"] == "procedural"
    bad = subprocess.run(
        [sys.executable, "-m", "lts.render", *args, "--out", str(tmp_path / "x"), "--camera", "tone=2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: --camera: expected key=value")
    assert "\n" not in bad.stderr.strip() and not (tmp_path / "x").exists()


def test_a_rendered_directory_knows_its_psi_star(tmp_path: Path):
    """``params.json`` beside a directory lts.render wrote is its ψ*: the oracle trains on it.
    A directory without one (real data) has none; one for another simulator is ignored."""
    import simulators
    from lts.targets import load_target

    root = tmp_path / "d"
    argv = ["--n", "4", "--resolution", "32x64", "--out", str(root), "--cityscapes", "--set", "road_length=33"]
    assert render_cli.main(argv) == 0
    sim = simulators.make("procedural", resolution=(32, 64))
    t = load_target(root, sim, task_name="counting", size=4, run_seed=0, sim_name="procedural")
    assert t.params is None and t.truth is not None and t.truth["road_length"] == 33.0
    (root / "params.json").write_text(json.dumps({"simulator": "gmm", "params": {}}))
    assert load_target(root, sim, task_name="counting", size=4, run_seed=0, sim_name="procedural").truth is None
    (root / "params.json").unlink()
    assert load_target(root, sim, task_name="counting", size=4, run_seed=0, sim_name="procedural").truth is None
