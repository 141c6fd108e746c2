"""The README as a user guide: its quick-start commands run as printed, its length, its API example."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import lts

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_LINES = 300


def _block(marker: str, lang: str) -> str:
    m = re.search(rf"<!-- {marker} -->\s*```{lang}\n(.*?)```", README.read_text(), re.S)
    assert m, f"README lost its <!-- {marker} --> {lang} block"
    return m.group(1)


def quick_start_commands() -> list[list[str]]:
    """The quick-start block's commands, as argument lists, comments dropped."""
    cmds = []
    for line in _block("quick-start", "bash").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            cmds.append(shlex.split(line))
    return cmds


def test_quick_start_block_holds_the_two_smoke_runs():
    cmds = quick_start_commands()
    assert [c[:3] for c in cmds] == [["python", "-m", "lts.optimize"]] * 2
    assert all("--quick" in c for c in cmds)
    assert ["--config", "configs/gmm.yaml"] == cmds[0][3:5]


def _run_as_written(cmd: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    # As printed, from the repository root; only the run directory is redirected
    # into tmp_path so that the test leaves nothing under runs/.
    assert cmd[0] == "python"
    return subprocess.run(
        [sys.executable, *cmd[1:], "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def _check_smoke_output(proc: subprocess.CompletedProcess[str], out: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert re.search(r"^plan: .*final evaluations", text, re.M), text
    # the printed table: the held-out test split first, then validation
    test_at = text.index("test split (held out: report these)")
    assert test_at < text.index("validation (the reward the search was told)")
    for name in ("lts", "oracle", "random"):
        assert re.search(rf"^\s+{name}\s+-?\d", text[test_at:], re.M), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["test"]) == {"lts", "oracle", "random"}
    assert summary["evaluations"] > 0


def test_readme_toy_smoke_run_as_written(tmp_path):
    cmd = quick_start_commands()[0]
    _check_smoke_output(_run_as_written(cmd, tmp_path / "run"), tmp_path / "run")


def _example_output() -> str:
    """The quick-start's example output block (the one that follows the commands)."""
    text = README.read_text()
    m = re.search(r"<!-- quick-start -->.*?```bash\n.*?```.*?```\n(.*?)```", text, re.S)
    assert m, "README lost the quick-start's example output"
    return m.group(1)


_COUNTS = re.compile(r"^([\d.]+) evaluations \((\d+) simulated frames\)", re.M)


@pytest.mark.slow
def test_readme_default_smoke_run_as_written(tmp_path):
    cmd = quick_start_commands()[1]
    proc = _run_as_written(cmd, tmp_path / "run")
    _check_smoke_output(proc, tmp_path / "run")
    text = proc.stdout + proc.stderr
    # the README's example is this run: its plan line and its counts are what the code prints
    example = _example_output()
    plan = re.search(r"^plan: .*$", example, re.M)
    assert plan and plan.group(0) in text.splitlines(), (plan and plan.group(0), text)
    readme_counts, printed = _COUNTS.search(example), _COUNTS.search(text)
    assert readme_counts and printed and readme_counts.groups() == printed.groups()


def _readme_commands() -> tuple[str, str]:
    """The README's two set-up commands: install + run, install + test."""
    setup = README.read_text().split("## Set-up", 1)[1]
    blocks = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    return blocks[0].strip(), blocks[1].strip()


def test_ci_runs_the_readme_commands_on_a_clean_base_install():
    run, test = _readme_commands()
    install = run.split(" && ")[0]
    assert install == 'pip install "torch==2.13.0" -e .'  # the base install: no extra
    ci = (REPO / ".ci" / "run").read_text()
    lines = [line.strip() for line in ci.splitlines()]
    # the base install happens in a fresh virtual environment, before the test extra is installed
    assert install in lines and test in lines
    assert lines.index(install) < lines.index(test)
    assert any(line.startswith("python -m venv") for line in lines[: lines.index(install)])
    assert "python -m lts.optimize --quick --quiet --out" in ci  # the main job, on the base install


def test_readme_is_short_and_names_no_commits():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    # commit ids: 7–40 hex characters with at least one digit and one letter a–f
    ids = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"\d", w) and re.search(r"[a-f]", w)]
    assert not ids, ids


def test_readme_links_resolve():
    text = README.read_text()
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", text):
        assert (REPO / target).exists(), target


def test_readme_api_example_is_marked():
    text = README.read_text()
    assert "<!-- API -->" in text and "<!-- /API -->" in text


@pytest.mark.skipif(not callable(getattr(lts, "optimize", None)), reason="API pending")
def test_readme_api_example_runs(tmp_path, monkeypatch):
    block = re.search(r"<!-- API -->.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block, "README lost its API example"
    monkeypatch.chdir(REPO)
    code = block.group(1).replace('result.plot("plot.png")', f"result.plot({str(tmp_path / 'plot.png')!r})")
    ns: dict[str, object] = {}
    exec(compile(code, "README API example", "exec"), ns)
    result = ns["result"]
    assert set(result.summary["test"]) == {"lts", "oracle", "random"}  # type: ignore[attr-defined]
    assert [r["phase"] for r in result.metrics].count("task") == 3  # type: ignore[attr-defined]
    assert (tmp_path / "plot.png").exists()
