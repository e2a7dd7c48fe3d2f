"""User-facing errors.

Every problem a user can fix (a missing file, a bad config key, an output that already
exists) raises a :class:`VolsegError` subclass with a one-line message that names the
file or key and the fix.  The CLI prints it without a traceback and exits with
status :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import errno

EXIT_USAGE = 2

#: What to do about an operating-system error, by ``errno``.
OS_FIXES: dict[int, str] = {
    errno.EROFS: "write the output to a writable file system",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
    errno.ENOSPC: "free space (or choose another location) and rerun the same command to "
                  "resume",
    errno.EDQUOT: "free space (or choose another location) and rerun the same command to "
                  "resume",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "a folder is where a file is needed; choose another path",
    errno.EEXIST: "something of that name is in the way; choose another path",
    errno.ENOENT: "check the path",
    errno.EMFILE: "raise the limit (ulimit -n) or use fewer workers",
    errno.EIO: "check the disk or the network mount",
    errno.EXDEV: "keep it on one file system",
    errno.ENOTEMPTY: "choose another path",
    errno.EPIPE: "the reader of the output stopped reading (e.g. `| head`); read it all",
}


def describe_os_error(exc: OSError) -> str:
    """Return one line for an ``OSError``: the path, what happened and the fix."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    fix = OS_FIXES.get(exc.errno or -1, "check the path and the file system")
    head = f"{where}: " if where else ""
    name = errno.errorcode.get(exc.errno or -1)
    return f"{head}{what}{f' ({name})' if name else ''}; {fix}"


class VolsegError(Exception):
    """An error the user can fix; its message is one line naming the file/key and the fix."""


class InputError(VolsegError):
    """An input file is missing, unreadable, truncated, corrupt or of the wrong shape/dtype."""


class ConfigError(VolsegError):
    """A workflow/training config is invalid (unknown key, wrong type, bad value)."""


class OutputExistsError(VolsegError):
    """An output already exists and ``--overwrite`` was not given."""
