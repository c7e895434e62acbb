"""Exceptions rnnkit raises for user mistakes.

Every user-facing error is a ``ValueError`` or ``TypeError`` subclass, so ``except ValueError`` keeps
working, and the CLI prints its message as one line instead of a traceback.
"""

from __future__ import annotations

__all__ = ["RnnkitError", "DataError", "CheckpointError", "ConfigError", "UnknownTokensWarning"]


class RnnkitError(ValueError):
    """Base class of rnnkit's user-facing errors (a ``ValueError``)."""


class DataError(RnnkitError):
    """A data file or data set is missing, empty, undecodable or malformed.

    The message names the file, the line where it applies, and the fix.
    """


class CheckpointError(RnnkitError):
    """A checkpoint or bundle is missing, truncated, corrupt or of the wrong kind."""


class ConfigError(RnnkitError):
    """A configuration value or combination of options is invalid."""


class UnknownTokensWarning(UserWarning):
    """Text given to a language model held characters or words its vocabulary lacks; they were read as
    ``<unk>`` (the warning names them). ``rnnkit generate/complete/evaluate`` print it as a ``note:`` line."""
