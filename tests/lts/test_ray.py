"""Ray execution: the same run as in-process, failed evaluations reported with their ψ,
dead workers replaced and their evaluations retried, user errors stopping the run."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

from conftest import REPO, tiny_gmm_args  # noqa: E402

from lts import ray_exec  # noqa: E402
from lts.cli import run_cli  # noqa: E402
from lts.cli.optimize import main as optimize_main  # noqa: E402
from lts.config import load_config  # noqa: E402
from lts.evaluation import EvalContext, EvalSpec  # noqa: E402
from lts.loop import Callbacks, Experiment  # noqa: E402
from lts.rundir import RunDir  # noqa: E402
from simulators.errors import UserError  # noqa: E402

HERE = Path(__file__).resolve().parent


def _json(path: Path) -> object:
    return json.loads(path.read_text())


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _config(gmm_target: Path, **kw: object):
    layer = {
        "target": str(gmm_target),
        "iterations": 3,
        "samples": 3,
        "scenes": 60,
        "target_size": 120,
        "final_repeats": 1,
        "task_options": {"steps": 25},
        "search": "reinforce",
        "warmup": {"phases": []},
    }
    layer.update(kw)
    return load_config(REPO / "configs" / "gmm.yaml", layer)


def _run(config, path: Path, callbacks: Callbacks | None = None) -> Experiment:
    exp = Experiment(config, RunDir(path).make(), callbacks=callbacks)
    exp.start_fresh()
    exp.run()
    return exp


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the tests below; workers can import ``ray_helpers``."""
    path = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    tmp = ray_exec.init_local_ray(2, env_vars={"PYTHONPATH": path})
    yield
    ray_exec.shutdown_local_ray(tmp)


@pytest.mark.parametrize("search", ["reinforce", "cmaes", "tpe", "cma-mean"])
def test_workers_2_gives_the_in_process_run(local_ray, tmp_path, gmm_target, search):
    pytest.importorskip("optuna")
    a, b = tmp_path / "inproc", tmp_path / "ray"
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, a, "--search", search)) == 0
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, b, "--search", search, "--workers", "2")) == 0
    # Every evaluation is seeded by its own index: the same numbers, bit for bit.
    assert _json(a / "policy.json") == _json(b / "policy.json")
    assert [r["rewards"] for r in _metrics(a)] == [r["rewards"] for r in _metrics(b)]
    assert _json(a / "summary.json")["reward"] == _json(b / "summary.json")["reward"]
    assert ray.is_initialized()  # it joined the Ray this process had started and left it running


def test_workers_2_gives_the_in_process_run_with_the_moments_first(local_ray, tmp_path):
    """The moments render in this process, the search's evaluations on the workers: the same run."""
    args = ["--out", "", "--quiet", "--seed", "1", "--iterations", "1", "--samples", "2", "--scenes", "8",
            "--set", "sim_options.resolution=[32, 64]", "--set", "target_size=16", "--set", "final_repeats=1",
            "--set", "task_options.steps=2", "--set", "warmup.phases=[{search: moments, scenes: 8}]"]  # fmt: skip
    runs = []
    for name, extra in (("inproc", []), ("ray", ["--workers", "2"])):
        args[1] = str(tmp_path / name)
        assert run_cli(optimize_main, [*args, *extra]) == 0
        runs.append(tmp_path / name)
    a, b = runs
    assert [r["search"] for r in _metrics(a)] == ["moments", "cma-mean"]
    assert _json(a / "policy.json") == _json(b / "policy.json")
    assert [r["rewards"] for r in _metrics(a)] == [r["rewards"] for r in _metrics(b)]


def test_failed_evaluations_are_logged_with_their_params(local_ray, tmp_path, gmm_target):
    config = _config(gmm_target, sim="ray_helpers:FailingGmm", workers=2)
    with pytest.warns(UserWarning, match="evaluation failed"):
        _run(config, tmp_path / "ray")
    rows = _metrics(tmp_path / "ray")
    assert [r["iteration"] for r in rows] == [0, 1, 2]  # the run went on
    errors = [e for r in rows for e in r["errors"]]
    assert errors, "this seed draws some c0_x > 1; the test needs a failure"
    for e in errors:
        assert e["params"]["c0_x"] > 1.0 and "ValueError" in e["error"] and "limit" in e["error"]
    for r in rows:
        failed = {e["draw"] for e in r["errors"]}
        assert [i for i, x in enumerate(r["rewards"]) if x is None] == sorted(failed)
        assert all(math.isfinite(x) and x <= 0.0 for x in r["rewards"] if x is not None)  # −NLL
    assert sum(x is not None for r in rows for x in r["rewards"]) > 0
    assert (tmp_path / "ray" / "summary.json").is_file()
    # The same failures, and the same update from the rest, as in-process.
    with pytest.warns(UserWarning, match="evaluation failed"):
        _run(config.__class__(**{**config.__dict__, "workers": 0}), tmp_path / "inproc")
    assert [r["errors"] for r in _metrics(tmp_path / "inproc")] == [r["errors"] for r in rows]
    assert _json(tmp_path / "inproc" / "policy.json") == _json(tmp_path / "ray" / "policy.json")


