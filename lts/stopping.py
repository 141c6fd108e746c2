"""When to stop the search: its rewards no longer climb beyond their own noise, or a budget
(evaluations, seconds) would be overrun.

The search's iterations are noisy measurements of a distribution that moves: each
iteration's K draws share data and training seeds, so their mean reward carries that
iteration's seed noise in full, and the noise is what the iteration means scatter by
around their trend. The stopper fits a line to the last ``window`` iteration means and
stops when its slope is not above zero by at least one standard error: more iterations
are then not expected to move the hand-over beyond the reward's own noise. The rule is a
pure function of the recorded means, so a resumed run stops where an uninterrupted one
does. Measured against the strategy's own criterion (CMA-ES's step size) and other
windows in docs/experiments.md (2026-12-07, "Stop when the answer is known").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.trend import trend_t

__all__ = ["PlateauStopper", "trend_t", "parse_duration", "WINDOW"]

# Iterations the line is fitted to. Measured on the toy and twelve coordinates (K = 8, 5 seeds):
# 4 saved 68 % and 32 % of their budgets at a median reward no worse than the full budget's; 6
# and 8 saved less (twelve coordinates: 22 %, 18 %) for no better reward.
WINDOW = 4
# The slope must exceed this many standard errors for the search to go on.
MIN_T = 1.0


@dataclass(frozen=True)
class PlateauStopper:
    """Stops when the last ``window`` iteration means show no rise of ``min_t`` standard errors."""

    window: int = WINDOW
    min_t: float = MIN_T
    # with a share, the window grows with the iterations run: the last ``share`` of them (at least
    # ``window``), for a phase whose means keep falling slowly under their noise (the warm-up's match)
    share: float | None = None

    def reason(self, means: Sequence[float | None]) -> str | None:
        """Why the search should stop after these iteration means (oldest first), or None.
        An iteration whose draws all failed (None) is left out of the fit."""
        finite = [m for m in means if m is not None and math.isfinite(m)]
        window = max(self.window, int(self.share * len(finite))) if self.share else self.window
        recent = finite[-window:]
        if len(recent) < window:
            return None
        t = trend_t(recent)
        if t >= self.min_t:
            return None
        return (
            f"plateau: the reward's trend over the last {window} iterations is {t:+.2f} standard errors "
            f"(below {self.min_t:g}): more iterations are not expected to beat its noise"
        )


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``1.5h``; raises ValueError naming the text."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        unit = _UNITS.get(s[-1:], None)
        try:
            seconds = float(s[:-1] if unit is not None else s) * (unit or 1.0)
        except ValueError:
            raise ValueError(f"a duration such as 90s, 10m or 1.5h; got {text!r}") from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"a duration above 0; got {text!r}")
    return seconds
