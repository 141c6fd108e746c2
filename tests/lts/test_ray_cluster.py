"""Joining an existing Ray cluster by address: a head started on loopback with ``ray start``
(which turns on Ray's token authentication), a run that joins it, the in-process result."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import REPO, tiny_gmm_args

pytest.importorskip("ray")
pytest.importorskip("optuna")

from lts.cli import run_cli  # noqa: E402
from lts.cli.optimize import main as optimize_main  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_run_joins_a_cluster_by_address_and_gives_the_in_process_result(tmp_path, gmm_target):
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not on PATH")
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray resolves 127.0.0.1 to the machine's outward address unless told it runs no
        # multi-machine cluster; this keeps the head, and all traffic, on loopback.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    port = _free_port()
    start = subprocess.run(
        [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        assert "Local node IP: 127.0.0.1" in start.stdout + start.stderr
        joined = tmp_path / "joined"
        args = tiny_gmm_args(gmm_target, joined, "--search", "cmaes", "--ray-address", f"127.0.0.1:{port}")
        proc = subprocess.run(
            [sys.executable, "-m", "lts.optimize", *args],
            cwd=REPO, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
    local = tmp_path / "local"
    assert run_cli(optimize_main, tiny_gmm_args(gmm_target, local, "--search", "cmaes")) == 0
    for name in ("policy.json", "summary.json"):
        a, b = (json.loads((d / name).read_text()) for d in (joined, local))
        if name == "summary.json":
            a, b = a["reward"], b["reward"]
        assert a == b, name
    rows = [json.loads(x)["rewards"] for x in (joined / "metrics.jsonl").read_text().splitlines()]
    assert rows == [json.loads(x)["rewards"] for x in (local / "metrics.jsonl").read_text().splitlines()]
