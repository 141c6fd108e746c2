"""A run read back: text tables (the learned distribution next to the target, the rewards),
`load_run` and `plot_run` (``python -m lts.inspect``, `lts.api.Result.plot`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from simulators.errors import UserError

from .determination import determine, mark
from .rundir import RunDir

__all__ = ["policy_table", "reward_table", "run_notes", "held_lines", "tv_distance", "load_run", "plot_run"]


def tv_distance(p: list[float], q: list[float]) -> float:
    """Total-variation distance between two probability vectors."""
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def policy_table(
    policy: dict[str, Any],
    target: dict[str, Any] | None = None,
    initial: dict[str, Any] | None = None,
    determined: dict[str, Any] | None = None,
) -> str:
    """Each element of a ``policy.json``: proportions as choice → probability rows,
    continuous as mean ± std; the target ψ* beside it when known; with ``determined``
    (`lts.determination`), what determined it: ``[target]``, ``[reward]`` or
    ``[free: not determined]``."""
    lines = []
    tgt = target or {}
    for name, spec in policy["params"].items():
        kind = spec["kind"]
        tag = f"   {m}" if (m := mark((determined or {}).get(name))) else ""
        if kind in ("proportions", "categorical"):
            probs = spec["mean"] if kind == "proportions" else spec["probs"]
            t = tgt.get(name)
            head = f"{name} ({kind})"
            if isinstance(t, dict):
                tv = tv_distance(probs, [t.get(c, 0.0) for c in spec["choices"]])
                head += f"   TV to target {tv:.3f}"
                if initial is not None and name in initial:
                    tv0 = tv_distance(initial[name]["mean"], [t.get(c, 0.0) for c in spec["choices"]])
                    head += f" (start {tv0:.3f})"
            lines.append(head + tag)
            width = max(len(c) for c in spec["choices"])
            for i, c in enumerate(spec["choices"]):
                bar = "█" * int(round(probs[i] * 30))
                tv_ = ""
                if isinstance(t, dict):
                    tv_ = f"  target {t.get(c, 0.0):.3f}"
                elif t is not None:
                    tv_ = "  target ✓" if t == c else ""
                lines.append(f"  {c:<{width}}  {probs[i]:.3f}{tv_}  {bar}")
        else:
            t = tgt.get(name)
            ts = f"   target {_fmt(t if not isinstance(t, int) else float(t))}" if t is not None else ""
            lines.append(
                f"{name} ({kind} in [{spec['low']:g}, {spec['high']:g}])  {spec['mean']:.3f} ± {spec['std']:.3f}{ts}{tag}"
            )
    return "\n".join(lines)


def reward_table(summary: dict[str, Any]) -> str:
    """LTS vs oracle vs random, with the task's metric and its direction: the held-out test
    split's figures (the ones to report) and the validation split's (the search's reward)."""
    metric = summary.get("metric", "reward")
    hib = summary.get("higher_is_better", True)
    rows = [f"final reward ({metric}{'' if hib else ', shown as -' + metric}; higher is better):"]
    parts = [("validation (the reward the search was told)", "reward", "metrics")]
    if summary.get("test"):
        parts.insert(0, ("test split (held out: report these)", "test", "test_metrics"))
    repeats = summary.get("final_repeats", 0)
    for title, key, mkey in parts:
        if len(parts) > 1:
            rows.append(f" {title}")
        metrics = summary.get(mkey, {})
        for w in ("lts", "oracle", "random"):
            if w not in summary[key]:
                continue
            r = summary[key][w]
            extra = ", ".join(f"{k}={v:.4g}" for k, v in metrics.get(w, {}).items())
            why = (summary.get("errors") or {}).get(w)
            if r is None and why:  # a row without a figure says why
                extra = f"failed: {why}"
            elif r is not None and (n := (summary.get("seeds") or {}).get(w, repeats)) < repeats:
                extra += f"  ({n} of {repeats} seeds; the others failed: summary.json retries)"
            rows.append(f"  {w:<7} {_fmt(r):>8}   {extra}")
    return "\n".join(rows)


HOLDS = {"all": "held by the warm-up", "part": "held in part by the warm-up", "none": "not held by the warm-up"}


def held_lines(held: dict[str, Any] | None) -> list[str]:
    """What the warm-up held of each mix it moved, and why (``summary.json``'s ``held``, a
    ``metrics.jsonl`` row's): one line each."""
    return [f"{HOLDS.get(v.get('hold'), 'held')}: {name} ({v.get('why')})" for name, v in (held or {}).items()]


def run_notes(
    policy: dict[str, Any], summary: dict[str, Any] | None, determined: dict[str, Any] | None = None
) -> list[str]:
    """What a user must not miss in a run: what the warm-up held and why, elements the search
    could not move, elements nothing determined (``determined``, default the summary's), a
    search that stopped early, evaluations that failed (each a line; none: nothing to say)."""
    lines = held_lines((summary or {}).get("held"))
    lines += [f"not moved by the search: {name} ({why})" for name, why in (policy.get("unmoved") or {}).items()]
    if determined is None:
        determined = (summary or {}).get("determined")
    if determined:
        by = {k: [n for n, e in determined.items() if e.get("by") == k] for k in ("target", "reward")}
        sure = "; ".join(f"{', '.join(v)} (the {k})" for k, v in by.items() if v)
        if sure:
            lines.append(f"determined by: {sure}")
        free: dict[str, list[str]] = {}  # why → the elements, those with the same reason together
        for n, e in determined.items():
            if e.get("by") == "free":
                free.setdefault(str(e.get("why", "")).removeprefix("not determined: "), []).append(n)
        if free:
            said = "; ".join(f"{', '.join(ns)} ({why})" for why, ns in free.items())
            lines.append(f"not determined (free: not learned, where it started or where the noise left it): {said}")
    if summary and summary.get("stopped"):
        lines.append(
            f"search stopped early, {summary.get('evaluations_saved', 0):g} evaluations unspent: {summary['stopped']}"
        )
    failures = (summary or {}).get("failures") or {}
    if failures.get("evaluations"):
        kinds = ", ".join(f"{k} {n}" for k, n in failures.get("by_kind", {}).items())
        lines.append(f"failed evaluations: {failures['evaluations']} ({kinds}); their reasons are in metrics.jsonl")
    return lines


def _target_from_config(run: RunDir) -> dict[str, Any] | None:
    """ψ* when the run's target is a parameter file (for runs not finished yet)."""
    from .config import resolve_path

    cfg = run.read_config()
    path = resolve_path(str(cfg.get("target", "")))
    if not path.is_file():
        return None
    try:
        import simulators

        sim_cls = simulators.resolve(cfg["sim"])
        sim = sim_cls(**cfg.get("sim_options", {}))
        try:
            from .targets import target_params

            return target_params(path, sim)
        finally:
            sim.close()
    except Exception:  # noqa: BLE001 - inspection must work without the simulator (e.g. no CARLA)
        from simulators.space import load_target_file

        return load_target_file(path).params


def load_run(path: str | Path) -> dict[str, Any]:
    """Everything inspect shows, as one JSON-ready dict."""
    run = RunDir.open(path)
    rows = run.read_metrics()
    policy = run.read_json("policy.json") if run.file("policy.json").is_file() else None
    if policy is None:
        raise UserError(f"{str(run.path)!r} has no policy.json yet")
    summary = run.read_json("summary.json") if run.finished else None
    target = summary.get("target") if summary else _target_from_config(run)
    out: dict[str, Any] = {
        "run_dir": str(run.path),
        "finished": summary is not None,
        "iterations": len(rows),
        "policy": policy,
        "target": target,
        "summary": summary,
        # what determined each element: the summary's, else read off the rows (older and unfinished runs)
        "determined": (summary or {}).get("determined") or determine(rows, policy, summary),
    }
    if target:
        tv = {}
        for name, spec in policy["params"].items():
            t = target.get(name)
            if spec["kind"] == "proportions" and isinstance(t, dict):
                tv[name] = tv_distance(spec["mean"], [t.get(c, 0.0) for c in spec["choices"]])
        out["tv_to_target"] = tv
    return out


def plot_run(path: str | Path, out_file: str | Path) -> Path:
    """Draw each parameter over the iterations and the reward curve into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    info = load_run(path)
    rows = RunDir(path).read_metrics()
    if not rows:
        raise UserError(f"{str(path)!r} has no completed iteration to plot")
    target = info["target"] or {}
    summary = info["summary"]
    names = list(info["policy"]["params"])
    n = len(names) + 1
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.4 * nrows), squeeze=False)
    its = [r["iteration"] + 1 for r in rows]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, names):
        spec0 = rows[-1]["policy"]["params"][name]
        kind = spec0["kind"]
        t = target.get(name)
        if kind in ("proportions", "categorical"):
            key = "mean" if kind == "proportions" else "probs"
            for i, c in enumerate(spec0["choices"]):
                col = colours[i % len(colours)]
                ax.plot(its, [r["policy"]["params"][name][key][i] for r in rows], color=col, label=c)
                if isinstance(t, dict):
                    ax.axhline(t.get(c, 0.0), color=col, ls="--", lw=1)
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability")
            ax.legend(fontsize=7, loc="upper left", ncol=2)
        else:
            m = [r["policy"]["params"][name]["mean"] for r in rows]
            s = [r["policy"]["params"][name]["std"] for r in rows]
            ax.plot(its, m, color=colours[0], label="mean")
            ax.fill_between(
                its,
                [a - b for a, b in zip(m, s)],
                [a + b for a, b in zip(m, s)],
                alpha=0.2,
                color=colours[0],
                label="± std",
            )
            if t is not None:
                ax.axhline(float(t), color="k", ls="--", lw=1, label="target")
            ax.set_ylim(spec0["low"], spec0["high"])
            ax.legend(fontsize=7)
        ax.set_title(f"{name} ({kind}) {mark(info['determined'].get(name))}".rstrip(), fontsize=10)
        ax.set_xlabel("iteration")
    warm = [r for r in rows if r.get("phase") == "match"]
    if warm:  # the distribution-matching warm-up: its reward is another quantity
        for a in list(axes.flat)[: len(names)]:
            a.axvline(len(warm) + 0.5, color="0.5", lw=0.8, ls=":")
            a.text(len(warm) + 0.5, 0.02, "match ← | → task ", transform=a.get_xaxis_transform(), fontsize=7,
                   ha="center", va="bottom", color="0.4")  # fmt: skip
    task_rows = [r for r in rows if r.get("phase") != "match"]
    task_its = [r["iteration"] + 1 for r in task_rows]
    ax = axes.flat[len(names)]
    for r in task_rows:
        ys = [v for v in r["rewards"] if v is not None]
        ax.scatter([r["iteration"] + 1] * len(ys), ys, s=6, color="0.6")
    ax.plot(task_its, [r["reward_mean"] for r in task_rows], label="reward (mean of K)")
    ax.plot(task_its, [r["baseline"] for r in task_rows], label="baseline")
    if summary:
        for w, style in (("oracle", "--"), ("random", ":"), ("lts", "-.")):
            v = summary["reward"].get(w)
            if v is not None:
                ax.axhline(v, ls=style, color="k", lw=1, label=f"{w} (final)")
    metric = summary["metric"] if summary else "reward"
    ax.set_title(
        f"reward ({metric}{'' if not summary or summary.get('higher_is_better', True) else ', negated'})", fontsize=10
    )
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a warm-up leaves few task iterations: no 82.5
    ax.legend(fontsize=7)
    for extra in list(axes.flat)[n:]:
        extra.axis("off")
    fig.suptitle(f"{info['run_dir']}: learned simulator parameters (dashed: target)", fontsize=11)
    fig.tight_layout()
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
