"""One writer per output: a lock file beside the output, with its owner and a heartbeat.

:func:`output_lock` is held by every writing pipeline (predict, crf, instances,
convert, synth) from before it looks at the output until its last block and pyramid
level are written, so two runs into one output never mix: the second is refused with
one line naming the owner, while the first runs.

The lock
--------
A small JSON file ``.<name>.volseg-lock`` beside the output ``<name>`` (outside it, so
``--overwrite`` replacing the output never removes it), holding the owner's process
id, host, start time, command line, a random token and a heartbeat time that a
daemon thread refreshes every :data:`HEARTBEAT` seconds.  On a local file system it is
created atomically (``O_CREAT | O_EXCL``); it is removed when the run ends (also when
it fails).

Stale locks
-----------
A lock whose owner is gone is taken over: on the same host when its process no longer
exists, on another host when its heartbeat is older than :data:`STALE` seconds (a
killed run cannot remove its lock).  Taking over goes through a second, exclusive
``.breaking`` file so that of several runs that find one stale lock exactly one
removes it (a run that died while holding the breaking file leaves it to expire after
:data:`STALE` seconds).

Object storage
--------------
For URLs the lock is an object beside the output, created with a conditional write
(``If-None-Match: *``, which S3 and the loopback test server honour: exactly one of
two runs started in the same instant gets it) where the file system offers
``mode="create"``, else only when absent; either way it is read back to confirm the
token.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from volseg.errors import OutputExistsError
from volseg.io.location import Location, PathLike, as_path, check_writable, display

__all__ = ["HEARTBEAT", "STALE", "lock_path", "locks", "output_lock", "read_lock"]

P = ParamSpec("P")
R = TypeVar("R")

HEARTBEAT = 5.0
"""Seconds between two refreshes of a held lock's heartbeat."""
STALE = 60.0
"""Seconds after which a lock of another host without a heartbeat is stale."""

_held: dict[str, tuple[str, int]] = {}  # lock location -> (token, depth): nested holds
_held_guard = threading.Lock()


def lock_path(output: PathLike) -> Location:
    """Return where the lock of ``output`` lives: ``.<name>.volseg-lock`` beside it."""
    out = as_path(output)
    return out.parent / f".{out.name}.volseg-lock"


