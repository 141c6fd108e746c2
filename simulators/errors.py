"""The error hierarchy shared by every part of lts.

`UserError` marks a mistake in what the user gave (a flag, a config key, a file, a
parameter value).  Command lines turn it into one ``error: …`` line and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "ParamError", "UnknownNameError", "did_you_mean"]


class UserError(ValueError):
    """Bad user input: reported as one line, exit status 2."""


class ParamError(UserError):
    """A simulator parameter vector ψ (or one element of it) is invalid."""


class UnknownNameError(UserError, KeyError):
    """A name (simulator, task, config key, parameter) that is not known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SimulatorUnavailable(UserError):
    """The simulator's server cannot be reached or stopped answering (no CARLA server,
    a tick that timed out, a server that died mid-run).  A loop that catches it stops
    with its checkpoint written, so that ``--resume`` continues once the server is back."""


class SetupError(UserError):
    """A set-up step failed: a simulator that crashed while building itself or rendering the
    target.  One line naming the simulator, the step and the exception; the exception is the
    ``__cause__``, whose traceback ``--debug`` (or ``LTS_DEBUG=1``) prints."""


__all__ += ["SimulatorUnavailable", "SetupError"]
