"""How strongly the counting reward points toward ψ*, per element, and what that means
for the policy (the figures in the README's "How the draws are laid out" and "Why weather
still barely moves").

    python scripts/weather_signal.py pairs     # real evaluations, about 3 minutes
    python scripts/weather_signal.py effects   # real evaluations, about 2 minutes
    python scripts/weather_signal.py simulate  # the loop on a model landscape, seconds
    python scripts/weather_signal.py contrasts RUN_DIR [RUN_DIR ...]  # what finished runs saw
    python scripts/weather_signal.py product   # real evaluations, about 4 minutes
    python scripts/weather_signal.py look      # renders only, about 30 seconds
    python scripts/weather_signal.py warmup    # the loop's warm-up alone on six runs, about 4 minutes

``pairs``: at the policy's starting point (every element uniform; ``--at-star NAME …``
puts those elements at ψ*'s values instead), move one element's logits by ±0.5
(``--shift``) along the direction of ψ*'s (centred, unit length) and train the default
counting net on both, with the same data and training seeds; print the MAE difference
(away − toward) per seed, its mean and sd.  A tiny shift (0.05) measures the training's
own noise: two draws that differ in a few scenes' weather.  ``--warm`` continues both
trainings from a model trained at the starting point on other seeds (as ``--warm-start``
runs do); ``--task KEY=VALUE`` sets one of the counting task's options (``batch_size=64``).

``effects``: train at ψ* and at ψ* with one element's mix set to uniform (the same data
and training seeds) and print the MAE each element's mix is worth.

``simulate``: run the real policy and REINFORCE update for N seeds on a model reward
−Σ a_e‖p_e − p*_e‖² whose full uniform→ψ* effects are the measured ones (car types
0.12, weather 0.01, junctions 0.006; ``--effects`` changes them), plus quadratic costs
of cars per scene and road length away from ψ*'s (measured: 4 cars too few cost 0.057,
40 m too long 0.02; ``--continuous``), plus per-iteration and per-draw noise (0.015
and 0.01); print how often each element's TV distance to ψ* halves (and how often
the number of cars ends within 2 of ψ*'s), with the draws laid out as the loop lays
them out (``--sampling``, ``--columns``) and the loop's default policy settings.

``product``: a block of four draws as the loop lays it out at the start, with the weather
held still: car types ±0.5 logits toward ψ* on one column, cars per scene ±1.6 (the
policy's starting spread) on another; per seed, the contrasts of both columns and of
their product column, the one the weather holds in the loop's blocks of four (so what
it picks up from the other two when it does not move at all).

``look``: what the loop's distribution-matching warm-up sees (`lts.matching`): MMD²
between the appearance of 256 frames rendered from ψ* (or ψ* with one element changed)
and the 256 target frames, and between their car counts per type, mean and sd over
``--seeds`` render seeds.

``warmup``: the loop's warm-up alone (``lts.optimize --iterations 0``, no final
evaluations) against the three counting targets with the run seeds of the README's table
(default 0, 1, 3; clear_sedans 0; dusk_hatchbacks 0, 1): the weather's and the car types'
TV distance to ψ* where it ends (from 0.35–0.40 uniform), cars per scene and road length;
``--set KEY=VALUE`` passes loop settings (``warmup.phases=[…]``, ``warmup.labels=[]``).
With ``warmup.hold`` (the default) the task's iterations leave the weather there, so this
is the full run's weather.  (Out of date: ``--iterations 0`` now runs no warm-up either.)

``contrasts``: from runs of the loop against a target parameter file (their
metrics.jsonl; sign-balanced draws), per element and iteration, the reward contrast
between the draws that moved the element one way and those that moved it the other,
next to how much nearer ψ* the first ones were (TV for proportions, |x − x*| for
numbers).  A negative correlation means the reward pointed the element toward ψ*;
near zero, the element's moves were the reward's noise.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch
import yaml

import simulators
from lts import tasks
from lts.config import Config, resolve_path
from lts.evaluation import EvalSpec, Evaluator
from lts.report import tv_distance
from lts.rundir import RunDir
from lts.targets import load_target
from policies import DESIGNS, Policy, moving_average, reinforce_update, strategy_options
from policies.distribution import _blocks
from simulators.space import load_target_file
from simulators.street import street_param_space

TARGET = "configs/targets/default.yaml"
GROUPS = ("car_type", "weather", "intersection")


def _reinforce_defaults() -> SimpleNamespace:
    """The REINFORCE search's default options (what `lts.optimize` runs with)."""
    return SimpleNamespace(**strategy_options("reinforce"))


