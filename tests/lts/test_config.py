import pytest

from lts.cli import parse_resolution, parse_set
from lts.config import load_config
from simulators import UserError


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "sim: gmm\nsamples: 3\nsearch_options: {reinforce: {lr: 0.2, lr_floor: 1.0}}\ntask_options: {steps: 5}\n"
    )
    cfg = load_config(f, {"samples": 5}, overrides={"search_options.reinforce.logit_lr": 0.3, "task_options.lr": 0.1})
    assert (cfg.sim, cfg.samples) == ("gmm", 5)
    # a nested --set keeps the file's other options; a flat one is the search's and wins
    assert cfg.options_of("reinforce") == {"lr": 0.2, "lr_floor": 1.0, "logit_lr": 0.3}
    assert cfg.task_options == {"steps": 5, "lr": 0.1}
    cfg = load_config(f, {"search": "reinforce"}, overrides={"search_options.lr": 0.5})
    assert cfg.options_of("reinforce") == {"lr": 0.5, "lr_floor": 1.0} and cfg.options_of("tpe") == {}


def test_a_task_s_own_sizes_fill_what_the_config_leaves_out(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sim: rings\ntask: classify\nscenes: 300\n")
    cfg = load_config(f, overrides={"target_size": 50})
    # classify's points are cheap: K 8, 1000 target and test points; the file's and --set's keys win
    assert (cfg.samples, cfg.scenes, cfg.target_size, cfg.test_size) == (8, 300, 50, 1000)
    # the task named last decides; counting keeps the run's own defaults
    cfg = load_config(f, {"task": "counting"})
    assert (cfg.samples, cfg.scenes, cfg.target_size, cfg.test_size) == (4, 300, 256, 256)
    # a task that cannot be found has none (`make` reports it, by name, when the run builds it)
    assert load_config(None, {"task": "no.such:Task"}).samples == 4
    # a saved run directory's config is complete: resuming it changes nothing
    assert load_config(None, {"task": "classify", "samples": 4, "scenes": 256}).scenes == 256


def test_errors_name_the_key():
    with pytest.raises(UserError, match=r"unknown config key 'sampels' \(did you mean 'samples'\?\)"):
        load_config(None, {"sampels": 3})
    with pytest.raises(UserError, match="config key 'warm_start': expected bool, got 'yes please'"):
        load_config(None, {"warm_start": "yes please"})
    with pytest.raises(UserError, match=r"config key 'policy' is now 'search_options'"):
        load_config(None, overrides={"policy.baseline_decay": 0.5})
    with pytest.raises(UserError, match=r"search tpe: unknown option 'lr' \(options: n_startup_trials, multivariate\)"):
        load_config(None, {"search_options": {"tpe": {"lr": 0.1}}})
    with pytest.raises(UserError, match="device must be cpu or cuda"):
        load_config(None, {"device": "tpu"})


def test_parse_set_and_resolution():
    assert parse_set(["a=1", "w={x: 0.5}", "s=hello"]) == {"a": 1, "w": {"x": 0.5}, "s": "hello"}
    with pytest.raises(UserError, match="expected key=value"):
        parse_set(["novalue"])
    assert parse_resolution("64x128") == (64, 128)
    with pytest.raises(UserError, match="expected HEIGHTxWIDTH"):
        parse_resolution("big")


def test_shipped_configs_and_targets_load_and_fit_their_simulator():
    from pathlib import Path

    import simulators
    from lts.config import REPO_ROOT, resolve_path
    from lts.targets import target_params

    configs = sorted((REPO_ROOT / "configs").glob("*.yaml"))
    targets = sorted((REPO_ROOT / "configs" / "targets").glob("*.yaml"))
    assert len(configs) >= 3 and len(targets) >= 3
    sims = {}
    for path in configs:
        cfg = load_config(path).validate()
        assert Path(resolve_path(cfg.target)).is_file(), path
        sims[cfg.sim] = simulators.make(cfg.sim)
    for path in targets:
        if path.name.startswith("gmm"):
            sim = simulators.make("gmm", **({"classes": 3, "dims": 3} if path.name == "gmm12.yaml" else {}))
        elif path.name.startswith("rings"):
            sim = sims["rings"]
        elif path.name.startswith("heldout_helix"):
            sim = simulators.make("heldout.helix:HelixSimulator")
        elif path.name.startswith("heldout"):
            sim = simulators.make("heldout.blobs:BlobsSimulator")
        else:
            sim = sims["procedural"]
        psi = target_params(path, sim, sim.name)
        assert psi.keys() == sim.param_space.default().keys(), path
    # the default experiment is the counting config
    assert load_config(REPO_ROOT / "configs" / "counting.yaml") == load_config(None)


def test_progress_bar_writes_to_stderr_and_closes(capsys):
    from lts.cli import progress_bar

    with pytest.raises(RuntimeError), progress_bar(True, total=4, unit="step", desc="work") as bar:
        bar.update(2)
        raise RuntimeError("stop")
    assert bar.n == 2 and bar.disable  # closed although the block raised
    captured = capsys.readouterr()
    assert "work" in captured.err and "2/4" in captured.err and captured.out == ""
    with progress_bar(False, total=4) as off:
        assert off is None
