"""Errors a user can act on. Leaf packages raise these; the CLI turns them into one line and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A recipe, override, name or keyword argument that cannot be used as given.

    The message names the problem and what is accepted; the CLI prints it on one line and exits with 2.
    """


class DataError(ConfigError):
    """A dataset that cannot be read: missing path, no readable image, unknown layout."""


class TrainingStopped(RuntimeError):
    """Training stopped on purpose before its end (the message says why and what to do); the CLI exits with 1."""


class NonFiniteLossError(TrainingStopped):
    """The loss became NaN or Inf; the run stopped before writing a checkpoint."""


def did_you_mean(word: str, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` (difflib), or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_minimums(options: Iterable[tuple[str, float | None, float]]) -> None:
    """Refuse the first ``(flag, value, lowest)`` whose value is below its lowest (None: not given).

    Raises:
        ConfigError: ``FLAG must be >= LOWEST, got VALUE``.
    """
    for flag, value, low in options:
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
