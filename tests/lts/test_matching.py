"""The distribution-matching warm-up: the appearance distance, and the loop's match phase."""

import json

import numpy as np
import pytest
import torch
from conftest import REPO

import simulators
from lts.cli import run_cli
from lts.cli.inspect import main as inspect_main
from lts.cli.optimize import main as optimize_main
from lts.matching import AppearanceMatch, TargetMatch, appearance_features, label_features
from lts.rundir import RunDir
from simulators.errors import UserError

WEATHERS = ("clear_noon", "cloudy_noon", "hard_rain_noon", "clear_sunset")


def _only(weather: str) -> dict[str, float]:
    return {w: float(w == weather) for w in WEATHERS}


@pytest.fixture(scope="module")
def street():
    sim = simulators.make("procedural", resolution=[32, 64])
    base = sim.param_space.default()
    rainy = sim.generate({**base, "weather": _only("hard_rain_noon")}, 48, seed=1)
    return sim, base, rainy


def test_frames_of_the_targets_weather_look_closest(street):
    sim, base, rainy = street
    match = AppearanceMatch(rainy.images)
    assert appearance_features(rainy.images).shape == (48, 96)
    d = {w: match(sim.generate({**base, "weather": _only(w)}, 48, seed=2).images) for w in WEATHERS}
    assert min(d, key=d.get) == "hard_rain_noon"
    assert d["hard_rain_noon"] < 0.25 * min(v for w, v in d.items() if w != "hard_rain_noon")
    half = match(
        sim.generate(
            {**base, "weather": {**_only("hard_rain_noon"), "hard_rain_noon": 0.5, "clear_noon": 0.5}}, 48, seed=2
        ).images
    )
    assert d["hard_rain_noon"] < half < d["clear_noon"]  # a mix lies between its parts
    assert match(rainy.images) == pytest.approx(0.0, abs=1e-12)


def test_features_are_per_band_colour_histograms():
    frame = torch.zeros(1, 3, 6, 5, dtype=torch.uint8)  # six rows: bands of rows 0-1, 2, 3-4, 5
    frame[0, 0] = 255  # red everywhere
    frame[0, 1, 4:] = 100  # green 100 in the last two rows (bin 3)
    f = appearance_features(frame).view(4, 3, 8)  # band, channel, bin
    assert torch.equal(f.sum(-1), torch.ones(4, 3, dtype=torch.float64))  # fractions of each band's pixels
    assert torch.equal(f[:, 0, 7], torch.ones(4, dtype=torch.float64))
    assert f[1, 1, 0] == 1 and f[2, 1, 0] == 0.5 and f[2, 1, 3] == 0.5 and f[3, 1, 3] == 1
    assert torch.equal(appearance_features(frame.float() / 255.0), appearance_features(frame))


def test_the_closest_weather_mix_is_the_targets(street):
    # MMD² of a mix of weathers is quadratic in the mix, so it can be scanned over a grid of
    # mixes from frames of each weather alone: its minimum must sit at the target's mix,
    # overcast included (averaged colours took a bright/dark mix for grey).
    sim, base, _ = street
    want = torch.tensor([0.10, 0.35, 0.05, 0.50], dtype=torch.float64)
    target = sim.generate({**base, "weather": dict(zip(WEATHERS, want.tolist()))}, 256, seed=1).images
    match = AppearanceMatch(target)
    pure = [appearance_features(sim.generate({**base, "weather": _only(w)}, 192, seed=2 + i).images)
            for i, w in enumerate(WEATHERS)]  # fmt: skip
    a = torch.tensor([[float(match._kernel(x, y).mean()) for y in pure] for x in pure], dtype=torch.float64)
    b = torch.tensor([float(match._kernel(x, match.target).mean()) for x in pure], dtype=torch.float64)
    steps = torch.arange(21, dtype=torch.float64) / 20
    grid = torch.cartesian_prod(steps, steps, steps)
    grid = torch.cat([grid, 1 - grid.sum(1, keepdim=True)], 1)
    grid = grid[grid[:, 3] >= -1e-9]
    loss = ((grid @ a) * grid).sum(1) - 2 * grid @ b
    best = grid[loss.argmin()]
    assert 0.5 * float((best - want).abs().sum()) <= 0.05, best.tolist()


