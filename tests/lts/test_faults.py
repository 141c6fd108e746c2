"""The checked boundary with plug-ins (`lts.checks`): bad batches, non-finite scores, crashes
and hangs become failures with a reason, never a reward; fault injection over whole runs
with `faulty_sim.FaultyGmm`."""

import json
import math
import time

import pytest
import torch
from conftest import tiny_gmm_args
from faulty_sim import FaultyGmm

import simulators
from lts.checks import BadBatch, EvalTimeout, check_batch, check_metrics, setup_call
from lts.cli import run_cli
from lts.evaluation import EvalSpec, Evaluator, InProcessExecutor
from lts.optimize import main as optimize_main
from lts.seeding import derive_seed
from lts.tasks import make as make_task
from simulators import Batch
from simulators.errors import SetupError

SIM = "faulty_sim:FaultyGmm"


def run(argv):
    return run_cli(optimize_main, argv)


def faulty_args(target, out, options, *extra):
    """A tiny run of the faulty plug-in; the target (seed 0's) is rendered without faults."""
    options = {"spare": [derive_seed(0, "target"), derive_seed(0, "target-test")], **options}
    return tiny_gmm_args(target, out, "--sim", SIM, "--set", f"sim_options={json.dumps(options)}", *extra)


def rows_of(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def points(n=6):
    return Batch(features=torch.zeros(n, 2), labels=torch.zeros(n, dtype=torch.int64))


def frames(n=2, h=4, w=5):
    return Batch(
        images=torch.zeros(n, 3, h, w, dtype=torch.uint8),
        semantic=torch.ones(n, h, w, dtype=torch.int64),
        depth=torch.ones(n, h, w),
        counts=torch.zeros(n, 3, dtype=torch.int64),
        count_names=("sedan", "hatchback", "suv"),
    )


# -- check_batch --------------------------------------------------------------------


def test_good_batches_pass():
    check_batch(points(), n=6, needs=("features", "labels"))
    check_batch(frames(), n=2, needs=("images", "counts"))
    sim = simulators.make("procedural", resolution=[32, 64])
    check_batch(sim.generate(sim.param_space.default(), 3, seed=0), n=3, needs=("images", "counts", "semantic"))


def _set(batch, **fields):
    for k, v in fields.items():
        setattr(batch, k, v)
    return batch


@pytest.mark.parametrize(
    "make, n, needs, kind, message",
    [
        (lambda: points(), 7, (), "bad batch", "features has 6 rows, expected 7"),
        (lambda: _set(points(), labels=torch.zeros(5, dtype=torch.int64)), 6, (), "bad batch", "labels has 5 rows"),
        (lambda: _set(points(), attributes={"c": [1]}), 6, (), "bad batch", "attribute 'c' has 1 values, expected 6"),
        (lambda: Batch(features=torch.zeros(3, 2)), 3, ("features", "labels"), "bad batch", "has no labels"),
        (lambda: _set(points(), features=torch.zeros(6, 2, dtype=torch.int64)), 6, (), "bad batch", "features is torch.int64"),
        (lambda: _set(points(), labels=torch.zeros(6)), 6, (), "bad batch", "labels is torch.float32, expected an integer"),
        (lambda: _set(points(), labels=-torch.ones(6, dtype=torch.int64)), 6, (), "bad batch", "labels holds -1"),
        (lambda: _set(points(), features=torch.tensor([[0.0, math.nan]] * 6)), 6, (), "non-finite output",
         "features holds 6 NaN or infinite"),
        (lambda: _set(frames(), depth=torch.full((2, 4, 5), math.inf)), 2, (), "non-finite output", "depth holds 40"),
        (lambda: _set(frames(), images=torch.full((2, 3, 4, 5), math.nan)), 2, (), "non-finite output", "images hold 120"),
        (lambda: _set(frames(), images=torch.zeros(2, 4, 4, 5)), 2, (), "bad batch", "expected N×3×H×W"),
        (lambda: _set(frames(), images=torch.zeros(2, 3, 4, 5, dtype=torch.int32)), 2, (), "bad batch",
         "images are torch.int32"),
        (lambda: _set(frames(), semantic=torch.full((2, 4, 5), 99)), 2, (), "bad batch", "label id 99, outside"),
        (lambda: _set(frames(), semantic=torch.ones(2, 4, 6, dtype=torch.int64)), 2, (), "bad batch",
         r"semantic is \(4, 6\) per frame"),
        (lambda: _set(frames(), counts=-torch.ones(2, 3, dtype=torch.int64)), 2, (), "bad batch", "counts hold -1"),
        (lambda: _set(frames(), counts=torch.zeros(2, 2, dtype=torch.int64)), 2, (), "bad batch", "2 columns"),
        (lambda: Batch(), 0, (), "bad batch", "holds no data"),
        (lambda: "frames", 0, (), "bad batch", "returned str"),
    ],
)  # fmt: skip
def test_check_batch_names_what_is_wrong(make, n, needs, kind, message):
    with pytest.raises(BadBatch, match=message) as e:
        check_batch(make(), n=n, needs=needs)
    assert e.value.kind == kind


def test_non_finite_metrics_are_refused():
    check_metrics({"accuracy": 0.5, "nll": 0.3}, "validation")
    with pytest.raises(Exception, match=r"non-finite metric on the test split \(nll=nan\)"):
        check_metrics({"accuracy": 0.7227, "nll": math.nan}, "test")


# -- one evaluation -------------------------------------------------------------------


def _evaluator(sim, task=None):
    target = simulators.make("gmm").generate(sim.param_space.default(), 40, seed=1)
    return Evaluator(sim, task or make_task("classify", steps=5), target, sim_name=SIM)


def test_a_batch_with_nan_fails_its_evaluation_naming_simulator_params_and_seed():
    sim = FaultyGmm(mode="nan", seeds=[7])
    ev = _evaluator(sim)
    psi = sim.param_space.default()
    bad = ev.safe(EvalSpec(index=0, params=psi, n=20, data_seed=7, train_seed=0))
    assert not bad.ok and math.isnan(bad.reward) and bad.metrics == {}
    assert bad.failure == "non-finite output"
    assert bad.error.startswith(f"non-finite output: simulator {SIM}, ψ {{c0_x: ")
    assert "seed 7: features holds 1 NaN" in bad.error
    good = ev.safe(EvalSpec(index=1, params=psi, n=20, data_seed=8, train_seed=0))
    assert good.ok and good.failure is None and math.isfinite(good.reward) and good.reward <= 0  # the negated NLL


class NanScoreTask:
    """classify, except that its NLL comes out NaN: the symptom of training on bad data."""

    def __init__(self):
        self.inner = make_task("classify", steps=5)
        self.name, self.metric, self.higher_is_better = "classify", "accuracy", True

    def fit(self, batch, *, seed, init=None):
        return self.inner.fit(batch, seed=seed, init=init)

    def score(self, model, target):
        return {**self.inner.score(model, target), "nll": math.nan}


def test_a_non_finite_score_fails_the_evaluation():
    sim = FaultyGmm()
    res = _evaluator(sim, NanScoreTask()).safe(EvalSpec(0, sim.param_space.default(), 20, 3, 0))
    assert not res.ok and res.failure == "non-finite metric"
    assert "non-finite metric on the validation split (nll=nan)" in res.error and "seed 3" in res.error


def test_an_in_process_timeout_fails_the_evaluation_and_takes_a_fresh_simulator():
    sim = FaultyGmm(mode="sleep", seeds=[5], delay=10.0)
    ev = _evaluator(sim)
    fresh = FaultyGmm()
    ev.remake_sim = lambda: fresh
    psi = sim.param_space.default()
    assert ev(EvalSpec(9, psi, 20, 9, 0)).ok  # a first training imports torch's optimiser modules: not timed
    executor = InProcessExecutor(ev, timeout=1.0)
    t0 = time.monotonic()
    hung, ok = executor.map([EvalSpec(0, psi, 20, 5, 0), EvalSpec(1, psi, 20, 6, 0)])
    assert time.monotonic() - t0 < 5  # the hung render was not waited for
    assert hung.failure == "timed out" and "did not finish within 1 s" in hung.error and "seed 5" in hung.error
    assert ok.ok and ev.sim is fresh


def test_setup_call_turns_a_crash_and_a_hang_into_one_line():
    def crash():
        raise RuntimeError("no GPU\nat all")

    with pytest.raises(SetupError, match="^simulator x failed while rendering: RuntimeError: no GPU at all") as e:
        setup_call(crash, sim="x", what="rendering")
    assert isinstance(e.value.__cause__, RuntimeError)  # kept for --debug
    with pytest.raises(SetupError, match=r"simulator x: rendering did not finish within 0.2 s \(setup_timeout"):
        setup_call(lambda: time.sleep(2), sim="x", what="rendering", timeout=0.2)
    assert setup_call(lambda: 3, sim="x", what="rendering", timeout=1) == 3
    assert issubclass(EvalTimeout, Exception)


# -- whole runs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, kind, said",
    [
        ("nan", "non-finite output", "features holds 1 NaN"),
        ("crash", "crashed", "RuntimeError: renderer crashed on seed"),
        ("short", "bad batch", "features has 59 rows, expected 60"),
        ("labels", "bad batch", "labels holds -1, expected ids >= 0"),
    ],
)
def test_no_reward_is_told_from_a_faulty_render_and_every_failure_is_counted(tmp_path, gmm_target, mode, kind, said):
    out = tmp_path / "run"
    opts = {"mode": mode, "rate": 0.3}
    # independent seeds: faults hit single draws, not whole iterations
    assert run(faulty_args(gmm_target, out, opts, "--iterations", "4", "--set", "common_seeds=false")) == 0
    sim = FaultyGmm(**opts)
    faulty = 0
    for row in rows_of(out):
        errors = {e["draw"]: e for e in row["errors"]}
        for k, (psi, reward) in enumerate(zip(row["params"], row["rewards"])):
            if sim.hit(psi, derive_seed(0, "data", row["iteration"], k)):
                faulty += 1
                assert reward is None and row["metrics"][k] == {}
                assert errors[k]["kind"] == kind and said in errors[k]["error"] and SIM in errors[k]["error"]
            else:
                assert reward is not None and math.isfinite(reward) and reward <= 0 and k not in errors  # −NLL
    assert faulty >= 2  # the rate hit some draws
    summary = json.loads((out / "summary.json").read_text())
    final_failed = [r for r in summary["retries"]]
    assert summary["failures"]["evaluations"] == faulty + len(final_failed) + sum(
        1 for r in final_failed if r["retry_error"]
    )
    assert summary["failures"]["by_kind"] == {kind: summary["failures"]["evaluations"]}
    for w, r in summary["reward"].items():
        assert (r is None) == (summary["errors"][w] is not None)


