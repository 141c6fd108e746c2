"""Tests of the GAN refinement stage (lts.refiner, python -m lts.refine)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lts.refiner import (
    RefinerConfig,
    classifier_accuracy,
    default_config,
    frechet_distance,
    load_refiner,
    train_refiner,
)
from lts.refiner.buffer import ImageHistoryBuffer
from lts.refiner.losses import label_boundaries, lsgan_d_loss, soft_gradient_loss
from lts.refiner.nets import (
    GROUP_NAMES,
    NUM_GROUPS,
    PatchDiscriminator,
    SemanticPatchDiscriminator,
    SimGANRefiner,
    UNetGenerator,
    group_masks,
    group_of,
)
from simulators import Batch
from simulators import labels as L


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny nets on a shared 2-core machine: intra-op threads only add contention (a
    # 4-second training run took minutes with 2 threads while other jobs ran).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- toy data


def toy_scenes(n: int, h: int = 16, w: int = 32, *, seed: int, styled: bool = False) -> Batch:
    """Sky over road, a building block and a car; ``styled``: a colour cast and a tone curve."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.full((n, h, w), L.SKY, dtype=torch.long)
    for i in range(n):
        hor = int(torch.randint(h // 3, h // 2, (1,), generator=g))
        sem[i, hor:] = L.ROAD
        x0 = int(torch.randint(0, w - w // 4, (1,), generator=g))
        sem[i, hor - h // 4 : hor, x0 : x0 + w // 4] = L.BUILDING
        cx = int(torch.randint(0, w - 8, (1,), generator=g))
        sem[i, hor + 2 : hor + 5, cx : cx + 7] = L.CAR
    pal = torch.zeros(L.NUM_LABELS, 3)
    pal[L.SKY], pal[L.ROAD] = torch.tensor([0.45, 0.62, 0.9]), torch.tensor([0.35, 0.35, 0.37])
    pal[L.BUILDING], pal[L.CAR] = torch.tensor([0.67, 0.47, 0.35]), torch.tensor([0.8, 0.12, 0.12])
    img = pal[sem].permute(0, 3, 1, 2) + 0.02 * torch.randn(n, 3, h, w, generator=g)
    if styled:
        img = (img.clamp(0, 1) * torch.tensor([0.7, 1.0, 1.1])[None, :, None, None]).clamp(0, 1) ** 0.7 * 0.8 + 0.1
    return Batch(images=(img.clamp(0, 1) * 255).round().to(torch.uint8), semantic=sem)


def tiny_config(method: str, **kw: object) -> RefinerConfig:
    small = dict(
        refiner_channels=8,
        refiner_blocks=2,
        unet_channels=8,
        unet_depth=2,
        disc_channels=8,
        disc_layers=2,
        buffer_size=8,
        pretrain_disc_steps=5,
    )
    return default_config(method, **{**small, **kw})


# --------------------------------------------------------------------------- losses


def test_label_boundaries_mark_only_pixels_whose_neighbours_differ() -> None:
    sem = torch.zeros(1, 6, 8, dtype=torch.long)
    sem[:, :, 4:] = 3  # a vertical edge between columns 3 and 4
    e = label_boundaries(sem)
    assert e.shape == (1, 2, 6, 8)
    assert e[0, 0].sum(0).tolist() == [0, 0, 0, 6, 6, 0, 0, 0]  # x: columns 3 and 4, every row
    assert e[0, 1].sum() == 0  # no label change along y


def _two_regions(h: int = 16, w: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    sem = torch.full((1, h, w), L.ROAD, dtype=torch.long)
    sem[:, :, w // 2 :] = L.SKY
    img = torch.full((1, 3, h, w), 0.2)
    img[..., w // 2 :] = 0.8
    return img, sem


def test_soft_gradient_loss_is_zero_for_identical_images() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 12, 20, generator=g)
    sem = torch.randint(0, 5, (2, 12, 20), generator=g)
    assert soft_gradient_loss(img, img.clone(), sem).item() == 0.0
    assert soft_gradient_loss(img, img.clone(), sem, alpha=1.0, beta=0.0).item() == 0.0


def test_soft_gradient_loss_grows_as_the_boundary_fades() -> None:
    img, sem = _two_regions()
    losses = []
    for contrast in (1.0, 0.75, 0.5, 0.25, 0.0):  # the edge's step shrinks to nothing
        out = img.clone()
        out[..., 8:] = 0.2 + 0.6 * contrast
        losses.append(soft_gradient_loss(img, out, sem).item())
    assert losses[0] == 0.0
    assert all(b > a for a, b in zip(losses, losses[1:]))


def test_soft_gradient_loss_weights_boundaries_alpha_and_interior_beta() -> None:
    img, sem = _two_regions()
    interior = img.clone()
    interior[..., 4:6, 2] += 0.3  # a texture change far from the boundary
    hard = soft_gradient_loss(img, interior, sem, alpha=1.0, beta=0.0)
    soft = soft_gradient_loss(img, interior, sem, alpha=0.9, beta=0.1)
    assert hard.item() == 0.0 and soft.item() > 0.0  # β only
    edge = img.clone()
    edge[..., 4:6, 8] -= 0.3  # the same change on the boundary column
    assert soft_gradient_loss(img, edge, sem, alpha=1.0, beta=0.0) > 0.0  # α counts it
    assert soft_gradient_loss(img, edge, sem, alpha=0.9, beta=0.1) > 2 * soft
    with pytest.raises(ValueError):
        soft_gradient_loss(img, img, sem, alpha=0.5, beta=0.2)


# --------------------------------------------------------------------------- nets


def test_groups_cover_every_label_and_masks_sum_to_one() -> None:
    ids = torch.arange(-1, L.NUM_LABELS + 2)[None, None]
    groups = group_of(ids)
    assert int(groups.min()) >= 0 and int(groups.max()) < NUM_GROUPS
    assert GROUP_NAMES[int(group_of(torch.tensor([[[L.CAR]]]))[0, 0, 0])] == "vehicle"
    assert GROUP_NAMES[int(group_of(torch.tensor([[[L.ROAD_LINE]]]))[0, 0, 0])] == "flat"
    assert GROUP_NAMES[int(group_of(torch.tensor([[[99]]]))[0, 0, 0])] == "void"
    sem = torch.randint(0, L.NUM_LABELS, (2, 16, 32), generator=torch.Generator().manual_seed(0))
    m = group_masks(group_of(sem), (4, 8))
    assert m.shape == (2, NUM_GROUPS, 4, 8)
    assert torch.allclose(m.sum(1), torch.ones(2, 4, 8))


def test_semantic_discriminator_ignores_the_channel_of_an_absent_group() -> None:
    d = SemanticPatchDiscriminator(channels=8, layers=2)
    x = torch.rand(2, 3, 32, 64, generator=torch.Generator().manual_seed(1))
    sem = torch.full((2, 32, 64), L.ROAD, dtype=torch.long)
    sem[:, :10] = L.BUILDING  # no sky anywhere
    groups = group_of(sem)
    sky = GROUP_NAMES.index("sky")
    before = d(x, groups)
    with torch.no_grad():
        d.head.weight[sky] += torch.randn(d.head.weight[sky].shape, generator=torch.Generator().manual_seed(2))
        d.head.bias[sky] += 3.0
    assert torch.equal(d(x, groups), before)
    sem_with_sky = sem.clone()
    sem_with_sky[:, :4] = L.SKY
    assert not torch.allclose(d(x, group_of(sem_with_sky)), before)  # present: it counts
    # Without labels every cell averages the channels.
    assert torch.allclose(d(x, None), d.features(x).mean(1, keepdim=True))


def test_generators_start_as_identity_and_stay_in_range() -> None:
    x = torch.rand(2, 3, 20, 36, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    for net in (SimGANRefiner(8, 2), UNetGenerator(8, 3)):
        y = net(x)
        assert y.shape == x.shape
        assert torch.allclose(y, x, atol=1e-5)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        with torch.no_grad():
            y = net(x)
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_building_nets_leaves_the_global_rng_alone_and_is_seeded() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = PatchDiscriminator(8, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = PatchDiscriminator(8, 2, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# --------------------------------------------------------------------------- buffer


def test_history_buffer_size_mixing_and_determinism() -> None:
    def run(seed: int) -> list[torch.Tensor]:
        buf = ImageHistoryBuffer(6, generator=torch.Generator().manual_seed(seed))
        outs = []
        for step in range(5):
            imgs = torch.full((4, 1, 2, 2), float(step))
            labels = torch.full((4, 2, 2), step)
            out_img, out_lab = buf.query(imgs, labels)
            assert out_img.shape == imgs.shape and len(buf) <= 6
            assert torch.equal(out_img[:, 0, 0, 0].long(), out_lab[:, 0, 0])  # aligned rows travel together
            outs.append(out_img[:, 0, 0, 0])
        return outs

    outs = run(0)
    assert outs[0].tolist() == [0, 0, 0, 0]  # an empty history returns the new images
    for step, o in enumerate(outs[1:], start=1):
        assert o[:2].tolist() == [step, step]  # first half: new
        assert all(v < step for v in o[2:].tolist())  # second half: from the history
    assert all(torch.equal(a, b) for a, b in zip(outs, run(0)))
    assert any(not torch.equal(a, b) for a, b in zip(outs, run(1)))


def test_history_buffer_state_round_trip_continues_identically() -> None:
    a = ImageHistoryBuffer(5, generator=torch.Generator().manual_seed(0))
    for s in range(3):
        a.query(torch.full((4, 1), float(s)))
    b = ImageHistoryBuffer(5, generator=torch.Generator().manual_seed(99))
    b.load_state_dict(a.state_dict())
    x = torch.full((4, 1), 7.0)
    assert torch.equal(a.query(x)[0], b.query(x)[0])


# --------------------------------------------------------------------------- training


def _disc_advantage(fake: torch.Tensor, real: torch.Tensor, steps: int = 60) -> float:
    """How well a fresh least-squares patch discriminator separates held-out ``fake`` from
    ``real`` images: 0.25 minus its held-out loss (0.25 = a constant ½; 0 = no advantage)."""
    g = torch.Generator().manual_seed(0)
    d = PatchDiscriminator(8, 2, generator=g)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3)
    f, r = fake.float() / 255, real.float() / 255
    h = len(f) // 2
    for _ in range(steps):
        i = torch.randint(0, h, (16,), generator=g)
        loss = lsgan_d_loss(d(r[i]), d(f[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return 0.25 - float(lsgan_d_loss(d(r[h:]), d(f[h:])))


def test_simgan_training_lowers_the_discriminators_advantage(tmp_path: Path) -> None:
    syn, tgt = toy_scenes(64, seed=1), toy_scenes(64, seed=2, styled=True)
    test = toy_scenes(64, seed=3)
    cfg = tiny_config("simgan", lambda_reg=0.3)
    ck = train_refiner(
        "simgan", syn, tgt, steps=120, batch_size=8, seed=0, out=tmp_path / "r.pt", config=cfg, sample_every=0
    )
    refined = load_refiner(ck)(test)
    adv_raw = _disc_advantage(test.images, tgt.images)
    adv_ref = _disc_advantage(refined.images, tgt.images)
    assert adv_raw > 0.15  # raw frames are easy to tell from the target
    assert adv_ref < 0.5 * adv_raw
    mean = lambda b: b.images.float().mean((0, 2, 3)) / 255  # noqa: E731
    assert (mean(refined) - mean(tgt)).abs().mean() < 0.4 * (mean(test) - mean(tgt)).abs().mean()


def test_sggan_training_moves_colours_toward_the_target(tmp_path: Path) -> None:
    syn, tgt = toy_scenes(48, seed=1), toy_scenes(48, seed=2, styled=True)
    cfg = tiny_config("sggan")
    ck = train_refiner("sggan", syn, tgt, steps=200, batch_size=4, seed=0, out=tmp_path / "g.pt", config=cfg)
    refined = load_refiner(ck)(syn)
    mean = lambda b: b.images.float().mean((0, 2, 3)) / 255  # noqa: E731
    err_raw = (mean(syn) - mean(tgt)).abs().mean()
    err_ref = (mean(refined) - mean(tgt)).abs().mean()
    assert err_ref < 0.6 * err_raw
    assert torch.equal(refined.semantic, syn.semantic)


def test_checkpoint_is_weights_only_and_refiner_keeps_labels(tmp_path: Path) -> None:
    syn, tgt = toy_scenes(8, seed=1), toy_scenes(8, seed=2, styled=True)
    for method in ("simgan", "sggan"):
        ck = train_refiner(
            method, syn, tgt, steps=2, batch_size=2, out=tmp_path / f"{method}.pt", config=tiny_config(method)
        )
        state = torch.load(ck, weights_only=True)
        assert state["step"] == 2 and state["method"] == method
        assert RefinerConfig.from_dict(state["config"]).method == method
        refiner = load_refiner(ck, "cpu", chunk_size=3)
        assert refiner.resolution == (16, 32)
        out = refiner(syn)
        assert out.images.dtype == torch.uint8 and out.images.shape == syn.images.shape
        assert torch.equal(out.semantic, syn.semantic)
        floats = refiner.refine_images(syn.images.float() / 255)
        assert floats.dtype == torch.float32
        assert (floats * 255 - out.images.float()).abs().max() <= 0.5 + 1e-4
        assert (tmp_path / f"{method}_samples" / "step_000002.png").is_file()


def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    syn, tgt = toy_scenes(8, seed=1), toy_scenes(8, seed=2, styled=True)
    cfg = tiny_config("sggan")
    kw = dict(steps=6, batch_size=2, seed=0, config=cfg, sample_every=0)
    full = train_refiner("sggan", syn, tgt, out=tmp_path / "full.pt", **kw)

    def stop_at_3(step: int, total: int, losses: object) -> None:
        if step == 3:
            raise KeyboardInterrupt

    part = tmp_path / "part.pt"
    with pytest.raises(KeyboardInterrupt):
        train_refiner("sggan", syn, tgt, out=part, progress=stop_at_3, **kw)
    assert torch.load(part, weights_only=True)["step"] == 3
    seen: list[int] = []
    train_refiner("sggan", syn, tgt, out=part, resume=True, progress=lambda s, t, losses: seen.append(s), **kw)
    assert seen == [4, 5, 6]
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    assert b["step"] == 6 and [h["step"] for h in b["history"]] == [1, 2, 3, 4, 5, 6]
    for net in a["nets"]:
        for k, v in a["nets"][net].items():
            assert torch.allclose(v, b["nets"][net][k], atol=1e-6), (net, k)


def test_existing_checkpoint_needs_resume_and_same_data(tmp_path: Path) -> None:
    from simulators.errors import UserError

    syn, tgt = toy_scenes(8, seed=1), toy_scenes(8, seed=2, styled=True)
    kw = dict(steps=1, batch_size=2, config=tiny_config("simgan"), sample_every=0)
    ck = train_refiner("simgan", syn, tgt, out=tmp_path / "r.pt", **kw)
    with pytest.raises(UserError, match="--resume"):
        train_refiner("simgan", syn, tgt, out=ck, **kw)
    with pytest.raises(UserError, match="target frames differ"):
        train_refiner("simgan", syn, toy_scenes(8, seed=5), out=ck, resume=True, **kw)
    with pytest.raises(UserError, match="sggan"):
        RefinerConfig(method="cyclegan")
    with pytest.raises(UserError, match="semantic labels"):
        train_refiner("sggan", dataclasses.replace(syn, semantic=None), tgt, out=tmp_path / "x.pt", **kw)


def test_lsgan_discriminator_loss_values() -> None:
    assert lsgan_d_loss(torch.ones(3), torch.zeros(3)).item() == 0.0
    assert lsgan_d_loss(torch.zeros(3), torch.ones(3)).item() == 1.0


# --------------------------------------------------------------------------- gap


def test_gap_measures_separate_same_from_shifted_sets() -> None:
    a, b = toy_scenes(80, seed=1), toy_scenes(80, seed=2)
    shifted = toy_scenes(80, seed=2, styled=True)
    assert frechet_distance(a.images, b.images) < 0.1 * frechet_distance(a.images, shifted.images)
    assert frechet_distance(a.images, a.images) == pytest.approx(0.0, abs=1e-6)
    assert classifier_accuracy(a.images, shifted.images, steps=60, batch_size=16) > 0.95
    assert abs(classifier_accuracy(a.images, b.images, steps=60, batch_size=16) - 0.5) < 0.2


# --------------------------------------------------------------------------- command line


def _write_pngs(d: Path, batch: Batch) -> None:
    d.mkdir(parents=True)
    assert batch.images is not None
    for i, img in enumerate(batch.images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"frame_{i}.png")


def test_apply_cli_refines_a_directory(tmp_path: Path) -> None:
    from lts.cli.refine import main

    syn, tgt = toy_scenes(6, seed=1), toy_scenes(6, seed=2, styled=True)
    ck = train_refiner("simgan", syn, tgt, steps=3, batch_size=2, out=tmp_path / "r.pt", config=tiny_config("simgan"))
    _write_pngs(tmp_path / "in" / "sub", syn)
    assert main(["apply", str(ck), "--in", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    outs = sorted((tmp_path / "out" / "sub").glob("*.png"))
    assert [p.name for p in outs] == [f"frame_{i}.png" for i in range(6)]
    expected = load_refiner(ck).refine_images(syn.images)
    for i in range(6):
        got = torch.from_numpy(np.array(Image.open(tmp_path / "out" / "sub" / f"frame_{i}.png"))).permute(2, 0, 1)
        assert torch.equal(got, expected[i])


def test_cli_errors_are_one_line_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lts.cli import run_cli
    from lts.cli.refine import main

    (tmp_path / "ck.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 16)).save(tmp_path / "in" / "a.png")
    assert run_cli(main, ["apply", str(tmp_path / "ck.pt"), "--in", str(tmp_path / "in"), "--out", "o"]) == 2
    assert "cannot read refiner checkpoint" in capsys.readouterr().err
    argv = ["train", "--target", str(tmp_path / "in"), "--out", str(tmp_path / "ck.pt")]
    assert run_cli(main, argv) == 2
    assert "exists; pass --resume" in capsys.readouterr().err
    argv = ["train", "--target", str(tmp_path / "in"), "--out", str(tmp_path / "new.pt"), "--set", "lamda_reg=1"]
    assert run_cli(main, argv) == 2
    assert "did you mean 'lambda_reg'" in capsys.readouterr().err
    argv = ["train", "--target", str(tmp_path / "in"), "--out", str(tmp_path / "new.pt"), "--set", "unet_depth=deep"]
    assert run_cli(main, argv) == 2
    assert "expected a value of type int" in capsys.readouterr().err


def test_read_target_takes_only_the_images_of_a_labelled_layout(tmp_path: Path) -> None:
    from lts.cli.refine import read_target
    from lts.datasets import write_cityscapes

    batch = toy_scenes(5, seed=4, styled=True)
    write_cityscapes(batch, tmp_path / "tgt", split="train")
    with_labels = read_target(str(tmp_path / "tgt"), (16, 32), split="train")
    assert with_labels.semantic is not None and torch.equal(with_labels.semantic, batch.semantic)
    assert torch.equal(with_labels.images, batch.images)
    # Without labels: still the 5 photos, not the gtFine label images beside them.
    without = read_target(str(tmp_path / "tgt"), (16, 32), split="train", labels=False)
    assert without.semantic is None and len(without) == 5


def test_train_cli_end_to_end_on_the_procedural_renderer(tmp_path: Path) -> None:
    from lts.cli.refine import main
    from lts.datasets import write_cityscapes

    write_cityscapes(toy_scenes(6, 32, 64, seed=4, styled=True), tmp_path / "tgt", split="train")
    ck = tmp_path / "r.pt"
    argv = ["train", "--target", str(tmp_path / "tgt"), "--method", "sggan", "--out", str(ck), "--steps", "2"]
    argv += ["--frames", "6", "--resolution", "32x64", "--quiet", "--set", "unet_channels=8", "--set", "unet_depth=2"]
    assert main(argv) == 0
    state = torch.load(ck, weights_only=True)
    assert state["step"] == 2 and state["data"]["target_labelled"] and state["data"]["n_rendered"] == 6
    assert state["config"]["unet_channels"] == 8
    assert (tmp_path / "r_samples" / "step_000002.png").is_file()
    assert main([*argv, "--resume", "--steps", "3"]) == 0  # the last --steps wins
    assert torch.load(ck, weights_only=True)["step"] == 3