def test_a_target_without_frames_is_refused():
    with pytest.raises(UserError, match="RGB frames"):
        AppearanceMatch(torch.zeros(10, 2))


def _phases(iterations=3, samples=4, scenes=16, search="reinforce", moments=None):
    """``--set warmup.phases=…``: the moments first (of ``moments`` scenes a choice) if asked, then ``search``."""
    first = f"{{search: moments, scenes: {moments}}}, " if moments else ""
    return (
        f"warmup.phases=[{first}{{search: {search}, iterations: {iterations}, samples: {samples}, scenes: {scenes}}}]"
    )


def _args(out, *extra):
    return [
        "--config", str(REPO / "configs" / "counting.yaml"), "--out", str(out), "--quiet", "--seed", "3",
        "--iterations", "1", "--samples", "4", "--scenes", "24",
        "--set", "target_size=24", "--set", "final_repeats=1", "--set", "task_options.steps=4",
        "--set", "sim_options.resolution=[32, 64]", "--set", "warmup.look=[weather]", "--set", "warmup.labels=[]",
        "--set", _phases(), "--search", "reinforce", *extra,
    ]  # fmt: skip


# what `_args` sets, as config keys: the warm-up and the task runs in this process (`_run`)
_SETTINGS = {
    "seed": 3, "iterations": 1, "samples": 4, "scenes": 24, "target_size": 24, "final_repeats": 1,
    "task_options.steps": 4, "sim_options.resolution": [32, 64], "warmup.look": ["weather"], "warmup.labels": [],
    "warmup.phases": [{"search": "reinforce", "iterations": 3, "samples": 4, "scenes": 16}], "search": "reinforce",
}  # fmt: skip


def _run(out, config="counting.yaml", settings=None, **overrides):
    """A whole run of ``config`` with ``settings`` (default `_SETTINGS`) and ``overrides`` (dotted
    keys), in this process."""
    from lts.config import load_config
    from lts.loop import Experiment

    settings = _SETTINGS if settings is None else settings
    exp = Experiment(load_config(REPO / "configs" / config, overrides={**settings, **overrides}), RunDir(out))
    exp.run_dir.make()
    exp.start_fresh()
    exp.run()
    return RunDir(out).read_metrics()