def read_lock(path: Location) -> dict[str, Any] | None:
    """Return the content of a lock file (``None``: absent or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(info: dict[str, Any] | None, path: Location, now: float) -> bool:
    if info is None:  # unreadable (half-written by a killed run): judge by its age
        try:
            return now - float(path.stat().st_mtime) > STALE
        except (OSError, AttributeError, TypeError, ValueError):
            return True
    if info.get("host") == socket.gethostname():
        try:
            return not _alive(int(info.get("pid", -1)))
        except (TypeError, ValueError):
            return True
    try:
        return now - float(info.get("heartbeat", 0.0)) > STALE
    except (TypeError, ValueError):
        return True


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another volseg run"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC",
                            time.gmtime(float(info.get("started", 0.0) or 0.0)))
    return (f"another volseg run (pid {info.get('pid')} on {info.get('host')}, started "
            f"{started})")


def _content(token: str, started: float) -> bytes:
    return json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "token": token,
        "started": started, "heartbeat": time.time(), "command": " ".join(sys.argv),
    }).encode()


def _create_local(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` if it does not exist (atomically)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def _create(path: Location, data: bytes, token: str) -> bool:
    if isinstance(path, Path):
        return _create_local(path, data)
    if path.exists():
        return False
    try:  # S3's conditional write (If-None-Match: *): atomic where the store supports it
        path.fs.pipe_file(path.path, data, mode="create")
    except FileExistsError:
        return False
    except (TypeError, NotImplementedError, ValueError):  # no exclusive mode: write, check
        path.write_bytes(data)
    info = read_lock(path)
    return info is not None and info.get("token") == token


def _remove(path: Location) -> None:
    with suppress(OSError):
        path.unlink()


def _break_stale(path: Location, seen: dict[str, Any] | None) -> None:
    """Remove the stale lock ``path`` (seen with content ``seen``), one breaker at a time."""
    breaker = path.parent / f"{path.name}.breaking"
    token = secrets.token_hex(8)
    if not _create(breaker, token.encode(), token) and isinstance(breaker, Path):
        try:
            expired = time.time() - breaker.stat().st_mtime > STALE
        except OSError:
            expired = True
        if expired:
            _remove(breaker)
        return
    try:
        now = read_lock(path)
        if (now or {}).get("token") == (seen or {}).get("token") and _stale(now, path,
                                                                            time.time()):
            _remove(path)
    finally:
        _remove(breaker)


def _acquire(path: Location, token: str, started: float, output: PathLike) -> None:
    data = _content(token, started)
    for _ in range(5):
        if _create(path, data, token):
            return
        info = read_lock(path)
        if not _stale(info, path, time.time()):
            raise OutputExistsError(
                f"{display(output)} is being written by {_describe(info)}; wait for it to "
                f"finish (a second writer would mix the two runs), or delete {display(path)} "
                f"if that run is gone")
        _break_stale(path, info)
    raise OutputExistsError(f"{display(output)}: could not take the lock {display(path)}; "
                            f"another run is starting on it, try again")


def _heartbeat(path: Location, token: str, started: float, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT):
        info = read_lock(path)
        if info is None or info.get("token") != token:
            return  # taken over (we were judged dead): stop refreshing someone else's lock
        try:
            if isinstance(path, Path):
                tmp = path.with_name(f"{path.name}.{token}.tmp")
                tmp.write_bytes(_content(token, started))
                os.replace(tmp, path)
            else:
                path.write_bytes(_content(token, started))
        except OSError:
            return


@contextmanager
def output_lock(output: PathLike) -> Iterator[Location]:
    """Hold the lock of ``output`` for the duration of the ``with`` block.

    Nested holds of the same output in one process are allowed (a workflow stage
    calling a pipeline that locks again).  Parent folders made for the lock are
    removed again when the run leaves them empty.

    Yields
    ------
    Location
        The lock file.

    Raises
    ------
    OutputExistsError
        If another live run holds the lock.
    """
    check_writable(as_path(output))
    path = lock_path(output)
    key = str(path)
    with _held_guard:
        if key in _held:
            token, depth = _held[key]
            _held[key] = (token, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield path
        finally:
            with _held_guard:
                token, depth = _held[key]
                if depth <= 1:
                    del _held[key]
                else:
                    _held[key] = (token, depth - 1)
        return
    made = _make_parents(path)
    token, started = secrets.token_hex(16), time.time()
    try:
        _acquire(path, token, started, output)
    except BaseException:
        _remove_made(made)
        raise
    with _held_guard:
        _held[key] = (token, 1)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, token, started, stop),
                            name="volseg-lock-heartbeat", daemon=True)
    beat.start()
    try:
        yield path
    finally:
        stop.set()
        beat.join(timeout=HEARTBEAT)
        with _held_guard:
            _held.pop(key, None)
        info = read_lock(path)
        if info is not None and info.get("token") == token:
            _remove(path)
        _remove_made(made)


def _make_parents(path: Location) -> list[Path]:
    """Create the missing parent folders of a local ``path``; return those made."""
    if not isinstance(path, Path):
        return []
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
    return missing


def _remove_made(made: list[Path]) -> None:
    for folder in made:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            return


def locks(parameter: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a writing function so that it runs holding the lock of its ``parameter``.

    >>> @locks("output")
    ... def write(source, output): ...
    """
    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            output = signature.bind(*args, **kwargs).arguments[parameter]
            with output_lock(output):
                return function(*args, **kwargs)

        return locked

    return decorate