def shifted(base: dict, star: dict, name: str, t: float) -> dict:
    choices = list(star[name])
    ls = torch.tensor([math.log(max(star[name][c], 1e-6)) for c in choices])
    d = ls - ls.mean()
    logits = torch.tensor([math.log(base[name][c]) for c in choices]) + t * d / d.norm()
    out = copy.deepcopy(base)
    out[name] = {c: float(p) for c, p in zip(choices, torch.softmax(logits, 0))}
    return out


def counting_mae(
    seeds: int, **task_options
) -> tuple[dict, dict, Callable[[dict, list | None], np.ndarray], Callable[[dict], list]]:
    """ψ*, the uniform starting point, ``mae(ψ, inits)``: the counting net's target MAE after
    training on ψ, one value per seed (data and training seeds shared across ψ; ``inits``:
    per seed, a state to continue from), and ``states(ψ)``: per seed, the state of a model
    trained on ψ with other seeds."""
    sim = simulators.make("procedural")
    target = load_target(TARGET, sim, task_name="counting", size=256, run_seed=0)
    evaluate = Evaluator(sim, tasks.make("counting", **task_options), target.batch)

    def run(params: dict, seed: int, init: dict | None = None, keep: bool = False):  # noqa: ANN202
        return evaluate(EvalSpec(0, params, 256, data_seed=seed, train_seed=seed + 1000, init=init, keep_state=keep))

    def mae(params: dict, inits: list | None = None) -> np.ndarray:
        return np.array([run(params, 1000 + s, inits[s] if inits else None).metrics["mae"] for s in range(seeds)])

    def states(params: dict) -> list:
        return [run(params, 5000 + s, keep=True).state for s in range(seeds)]

    return target.params, sim.param_space.default(), mae, states


def pairs(
    seeds: int,
    shift: float = 0.5,
    at_star: tuple[str, ...] = (),
    names: tuple[str, ...] = GROUPS,
    warm: bool = False,
    **task_options,
) -> None:
    star, base, mae, states = counting_mae(seeds, **task_options)
    base = {**base, **{n: star[n] for n in at_star}}
    where = f"{', '.join(at_star)} at ψ*, the rest uniform" if at_star else "every element uniform"
    print(
        f"pairs ±{shift} logits toward ψ*, {where}, task options {task_options or 'default'}"
        + (", warm-started from a model trained there" if warm else "")
        + ":"
    )
    inits = states(base) if warm else None
    for name in names:
        diffs = mae(shifted(base, star, name, -shift), inits) - mae(shifted(base, star, name, shift), inits)
        print(
            f"{name:13s} MAE(away) − MAE(toward): mean {np.mean(diffs):+.4f}, sd {np.std(diffs, ddof=1):.4f} "
            f"over {seeds} seeds ({' '.join(f'{d:+.3f}' for d in diffs)})"
        )


def effects(seeds: int) -> None:
    star, uniform, mae, _ = counting_mae(seeds)
    at_star = mae(star)
    print(f"ψ*                     MAE {at_star.mean():.4f}")
    for name in GROUPS:
        d = mae({**star, name: uniform[name]}) - at_star
        print(
            f"ψ*, {name:13s} uniform: MAE {at_star.mean() + d.mean():.4f}, effect {d.mean():+.4f} ± {d.std(ddof=1) / math.sqrt(seeds):.4f} (s.e., {seeds} seeds)"
        )


