"""The optimize / inspect command lines on the toy experiment, with tiny budgets."""

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, tiny_gmm_args

from lts.cli import run_cli
from lts.cli.inspect import main as inspect_main
from lts.cli.optimize import main as optimize_main
from policies import STRATEGIES


def run(argv):
    return run_cli(optimize_main, argv)


def test_run_directory_follows_the_contract(tmp_path, gmm_target):
    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out)) == 0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.jsonl", "policy.json", "checkpoint.pt",
                                                "summary.json"}  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert {"iteration", "rewards", "reward_mean", "baseline", "policy", "sim_frames", "elapsed_s"} <= set(r)
        assert len(r["rewards"]) == 3 and all(math.isfinite(x) and x <= 0.0 for x in r["rewards"])  # the negated NLL
    assert rows[-1]["sim_frames"] == 3 * 3 * 60
    assert rows[0]["elapsed_s"] <= rows[-1]["elapsed_s"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "nll" and summary["iterations"] == 3
    assert set(summary["reward"]) == {"lts", "oracle", "random"}
    assert summary["sim_frames"] == rows[-1]["sim_frames"]
    # The oracle trains on ψ* itself; domain randomization flips classes and must lose.
    assert summary["reward"]["oracle"] > summary["reward"]["random"]
    assert summary["metrics"]["oracle"]["accuracy"] > 0.9 > summary["metrics"]["random"]["accuracy"]
    policy = json.loads((out / "policy.json").read_text())
    assert policy == rows[-1]["policy"]
    assert policy["params"]["balance"]["kind"] == "proportions"
    assert sum(policy["params"]["balance"]["mean"]) == pytest.approx(1.0)


@pytest.mark.parametrize("sampling", ["orthogonal", "independent"])
def test_draws_follow_the_sampling_design(tmp_path, gmm_target, sampling):
    """Orthogonal draws come in sign-balanced blocks: with K = 4 each Gaussian element
    takes two values, each twice, mirrored about the policy mean of that iteration (the
    first three, c0_x, c0_y, c1_x, with a column each; the later ones, c1_y, std, balance,
    sharing c1_x's)."""
    out = tmp_path / "run"
    args = tiny_gmm_args(gmm_target, out, "--samples", "4", "--set", f"search_options.sampling={sampling}")
    assert run(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        for name in ("c0_x", "c1_y"):
            values = sorted(p[name] for p in r["params"])
            if sampling == "independent":
                assert len(set(values)) == 4
                continue
            assert values[0] == values[1] and values[2] == values[3] and values[1] < values[2]
            if r["iteration"] == 0:
                assert (values[0] + values[3]) / 2 == pytest.approx(0.0, abs=1e-9)  # the range's centre


def test_runs_written_by_an_older_lts_are_refused_with_one_line(tmp_path, gmm_target, capsys):
    out = tmp_path / "run"
    args = tiny_gmm_args(gmm_target, out)
    args[args.index("--iterations") + 1] = "1"
    assert run(args) == 0
    config = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(config.replace("search: reinforce\n", "policy: {lr: 0.05}\n"))
    capsys.readouterr()
    assert run(["--resume", str(out), "--iterations", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "written by an older lts" in err and err.count("\n") == 1


def test_a_resume_names_the_keys_edited_since_the_checkpoint(tmp_path, gmm_target, capsys):
    out = tmp_path / "run"
    args = tiny_gmm_args(gmm_target, out)
    args[args.index("--iterations") + 1] = "1"
    assert run(args) == 0
    config = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(config.replace("samples: 3\n", "samples: 2\n"))
    capsys.readouterr()
    assert run(["--resume", str(out), "--iterations", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "was edited since the checkpoint (samples: 3 → 2)" in err and err.count("\n") == 1
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # nothing computed is lost


def test_learning_rates_fall_on_a_cosine_to_lr_floor(tmp_path, gmm_target):
    from lts.rundir import RunDir

    out = tmp_path / "run"
    args = tiny_gmm_args(gmm_target, out)
    args[args.index("--iterations") + 1] = "3"
    opts = ["search_options.lr_floor=0.25", "search_options.lr=0.2", "search_options.logit_lr=0.4"]
    assert run([*args, *(x for o in opts for x in ("--set", o))]) == 0
    groups = pickle.loads(RunDir(out).load_checkpoint()["phases"][-1]["strategy"])["optimizers"][""]["param_groups"]
    assert [g["lr"] for g in groups] == [pytest.approx(0.05), pytest.approx(0.1)]  # the last of 3: a quarter
    assert [g["initial_lr"] for g in groups] == [0.2, 0.4]


def test_same_seed_same_policy(tmp_path, gmm_target):
    for name in ("a", "b"):
        assert run(tiny_gmm_args(gmm_target, tmp_path / name, "--seed", "5")) == 0
    assert (tmp_path / "a" / "policy.json").read_text() == (tmp_path / "b" / "policy.json").read_text()
    assert run(tiny_gmm_args(gmm_target, tmp_path / "c", "--seed", "6")) == 0
    assert (tmp_path / "a" / "policy.json").read_text() != (tmp_path / "c" / "policy.json").read_text()


# every strategy told the task's reward (the moments, told features, resume in test_matching)
@pytest.mark.parametrize("search", [n for n in STRATEGIES if n != "moments"])
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, gmm_target, search):
    if search in ("tpe", "cmaes", "gp"):
        pytest.importorskip("optuna")
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(tiny_gmm_args(gmm_target, full, "--search", search)) == 0
    args = tiny_gmm_args(gmm_target, part, "--search", search)
    args[args.index("--iterations") + 1] = "1"
    assert run(args) == 0
    assert run(["--resume", str(part), "--iterations", "3", "--quiet"]) == 0
    assert (full / "policy.json").read_text() == (part / "policy.json").read_text()
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_s", "timing_s", "cpu_s")} for r in rows]  # noqa: E731
    rows_full = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    rows_part = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert strip(rows_full) == strip(rows_part)


def test_warm_start_carries_the_best_model_across_iterations_and_resume(tmp_path, gmm_target):
    def rewards(out):
        return [json.loads(x)["rewards"] for x in (out / "metrics.jsonl").read_text().splitlines()]

    cold, warm, part = tmp_path / "cold", tmp_path / "warm", tmp_path / "part"
    assert run(tiny_gmm_args(gmm_target, cold)) == 0
    assert run(tiny_gmm_args(gmm_target, warm, "--warm-start")) == 0
    # Iteration 0 has no model to start from; later ones continue the previous best, so
    # the same draws and seeds score differently.
    assert rewards(warm)[0] == rewards(cold)[0]
    assert rewards(warm)[1] != rewards(cold)[1] and rewards(warm)[2] != rewards(cold)[2]
    # the model travels in the checkpoint: a resumed warm run ends where the whole one does
    args = tiny_gmm_args(gmm_target, part, "--warm-start")
    args[args.index("--iterations") + 1] = "1"
    assert run(args) == 0
    assert run(["--resume", str(part), "--iterations", "3", "--quiet"]) == 0
    assert rewards(part) == rewards(warm)
    assert (part / "policy.json").read_text() == (warm / "policy.json").read_text()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_same_policy(tmp_path, gmm_target):
    full, killed = tmp_path / "full", tmp_path / "killed"
    base = tiny_gmm_args(gmm_target, full)
    base[base.index("--iterations") + 1] = "12"
    assert run(base) == 0
    args = [a if a != str(full) else str(killed) for a in base]
    proc = subprocess.Popen([sys.executable, "-m", "lts.optimize", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        m = killed / "metrics.jsonl"
        if m.exists() and len(m.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    assert run(["--resume", str(killed), "--quiet"]) == 0
    assert (full / "policy.json").read_text() == (killed / "policy.json").read_text()


def test_interrupt_writes_checkpoint_and_exits_130(tmp_path, gmm_target):
    out = tmp_path / "run"
    args = tiny_gmm_args(gmm_target, out)
    args[args.index("--iterations") + 1] = "200"
    # A job started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then keeps it ignored: give the run Ctrl-C's default, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "lts.optimize", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (
        (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "--resume" in err
    assert (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()
    assert run(["--resume", str(out), "--iterations", "4", "--quiet"]) == 0
    assert (out / "summary.json").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--sim", "gmmm"], "unknown simulator 'gmmm'"),
        (["--task", "clasify"], "did you mean 'classify'?"),
        (["--set", "polcy.lr=1"], "unknown config key 'polcy'"),
        (["--set", "policy.lr=1"], "config key 'policy' is now 'search_options'"),
        (["--set", "search_options.lrr=1"], "search reinforce: unknown option 'lrr'"),
        (
            ["--search", "tpee"],
            "got 'tpee' (did you mean 'tpe'?)",
        ),
        (
            ["--search", "tpe", "--set", "search_options.n_startup_trials=-1"],
            "search tpe: n_startup_trials must be >= 0",
        ),
        (["--set", "scenes=many"], "config key 'scenes': expected int, got 'many'"),
        (["--samples", "0"], "samples (K) must be >= 1, got 0"),
        (["--set", "search_options.lr_floor=0"], "search reinforce: lr_floor must be in (0, 1], got 0"),
        (["--scenes", "0"], "scenes (M) must be >= 1, got 0"),
        (["--target", "/nonexistent/t.yaml"], "does not exist"),
        (["--iterations", "x"], "invalid int value: 'x'"),
        (
            ["--set", "search_options.sampling=orthogonl"],
            "search reinforce: sampling must be one of orthogonal, independent, got 'orthogonl'",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, gmm_target, capsys, extra, message):
    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out) + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    "target, message",
    [
        ("params: {balance: {c0: 0.5, c1: 0.6}}", "probabilities must sum to 1, got a sum of 1.1"),
        ("params: {balance: {c0: 1.5, c1: -0.5}}", "probabilities must be >= 0"),
        ("params: {c0_x: 9}", "parameter 'c0_x': expected a number in [-4, 4], got 9"),
        ("params: {weather: {clear_noon: 1.0}}", "unknown parameter 'weather'"),
        ("params: [1, 2]", "'params' must be a mapping"),
        ("- 1\n- 2", "expected a mapping with 'params'"),
        ("params: {c0_x: 1", "is not valid YAML"),
    ],
)
def test_bad_target_files(tmp_path, capsys, target, message):
    t = tmp_path / "t.yaml"
    t.write_text(target)
    assert run(tiny_gmm_args(t, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_out_and_resume_are_checked(tmp_path, gmm_target, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run(tiny_gmm_args(gmm_target, out)) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert run(["--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert run(["--resume", str(tmp_path / "missing")]) == 2


def test_resume_refuses_changed_seed(tmp_path, gmm_target, capsys):
    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out)) == 0
    assert run(["--resume", str(out), "--seed", "3"]) == 2
    assert "cannot change seed when resuming" in capsys.readouterr().err


def test_inspect_table_json_and_plot(tmp_path, gmm_target, capsys):
    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out)) == 0
    capsys.readouterr()
    assert run_cli(inspect_main, [str(out)]) == 0
    text = capsys.readouterr().out
    assert "balance (proportions)" in text and "target 0.700" in text and "oracle" in text
    assert run_cli(inspect_main, [str(out), "--json", "--plot", str(tmp_path / "p.png")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["finished"] and info["iterations"] == 3
    assert info["target"]["c1_x"] == 1.5
    assert 0.0 <= info["tv_to_target"]["balance"] <= 1.0
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20000
    assert run_cli(inspect_main, [str(tmp_path / "nope")]) == 2


def test_help_config_lists_every_key(capsys):
    assert run(["--help-config"]) == 0
    out = capsys.readouterr().out
    for key in ("samples", "scenes", "search", "search_options", "test_size", "task_options"):
        assert key in out


def test_tensorboard_logs_rewards_and_policy(tmp_path, gmm_target):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out, "--tensorboard")) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"reward/mean", "reward/baseline", "policy/balance/c1", "policy/std/mean"} <= set(tags)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [e.value for e in acc.Scalars("reward/mean")]
    assert logged == pytest.approx([r["reward_mean"] for r in rows], abs=1e-6)


def test_the_search_is_told_validation_rewards_and_the_test_split_is_only_reported(tmp_path, gmm_target):
    import dataclasses

    from lts.config import load_config
    from lts.evaluation import EvalSpec
    from lts.loop import Experiment
    from lts.rundir import RunDir
    from lts.seeding import derive_seed

    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out, "--set", "test_size=120")) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cfg = load_config(None, RunDir(out).read_config())
    exp = Experiment(dataclasses.replace(cfg, target=str(gmm_target)), RunDir(tmp_path / "x"))
    assert not torch_equal(exp.target.batch.features, exp.target.test.features)  # two seeds, two sets
    ev = exp.context.build()
    spec = EvalSpec(0, rows[1]["params"][2], cfg.scenes, derive_seed(cfg.seed, "data", 1, 0),
                    derive_seed(cfg.seed, "train", 1, 0))  # fmt: skip
    told = ev(spec)
    assert told.reward == rows[1]["rewards"][2]  # the reward the search was told: the validation split's
    tested = ev(dataclasses.replace(spec, split="test"))
    assert tested.reward != told.reward
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) == set(summary["reward"])
    # (accuracy on 120 points can tie between the splits; the NLL tells them apart)
    assert all(summary["test_metrics"][w]["nll"] != summary["metrics"][w]["nll"] for w in summary["test"])


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def test_flags_that_need_a_missing_package_are_refused_before_anything_is_written(tmp_path, gmm_target, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    out = tmp_path / "run"
    assert run(tiny_gmm_args(gmm_target, out, "--tensorboard")) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'error: --tensorboard needs the tensorboard package: pip install -e ".[tensorboard]"'
    assert not out.exists()


def test_a_search_that_cannot_move_an_element_says_so_in_the_plan_line_and_policy_json(tmp_path, capsys):
    pytest.importorskip("optuna")
    out = tmp_path / "run"
    target = REPO / "configs" / "targets" / "rings_line.yaml"
    args = [a for a in tiny_gmm_args(target, out, "--sim", "rings", "--search", "cmaes") if a != "--quiet"]
    assert run(args + ["--set", "task_options.metric=nll"]) == 0
    plan = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("plan: "))
    assert plan.endswith("; unmoved: layout (policy.json says why)")
    assert "independently" in json.loads((out / "policy.json").read_text())["unmoved"]["layout"]
