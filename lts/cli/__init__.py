"""Shared command-line plumbing: the exit-status contract and small argparse helpers.

Exit status (docs/design.md, contract 7): 0 done; 2 a user error, reported as one
``error: …`` line on stderr with no traceback; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import yaml

from simulators.errors import UserError

from ..evaluation import set_threads  # the command lines' as well as the engine's

__all__ = [
    "run_cli", "ArgumentParser", "add_debug_flag", "parse_set", "set_threads", "parse_resolution", "progress_bar", "main",
    "EXIT_USAGE", "EXIT_INTERRUPTED",
]  # fmt: skip

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are the one-line ``error: …`` of the contract."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


@contextlib.contextmanager
def progress_bar(enabled: bool, **kwargs: Any) -> Iterator[Any]:
    """A tqdm bar on stderr (``None`` when not ``enabled``), closed however the block ends."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(file=sys.stderr, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


def _format_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> str:
    return f"warning: {message}\n"


def run_cli(main: Callable[[list[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command-line ``main`` under the exit-status contract."""
    warnings.formatwarning = _format_warning
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(main(None if argv is None else list(argv)) or 0)
    except UserError as e:
        if e.__cause__ is not None and _debug(argv):
            # a set-up crash (`SetupError`): where it happened, before the one line
            traceback.print_exception(e.__cause__, file=sys.stderr)
        msg = " ".join(str(e).split("\n")).strip()
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `lts.inspect … | head` closes the pipe early: not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _debug(argv: Sequence[str] | None) -> bool:
    """``--debug`` among the arguments, or ``LTS_DEBUG`` set (not 0): show set-up tracebacks."""
    args = sys.argv[1:] if argv is None else argv
    return "--debug" in args or os.environ.get("LTS_DEBUG", "0") not in ("", "0")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """``--debug``, read by `run_cli` (it also reads ``LTS_DEBUG=1``)."""
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback behind a set-up error (also: LTS_DEBUG=1)"
    )


def command_module(name: str, *, api: str | None = None) -> None:
    """Make ``lts.NAME`` (a package, so that ``python -m lts.NAME`` runs `lts.cli.NAME`) hold
    what the command line's module holds, imported on first use (``from lts.optimize import
    main``), and, with ``api``, be callable as the Python API's ``lts.api.<api>``
    (``lts.optimize(...)``)."""
    import importlib
    import types

    cli = "lts.cli." + name.rsplit(".", 1)[1]

    class _Command(types.ModuleType):
        def __getattr__(self, attr: str) -> Any:
            return getattr(importlib.import_module(cli), attr)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            if api is None:
                raise TypeError(f"module {name} is not callable")
            return getattr(importlib.import_module("lts.api"), api)(*args, **kwargs)

    module = sys.modules[name]
    module.__class__ = _Command
    if api is not None:
        module.__doc__ = (module.__doc__ or "") + f"\n\nCalled as a function: the Python API's `lts.api.{api}`."


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "w={x: 0.5, y: 0.5}"]`` → ``{"a.b": 1, "w": {...}}`` (values are YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value {raw!r} is not valid YAML") from None
        out[key.strip()] = value
    return out


def parse_resolution(text: str) -> tuple[int, int]:
    """``"64x128"`` → ``(64, 128)`` (height × width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"resolution {text!r}: expected HEIGHTxWIDTH, e.g. 64x128") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    """``lts SUBCOMMAND …``: the console script dispatches to ``python -m lts.SUBCOMMAND``."""
    import importlib

    commands = {
        "optimize": "run the learning-to-simulate loop",
        "inspect": "show a run's learned distribution",
        "evaluate": "train final models on learned / random / oracle data and score them",
        "render": "render labelled frames to PNG or a Cityscapes-layout dataset",
        "refine": "train or apply a GAN refiner",
        "compare": "compare LTS with random search and Ray Tune searchers",
        "bench": "benchmarks",
    }
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"  {k:<9} {v}" for k, v in commands.items()]
        print("usage: lts COMMAND [ARGS…]   (same as python -m lts.COMMAND)\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            raise UserError(f"unknown command {argv[0]!r}; expected one of {', '.join(commands)}")
        return 0
    module = importlib.import_module(f"lts.cli.{argv[0]}")
    return module.main(argv[1:])


def console_main() -> None:
    raise SystemExit(run_cli(main))
