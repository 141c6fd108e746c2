"""Evaluations side by side in threads (``parallel``): the same numbers as one after another."""

import json
import threading

import pytest
import torch
import yaml
from conftest import REPO

import simulators
from lts import tasks
from lts.cli import run_cli
from lts.cli.optimize import main as optimize_main
from lts.evaluation import EvalSpec, Evaluator, InProcessExecutor, ThreadedExecutor
from lts.rundir import RunDir
from simulators.errors import UserError


def _counting_args(out, *extra):
    return [
        "--config", str(REPO / "configs" / "counting.yaml"), "--out", str(out), "--quiet",
        "--iterations", "2", "--samples", "3", "--scenes", "12",
        "--set", "target_size=16", "--set", "final_repeats=1", "--set", "task_options.steps=6",
        "--set", "sim_options.resolution=[32, 64]", "--set", "warmup.phases=[]", *extra,
    ]  # fmt: skip


def _read(run):
    rows = RunDir(run).read_metrics()
    return (
        [r["rewards"] for r in rows],
        json.loads((run / "policy.json").read_text()),
        json.loads((run / "summary.json").read_text())["reward"],
    )


def test_threads_give_the_one_after_another_run_bit_for_bit(tmp_path):
    # Each evaluation single-threaded both ways: any race (the renderer's caches, torch's
    # global generator in the nets' initialisation) would show up as different numbers.
    a, b = tmp_path / "one", tmp_path / "three"
    assert run_cli(optimize_main, _counting_args(a, "--set", "parallel=1", "--threads", "1")) == 0
    assert run_cli(optimize_main, _counting_args(b, "--set", "parallel=3", "--threads", "3")) == 0
    config = yaml.safe_load((a / "config.yaml").read_text())
    assert (config["threads"], config["parallel"]) == (1, 1)  # the flags reach the run's configuration
    rewards_a, policy_a, final_a = _read(a)
    rewards_b, policy_b, final_b = _read(b)
    assert rewards_a == rewards_b and len(set(rewards_a[0])) == 3
    assert policy_a == policy_b and final_a == final_b


def test_street_draws_give_columns_to_the_spaces_priority(tmp_path):
    """With K = 4 the street space's priority (car types, weather, cars per scene) gets
    the block's three columns: each element takes two values twice, and junction shape
    and road length, past the columns, share the last one (cars per scene's signs)."""
    out = tmp_path / "run"
    args = _counting_args(
        out, "--samples", "4", "--iterations", "1", "--set", "final_repeats=0", "--search", "reinforce"
    )
    assert run_cli(optimize_main, args) == 0
    (row,) = RunDir(out).read_metrics()
    pattern = {}
    for name in ("car_type", "weather", "cars_per_scene", "intersection", "road_length"):
        values = [json.dumps(p[name], sort_keys=True) for p in row["params"]]
        assert sorted(values.count(v) for v in set(values)) == [2, 2], name
        pattern[name] = tuple(v == values[0] for v in values)  # which draws share the first value
    assert len({pattern[n] for n in ("car_type", "weather", "cars_per_scene")}) == 3  # three columns
    assert pattern["intersection"] == pattern["road_length"] == pattern["cars_per_scene"]


@pytest.fixture
def evaluator():
    sim = simulators.make("gmm")
    target = sim.generate(sim.param_space.default(), 100, seed=1)
    return Evaluator(sim, tasks.make("classify", steps=10), target)


PSI = simulators.make("gmm").param_space.default()


def _specs(ns):
    return [EvalSpec(index=i, params=PSI, n=n, data_seed=10 + i, train_seed=20 + i) for i, n in enumerate(ns)]


def test_results_in_order_callbacks_in_the_calling_thread(evaluator):
    specs = _specs([400, 20, 200, 40])
    expected = InProcessExecutor(evaluator).map(specs)
    before = torch.get_num_threads()
    seen = []
    ex = ThreadedExecutor(evaluator, 2, torch_threads=1)
    assert torch.get_num_threads() == 1
    got = ex.map(specs, on_result=lambda r: seen.append((r.index, threading.current_thread())))
    ex.close()
    assert torch.get_num_threads() == before
    assert [r.index for r in got] == [0, 1, 2, 3] and [r.frames for r in got] == [400, 20, 200, 40]
    assert [r.metrics for r in got] == [r.metrics for r in expected]
    assert sorted(i for i, _ in seen) == [0, 1, 2, 3]
    assert {t for _, t in seen} == {threading.main_thread()}


def test_failures_become_results_and_user_errors_stop(evaluator, monkeypatch):
    fit = evaluator.task.fit

    def flaky(batch, *, seed, init=None):
        if seed == 21:
            raise ValueError("diverged")
        if seed == 23:
            raise UserError("bad option")
        return fit(batch, seed=seed, init=init)

    monkeypatch.setattr(evaluator.task, "fit", flaky)
    ex = ThreadedExecutor(evaluator, 2)
    got = ex.map(_specs([50, 50, 50]))
    assert [r.ok for r in got] == [True, False, True] and "ValueError: diverged" in got[1].error
    with pytest.raises(UserError, match="bad option"):
        ex.map(_specs([50, 50, 50, 50]))
    ex.close()
    with pytest.raises(ValueError, match="at least 2"):
        ThreadedExecutor(evaluator, 1)


def test_a_stop_does_not_wait_for_running_evaluations(evaluator, monkeypatch):
    fit = evaluator.task.fit
    release, finished = threading.Event(), threading.Event()

    def slow_or_bad(batch, *, seed, init=None):
        if seed == 20:
            release.wait(10)  # a long training, still running when the other one fails
            finished.set()
        if seed == 21:
            raise UserError("bad option")
        return fit(batch, seed=seed, init=init)

    monkeypatch.setattr(evaluator.task, "fit", slow_or_bad)
    ex = ThreadedExecutor(evaluator, 2)
    with pytest.raises(UserError, match="bad option"):
        ex.map(_specs([50, 50, 50]))  # returns while draw 0 is still training
    assert not finished.is_set()
    release.set()
    ex.close()  # waits for it
    assert finished.is_set()