def simulate(
    runs: int,
    iterations: int,
    sampling: str,
    effects: tuple[float, float, float],
    continuous: tuple[float, float] = (0.057, 0.02),
    columns: list[str] | None = None,
    stds: tuple[float, float] | None = None,
) -> None:
    space = simulators.make("procedural").param_space
    columns = space.priority if columns is None else tuple(columns)
    with open(TARGET) as f:
        star = yaml.safe_load(f)["params"]
    uniform = space.default()

    def vec(p: dict, name: str) -> np.ndarray:
        return np.array([p[name][c] for c in space[name].choices])

    def sq(p: dict, name: str) -> float:
        return float(((vec(p, name) - vec(star, name)) ** 2).sum())

    def tv(p: dict, name: str) -> float:
        return tv_distance(list(vec(p, name)), list(vec(star, name)))

    weight = {n: e / sq(uniform, n) for n, e in zip(GROUPS, effects)}
    curve = {"cars_per_scene": continuous[0] / 4.0**2, "road_length": continuous[1] / 40.0**2}

    def model_reward(p: dict) -> float:
        r = -sum(w * sq(p, n) for n, w in weight.items())
        return r - sum(a * (p[n] - star[n]) ** 2 for n, a in curve.items())

    pc = _reinforce_defaults()  # the defaults `lts.optimize` runs with
    init_std, init_logit_std = stds or (pc.init_std, pc.init_logit_std)
    ratios, near = [], []
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        policy = Policy(space, init_std=init_std, init_logit_std=init_logit_std, min_std=pc.min_std)
        opt = torch.optim.Adam(policy.param_groups(pc.lr, pc.logit_lr))
        baseline = None
        for it in range(iterations):
            draws = policy.sample(4, torch.Generator().manual_seed(seed * 1000 + it), design=sampling, columns=columns)
            offset = rng.normal(0, 0.015)
            r = [model_reward(p) + offset + rng.normal(0, 0.01) for p in draws.params]
            rewards = torch.tensor(r, dtype=torch.float64)
            b = float(rewards.mean()) if baseline is None else baseline
            reinforce_update(
                policy, opt, draws, rewards, b, entropy_coef=pc.entropy_coef, max_grad_norm=pc.max_grad_norm or None
            )
            baseline = moving_average(baseline, rewards, pc.baseline_decay)
        mean = policy.mean()
        ratios.append([tv(mean, n) / tv(uniform, n) for n in GROUPS])
        near.append(abs(mean["cars_per_scene"] - star["cars_per_scene"]) <= 2.0)
    halved = (np.array(ratios) <= 0.5).mean(0)
    print(
        f"{sampling} draws"
        + (f" (columns: {', '.join(columns) or 'space order'})" if sampling == "orthogonal" else "")
        + f", {iterations} iterations, {runs} runs: "
        "TV halved in "
        + ", ".join(f"{n} {h:.0%}" for n, h in zip(GROUPS, halved))
        + f"; cars per scene within 2 of ψ*'s in {np.mean(near):.0%}"
    )


def product(seeds: int) -> None:
    star, base, mae, _ = counting_mae(seeds)
    cars = street_param_space()["cars_per_scene"]
    spread = _reinforce_defaults().init_std * (cars.high - cars.low)
    r = {
        (a, b): mae({**shifted(base, star, "car_type", 0.5 * a), "cars_per_scene": base["cars_per_scene"] + spread * b})
        for a in (-1, 1)
        for b in (-1, 1)
    }
    print(
        f"a block of four at the start: car types ±0.5 toward ψ*, cars per scene {base['cars_per_scene']} ± {spread}:"
    )
    for name, col in (
        ("car types (away − toward)", lambda a, b: -a),
        ("cars (fewer − more)", lambda a, b: -b),
        ("product column (the weather's)", lambda a, b: a * b),
    ):
        v = sum(col(a, b) * r[a, b] for a, b in r) / 2
        print(f"  {name:31s} mean {v.mean():+.4f}, sd {v.std(ddof=1):.4f} ({' '.join(f'{x:+.3f}' for x in v)})")


def look(seeds: int) -> None:
    from lts.matching import TargetMatch

    sim = simulators.make("procedural")
    target = load_target(TARGET, sim, task_name="counting", size=256, run_seed=0)
    star, uniform = target.params, sim.param_space.default()
    match = TargetMatch(target.batch, "counts")
    rows = {"ψ*": star, **{f"{n} uniform": {**star, n: uniform[n]} for n in ("weather", "car_type", "intersection")}}
    rows["cars per scene 12"] = {**star, "cars_per_scene": 12.0}
    rows["road 90 m"] = {**star, "road_length": 90.0}
    print(f"MMD² to the target ({TARGET}; {seeds} render seeds of 256 frames), of the look and of the car counts:")
    for name, params in rows.items():
        d = [match(sim.generate(params, 256, seed=100 + s)) for s in range(seeds)]
        cells = [np.array([x[k] for x in d]) for k in ("look", "labels")]
        print(
            f"  {name:22s} "
            + "  ".join(f"{k} {v.mean():.4f} (sd {v.std(ddof=1):.4f})" for k, v in zip(("look", "labels"), cells))
        )


