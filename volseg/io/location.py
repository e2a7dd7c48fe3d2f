"""Where a volume lives: a local path or an fsspec URL (``s3://``, ``gs://``, ``https://``).

Every path a user gives volseg (a command's input or output, a workflow's ``input``,
``output`` or ``output_dir``) goes through :func:`as_path` once, at the edge:

* a plain path (or ``file://`` URL) becomes a :class:`pathlib.Path`;
* a URL becomes a :class:`upath.UPath` (pathlib's API over an fsspec file system:
  ``/``, ``name``, ``parent``, ``exists()``, ``read_text()``), carrying its
  ``storage_options``; credentials and endpoints otherwise come from each backend's
  own environment and configuration (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``,
  ``~/.aws/config``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...);
* a scheme fsspec does not know, or whose package is not installed, is a one-line
  :class:`~volseg.errors.InputError` naming the scheme and the package to install;
* a relative path that merely looks like a URL (``s3:/bucket/x``: what a shell or
  :class:`~pathlib.Path` makes of ``s3://bucket/x``) is refused, so that it is never
  created on disk as a folder ``./s3:``.

The rest of :mod:`volseg.io` works on either kind of path; zarr opens them through
:func:`zarr_store` (a path string, or an ``FsspecStore`` with the storage options).
``https://`` is read-only (:func:`check_writable`).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from volseg.errors import InputError

if TYPE_CHECKING:
    from upath import UPath

    Location: TypeAlias = Path | UPath
    PathLike: TypeAlias = str | os.PathLike[str] | Path | UPath
else:
    Location: TypeAlias = Any
    PathLike: TypeAlias = Any

__all__ = [
    "READ_ONLY",
    "Location",
    "PathLike",
    "as_path",
    "check_writable",
    "display",
    "is_url",
    "normalize",
    "overlaps",
    "relative",
    "remove_tree",
    "require_local",
    "scheme_of",
    "zarr_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_LOOKALIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):(/|$)")
READ_ONLY = frozenset({"http", "https"})
"""Schemes volseg reads but never writes."""

PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "http": "aiohttp",
            "https": "aiohttp", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}
"""The package to ``pip install`` for the common schemes."""

SUPPORTED = "local paths, s3://, gs://, https:// (read-only) and file:// URLs"


def scheme_of(path: PathLike) -> str | None:
    """Return the URL scheme of ``path`` (``"s3"``), or ``None`` for a local path."""
    if isinstance(path, Path):
        return None
    protocol = getattr(path, "protocol", None)
    if isinstance(protocol, str) and not isinstance(path, (str, bytes)):
        return protocol or None
    match = _SCHEME.match(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    return match.group(1).lower() if match else None


def is_url(path: PathLike) -> bool:
    """Return whether ``path`` is a URL (not a local path)."""
    scheme = scheme_of(path)
    return scheme is not None and scheme != "file"


def _check_lookalike(text: str) -> None:
    """Refuse a relative path whose first component is ``<scheme>:`` (``s3:/bucket``)."""
    if text.startswith(("./", "/", "~")):
        return
    match = _LOOKALIKE.match(text)
    if match is None:
        return
    scheme = match.group(1)
    rest = text[len(scheme) + 1:].lstrip("/")
    raise InputError(
        f"{text} looks like a URL with a slash missing ({scheme}://...); write "
        f"{scheme}://{rest}, or ./{text} for a local folder of that name")


def _check_backend(scheme: str, text: str) -> None:
    """Raise a one-line error when fsspec does not know ``scheme`` or lacks its package."""
    import fsspec
    from fsspec.registry import known_implementations, registry

    if scheme not in known_implementations and scheme not in registry:
        raise InputError(f"{text}: unknown URL scheme {scheme}://; volseg reads {SUPPORTED}")
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        package = PACKAGES.get(scheme) or str(
            known_implementations.get(scheme, {}).get("err", "its package"))
        extra = " (or pip install 'volseg[s3]')" if package == "s3fs" else ""
        raise InputError(f"{text}: {scheme}:// URLs need the {package} package, which is not "
                         f"installed; pip install {package}{extra}") from None


def as_path(path: PathLike, *,
            storage_options: Mapping[str, Any] | None = None) -> Location:
    """Return ``path`` as a :class:`~pathlib.Path` (local) or a :class:`~upath.UPath` (URL).

    Parameters
    ----------
    path
        A local path (``~`` expanded), a ``file://`` URL, or an fsspec URL such as
        ``s3://bucket/image.ome.zarr``; a path object already returned by this function
        is returned as it is (its storage options kept).
    storage_options
        Keyword arguments of the URL's file system (e.g. ``{"anon": True}`` or
        ``{"endpoint_url": ...}`` for S3), merged over those the path already has.

    Returns
    -------
    Path or UPath

    Raises
    ------
    InputError
        For an unknown scheme, a scheme whose package is not installed, or a relative
        path that looks like a URL with a slash missing (see the module notes).
    """
    if isinstance(path, Path):
        _check_lookalike(path.as_posix())
        return path
    if not isinstance(path, (str, os.PathLike)):  # a UPath
        if storage_options:
            from upath import UPath

            return cast("UPath", UPath(str(path), **{**path.storage_options, **storage_options}))
        return path
    text = os.fspath(path)
    scheme = scheme_of(text)
    if scheme is None:
        _check_lookalike(text)
        return Path(text).expanduser()
    if scheme == "file":
        return Path(text[len("file://"):]).expanduser()
    _check_backend(scheme, text)
    from upath import UPath

    return cast("UPath", UPath(text, **dict(storage_options or {})))


def normalize(path: Location) -> Location:
    """Return ``path`` absolute with ``..`` and ``.`` resolved (URLs without a request)."""
    if isinstance(path, Path):
        return path.resolve()
    scheme, rest = str(path).split("://", 1)
    from upath import UPath

    return cast("UPath", UPath(f"{scheme}://{posixpath.normpath(rest)}", **path.storage_options))


def relative(target: Location, start: Location) -> str | None:
    """Return the ``/``-separated path from ``start`` to ``target`` (``None``: impossible)."""
    if isinstance(target, Path) and isinstance(start, Path):
        try:
            return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
        except ValueError:
            return None
    if isinstance(target, Path) or isinstance(start, Path):
        return None
    (s1, r1), (s2, r2) = (str(normalize(p)).split("://", 1) for p in (target, start))
    if s1 != s2 or r1.split("/", 1)[0] != r2.split("/", 1)[0]:
        return None
    return posixpath.relpath(r1, r2)


def overlaps(a: Location, b: Location) -> bool:
    """Return whether ``a`` and ``b`` are the same place or one lies inside the other."""
    x, y = str(normalize(a)).rstrip("/"), str(normalize(b)).rstrip("/")
    return x == y or x.startswith(y + "/") or y.startswith(x + "/")


def require_local(path: Location, what: str) -> Path:
    """Return ``path`` if it is local; else raise a one-line error naming ``what``.

    For the files volseg reads and writes on local disk only (model files, training
    runs, preview PNGs, MRC/TIFF exports).
    """
    if isinstance(path, Path):
        return path
    raise InputError(f"{path}: {what} must be on local disk, not at a URL; use a local path "
                     f"(copy the file from or to the bucket)")


def check_writable(path: Location) -> None:
    """Raise an :class:`InputError` when ``path`` is on a read-only scheme (``https://``)."""
    scheme = scheme_of(path)
    if scheme in READ_ONLY:
        raise InputError(f"{display(path)}: {scheme}:// is read-only; write the output to a "
                         f"local path or a bucket (s3://, gs://)")


def display(path: PathLike) -> str:
    """Return ``path`` as the user wrote it (URLs with their scheme)."""
    return str(path)


def zarr_store(path: Location, *, read_only: bool = False) -> Any:
    """Return what zarr opens ``path`` with: the path string, or an ``FsspecStore``.

    An ``FsspecStore`` carries the URL's storage options, and pickles to cluster
    workers with them.
    """
    if isinstance(path, Path):
        return str(path)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(path), storage_options=dict(path.storage_options) or None,
                                read_only=read_only or scheme_of(path) in READ_ONLY)


def remove_tree(path: Location) -> None:
    """Delete a folder (or object prefix) and everything under it; a file alone too."""
    if isinstance(path, Path):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return
    check_writable(path)
    if path.exists():
        path.fs.rm(path.path, recursive=True)
