"""Errors a user can act on. Leaf packages raise these; the CLI turns them into one line and exit code 2."""

from __future__ import annotations


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
