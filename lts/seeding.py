"""Seeds derived from one run seed, so that a run is reproducible and resumable.

Each stream (policy draws, data, training, the target, the final evaluation) gets its
own seeds from ``derive_seed(run_seed, stream, *indices)``; no stream can collide with
another, and the target's seeds are never used for training.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(run_seed: int, stream: str, *indices: int) -> int:
    """A 31-bit seed for ``stream`` at ``indices`` (e.g. iteration, draw)."""
    key = [int(run_seed) & 0xFFFFFFFF, zlib.crc32(stream.encode()), *(int(i) for i in indices)]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)
