"""Run directories (docs/design.md, contract 3): their files, atomic writes and checks.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``policy.json``,
``checkpoint.pt`` and, once finished, ``summary.json``.  Files are written to a
temporary name and renamed, so a killed run never leaves a half-written file; only a
finished run has ``summary.json``.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from simulators.errors import UserError

__all__ = [
    "RunDir",
    "atomic_write_bytes",
    "atomic_write_text",
]

CONFIG, METRICS, POLICY, CHECKPOINT, SUMMARY = (
    "config.yaml",
    "metrics.jsonl",
    "policy.json",
    "checkpoint.pt",
    "summary.json",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class RunDir:
    """One run's directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- creation and checks ---------------------------------------------------
    @classmethod
    def new(cls, out: str | Path | None, *, name_hint: str = "run") -> RunDir:
        """A run directory that does not exist yet (or is empty): ``out`` itself, or a new
        one under ``runs/``.  Call `make` to create it once set-up has succeeded."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            base = Path("runs") / f"{stamp}-{name_hint}"
            path, i = base, 1
            while path.exists():
                path, i = Path(f"{base}-{i}"), i + 1
        else:
            path = Path(out)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise UserError(
                    f"--out {str(path)!r} exists and is not empty; choose a new directory or --resume {str(path)!r}"
                )
        return cls(path)

    def make(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory (for --resume, inspect, evaluate)."""
        p = Path(path)
        if not p.is_dir():
            raise UserError(f"run directory {str(p)!r} does not exist")
        if not (p / CONFIG).is_file():
            raise UserError(f"{str(p)!r} is not a run directory (no {CONFIG})")
        return cls(p)

    def file(self, name: str) -> Path:
        return self.path / name

    # -- files -----------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.file(CONFIG), yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        data = yaml.safe_load(self.file(CONFIG).read_text())
        if not isinstance(data, dict):
            raise UserError(f"{str(self.file(CONFIG))!r} is not a run configuration")
        return data

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.file(name), json.dumps(obj, indent=2) + "\n")

    def read_json(self, name: str) -> Any:
        p = self.file(name)
        if not p.is_file():
            raise UserError(f"{str(p)!r} does not exist")
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{str(p)!r} is not valid JSON: {e}") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.file(METRICS)
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: everything after it is not trusted
        return rows

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.file(METRICS), "".join(json.dumps(r) + "\n" for r in rows))

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.file(CHECKPOINT), buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any] | None:
        p = self.file(CHECKPOINT)
        if not p.is_file():
            return None
        try:
            # weights_only: a checkpoint is tensors, numbers, strings and containers; never
            # unpickle arbitrary objects from a file someone handed us.
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same user problem
            raise UserError(f"checkpoint {str(p)!r} cannot be loaded: {type(e).__name__}: {e}") from None

    @property
    def finished(self) -> bool:
        return self.file(SUMMARY).is_file()
