"""The trend of a noisy sequence in standard errors: whether a search's rewards still climb.

Shared by the stopper (`lts.stopping`) and by the strategies that average their hand-over
over the iterations whose rewards cannot be told apart (`policies.cma_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["trend_t"]


def trend_t(values: Sequence[float]) -> float:
    """The least-squares slope of ``values`` against their index, in standard errors
    (+inf for a noiseless rise, -inf for a noiseless fall or flat line)."""
    y = np.asarray(values, dtype=float)
    if len(y) < 3:
        raise ValueError(f"a trend needs at least 3 values, got {len(y)}")
    t = np.arange(len(y), dtype=float)
    t -= t.mean()
    sxx = float((t * t).sum())
    slope = float((t * (y - y.mean())).sum()) / sxx
    resid = y - y.mean() - slope * t
    se = math.sqrt(float((resid**2).sum()) / (len(y) - 2) / sxx)
    if se == 0.0:
        return math.inf if slope > 0 else -math.inf
    return slope / se