def test_a_failed_final_row_is_retried_once_with_the_next_seed(tmp_path, gmm_target):
    out = tmp_path / "run"
    first = derive_seed(0, "final-data", 0)
    assert run(faulty_args(gmm_target, out, {"mode": "nan", "seeds": [first]})) == 0
    summary = json.loads((out / "summary.json").read_text())
    # lts and oracle hit their first final seed (random's per-scene renders are spared); the
    # retry, seed index 1 (final_repeats is 1), succeeded
    assert sorted(r["row"] for r in summary["retries"]) == ["lts", "oracle"]
    for r in summary["retries"]:
        assert r["repeat"] == 0 and r["retry_repeat"] == 1 and r["retry_error"] is None
        assert r["kind"] == "non-finite output" and f"seed {first}" in r["failed"]
    assert all(v is not None and math.isfinite(v) for v in summary["reward"].values())
    assert summary["errors"] == {"lts": None, "oracle": None, "random": None}
    assert summary["seeds"] == {"lts": 1, "oracle": 1, "random": 1}


def test_a_final_row_that_fails_says_why_in_the_table_and_the_summary(tmp_path, gmm_target, capsys):
    out = tmp_path / "run"
    assert run(faulty_args(gmm_target, out, {"mode": "crash", "rate": 1.0, "per_scene": True})) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"]["random"] is None and summary["test"]["random"] is None
    assert summary["errors"]["random"].startswith(f"crashed: simulator {SIM}, ψ drawn per scene, seed ")
    assert "RuntimeError: renderer crashed on seed" in summary["errors"]["random"]
    assert summary["reward"]["lts"] is not None and summary["errors"]["lts"] is None
    assert [r["row"] for r in summary["retries"]] == ["random"] and summary["retries"][0]["retry_error"]
    table = capsys.readouterr().out
    lines = [x for x in table.splitlines() if x.strip().startswith("random")]
    assert len(lines) == 2  # test and validation
    assert all(f"—   failed: crashed: simulator {SIM}, ψ drawn per scene" in x for x in lines)


