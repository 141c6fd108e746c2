import re
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

import simulators
from simulators import UnknownNameError, UserError, registry
from simulators.gmm import GaussianMixtureSimulator


def test_builtin_names_resolve_lazily():
    assert {"procedural", "gmm", "carla"} <= set(simulators.available())
    assert isinstance(simulators.make("gmm"), GaussianMixtureSimulator)


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(UnknownNameError) as e:
        simulators.make("procedual")
    msg = str(e.value)
    assert "unknown simulator 'procedual'" in msg and "gmm" in msg and "did you mean 'procedural'?" in msg


def test_module_class_path():
    sim = simulators.make("simulators.gmm:GaussianMixtureSimulator")
    assert sim.name == "gmm"
    with pytest.raises(UserError, match="module 'no_such_pkg.mod' not found"):
        simulators.make("no_such_pkg.mod:Sim")
    with pytest.raises(UserError, match="has no attribute 'GaussianMixture'.*did you mean"):
        simulators.make("simulators.gmm:GaussianMixture")


def test_bad_option_is_a_user_error():
    with pytest.raises(UserError, match="simulator 'gmm'.*unexpected keyword"):
        simulators.make("gmm", resolution=(8, 8))


def test_entry_point_group_is_scanned_on_lookup(monkeypatch):
    ep = EntryPoint(name="toy2", value="simulators.gmm:GaussianMixtureSimulator", group=registry.ENTRY_POINT_GROUP)
    calls = []

    def fake_entry_points(group):
        calls.append(group)
        return [ep] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert "toy2" in simulators.available()
    assert isinstance(simulators.make("toy2"), GaussianMixtureSimulator)
    assert calls and all(g == registry.ENTRY_POINT_GROUP for g in calls)


def test_importing_simulators_scans_no_entry_points():
    code = (
        "import importlib.metadata as m\n"
        "calls = []\n"
        "orig = m.entry_points\n"
        "m.entry_points = lambda *a, **k: (k.get('group') == 'lts.simulators' and calls.append(1)) or orig(*a, **k)\n"
        "import simulators, policies, lts.loop\n"
        "print(len(calls))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_readme_plugin_example_runs_as_shown(tmp_path, repo):
    """The README's own-simulator example, exactly as printed, run with --sim mypkg.mod:CoinSim."""
    readme = (repo / "README.md").read_text()
    block = re.search(r"<!-- plugin-example -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README lost its plugin example"
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(block.group(1))
    cmd = re.search(r"<!-- plugin-command -->\s*```bash\n(.*?)```", readme, re.S).group(1).strip()
    assert "--sim mypkg.mod:CoinSim" in cmd
    target = re.search(r"<!-- plugin-target -->\s*```yaml\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "coin_target.yaml").write_text(target)
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    args = cmd.split()[cmd.split().index("-m") + 1 :]
    out = subprocess.run(
        [sys.executable, "-m", *args, "--out", str(tmp_path / "run"), "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["reward"]["lts"] >= summary["reward"]["random"]
