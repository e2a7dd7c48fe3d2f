"""User-facing errors.

Every problem a user can fix (a missing file, a bad config key, an output that already
exists) raises a :class:`VolsegError` subclass with a one-line message that names the
file or key and the fix.  The CLI prints it without a traceback and exits with
status :data:`EXIT_USAGE`.
"""

from __future__ import annotations

EXIT_USAGE = 2


class VolsegError(Exception):
    """An error the user can fix; its message is one line naming the file/key and the fix."""


class InputError(VolsegError):
    """An input file is missing, unreadable, truncated, corrupt or of the wrong shape/dtype."""


class ConfigError(VolsegError):
    """A workflow/training config is invalid (unknown key, wrong type, bad value)."""


class OutputExistsError(VolsegError):
    """An output already exists and ``--overwrite`` was not given."""