def test_hung_renders_time_out_and_the_run_finishes(tmp_path, gmm_target):
    out = tmp_path / "run"
    hang = derive_seed(0, "data", 1, 1)  # iteration 1's second draw
    opts = {"mode": "sleep", "seeds": [hang], "delay": 60}
    # 5 s: far above an evaluation here, including the first one's imports (about 1 s)
    args = faulty_args(gmm_target, out, opts, "--set", "eval_timeout=5", "--set", "common_seeds=false")
    t0 = time.monotonic()
    assert run(args) == 0
    assert time.monotonic() - t0 < 40  # the hung render was left behind
    rows = rows_of(out)
    assert [len(r["errors"]) for r in rows] == [0, 1, 0]
    (e,) = rows[1]["errors"]
    assert e["draw"] == 1 and e["kind"] == "timed out" and rows[1]["rewards"][1] is None
    assert f"seed {hang}: evaluation 1 did not finish within 5 s" in e["error"]
    assert all(x is not None for r in rows for k, x in enumerate(r["rewards"]) if (r["iteration"], k) != (1, 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == {"evaluations": 1, "by_kind": {"timed out": 1}}


def test_resume_after_an_interruption_ends_where_an_uninterrupted_faulty_run_ends(tmp_path, gmm_target):
    from lts.config import load_experiment  # noqa: F401 - the same path the command line takes
    from lts.loop import Callbacks, Experiment
    from lts.optimize import _resolved_config, build_parser

    opts = {"mode": "nan", "rate": 0.3}
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("--iterations", "4", "--set", "common_seeds=false")
    assert run(faulty_args(gmm_target, full, opts, *extra)) == 0

    config, run_dir, _ = _resolved_config(build_parser().parse_args(faulty_args(gmm_target, part, opts, *extra)))

    def stop(row):
        if row["iteration"] == 1:
            raise KeyboardInterrupt  # as a kill after iteration 1's checkpoint

    exp = Experiment(config, run_dir, callbacks=Callbacks(on_iteration=stop))
    run_dir.make()
    exp.start_fresh()
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    assert not (part / "summary.json").exists() and len(rows_of(part)) == 2
    assert run(["--resume", str(part), "--quiet"]) == 0
    drop = ("elapsed_s", "timing_s", "cpu_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(rows_of(full)) == strip(rows_of(part))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, part))
    for key in ("reward", "test", "errors", "retries", "failures"):
        assert a[key] == b[key]
    assert a["failures"]["evaluations"] >= 2


def test_a_crash_while_rendering_the_target_is_one_line_exit_2(tmp_path, gmm_target, capsys):
    args = faulty_args(gmm_target, tmp_path / "run", {"crash_first": True})
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        f"error: simulator {SIM} failed while rendering the target's validation split (120 scenes, seed "
    )
    assert "RuntimeError: lost the connection to the renderer" in err
    assert not (tmp_path / "run").exists()
    assert run([*args, "--debug"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("Traceback") and "faulty_sim.py" in err and err.splitlines()[-1].startswith("error: simulator")
    )


def test_a_plugin_that_crashes_while_building_itself_is_one_line(tmp_path, gmm_target, capsys):
    args = faulty_args(gmm_target, tmp_path / "run", {"mode": "melt"})
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err == f"error: simulator {SIM} failed while building itself: ValueError: mode 'melt': expected one of " \
        "('crash', 'nan', 'short', 'labels', 'sleep') (--debug shows where)\n"  # fmt: skip


def test_a_faulty_render_in_the_warm_ups_moments_is_tried_with_the_next_seed(tmp_path, gmm_target):
    out = tmp_path / "run"
    first = derive_seed(0, "moments")  # every choice's first render is faulty
    args = faulty_args(gmm_target, out, {"mode": "nan", "seeds": [first]}, "--set", "warmup.phases=[{search: moments}]",
                       "--set", "warmup.look=[]", "--set", "warmup.labels=[balance]")  # fmt: skip
    assert run(args) == 0
    moments = rows_of(out)[0]
    assert moments["search"] == "moments" and moments["rewards"][0] is not None
    # balance's two choices: each failed on the first seed and rendered on the next
    assert [e["kind"] for e in moments["errors"]] == ["non-finite output"] * 2
    assert all(f"seed {first}:" in e["error"] for e in moments["errors"])
    assert [m is not None for m in moments["params"]] == [True] * 4
    assert json.loads((out / "summary.json").read_text())["failures"]["by_kind"] == {"non-finite output": 2}