def test_the_match_phase_moves_only_its_elements_then_the_task_takes_over(tmp_path):
    out = tmp_path / "run"
    assert run_cli(optimize_main, _args(out)) == 0
    rows = RunDir(out).read_metrics()
    assert [r["phase"] for r in rows] == ["match", "match", "match", "task"]
    for r in rows[:3]:
        assert all(m["mmd2"] > 0 and rw == -m["mmd2"] for m, rw in zip(r["metrics"], r["rewards"]))
        assert r["timing_s"]["train"] == 0 and r["sim_frames"] == 16 * 4 * (r["iteration"] + 1)  # match_scenes each
    assert "mae" in rows[3]["metrics"][0] and rows[3]["baseline"] == pytest.approx(rows[3]["reward_mean"])
    first, last = rows[0]["policy"]["params"], rows[2]["policy"]["params"]
    assert first["weather"]["mean"] != last["weather"]["mean"]
    for name in ("car_type", "intersection", "cars_per_scene", "road_length"):
        assert first[name] == last[name], name
    assert rows[3]["policy"]["params"]["car_type"] != last["car_type"]  # the task moves the rest
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["iterations"], summary["match_iterations"]) == (4, 3)
    assert run_cli(inspect_main, [str(out), "--plot", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def _experiment(path, **extra):
    from lts.config import load_config
    from lts.loop import Experiment

    overrides = {
        "task_options.steps": 4, "sim_options.resolution": [32, 64], "target_size": 24, "test_size": 24,
        "warmup.phases": [{"search": "reinforce", "iterations": 3, "scenes": 16, "samples": 4}],
        "warmup.labels": [], "samples": 4, "scenes": 24, "iterations": 1, "final_repeats": 1, "seed": 3,
        "warmup.look": ["weather"], "search": "reinforce", **extra,
    }  # fmt: skip
    run = RunDir(path)
    run.make()
    exp = Experiment(load_config(REPO / "configs" / "counting.yaml", overrides=overrides), run)
    exp.start_fresh()
    return exp


def test_a_run_resumed_after_the_match_stage_ends_where_the_whole_one_does(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_cli(optimize_main, _args(whole)) == 0
    exp = _experiment(part)
    for _ in range(3):  # the stage only: then the process ends
        exp.step()
    assert run_cli(optimize_main, ["--resume", str(part), "--quiet"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_s", "timing_s", "cpu_s")} for r in rows]  # noqa: E731
    assert strip(RunDir(part).read_metrics()) == strip(RunDir(whole).read_metrics())
    assert (part / "policy.json").read_text() == (whole / "policy.json").read_text()


def test_a_checkpoint_mid_warm_up_resumes_to_the_same_next_step_and_an_old_one_is_refused(tmp_path):
    whole, part = _experiment(tmp_path / "whole"), _experiment(tmp_path / "part")
    rows = [whole.step() for _ in range(3)]
    for _ in range(2):
        part.step()
    state = part.state_dict()
    resumed = _experiment(tmp_path / "resumed")
    resumed.load_state_dict(state)
    assert resumed.step()["policy"] == rows[2]["policy"]
    old = {k: v for k, v in state.items() if k != "version"}
    with pytest.raises(UserError, match="written by an older lts"):
        _experiment(tmp_path / "old").load_state_dict(old)


def test_unknown_match_element_is_one_line_exit_2(tmp_path, capsys):
    assert run_cli(optimize_main, _args(tmp_path / "run", "--set", "warmup.look=[wether]")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: warmup.look: unknown parameter 'wether'") and "\n" not in err


def test_iterations_0_runs_no_evaluation_and_no_warm_up(tmp_path):
    out = tmp_path / "run"
    assert _run(out, iterations=0) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"] == {} and summary["sim_frames"] == 0 and summary["evaluations"] == 0


def test_warm_up_renders_are_charged_by_what_they_render(tmp_path):
    rows = _run(tmp_path / "run")
    # 4 renders of 16 scenes per stage iteration, against evaluations of 24 scenes: 64 / 24 each
    assert [r["evaluations"] for r in rows] == pytest.approx([64 / 24, 128 / 24, 192 / 24, 192 / 24 + 4])


def test_the_street_space_names_the_weather_as_its_look():
    space = simulators.make("procedural").param_space
    assert space.look == ("weather",)
    assert space.content == ("car_type", "cars_per_scene", "road_length")
    with pytest.raises(KeyError, match="did you mean 'weather'"):
        space.looks("wether")
    assert simulators.make("gmm").param_space.look == ()  # no frames: no warm-up


def test_match_hold_keeps_the_mixes_the_warm_up_moved(tmp_path):
    out = tmp_path / "run"
    rows = _run(out, iterations=2, **{"warmup.hold": True})
    assert [r["phase"] for r in rows] == ["match"] * 3 + ["task"] * 2
    weather = [r["policy"]["params"]["weather"] for r in rows]
    assert weather[2] == weather[3] == weather[4] and weather[1] != weather[2]
    assert rows[4]["policy"]["params"]["car_type"] != rows[2]["policy"]["params"]["car_type"]
    free = tmp_path / "free"
    rows = _run(free, **{"warmup.hold": False})
    assert rows[3]["policy"]["params"]["weather"] != rows[2]["policy"]["params"]["weather"]  # the task moves it too
    # every element matched: the mixes are held, the continuous elements go on
    everything = ["weather", "intersection", "car_type", "cars_per_scene", "road_length"]
    last, task = (r["policy"]["params"] for r in _run(tmp_path / "all", **{"warmup.look": everything})[2:])
    assert all(task[n] == last[n] for n in ("weather", "intersection", "car_type"))
    assert task["cars_per_scene"] != last["cars_per_scene"] and task["road_length"] != last["road_length"]


def test_tensorboard_keeps_the_warm_ups_reward_apart(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    _run(out, final_repeats=0, tensorboard=True)
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    steps = {tag: [e.step for e in acc.Scalars(tag)] for tag in ("match/mean", "reward/mean")}
    assert steps == {"match/mean": [0, 1, 2], "reward/mean": [3]}


def test_one_progress_display_and_a_plan_line_for_the_whole_run(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the display is on
    args = [a for a in _args(tmp_path / "run") if a != "--quiet"]
    assert run_cli(optimize_main, args) == 0
    err = capsys.readouterr().err
    plan = next(line for line in err.splitlines() if line.startswith("plan: "))
    assert plan == (
        "plan: warm-up reinforce 3 it × 4 renders of 16 scenes (no training) → reinforce 1 it × 4 evaluations of 24 scenes"
        " → 3 final evaluations; 7 trainings, 360 frames; budget 12 evaluations"
    )
    assert "19/19 evals" in err  # 12 warm-up renders, 4 evaluations, 3 final ones: one display
    assert "warm-up it 1/4" in err and "search it 4/4" in err and "final 3" in err and "best -" in err
    assert "left " in err


def test_match_scenes_below_one_is_one_line_exit_2(tmp_path, capsys):
    assert run_cli(optimize_main, _args(tmp_path / "run", "--set", _phases(scenes=0))) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: warmup.phases[0].scenes must be an integer >= 1, got 0"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_label_features_count_per_type_and_class_fractions_per_band():
    from simulators import Batch

    counts = torch.tensor([[1, 0, 2], [0, 3, 0]])
    batch = Batch(counts=counts, count_names=("sedan", "suv", "truck"))
    like = Batch(counts=torch.zeros(1, 2, dtype=torch.long), count_names=("car", "truck"))
    assert label_features(batch, "counts", like).tolist() == [[1.0, 2.0], [3.0, 0.0]]  # sedans, SUVs → car
    sem = torch.zeros(1, 4, 2, dtype=torch.long)
    sem[0, 1:] = 7  # the first band class 0, the others class 7
    sem[0, 3, 1] = 999  # outside the label space: the last class
    f = label_features(Batch(semantic=sem), "semantic", Batch()).view(4, -1)
    assert torch.equal(f.sum(1), torch.ones(4, dtype=torch.float64))
    assert f[0, 0] == 1 and f[1, 7] == 1 and f[3, 7] == 0.5 and f[3, -1] == 0.5


def test_the_labels_distance_sees_the_car_types_the_look_does_not(street):
    sim, base, _ = street
    star = {**base, "car_type": {"sedan": 0.05, "hatchback": 0.05, "suv": 0.45, "van": 0.35, "truck": 0.10}}
    match = TargetMatch(sim.generate(star, 256, seed=1), "counts")
    at_star = [match(sim.generate(star, 128, seed=s)) for s in (2, 3)]
    uniform = [match(sim.generate(base, 128, seed=s)) for s in (2, 3)]
    assert max(d["labels"] for d in at_star) < 0.5 * min(d["labels"] for d in uniform)
    assert all(abs(a["look"] - b["look"]) < 0.01 for a, b in zip(at_star, uniform))  # same frames' look
    assert "labels" not in TargetMatch(sim.generate(star, 8, seed=1))(sim.generate(star, 8, seed=2))


def test_the_warm_up_moves_the_contents_by_the_labels_and_the_task_goes_on_with_them(tmp_path):
    out = tmp_path / "run"
    phases = [{"search": "reinforce", "iterations": 3, "samples": 8, "scenes": 16}]
    rows = _run(out, **{"warmup.labels": None, "warmup.phases": phases})
    assert [r["phase"] for r in rows] == ["match"] * 3 + ["task"] and len(rows[0]["rewards"]) == 8
    for r in rows[:3]:
        for m, rw in zip(r["metrics"], r["rewards"]):
            assert m["mmd2"] > 0 and m["mmd2_labels"] > 0 and rw == pytest.approx(-m["mmd2"] - m["mmd2_labels"])
    assert set(rows[0]["update"]) == {"look", "labels"} and rows[0]["update"]["look"] != rows[0]["update"]["labels"]
    first, last, task = (rows[i]["policy"]["params"] for i in (0, 2, 3))
    for name in ("weather", "car_type", "cars_per_scene", "road_length"):
        assert first[name] != last[name], name
    assert first["intersection"] == last["intersection"]  # in neither signal
    assert task["weather"] == last["weather"] and task["car_type"] == last["car_type"]  # match_hold: the mixes
    assert task["cars_per_scene"] != last["cars_per_scene"]  # the continuous elements go on


def test_an_element_in_both_signals_is_one_line_exit_2(tmp_path, capsys):
    args = _args(tmp_path / "run", "--set", "warmup.labels=[car_type, weather]")
    assert run_cli(optimize_main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: warmup.look and warmup.labels both name ['weather']") and "\n" not in err
    # an element named for the look leaves the simulator's default label elements
    out = tmp_path / "look"
    rows = _run(out, **{"warmup.look": ["weather", "car_type"], "warmup.labels": None})
    assert (
        "mmd2_labels" in rows[0]["metrics"][0]
        and rows[3]["policy"]["params"]["car_type"] == rows[2]["policy"]["params"]["car_type"]
    )


def test_labelled_points_features_are_the_point_and_its_scaled_class():
    from simulators import Batch

    target = Batch(features=torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]), labels=torch.tensor([0, 1, 1]))
    batch = Batch(features=torch.tensor([[1.0, 1.0]]), labels=torch.tensor([1]))
    scale = float(target.features.double().std())
    assert label_features(batch, "labels", target).tolist() == [[1.0, 1.0, 0.0, scale]]


def test_the_toys_warm_up_matches_points_and_labels_and_the_search_starts_there(tmp_path, gmm_target):
    tiny = {"target": str(gmm_target), "iterations": 3, "samples": 3, "scenes": 60, "target_size": 120,
            "final_repeats": 1, "task_options.steps": 25, "search": "cma-mean",
            "warmup.phases": [{"search": "cma-mean", "iterations": 12, "samples": 8, "scenes": 50}]}  # fmt: skip
    rows = _run(tmp_path / "run", "gmm.yaml", tiny)
    assert [r["phase"] for r in rows] == ["match"] * 12 + ["task"] * 3
    star = {"c0_x": -2.0, "c0_y": 1.0, "c1_x": 1.5, "c1_y": -1.5, "std": 1.0}

    def dist(psi):
        return sum((psi[k] - v) ** 2 for k, v in star.items()) ** 0.5

    first, matched = rows[0]["recommended"], rows[11]["recommended"]
    assert dist(matched) < 0.5 * dist(first)  # the −MMD² of points and labels leads toward ψ*
    mmd = [np.mean([m["mmd2_labels"] for m in r["metrics"]]) for r in rows[:12]]
    assert np.mean(mmd[-3:]) < 0.5 * np.mean(mmd[:3])
    assert rows[12]["params"][0]["balance"] == matched["balance"]  # match_hold: the mix stays
    # charged by what it renders: 8 × 50 of 60-point evaluations an iteration
    assert rows[11]["evaluations"] == pytest.approx(12 * 8 * 50 / 60)


def test_class_moments_are_zero_on_the_target_and_a_shifted_class_costs_its_squared_shift():
    from lts.matching import ClassMoments

    square = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    points = torch.cat([square, square + torch.tensor([3.0, 0.0])])
    labels = torch.tensor([0] * 4 + [1] * 4)
    d = ClassMoments(points, labels)
    assert d(points, labels) == pytest.approx(0.0, abs=1e-12)
    scale = float(points.double().var(0).sum())
    moved = torch.cat([square, square + torch.tensor([4.0, 0.0])])  # class 1 one step further
    assert d(moved, labels) == pytest.approx(0.5 * 1.0 / scale, rel=1e-9)  # its frequency × shift² / variance
    wider = torch.cat([2.0 * square, square + torch.tensor([3.0, 0.0])])  # class 0 twice as wide
    # covariances c·I and 4c·I in 2-D (c = 2/3): 2 (√(4c) − √c)² = 2c
    assert d(wider, labels) == pytest.approx(0.5 * 2 * (2 / 3) / scale, rel=1e-9)
    # class 0 drawn twice as often (its square twice: covariance 4/7 I instead of 2/3 I):
    # the squared Hellinger distance of 2/3, 1/3 to 1/2, 1/2, plus that covariance's cost
    twice = torch.cat([square, square, square + torch.tensor([3.0, 0.0])])
    hellinger = ((2 / 3) ** 0.5 - 0.5**0.5) ** 2 + ((1 / 3) ** 0.5 - 0.5**0.5) ** 2
    w2 = 2 * ((4 / 7) ** 0.5 - (2 / 3) ** 0.5) ** 2
    assert d(twice, torch.tensor([0] * 8 + [1] * 4)) == pytest.approx(hellinger + 0.5 * w2 / scale, rel=1e-9)


def test_class_moments_rank_the_true_psi_first_on_the_12_coordinate_problem():
    from lts.matching import ClassMoments

    sim = simulators.make("gmm", classes=3, dims=3)
    star = {"c0_x": -2.0, "c0_y": 1.0, "c0_z": 0.5, "c1_x": 1.5, "c1_y": -1.5, "c1_z": 1.0,
            "c2_x": 0.5, "c2_y": 2.0, "c2_z": -2.0, "std": 1.2, "balance": {"c0": 0.2, "c1": 0.5, "c2": 0.3}}  # fmt: skip
    target = sim.generate(star, 1000, seed=1)
    d = ClassMoments(target.features, target.labels)
    at = [d(b.features, b.labels) for b in (sim.generate(star, 400, seed=s) for s in (2, 3, 4))]
    for name, value in (("c0_x", -1.5), ("std", 1.0), ("balance", {"c0": 0.35, "c1": 0.35, "c2": 0.3})):
        off = [d(b.features, b.labels) for b in (sim.generate({**star, name: value}, 400, seed=s) for s in (2, 3, 4))]
        assert all(o > a for o, a in zip(off, at)), name  # common seeds: ψ* nearer, draw for draw


def test_match_classes_on_labels_that_are_not_points_is_one_line_exit_2(tmp_path, capsys):
    args = _args(tmp_path / "run", "--set", "warmup.classes=true", "--set", "warmup.labels=null")
    assert run_cli(optimize_main, args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: warmup.classes compares labelled points") and "'counts'" in err and "\n" not in err


# -- the moments: each mix solved from pure renders ---------------------------------------


def test_simplex_lstsq_recovers_a_mix_and_projects_an_unreachable_target():
    from lts.matching import simplex_lstsq

    g = torch.Generator().manual_seed(0)
    m = torch.rand(96, 5, generator=g, dtype=torch.float64)
    p = torch.tensor([0.05, 0.05, 0.45, 0.35, 0.10], dtype=torch.float64)
    assert torch.allclose(simplex_lstsq(m, m @ p), p, atol=1e-6)
    corner = simplex_lstsq(m, m[:, 2])  # a pure choice: the corner, exactly
    assert torch.allclose(corner, torch.tensor([0.0, 0, 1, 0, 0], dtype=torch.float64), atol=1e-6)
    # a target beyond every mix: the fit is still a mix, and no other mix fits better
    q = simplex_lstsq(m, m @ p + 1.0)
    assert q.min() >= 0 and float(q.sum()) == pytest.approx(1.0)
    loss = lambda x: float((m @ x - m @ p - 1.0).square().sum())  # noqa: E731
    for _ in range(200):
        other = torch.distributions.Dirichlet(torch.ones(5, dtype=torch.float64)).sample()
        assert loss(q) <= loss(other) + 1e-9


def test_a_scaled_fit_recovers_a_mix_whose_features_grow_with_what_the_mix_does_not_set():
    from lts.matching import simplex_lstsq

    g = torch.Generator().manual_seed(1)
    m = torch.rand(5, 5, generator=g, dtype=torch.float64) + 3 * torch.eye(5, dtype=torch.float64)  # counts by type
    p = torch.tensor([0.05, 0.05, 0.45, 0.35, 0.10], dtype=torch.float64)
    busier = 2.5 * (m @ p)  # the same mix in scenes with 2.5 times the cars
    assert torch.allclose(simplex_lstsq(m, busier, scale=True), p, atol=1e-6)
    assert 0.5 * float((simplex_lstsq(m, busier) - p).abs().sum()) > 0.1  # the plain fit tilts the mix
    zero = simplex_lstsq(torch.zeros(3, 4, dtype=torch.float64), torch.ones(3, dtype=torch.float64), scale=True)
    assert torch.equal(zero, torch.full((4,), 0.25, dtype=torch.float64))  # nothing to fit: uniform
    with pytest.raises(ValueError, match="NaN or infinite"):
        simplex_lstsq(m, torch.full((5,), float("nan"), dtype=torch.float64))


def test_only_car_counts_are_fitted_up_to_a_scale(street):
    sim, base, _ = street
    target = sim.generate(base, 8, seed=1)
    match = TargetMatch(target, "counts")
    assert match.scale_free("labels") and not match.scale_free("look")
    assert not TargetMatch(target, None).scale_free("labels")


# what `_moments_args` sets, as config keys
_MOMENTS = {
    "seed": 3, "iterations": 1, "samples": 2, "scenes": 24, "search": "reinforce", "target_size": 128,
    "final_repeats": 0, "task_options.steps": 2, "sim_options.resolution": [32, 64],
    "warmup.phases": [{"search": "moments", "scenes": 48}, {"search": "reinforce", "iterations": 0}],
}  # fmt: skip


def _moments_args(out, *extra):
    return [
        "--config", str(REPO / "configs" / "counting.yaml"), "--out", str(out), "--quiet", "--seed", "3",
        "--iterations", "1", "--samples", "2", "--scenes", "24", "--search", "reinforce",
        "--set", "target_size=128", "--set", "final_repeats=0", "--set", "task_options.steps=2",
        "--set", "sim_options.resolution=[32, 64]", *(extra or ["--set", _phases(0, moments=48)]),
    ]  # fmt: skip


def _tv(a, b):
    return 0.5 * sum(abs(a[k] - b[k]) for k in b)


def test_the_moments_recover_the_targets_mixes_in_one_charged_iteration_and_the_search_holds_them(tmp_path):
    import yaml

    star = yaml.safe_load((REPO / "configs" / "targets" / "default.yaml").read_text())["params"]
    out = tmp_path / "run"
    rows = _run(out, settings=_MOMENTS)
    assert [(r["phase"], r["search"]) for r in rows] == [("match", "moments"), ("task", "reinforce")]
    moments = rows[0]
    # every weather (4) and every car type (5) rendered alone, 48 scenes each, charged 48 / 24
    assert len(moments["params"]) == 9 and moments["sim_frames"] == 9 * 48
    assert moments["evaluations"] == pytest.approx(9 * 48 / 24) and moments["timing_s"]["train"] == 0
    assert [p["weather"] for p in moments["params"][:4]] == [_only(w) for w in WEATHERS]
    psi = moments["recommended"]
    start = simulators.make("procedural").param_space.default()
    for name in ("weather", "car_type"):  # from TV 0.35–0.40 at the start
        assert _tv(start[name], star[name]) > 0.3
        assert _tv(psi[name], star[name]) < 0.1, (name, psi[name])
    assert psi["intersection"] == start["intersection"] and psi["cars_per_scene"] == start["cars_per_scene"]
    assert set(moments["residuals"]) == {"weather", "car_type"}
    assert moments["rewards"] == pytest.approx([-moments["residuals"][k] for k in ("weather", "car_type")])
    task = rows[1]
    assert all(p["weather"] == psi["weather"] and p["car_type"] == psi["car_type"] for p in task["params"])  # held
    policy = json.loads((out / "policy.json").read_text())["params"]
    assert policy["weather"]["mean"] == [psi["weather"][w] for w in WEATHERS]


def test_after_the_moments_the_warm_up_moves_what_is_left_and_a_resumed_run_ends_where_the_whole_does(tmp_path):
    from lts.config import load_config
    from lts.loop import Experiment

    extra = ["--set", _phases(2, 4, 16, moments=16)]
    whole = tmp_path / "whole"
    assert run_cli(optimize_main, _moments_args(whole, *extra)) == 0
    rows = RunDir(whole).read_metrics()
    assert [r["search"] for r in rows] == ["moments", "reinforce", "reinforce", "reinforce"]
    assert [r["phase"] for r in rows] == ["match"] * 3 + ["task"]
    solved = rows[0]["recommended"]
    for r in rows[1:3]:  # REINFORCE on the labels moves cars per scene and road length, not the solved mixes
        assert set(r["update"]) == {"labels"} and all(set(m) == {"mmd2_labels"} for m in r["metrics"])
        assert all(p["weather"] == solved["weather"] and p["car_type"] == solved["car_type"] for p in r["params"])
    assert rows[2]["recommended"]["cars_per_scene"] != solved["cars_per_scene"]
    # charged: 9 renders of 16 scenes, then 4 of 16 an iteration, against evaluations of 24 scenes
    assert [r["evaluations"] for r in rows[:3]] == pytest.approx([6.0, 6.0 + 64 / 24, 6.0 + 128 / 24])
    # interrupted after the moments (the process ends), then resumed
    part = tmp_path / "part"
    args = _moments_args(part, *extra)
    exp = Experiment(
        load_config(REPO / "configs" / "counting.yaml", overrides={
            "seed": 3, "iterations": 1, "samples": 2, "scenes": 24, "search": "reinforce", "target_size": 128,
            "final_repeats": 0, "task_options.steps": 2, "sim_options.resolution": [32, 64],
            "warmup.phases": [{"search": "moments", "scenes": 16},
                              {"search": "reinforce", "iterations": 2, "samples": 4, "scenes": 16}]}),
        RunDir(part),
    )  # fmt: skip
    exp.run_dir.make()
    exp.start_fresh()
    exp.step()
    assert "moments" in (part / "metrics.jsonl").read_text()
    assert run_cli(optimize_main, ["--resume", str(part), "--quiet"]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_s", "timing_s", "cpu_s")} for r in rows]  # noqa: E731
    assert strip(RunDir(part).read_metrics()) == strip(rows)
    assert (part / "policy.json").read_text() == (whole / "policy.json").read_text()
    del args


def test_the_plan_line_counts_the_moments_renders(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    args = [a for a in _moments_args(tmp_path / "run") if a != "--quiet"]
    assert run_cli(optimize_main, args) == 0
    err = capsys.readouterr().err
    plan = next(line for line in err.splitlines() if line.startswith("plan: "))
    assert plan.startswith("plan: warm-up 9 renders (mixes by moments) of 48 scenes (no training) → reinforce 1 it")
    assert "11/11 evals" in err  # 9 renders and 2 evaluations: one display


def test_a_render_the_moments_cannot_make_is_one_line_and_the_run_can_resume(tmp_path, monkeypatch):
    from lts.evaluation import Evaluator

    exp = _experiment(tmp_path / "run", **{"warmup.phases": [{"search": "moments", "scenes": 16}]})
    frames = Evaluator.frames

    def broken(self, spec, res):
        if spec.params["weather"]["cloudy_noon"] == 1.0:
            raise RuntimeError("server\ngone")
        return frames(self, spec, res)

    monkeypatch.setattr(Evaluator, "frames", broken)
    with pytest.raises(
        UserError,
        match=r"could not render weather = 'cloudy_noon' alone with 3 seeds \(crashed: simulator procedural, ψ .*, "
        r"seed \d+: RuntimeError: server gone at ",
    ) as e:
        exp.step()
    assert "\n" not in str(e.value) and exp.iteration == 0 and exp.phases[0].strategy.solved == {}


def test_a_version_2_run_directory_resumes_where_it_left_off(tmp_path):
    """A run directory from before phases (flat match_* keys in its config, a checkpoint with
    the stage's ``match`` and ``moments`` beside ``strategy``) resumes where it left off."""
    import yaml

    whole = _experiment(tmp_path / "whole")
    for _ in range(4):
        whole.step()
    part = tmp_path / "part"
    exp = _experiment(part)
    exp.step()
    run = RunDir(part)
    config = yaml.safe_load((part / "config.yaml").read_text())
    del config["warmup"]
    old = {"match_iterations": 3, "match_samples": 4, "match_scenes": 16, "match_search": "reinforce",
           "match_elements": ["weather"], "match_labels": [], "match_classes": False, "match_hold": True}  # fmt: skip
    config.update(old)  # as version 2 wrote it; before match_moments, without the key
    (part / "config.yaml").write_text(yaml.safe_dump(config))
    state = run.load_checkpoint()
    v2 = {k: v for k, v in state.items() if k != "phases"}
    v2.update(version=2, match=state["phases"][0]["strategy"], moments=None, strategy=None, config=config)
    run.save_checkpoint(v2)
    assert run_cli(optimize_main, ["--resume", str(part), "--quiet", "--set", "final_repeats=0"]) == 0
    rows = run.read_metrics()
    assert [r["phase"] for r in rows] == ["match"] * 3 + ["task"]
    assert rows[3]["policy"] == json.loads((tmp_path / "whole" / "policy.json").read_text())
    assert (part / "policy.json").read_text() == (tmp_path / "whole" / "policy.json").read_text()
