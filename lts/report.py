"""Text tables of a run: the learned distribution next to the target, and the rewards."""

from __future__ import annotations

from typing import Any

__all__ = ["policy_table", "reward_table", "tv_distance"]


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
    policy: dict[str, Any], target: dict[str, Any] | None = None, initial: dict[str, Any] | None = None
) -> str:
    """Each element of a ``policy.json``: proportions as choice → probability rows,
    continuous as mean ± std; the target ψ* beside it when known."""
    lines = []
    tgt = target or {}
    for name, spec in policy["params"].items():
        kind = spec["kind"]
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
            lines.append(head)
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
                f"{name} ({kind} in [{spec['low']:g}, {spec['high']:g}])  {spec['mean']:.3f} ± {spec['std']:.3f}{ts}"
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
