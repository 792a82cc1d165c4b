"""User-facing errors.

Every error a user can cause (bad path, bad file, bad config, impossible budget) is a
`CCFSError`. The CLI prints its message as one line and exits non-zero, no traceback.
Messages say what is wrong and how to fix it.
"""


class CCFSError(Exception):
    """Base class of errors caused by user input, printed without a traceback."""


class DataError(CCFSError):
    """A dataset is missing, truncated, corrupt or inconsistent."""


class ConfigError(CCFSError):
    """A configuration key, value or combination is invalid."""


class CheckpointError(CCFSError):
    """A checkpoint does not match the requested architecture or class count."""
