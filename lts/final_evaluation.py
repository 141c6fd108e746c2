"""The final evaluation protocol (``python -m lts.evaluate RUN_DIR --target FILE|DIR``, `lts.api.evaluate`).

Train on synthetic, test on the target: a task model is trained on a larger dataset
rendered from the run's learned ψ (the policy mean), and for comparison from ψ drawn
afresh per scene (random, domain randomization) and from ψ* (oracle, when the target
is a parameter file); all with the same data size, training budget and seeds.  With
``--finetune DIR`` two more rows: the learned-ψ model fine-tuned on a labelled real
split, and a model trained on that split alone.  Each model is trained once and scored
on both parts of the target: its held-out **test** part (``metrics`` in
``evaluation.json``: the figures to report) and its **validation** part (the one the run
was rewarded on, ``validation_metrics``).  A directory target is split by file name
(`lts.targets.split_files`, the run's ``target_split``) unless ``--test DIR`` names a
separate test directory.  Output: a table and ``evaluation.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import simulators
from simulators import Batch
from simulators.errors import UserError

from . import tasks as tasks_mod
from .config import load_config, resolve_path
from .evaluation import EvalResult, EvalSpec, Evaluator, local_executor, random_params, set_threads
from .rundir import RunDir
from .seeding import derive_seed
from .targets import load_target

__all__ = ["evaluate_run"]


def _learned_params(run: RunDir, space: simulators.ParamSpace) -> dict[str, Any]:
    """The policy mean ψ of a run (from summary.json, else from policy.json)."""
    if run.finished:
        learned = run.read_json("summary.json").get("learned")
        if learned:
            return space.validate(learned)
    spec = run.read_json("policy.json")["params"]
    psi: dict[str, Any] = {}
    for name in space:
        s = spec.get(name)
        if s is None:
            raise UserError(f"{str(run.path)!r}: policy.json has no parameter {name!r}")
        if s["kind"] == "proportions":
            psi[name] = dict(zip(s["choices"], s["mean"]))
        elif s["kind"] == "categorical":
            psi[name] = s["choices"][int(np.argmax(s["probs"]))]
        elif s["kind"] == "integer":
            psi[name] = int(round(s["mean"]))
        else:
            psi[name] = s["mean"]
    return space.validate(psi)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def evaluate_run(
    run_dir: str | Path,
    target: str,
    *,
    scenes: int | None = None,
    steps: int | None = None,
    repeats: int = 1,
    refiner: str | None = None,
    finetune: str | None = None,
    finetune_steps: int | None = None,
    finetune_split: str | None = None,
    test: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the protocol and return the ``evaluation.json`` content.  ``test``: a labelled
    directory that is the test split of a directory ``target`` (default: the run's
    ``test_target``, else a split of ``target`` by file name)."""
    run = RunDir.open(run_dir)
    cfg = load_config(None, run.read_config())
    if device:
        cfg.device = device
    if threads is not None:
        cfg.threads = threads
    if parallel is not None:
        if parallel < 0:
            raise UserError(f"--parallel must be >= 0 (0 = one per core), got {parallel}")
        cfg.parallel = parallel
    set_threads(cfg.threads)
    task_options = dict(cfg.task_options)
    if steps is not None:
        task_options["steps"] = steps
    n = scenes if scenes is not None else 4 * cfg.scenes
    if n < 1 or repeats < 1:
        raise UserError(f"--scenes and --repeats must be >= 1, got {n} and {repeats}")
    refine = None
    if refiner:
        from .refiner import load_refiner

        refine = load_refiner(refiner, device=cfg.device)
    task_obj = tasks_mod.make(cfg.task, **{"device": cfg.device, **task_options})
    sim = simulators.make(cfg.sim, **cfg.sim_options)
    # getattr: runs written before the config had these keys take their defaults.
    test_dir = test if test is not None else getattr(cfg, "test_target", None)
    try:
        tgt = load_target(
            target, sim, task_name=cfg.task, size=cfg.target_size, run_seed=cfg.seed, sim_name=cfg.sim,
            test_size=getattr(cfg, "test_size", None), split=getattr(cfg, "target_split", 0.5), test_dir=test_dir,
            setup_timeout=getattr(cfg, "setup_timeout", None) or None,
        )  # fmt: skip
    except BaseException:
        sim.close()
        raise
    assert tgt.test is not None  # load_target always makes one
    if test_dir is not None:
        test_source = str(test_dir)
    elif tgt.params is None:
        test_source = f"the part of {target} left by the file-name split"
    else:
        test_source = "rendered from ψ* with the test seed"
    evaluator = Evaluator(sim, task_obj, tgt.batch, refine=refine, test=tgt.test)
    try:
        evaluator.task.check_target(tgt.batch)
        evaluator.task.check_target(tgt.test)
        real = None
        if finetune:
            from .datasets import read_labelled_dir
            from .targets import _NEEDS

            ft_root = resolve_path(finetune)
            if finetune_split is None and (ft_root / "leftImg8bit" / "train").is_dir():
                finetune_split = "train"  # never fine-tune on the val split that is the target
            real = read_labelled_dir(ft_root, resolution=getattr(sim, "resolution", None),
                                     split=finetune_split, need=_NEEDS.get(cfg.task, ("semantic",)))  # fmt: skip
            if tgt.params is None:  # a directory target: its test split is files on disk
                _refuse_test_overlap(
                    ft_root, real, resolve_path(test_dir if test_dir is not None else target), tgt.test
                )
        chosen: dict[str, dict[str, Any] | None] = {"lts": _learned_params(run, sim.param_space), "random": None}
        if tgt.truth is not None:
            chosen["oracle"] = tgt.truth
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in chosen}
        val_rows: dict[str, list[dict[str, float]]] = {k: [] for k in chosen}
        if real is not None:
            rows["lts+finetune"], rows["real only"] = [], []
            val_rows["lts+finetune"], val_rows["real only"] = [], []
        specs: list[EvalSpec] = []
        which_of: list[str] = []
        for r in range(repeats):
            data_seed = derive_seed(cfg.seed, "evaluate-data", r)
            train_seed = derive_seed(cfg.seed, "evaluate-train", r)
            for which, psi in chosen.items():
                per_scene = random_params(sim.param_space, n, data_seed) if which == "random" else None
                specs.append(EvalSpec(index=len(specs), params=psi, n=n, data_seed=data_seed, train_seed=train_seed,
                                      per_scene=per_scene, keep_state=(which == "lts" and real is not None),
                                      also_test=True))  # fmt: skip
                which_of.append(which)
        total = len(specs) + (2 * repeats if real is not None else 0)
        done = 0

        def finished(res: EvalResult) -> None:
            nonlocal done
            if res.error:  # stop at once: no new model starts, `close` waits for the running ones
                raise RuntimeError(f"the {which_of[res.index]} model failed: {res.error}")
            done += 1
            if progress:
                progress(which_of[res.index], done, total)

        task = evaluator.task
        # The final models are independent (each seeded by its spec): side by side in threads
        # as in the run (`parallel`), one after another when that is 1.
        executor = local_executor(evaluator, parallel=cfg.parallel, threads=cfg.threads, samples=len(specs))
        try:
            results = executor.map(specs, on_result=finished)
        finally:
            executor.close()  # waits for running models; the fine-tuning below gets every thread back
        for spec, res in zip(specs, results):
            # each model trained once, scored on both splits: test (to report) and validation
            assert res.test_metrics is not None
            rows[which_of[spec.index]].append(res.test_metrics)
            val_rows[which_of[spec.index]].append(res.metrics)
        if real is not None:
            task_ft = tasks_mod.make(cfg.task, **{"device": cfg.device, **task_options,
                                                  **({"steps": finetune_steps} if finetune_steps else {})})  # fmt: skip
            for spec, res in zip(specs, results):
                if which_of[spec.index] != "lts":
                    continue
                ft = task_ft.fit(real, seed=spec.train_seed, init=res.state)
                alone = task_ft.fit(real, seed=spec.train_seed)
                for which, model in (("lts+finetune", ft), ("real only", alone)):
                    rows[which].append(_floats(task_ft.score(model, tgt.test)))
                    val_rows[which].append(_floats(task_ft.score(model, tgt.batch)))
                done += 2
                if progress:
                    progress("finetune", done, total)
    finally:
        evaluator.close()  # a no-op when the executor closed it already
    result = {
        "run_dir": str(run.path),
        "target": str(target),
        "task": cfg.task,
        "metric": task.metric,
        "higher_is_better": task.higher_is_better,
        "scenes": n,
        "repeats": repeats,
        "task_options": task_options,
        "refiner": refiner,
        "finetune": finetune,
        "params": chosen,
        "test": test_source,
        "test_frames": len(tgt.test),
        "validation_frames": len(tgt.batch),
        # The test split's figures (the ones to report), then the validation split's.
        "metrics": _mean(rows),
        "metrics_std": _std(rows),
        "validation_metrics": _mean(val_rows),
        "validation_metrics_std": _std(val_rows),
    }
    return result


def _mean(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {k: {m: float(np.mean([x[m] for x in v])) for m in v[0]} for k, v in rows.items() if v}


def _std(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {k: {m: float(np.std([x[m] for x in v])) for m in v[0]} for k, v in rows.items() if v}


def _refuse_test_overlap(root: Path, real: Batch, test_root: Path, test: Batch) -> None:
    """--finetune must not train on the images the test figures are scored on, whichever
    folder, link or split name reaches them (`shared_files`)."""
    from .datasets import shared_files

    shared = shared_files(root, real.attributes["file"], test_root, test.attributes["file"])
    if shared:
        raise UserError(
            f"--finetune {str(root)!r}: {len(shared)} of its {len(real)} images are images of the target's test split "
            f"(e.g. {shared[0]}); fine-tuning on them would score the model on its own training images. Give a "
            "split without them (--finetune-split, or another directory)"
        )
