"""Shared test set-up: quiet Ray, small thread pools, and a tiny gmm experiment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def gmm_target(tmp_path: Path) -> Path:
    p = tmp_path / "gmm_target.yaml"
    p.write_text(
        "simulator: gmm\nparams:\n  c0_x: -2.0\n  c0_y: 1.0\n  c1_x: 1.5\n  c1_y: -1.5\n  std: 1.0\n"
        "  balance: {c0: 0.3, c1: 0.7}\n"
    )
    return p


def tiny_gmm_args(target: Path, out: Path, *extra: str) -> list[str]:
    """A gmm run that takes a second or two."""
    return [
        "--config", str(REPO / "configs" / "gmm.yaml"), "--target", str(target), "--out", str(out),
        "--iterations", "3", "--samples", "3", "--scenes", "60", "--quiet",
        "--set", "target_size=120", "--set", "final_repeats=1", "--set", "task_options.steps=25",
        # the search the loop tests were written for, without the toy's warm-up stage
        "--search", "reinforce", "--set", "warmup.phases=[]",
        *extra,
    ]  # fmt: skip