def test_a_killed_worker_is_replaced_and_no_iteration_is_lost(local_ray, tmp_path, gmm_target):
    kw = {"sim": "ray_helpers:SlowGmm", "samples": 4, "iterations": 2, "final_repeats": 0}
    reference = _run(_config(gmm_target, **kw), tmp_path / "inproc")
    config = _config(gmm_target, **kw, workers=2, sim_options={"delay": 0.6})
    seen, killed = [], []

    def kill_one_worker(row: dict) -> None:
        if row["iteration"] == 0:
            pid = exp_holder[0].places.executor().worker_pids()[1]
            # Mid-way through the next iteration's first two evaluations (0.6 s each).
            timer = threading.Timer(0.3, lambda: (os.kill(pid, signal.SIGKILL), killed.append(pid)))
            timer.start()

    exp_holder: list[Experiment] = []
    cb = Callbacks(on_start=exp_holder.append, on_eval=seen.append, on_iteration=kill_one_worker)
    exp = _run(config, tmp_path / "ray", cb)
    assert killed
    rows = _metrics(tmp_path / "ray")
    assert [r["iteration"] for r in rows] == [0, 1]
    assert all(not r["errors"] and None not in r["rewards"] for r in rows)
    assert exp.places.made is not None and exp.places.made.restarts == 1
    assert sorted(r.attempts for r in seen).count(2) == 1  # exactly the evaluation it was running
    assert _json(tmp_path / "ray" / "policy.json") == reference.searcher.describe()


def _context(sim: str, **sim_options: object) -> EvalContext:
    import simulators

    target = simulators.make("gmm").generate(
        {"c0_x": -2, "c0_y": 1, "c1_x": 1.5, "c1_y": -1.5, "std": 1.0, "balance": {"c0": 0.3, "c1": 0.7}}, 100, seed=1
    )
    return EvalContext(
        sim=sim, sim_options=sim_options, task="classify", task_options={"steps": 10}, target=target, device="cpu"
    )


def _spec(i: int, c0_x: float) -> EvalSpec:
    params = {"c0_x": c0_x, "c0_y": 1, "c1_x": 1.5, "c1_y": -1.5, "std": 1.0, "balance": {"c0": 0.5, "c1": 0.5}}
    return EvalSpec(index=i, params=params, n=40, data_seed=i, train_seed=i)


@pytest.mark.slow
def test_retries_are_bounded(local_ray):
    with ray_exec.RayExecutor(_context("ray_helpers:ExitingGmm"), workers=1, max_retries=1) as ex:
        results = ex.map([_spec(0, -2.0), _spec(1, 2.0), _spec(2, -1.0)])
        assert ex.restarts == 2
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].ok and results[2].ok
    assert not results[1].ok and results[1].attempts == 2 and "worker died 2 times" in results[1].error
    assert results[1].params["c0_x"] == 2.0


def test_user_errors_in_workers_stop_the_run(local_ray):
    with pytest.raises(UserError, match="bogus"):
        ray_exec.RayExecutor(_context("gmm", bogus=1), workers=1)


@pytest.mark.slow
def test_a_hung_evaluation_times_out_its_worker_is_replaced_and_the_run_finishes(local_ray, tmp_path, gmm_target):
    from lts.seeding import derive_seed

    out = tmp_path / "run"
    hang = derive_seed(0, "data", 1, 1)  # iteration 1's second draw sleeps for ten minutes
    spare = [derive_seed(0, "target"), derive_seed(0, "target-test")]
    options = json.dumps({"mode": "sleep", "seeds": [hang], "delay": 600, "spare": spare})
    args = tiny_gmm_args(gmm_target, out, "--sim", "faulty_sim:FaultyGmm", "--set", f"sim_options={options}",
                         "--workers", "2", "--set", "eval_timeout=10", "--set", "common_seeds=false")  # fmt: skip
    with pytest.warns(UserWarning, match="timed out"):
        assert run_cli(optimize_main, args) == 0
    rows = _metrics(out)
    assert [len(r["errors"]) for r in rows] == [0, 1, 0]
    (e,) = rows[1]["errors"]
    assert e["draw"] == 1 and e["kind"] == "timed out" and rows[1]["rewards"][1] is None
    assert f"seed {hang}: evaluation 1 did not finish within 10 s (eval_timeout); its Ray worker was replaced" in e[
        "error"]  # fmt: skip
    # the replacement worker served the rest of the run
    assert all(x is not None for x in rows[2]["rewards"])
    summary = _json(out / "summary.json")
    assert summary["failures"] == {"evaluations": 1, "by_kind": {"timed out": 1}}
    assert all(v is not None for v in summary["reward"].values())


def test_short_temp_dir(tmp_path):
    long = tmp_path / ("x" * 80)
    long.mkdir()
    d = ray_exec.ray_temp_dir(long)
    try:
        assert not d.startswith(str(long)) and len(d) + 70 <= 107
    finally:
        os.rmdir(d)


@pytest.mark.slow
def test_a_run_starts_and_stops_its_own_ray(tmp_path, gmm_target):
    if ray.is_initialized():
        ray_exec.shutdown_local_ray(None)  # the module's shared Ray (its files go with the fixture)
    out = tmp_path / "ray"
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, out, "--workers", "2")) == 0
    assert _json(out / "summary.json")["reward"]["lts"] is not None
    assert not ray.is_initialized()  # the run shut down the Ray it started …
    assert not [p for p in out.iterdir() if p.name.startswith("lts-ray-")]  # … and removed its files