WARMUP_RUNS = (
    ("default", 0),
    ("default", 1),
    ("default", 3),
    ("clear_sedans", 0),
    ("dusk_hatchbacks", 0),
    ("dusk_hatchbacks", 1),
)


def warmup(settings: list[str]) -> None:
    import contextlib
    import io
    import tempfile

    from lts.cli import run_cli
    from lts.optimize import main as optimize_main

    extra = [x for kv in settings for x in ("--set", kv)]
    tvs: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed in WARMUP_RUNS:
            target = f"configs/targets/{name}.yaml"
            out = f"{tmp}/{name}_{seed}"
            args = ["--target", target, "--seed", str(seed), "--out", out, "--quiet", "--iterations", "0"]
            with contextlib.redirect_stdout(io.StringIO()):  # the run's own table
                if run_cli(optimize_main, [*args, "--set", "final_repeats=0", *extra]) != 0:
                    raise SystemExit(2)
            rows = RunDir(out).read_metrics()
            params = rows[-1]["policy"]["params"]
            target_params = load_target_file(resolve_path(target)).params
            line = []
            for el in ("weather", "car_type"):
                mix = dict(zip(*(params[el][k] for k in ("choices", "mean"))))
                want = target_params[el]
                tv = tv_distance([mix[c] for c in want], [want[c] for c in want])
                tvs.setdefault(el, []).append((tv, tv_distance([1 / len(want)] * len(want), [want[c] for c in want])))
                line.append(f"{el} TV {tv:.3f}")
            line += [
                f"{el} {params[el]['mean']:.1f} ({target_params[el]:.0f})" for el in ("cars_per_scene", "road_length")
            ]
            print(
                f"{name} seed {seed}: " + ", ".join(line) + f"; {len(rows)} iterations, {rows[-1]['elapsed_s']:.0f} s",
                flush=True,
            )
    for el, pairs in tvs.items():
        halved = sum(tv <= start / 2 for tv, start in pairs)
        print(f"{el}: halved on {halved} of {len(pairs)}; mean TV {np.mean([tv for tv, _ in pairs]):.3f}")


def contrasts(run_dirs: list[str]) -> None:
    def signs(rows: list[np.ndarray]) -> np.ndarray:
        d = np.array(rows) - np.mean(rows, 0)
        return np.sign(d @ d[0])

    pooled: dict[str, list[tuple[float, float]]] = {}
    skipped = 0
    for path in run_dirs:
        run = RunDir.open(path)
        cfg = run.read_config()
        target = resolve_path(str(cfg["target"]))
        sampling = cfg.get("policy", {}).get("sampling", "independent")
        gaussian = sum(1 for el in simulators.resolve(cfg["sim"])().param_space.values() if el.kind != "categorical")
        if not target.is_file() or sampling != "orthogonal" or _blocks(int(cfg["samples"]), gaussian) != [4]:
            print(f"{path}: skipped (needs a target parameter file and one sign-balanced block of K = 4 draws)")
            skipped += 1
            continue
        star = load_target_file(target).params
        per: dict[str, list[tuple[float, float]]] = {}
        for row in run.read_metrics():
            ps, rewards = row["params"], row["rewards"]
            if row.get("phase") == "match" or len(ps) != 4 or any(r is None for r in rewards):  # the task's reward only
                continue
            r = np.array(rewards)
            for name, want in star.items():
                if isinstance(want, dict):
                    keys = list(want)
                    s = signs(
                        [np.log([p[name][c] for c in keys]) - np.log([p[name][c] for c in keys]).mean() for p in ps]
                    )
                    dist = [tv_distance([p[name][c] for c in keys], [want[c] for c in keys]) for p in ps]
                elif isinstance(want, (int, float)):
                    s = signs([[float(p[name])] for p in ps])
                    dist = [abs(float(p[name]) - want) for p in ps]
                else:
                    continue
                if (s > 0).sum() != 2 or (s < 0).sum() != 2:
                    continue
                nearer = np.mean([d for d, x in zip(dist, s) if x > 0]) - np.mean([d for d, x in zip(dist, s) if x < 0])
                per.setdefault(name, []).append((r[s > 0].mean() - r[s < 0].mean(), nearer))
        print(f"{path} (target {cfg['target']}):")
        for name, v in per.items():
            pooled.setdefault(name, []).extend(v)
            _print_contrast(name, v)
    used = len(run_dirs) - skipped
    if used > 1:
        print(f"pooled over {used} runs:")
        for name, v in pooled.items():
            _print_contrast(name, v)


