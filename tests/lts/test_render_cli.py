"""``python -m lts.render`` (and the ``lts.bench render`` smoke test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lts import bench
from lts import render as render_cli
from lts.cli import run_cli
from simulators import labels as L

ARGS = ["--n", "3", "--resolution", "32x64", "--seed", "4"]


def test_writes_frames_labels_depth_and_sheet(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert render_cli.main([*ARGS, "--out", str(out), "--set", "cars_per_scene=6"]) == 0
    for sub in ("rgb", "labels", "depth"):
        files = sorted((out / sub).glob("*.png"))
        assert [f.name for f in files] == ["0000.png", "0001.png", "0002.png"]
        assert np.asarray(Image.open(files[0])).shape == (32, 64, 3)
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] >= 2 * 32 and sheet.shape[1] >= 2 * 3 * 64  # 2 frames a row, RGB | labels | depth
    labels = np.asarray(Image.open(out / "labels" / "0000.png")).reshape(-1, 3)
    palette = {tuple(c) for c in L.PALETTE.values()}
    assert {tuple(c) for c in np.unique(labels, axis=0)} <= palette
    records = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert len(records) == 3 and set(records[0]["counts"]) == {"sedan", "hatchback", "suv", "van", "truck"}
    assert json.loads((out / "params.json").read_text())["params"]["cars_per_scene"] == 6.0


def test_set_and_target_compose(tmp_path: Path) -> None:
    target = tmp_path / "t.yaml"
    target.write_text("simulator: procedural\nparams:\n  weather: {hard_rain_noon: 1.0}\n  road_length: 40\n")
    out = tmp_path / "out"
    argv = [*ARGS, "--out", str(out), "--target", str(target), "--set", "intersection={L: 1.0}"]
    assert render_cli.main(argv) == 0
    records = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert {r["attributes"]["weather"] for r in records} == {"hard_rain_noon"}
    assert {r["attributes"]["intersection"] for r in records} == {"L"}


def test_cityscapes_layout(tmp_path: Path) -> None:
    out = tmp_path / "cs"
    argv = [*ARGS, "--out", str(out), "--cityscapes", "--set", "cars_per_scene=10", "--set", "road_length=30"]
    assert render_cli.main(argv) == 0
    assert json.loads((out / "dataset.json").read_text()) == {"label_space": "lts"}
    images = sorted((out / "leftImg8bit" / "val" / "lts").glob("*_leftImg8bit.png"))
    assert len(images) == 3
    records = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    for img, rec in zip(images, records):
        stem = img.name[: -len("_leftImg8bit.png")]
        gt = out / "gtFine" / "val" / "lts"
        ids = np.asarray(Image.open(gt / f"{stem}_gtFine_labelIds.png"))
        assert ids.shape == (32, 64) and set(np.unique(ids).tolist()) <= set(L.LABELS)  # lts ids, not Cityscapes
        inst = np.asarray(Image.open(gt / f"{stem}_gtFine_instanceIds.png")).astype(np.int64)
        objects = np.unique(inst[inst >= 1000])
        # one instance id per visible car, classId · 1000 + k: the counts can be read back
        cars = sum(v for k, v in rec["counts"].items() if k != "truck")
        assert sum(1 for o in objects if o // 1000 == L.CAR) == cars
        assert sum(1 for o in objects if o // 1000 == L.TRUCK) == rec["counts"]["truck"]
        car_pixels = np.isin(ids, [L.CAR, L.TRUCK])
        assert np.array_equal(car_pixels, inst >= 1000)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--set", "weather={sunny: 1.0}"], "sunny"),
        (["--set", "cars_per_scene=40"], "cars_per_scene"),
        (["--set", "weather"], "key=value"),
        (["--set", "weather={clear_noon: 0.5}"], "sum to 1"),
        (["--resolution", "8x8"], "8"),
        (["--n", "0"], "--n"),
        (["--sim", "nope"], "nope"),
        (["--target", "missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    assert run_cli(render_cli.main, ["--n", "1", "--resolution", "16x32", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]


def test_module_runs(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lts.render", "--n", "1", "--resolution", "16x32", "--out", str(tmp_path / "m"),
         "--set", "weather={bad: 1}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_bench_render_smoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["render", "--batch", "2", "--repeat", "1", "--resolution", "16x32", "--no-pybullet", "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "16x32" in text and "fps" in text
    (result,) = json.loads(out.read_text())
    assert result["frames"] == 2 and result["fps"] > 0 and result["peak_mb"] > 0
    assert run_cli(bench.main, ["render", "--batch", "0", "--no-pybullet"]) == 2


def test_non_empty_out_is_refused_before_rendering_and_overwrite_replaces(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert render_cli.main(["--n", "4", "--resolution", "32x64", "--out", str(out)]) == 0
    mine = out / "notes.txt"
    mine.write_text("keep me")
    code = run_cli(render_cli.main, [*ARGS, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not empty" in err[0] and "--overwrite" in err[0]
    assert len(list((out / "rgb").glob("*.png"))) == 4  # nothing touched
    # --overwrite with a bad value: the error comes before anything is removed
    assert run_cli(render_cli.main, [*ARGS, "--out", str(out), "--overwrite", "--set", "cars_per_scene=99"]) == 2
    assert len(list((out / "rgb").glob("*.png"))) == 4
    # --overwrite: the earlier render's 4 frames give way to 3, files lts.render did not write stay
    assert render_cli.main([*ARGS, "--out", str(out), "--overwrite"]) == 0
    assert sorted(f.name for f in (out / "rgb").glob("*.png")) == ["0000.png", "0001.png", "0002.png"]
    assert mine.read_text() == "keep me"


def test_overwrite_keeps_other_cityscapes_splits(tmp_path: Path) -> None:
    out = tmp_path / "cs"
    assert render_cli.main([*ARGS, "--out", str(out), "--cityscapes", "--split", "train"]) == 0
    assert render_cli.main([*ARGS, "--n", "2", "--out", str(out), "--cityscapes", "--split", "val", "--overwrite"]) == 0
    assert len(list((out / "leftImg8bit" / "train" / "lts").glob("*.png"))) == 3
    assert len(list((out / "gtFine" / "val" / "lts").glob("*_labelIds.png"))) == 2
    assert len(list((out / "rgb").glob("*.png"))) == 2  # the top-level frames are the last render's


def test_bench_render_against_pybullet_both_ways(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pb = pytest.importorskip("pybullet", reason="the bench (and test) extra installs pybullet")
    out = tmp_path / "bench.json"
    argv = ["render", "--batch", "2", "--repeat", "1", "--resolution", "16x32", "--pybullet", "--json", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    assert "new random scene per frame" in text and "fixed scene" in text and "cpu ratio" in text
    ours, new, fixed = json.loads(out.read_text())
    assert (ours["renderer"], new["renderer"], fixed["renderer"]) == ("procedural", "pybullet", "pybullet")
    assert (new["scene"], fixed["scene"]) == ("new scene per frame", "fixed scene")
    assert ours["returns"] == list(bench.RETURNS["lts"]) and new["returns"] == list(bench.RETURNS["pybullet"])
    assert all(r["frames"] == 2 and r["cpu_fps"] > 0 for r in (ours, new, fixed))
    # A new scene per frame replaces the last one (plane + 24 buildings + 8 cars of 2 boxes), drawn afresh.
    runner = bench._PyBulletRunner((16, 32), 3, new_scene=True)
    try:
        runner.run(1)
        assert pb.getNumBodies(physicsClientId=runner.client) == 1 + 24 + 16
        first = pb.getBasePositionAndOrientation(1, physicsClientId=runner.client)[0]
        runner.run(2)
        assert pb.getNumBodies(physicsClientId=runner.client) == 1 + 24 + 16
        assert pb.getBasePositionAndOrientation(1, physicsClientId=runner.client)[0] != first
    finally:
        runner.close()
