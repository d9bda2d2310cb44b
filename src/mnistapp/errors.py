"""The app's error types and what each means for a run: one table, no heavy imports.

Every layer raises these; only the entry points (``cli/``) turn them into status and exit code.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class ConfigError(ValueError):
    """A setting the user gave is of the wrong type or out of range."""


class DataSourceError(RuntimeError):
    """A data set could not be materialised, or a file failed verification."""


class CheckpointError(ValueError):
    """A checkpoint is missing, not a checkpoint, unsafe, or does not fit the requested model."""


class InputError(ValueError):
    """An input file could not be read as digits."""


class DivergedError(FloatingPointError):
    """Training produced a non-finite or exploding loss; the message names epoch, step and loss."""


# exception -> (the run's status in metrics.json, exit status of a single run): a user's mistake
# is `<prog>: error: <message>` and 2, a diverged run `<prog>: <message>` and 1; anything else
# is a bug (status failed, a traceback, exit 1)
OUTCOMES: dict[type[Exception], tuple[str, int]] = {
    ConfigError: ("failed", 2),
    DataSourceError: ("failed", 2),
    CheckpointError: ("failed", 2),
    InputError: ("failed", 2),
    DivergedError: ("diverged", 1),
}
# mistakes found before the run started: a new run's folder is removed, no record is written
REFUSALS = (ConfigError, CheckpointError, InputError)


def outcome(err: BaseException) -> tuple[str, int] | None:
    """``(status, exit code)`` for one of our errors; None for anything else (a bug: re-raise)."""
    return next((result for kind, result in OUTCOMES.items() if isinstance(err, kind)), None)


def fail(prog: str, message: object) -> NoReturn:
    """Print ``<prog>: error: <message>`` on stderr and exit with status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)
