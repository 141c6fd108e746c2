"""The history of generated images that the discriminators train on (SimGAN §2.3).

A discriminator that only sees the generator's latest output forgets the artefacts it
punished earlier and the generator re-introduces them; feeding it half current and
half past images keeps the pressure on.  Each image may travel with aligned tensors
(its label map, for the semantic-aware discriminator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["ImageHistoryBuffer"]


class ImageHistoryBuffer:
    """A fixed-size store of past generated images (and aligned tensors).

    ``query(images, *aligned)`` returns a batch of the same size: while fewer than half
    a batch is stored, the new images unchanged; afterwards the first ``n - n//2`` new
    images plus ``n//2`` images drawn (with replacement) from the history.  The new images
    then enter the store: appended while it has room, then each replaces a distinct
    random entry.  Every random choice comes from the ``generator`` given.
    """

    def __init__(self, size: int, *, generator: torch.Generator) -> None:
        if size < 1:
            raise ValueError(f"ImageHistoryBuffer: size must be at least 1, got {size}")
        self.size = int(size)
        self.generator = generator
        self._store: list[torch.Tensor] | None = None  # one tensor per field, first dim = entries
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def query(self, images: torch.Tensor, *aligned: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mix ``images`` (and ``aligned`` tensors, row for row) with the history."""
        new = (images.detach(), *(a.detach() for a in aligned))
        n = images.shape[0]
        if any(t.shape[0] != n for t in new):
            raise ValueError("ImageHistoryBuffer.query: all tensors need the same first dimension")
        if self._store is not None and len(self._store) != len(new):
            raise ValueError(f"ImageHistoryBuffer.query: expected {len(self._store)} tensors, got {len(new)}")
        k = n // 2
        if self._count >= max(k, 1) and k > 0:
            old_idx = torch.randint(0, self._count, (k,), generator=self.generator)
            out = tuple(
                torch.cat([t[: n - k], s[old_idx.to(s.device)].to(t.device)]) for t, s in zip(new, self._store or [])
            )
        else:
            out = new
        self._push(new)
        return out

    def _push(self, new: tuple[torch.Tensor, ...]) -> None:
        n = new[0].shape[0]
        if self._store is None:
            self._store = [torch.empty((self.size, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in new]
        room = min(self.size - self._count, n)
        for s, t in zip(self._store, new):
            s[self._count : self._count + room] = t[:room]
        self._count += room
        rest = min(n - room, self.size)
        if rest > 0:
            slots = torch.randperm(self.size, generator=self.generator)[:rest]
            for s, t in zip(self._store, new):
                s[slots.to(s.device)] = t[n - rest :]

    def state_dict(self) -> dict[str, Any]:
        """Tensors, ints and the generator state only (loads with ``weights_only=True``)."""
        return {
            "size": self.size,
            "count": self._count,
            "store": [s[: self._count].cpu() for s in self._store] if self._store is not None else [],
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], device: str | torch.device = "cpu") -> None:
        """``state``: what `state_dict` returned (read back from a checkpoint, so untyped)."""
        size, count, store = int(state["size"]), int(state["count"]), state["store"]
        if size != self.size:
            raise ValueError(f"ImageHistoryBuffer: saved size {size} differs from {self.size}")
        self._count = count
        self._store = None
        if store:
            self._store = []
            for t in store:
                s = torch.empty((self.size, *t.shape[1:]), dtype=t.dtype, device=device)
                s[:count] = t.to(device)
                self._store.append(s)
        self.generator.set_state(state["rng"])