def _print_contrast(name: str, v: list[tuple[float, float]]) -> None:
    c, d = np.array(v).T
    corr = float(np.corrcoef(c, d)[0, 1]) if c.std() > 0 and d.std() > 0 else float("nan")
    slope = float(np.polyfit(d, c, 1)[0]) if d.std() > 0 else float("nan")
    print(
        f"  {name:15s} {len(c):3d} iterations: contrast sd {c.std():.4f}, "
        f"corr with distance change {corr:+.2f}, reward per unit of distance {slope:+.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("pairs", "effects", "simulate", "contrasts", "product", "look", "warmup"))
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="contrasts: run directories")
    ap.add_argument("--seeds", type=int, default=4, help="pairs, effects, product, look: seeds per measurement")
    ap.add_argument("--shift", type=float, default=0.5, help="pairs: logit shift toward / away from ψ*")
    ap.add_argument(
        "--at-star",
        nargs="*",
        default=[],
        choices=("car_type", "weather", "intersection", "cars_per_scene", "road_length"),
        metavar="NAME",
        help="pairs: elements set to ψ*'s values (the rest start uniform)",
    )
    ap.add_argument(
        "--elements", nargs="*", default=list(GROUPS), choices=GROUPS, metavar="NAME", help="pairs: elements to shift"
    )
    ap.add_argument("--lr", type=float, default=None, help="pairs: the counting net's learning rate (default: its own)")
    ap.add_argument(
        "--task", action="append", default=[], metavar="KEY=VALUE", help="pairs: a counting task option (YAML value)"
    )
    ap.add_argument(
        "--warm", action="store_true", help="pairs: continue from a model trained at the starting point (other seeds)"
    )
    ap.add_argument(
        "--set", action="append", default=[], dest="settings", metavar="KEY=VALUE", help="warmup: a loop setting"
    )
    ap.add_argument("--runs", type=int, default=400, help="simulate: simulated runs")
    ap.add_argument(
        "--iterations",
        type=int,
        default=Config().iterations,
        help="simulate: policy iterations per run (default: the loop's)",
    )
    ap.add_argument(
        "--sampling", choices=DESIGNS, default=_reinforce_defaults().sampling, help="simulate: how draws are laid out"
    )
    ap.add_argument(
        "--effects",
        type=float,
        nargs=3,
        default=(0.12, 0.01, 0.006),
        metavar=("CAR", "WEATHER", "JUNCTION"),
        help="simulate: MAE gained by moving each element from uniform to ψ* (default: the measured ones)",
    )
    ap.add_argument(
        "--continuous",
        type=float,
        nargs=2,
        default=(0.057, 0.02),
        metavar=("CARS", "ROAD"),
        help="simulate: MAE lost with 4 cars per scene too few and with the road 40 m too long (measured)",
    )
    ap.add_argument(
        "--columns",
        nargs="*",
        default=None,
        metavar="NAME",
        help="simulate: elements given sign columns first (default: the space's priority; none: space order)",
    )
    ap.add_argument(
        "--stds",
        type=float,
        nargs=2,
        default=None,
        metavar=("INIT_STD", "INIT_LOGIT_STD"),
        help="simulate: the policy's initial stds (default: the loop's)",
    )
    a = ap.parse_args()
    if a.mode == "contrasts":
        contrasts(a.run_dirs)
    elif a.mode == "simulate":
        simulate(a.runs, a.iterations, a.sampling, tuple(a.effects), tuple(a.continuous), a.columns, a.stds)
    elif a.mode == "product":
        product(a.seeds)
    elif a.mode == "look":
        look(a.seeds)
    elif a.mode == "warmup":
        warmup(a.settings)
    elif a.mode == "pairs":
        options = {} if a.lr is None else {"lr": a.lr}
        for item in a.task:
            key, eq, value = item.partition("=")
            if not eq or not key:
                ap.error(f"--task {item!r}: expected KEY=VALUE")
            options[key] = yaml.safe_load(value)
        pairs(a.seeds, a.shift, tuple(a.at_star), tuple(a.elements), a.warm, **options)
    else:
        effects(a.seeds)


if __name__ == "__main__":
    main()
