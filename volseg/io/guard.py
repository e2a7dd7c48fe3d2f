"""Guards around outputs: never over an input, never over foreign data, one run per output.

Every writing command (and workflow stage) goes through these checks before it
writes anything:

* :func:`check_output_location` refuses an output that equals, contains or lies
  inside one of the command's inputs.  Local paths are compared resolved (absolute,
  symlinks followed, also for parts of a path that do not exist yet); URL strings
  (``s3://bucket/key``) by their normalised scheme, bucket and key, component by
  component (``s3://b/a`` does not contain ``s3://b/ab``).
* :func:`check_replaceable` lets ``--overwrite`` replace only what volseg wrote: a
  Zarr group whose attributes carry volseg's ``volseg`` record or whose arrays carry
  the block writer's markers (:mod:`volseg.io.store`), or an empty folder.  A foreign
  folder or file is refused.
* :func:`run_identity` is what makes a blockwise output *one run*: the operation, the
  model file's SHA-256, the options that change values and the inputs' identity
  (location, and size and modification time for plain files).  The block writer
  stores it with the output when it is created and refuses a resume with a different
  one (:func:`volseg.io.store.check_identity`), so an interrupted run is never
  finished by another model or other options.
* :func:`check_free_space` refuses an output larger than the free space of a local
  file system.

The functions take plain strings or path-likes and work on URLs where that makes
sense (locations are compared as text; nothing is opened on object storage here).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from volseg.errors import InputError, OutputExistsError

__all__ = ["EXECUTION_OPTIONS", "check_free_space", "check_output_location",
           "check_replaceable", "file_digest", "identity_difference", "input_identity",
           "is_url", "location", "overlaps", "run_identity", "written_by_volseg"]

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")

#: Options that change how a run executes but not the values it writes: a resume may
#: change them.
EXECUTION_OPTIONS: frozenset[str] = frozenset({
    "device", "cpu_threads", "batch_size", "processes", "workers", "threads",
    "memory_budget_mib", "pyramid", "progress",
})


def is_url(path: str | os.PathLike[str]) -> bool:
    """Return whether ``path`` is a URL string (``scheme://...``) other than ``file://``."""
    match = _URL.match(os.fspath(path))
    return match is not None and match.group(1).lower() != "file"


def location(path: str | os.PathLike[str]) -> str:
    """Return the normalised location of a path or URL, for comparing locations.

    Local paths (and ``file://`` URLs) become absolute with symlinks followed; URLs
    become ``scheme://bucket/key`` with the scheme in lower case, repeated slashes,
    ``.`` and ``..`` removed and no trailing slash.
    """
    text = os.fspath(path)
    match = _URL.match(text)
    if match is not None and match.group(1).lower() != "file":
        scheme, rest = match.group(1).lower(), match.group(2)
        bucket, _, key = rest.partition("/")
        key = posixpath.normpath("/" + key).lstrip("/") if key.strip("/") else ""
        return f"{scheme}://{bucket}" + (f"/{key}" if key else "")
    if match is not None:
        text = match.group(2)
    return os.path.realpath(os.path.abspath(os.path.expanduser(text)))


def _parts(loc: str) -> tuple[str, ...]:
    match = _URL.match(loc)
    if match is not None:
        return (match.group(1) + "://", *[p for p in match.group(2).split("/") if p])
    return Path(loc).parts


def overlaps(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Return whether two locations are equal or one lies inside the other."""
    pa, pb = _parts(location(a)), _parts(location(b))
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def check_output_location(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None],
) -> None:
    """Refuse an output that equals, contains or lies inside one of the inputs.

    Parameters
    ----------
    output
        The output path or URL.
    inputs
        The command's inputs (``None`` entries are skipped).

    Raises
    ------
    InputError
        Naming the output, the input and the fix.
    """
    for source in inputs:
        if source is None:
            continue
        if overlaps(output, source):
            out, src = location(output), location(source)
            how = ("is" if out == src else "lies inside" if len(_parts(out)) > len(_parts(src))
                   else "contains")
            raise InputError(f"output {os.fspath(output)} overlaps the input "
                             f"{os.fspath(source)} (it {how} it); writing there would destroy "
                             f"the input, choose another output path")


def _zarr_attrs(path: Path) -> dict[str, Any] | None:
    """Return the attributes of a Zarr node in a local folder (``None``: not a Zarr node)."""
    meta = path / "zarr.json"
    try:
        if meta.is_file():
            data = json.loads(meta.read_text(encoding="utf-8"))
            attrs = data.get("attributes") if isinstance(data, dict) else None
            return dict(attrs) if isinstance(attrs, dict) else {}
        if (path / ".zgroup").is_file() or (path / ".zarray").is_file():
            zattrs = path / ".zattrs"
            if not zattrs.is_file():
                return {}
            data = json.loads(zattrs.read_text(encoding="utf-8"))
            return dict(data) if isinstance(data, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return None


def written_by_volseg(path: str | os.PathLike[str]) -> bool:
    """Return whether the local folder ``path`` is a Zarr group or array volseg wrote.

    Recognised by the ``volseg`` record in its attributes (0.5: also under ``ome``'s
    sibling keys) or by the block writer's markers in it or in one of its arrays.
    """
    from volseg.io.store import MARKER_DIR

    folder = Path(path)
    attrs = _zarr_attrs(folder)
    if attrs is None:
        return False
    if "volseg" in attrs or (folder / MARKER_DIR).is_dir():
        return True
    try:
        return any((child / MARKER_DIR).is_dir() for child in folder.iterdir()
                   if child.is_dir())
    except OSError:
        return False


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty folder or volseg's output.

    Raises
    ------
    OutputExistsError
        If ``path`` is a file, or a folder volseg did not write.
    """
    target = Path(path)
    if not os.path.lexists(target):
        return
    if target.is_dir() and not target.is_symlink():
        if written_by_volseg(target):
            return
        try:
            empty = not any(target.iterdir())
        except OSError:
            empty = False
        if empty:
            return
        raise OutputExistsError(
            f"{target} exists and was not written by volseg; --overwrite replaces only "
            f"volseg's own outputs, choose another output path (or remove it yourself)")
    raise OutputExistsError(
        f"{target} exists and is {'a symlink' if target.is_symlink() else 'a file'}, not an "
        f"output volseg wrote; --overwrite replaces only volseg's own outputs, choose another "
        f"output path (or remove it yourself)")


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return ``sha256:<hex>`` of a file, or of a folder's files (names and contents).

    Raises
    ------
    InputError
        If ``path`` does not exist or cannot be read.
    """
    root = Path(path)
    digest = hashlib.sha256()
    try:
        files = ([root] if root.is_file() else
                 sorted(p for p in root.rglob("*") if p.is_file()))
        if not files:
            raise FileNotFoundError(root)
        for file in files:
            if file != root:
                digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {root} ({exc.strerror or exc}); check the path") from None
    return f"sha256:{digest.hexdigest()}"


def input_identity(path: str | os.PathLike[str]) -> str:
    """Return what identifies an input: its location, and size and time for a plain file."""
    loc = location(path)
    if is_url(path):
        return loc
    try:
        st = os.stat(loc)
    except OSError:
        return loc
    if Path(loc).is_file():
        return f"{loc} ({st.st_size} bytes, modified {st.st_mtime_ns})"
    return loc


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def run_identity(
    operation: str,
    options: Mapping[str, Any],
    *,
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    model: str | os.PathLike[str] | None = None,
    exclude: Iterable[str] = EXECUTION_OPTIONS,
) -> dict[str, Any]:
    """Return the identity of a run: what must be equal for a resume to continue it.

    Parameters
    ----------
    operation
        E.g. ``"predict"``.
    options
        The operation's options as plain data (``Options.to_dict()``); the keys in
        ``exclude`` (execution only) are left out.
    inputs
        ``{role: path}`` of the inputs (``None`` values skipped).
    model
        A model file (or package folder): its SHA-256 goes in.

    Returns
    -------
    dict
        Flat, JSON-able: ``operation``, ``model``, ``input <role>`` and one entry per
        option.
    """
    skip = set(exclude)
    identity: dict[str, Any] = {"operation": operation}
    if model is not None:
        identity["model"] = file_digest(model)
    for role, path in (inputs or {}).items():
        if path is not None:
            identity[f"input {role}"] = input_identity(path)
    for key, value in sorted(options.items()):
        if key not in skip:
            identity[key] = value
    return dict(_plain(identity))


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    if text.startswith("sha256:"):
        text = text[:19]
    return text if len(text) <= 80 else text[:77] + "..."


def identity_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """Return ``"was started with X a, not b"`` for the first difference (``None``: equal)."""
    old, new = _plain(dict(old)), _plain(dict(new))
    for key in [*old, *(k for k in new if k not in old)]:
        if old.get(key) != new.get(key):
            if key not in old:
                return f"was started without {key} (now {_short(new[key])})"
            if key not in new:
                return f"was started with {key} {_short(old[key])} (now none)"
            return f"was started with {key} {_short(old[key])}, not {_short(new[key])}"
    return None


def check_free_space(path: str | os.PathLike[str], nbytes: float, *, what: str = "output"
                     ) -> None:
    """Refuse to write about ``nbytes`` under ``path`` when its file system has less free.

    URLs and paths whose file system cannot tell are not checked.

    Raises
    ------
    InputError
        If the free space of the file system holding ``path`` is smaller than ``nbytes``.
    """
    if is_url(path):
        return
    probe = Path(location(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if nbytes > free:
        raise InputError(
            f"the {what} {os.fspath(path)} needs about {_size(nbytes)} but its file system "
            f"has {_size(free)} free; free space, choose another location or make it smaller")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover

