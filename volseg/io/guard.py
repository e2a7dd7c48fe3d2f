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

The functions take strings, paths or the locations of :mod:`volseg.io.location`
(local paths or URLs); the free-space check only applies to local file systems.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from volseg.errors import InputError, OutputExistsError
from volseg.io.location import Location, PathLike, as_path, display, normalize, overlaps
from volseg.io.store import MARKER_DIR, identity_difference

if TYPE_CHECKING:
    from upath import UPath

__all__ = ["EXECUTION_OPTIONS", "check_free_space", "check_group_output",
           "check_output_location",
           "check_replaceable", "file_digest", "identity_difference", "input_identity",
           "run_identity", "written_by_volseg"]

#: Options that change how a run executes but not the values it writes: a resume may
#: change them.
EXECUTION_OPTIONS: frozenset[str] = frozenset({
    "device", "cpu_threads", "batch_size", "processes", "workers", "threads",
    "memory_budget_mib", "pyramid", "progress",
})


def _depth(path: Location) -> int:
    return len(str(normalize(path)).rstrip("/").split("/"))


def check_output_location(output: PathLike, inputs: Iterable[PathLike | None]) -> None:
    """Refuse an output that equals, contains or lies inside one of the inputs.

    Locations are compared by :func:`volseg.io.location.overlaps`: local paths
    resolved (symlinks followed), URLs by scheme, bucket and key, component by
    component.

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
    out = as_path(output)
    for source in inputs:
        if source is None:
            continue
        src = as_path(source)
        if type(out) is type(src) and overlaps(out, src):
            a, b = _depth(out), _depth(src)
            how = "is" if a == b else "lies inside" if a > b else "contains"
            raise InputError(f"output {display(output)} overlaps the input {display(source)} "
                             f"(it {how} it); writing there would destroy the input, choose "
                             f"another output path")


def check_group_output(output: PathLike) -> None:
    """Refuse a group output (an OME-Zarr folder) whose path is an existing file.

    Raises
    ------
    OutputExistsError
        Naming the file and the fix.
    """
    target = as_path(output)
    if isinstance(target, Path) and (target.is_file() or (target.is_symlink()
                                                          and not target.is_dir())):
        raise OutputExistsError(f"{display(output)} is a file, not an OME-Zarr folder; choose "
                                f"another output path (e.g. ending in .ome.zarr)")


def _json(path: Location) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _zarr_attrs(path: Location) -> dict[str, Any] | None:
    """Return the attributes of a Zarr node (``None``: not a Zarr node)."""
    try:
        if (path / "zarr.json").exists():
            data = _json(path / "zarr.json")
            attrs = data.get("attributes") if isinstance(data, dict) else None
            return dict(attrs) if isinstance(attrs, dict) else {}
        if (path / ".zgroup").exists() or (path / ".zarray").exists():
            data = _json(path / ".zattrs") if (path / ".zattrs").exists() else {}
            return dict(data) if isinstance(data, dict) else {}
    except OSError:
        return {}
    return None


def written_by_volseg(path: PathLike) -> bool:
    """Return whether ``path`` is a Zarr group or array volseg wrote.

    Recognised by the ``volseg`` record in its attributes or by the block writer's
    markers in it or in one of its arrays.
    """
    folder = as_path(path)
    attrs = _zarr_attrs(folder)
    if attrs is None:
        return False
    if "volseg" in attrs or (folder / MARKER_DIR).exists():
        return True
    try:
        return any((child / MARKER_DIR).exists() for child in folder.iterdir()
                   if child.is_dir())
    except OSError:
        return False


def check_replaceable(path: PathLike) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty folder or volseg's output.

    Raises
    ------
    OutputExistsError
        If ``path`` is a file (or a symlink), or a folder volseg did not write.
    """
    target = as_path(path)
    link = isinstance(target, Path) and target.is_symlink()
    if not (link or target.exists()):
        return
    if target.is_dir() and not link:
        if written_by_volseg(target):
            return
        try:
            empty = not any(target.iterdir())
        except OSError:
            empty = False
        if empty:
            return
        raise OutputExistsError(
            f"{display(path)} exists and was not written by volseg; --overwrite replaces only "
            f"volseg's own outputs, choose another output path (or remove it yourself)")
    raise OutputExistsError(
        f"{display(path)} exists and is {'a symlink' if link else 'a file'}, not an output "
        f"volseg wrote; --overwrite replaces only volseg's own outputs, choose another output "
        f"path (or remove it yourself)")


def file_digest(path: PathLike) -> str:
    """Return ``sha256:<hex>`` of a file, or of a folder's files (names and contents).

    Raises
    ------
    InputError
        If ``path`` does not exist or cannot be read.
    """
    root = as_path(path)
    digest = hashlib.sha256()
    try:
        files = ([root] if root.is_file() else
                 sorted(p for p in root.rglob("*") if p.is_file()))
        if not files:
            raise FileNotFoundError(root)
        for file in files:
            if file != root:
                digest.update(str(file)[len(str(root)):].lstrip("/").encode() + b"\0")
            with file.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {root} ({exc.strerror or exc}); check the path") from None
    return f"sha256:{digest.hexdigest()}"


def input_identity(path: PathLike) -> str:
    """Return what identifies an input: its location, and for a file its size and
    modification time (an object at a URL: its size and ETag or last-modified time)."""
    where = normalize(as_path(path))
    if not isinstance(where, Path):
        return _url_identity(where)
    try:
        st = where.stat()
    except OSError:
        return str(where)
    if where.is_file():
        return f"{where} ({st.st_size} bytes, modified {st.st_mtime_ns})"
    return str(where)


def _url_identity(where: UPath) -> str:
    """A URL's identity: the location, and size and version of an object (not a prefix)."""
    try:
        info = where.fs.info(where.path)
    except Exception:  # unreachable, a prefix the store will not describe: the location
        return str(where)
    if info.get("type") != "file":
        return str(where)
    version = next((str(info[k]) for k in ("ETag", "etag", "LastModified", "mtime")
                    if info.get(k)), "unknown")
    return f"{where} ({info.get('size')} bytes, version {version})"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def run_identity(
    operation: str,
    options: Mapping[str, Any],
    *,
    inputs: Mapping[str, PathLike | None] | None = None,
    model: PathLike | None = None,
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


def check_free_space(path: PathLike, nbytes: float, *, what: str = "output") -> None:
    """Refuse to write about ``nbytes`` under ``path`` when its file system has less free.

    URLs and paths whose file system cannot tell are not checked.

    Raises
    ------
    InputError
        If the free space of the file system holding ``path`` is smaller than ``nbytes``.
    """
    where = as_path(path)
    if not isinstance(where, Path):
        return
    probe = where.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if nbytes > free:
        raise InputError(
            f"the {what} {display(path)} holds up to {_size(nbytes)} (uncompressed) but its "
            f"file system has {_size(free)} free; free space, choose another location or "
            f"make it smaller")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


