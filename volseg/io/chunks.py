"""Reading Zarr inputs chunk by chunk, with missing and corrupt chunks named.

zarr reads a chunk that is not in the store as the array's fill value: that is how
zarr leaves out chunks equal to the fill value, but also what a deleted or never
copied chunk looks like.  An input read by volseg therefore goes through
:class:`CheckedZarr`, which, before reading a region, looks up every storage chunk
(shard, when sharded) the region covers and refuses a missing one with a one-line
:class:`~volseg.errors.InputError` naming the chunk key — unless

* the array was written by volseg's block writer and the marker of the chunk's block
  lists it as left out because it equals the fill value (:mod:`volseg.io.store`; a
  marker of an older volseg, which did not list them, is trusted); or
* missing chunks are allowed (``--allow-missing-chunks``; :func:`allow_missing_chunks`),
  when they read as the fill value, as zarr does.

A chunk whose bytes cannot be decoded (a failing codec or checksum) is an
:class:`~volseg.errors.InputError` naming the chunk and the array, instead of the
codec's bare message.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from volseg.errors import InputError

ZArray = Any  # zarr.Array (generic in zarr 3's stubs)

__all__ = ["ALLOW_MISSING_ENV", "CheckedZarr", "allow_missing_chunks", "missing_allowed"]

ALLOW_MISSING_ENV = "VOLSEG_ALLOW_MISSING_CHUNKS"
"""Environment variable that allows missing input chunks (``1``); set by
``--allow-missing-chunks`` for the command's process and its workers."""


def missing_allowed() -> bool:
    """Return whether missing input chunks read as the fill value (instead of an error)."""
    return os.environ.get(ALLOW_MISSING_ENV, "") not in ("", "0")


@contextmanager
def allow_missing_chunks(allow: bool = True) -> Iterator[None]:
    """Allow (or refuse) missing input chunks for inputs opened inside the block."""
    before = os.environ.get(ALLOW_MISSING_ENV)
    os.environ[ALLOW_MISSING_ENV] = "1" if allow else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_MISSING_ENV, None)
        else:
            os.environ[ALLOW_MISSING_ENV] = before


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


@functools.lru_cache(maxsize=64)
def _open(array: CheckedZarr) -> ZArray:
    return zarr.open_array(store=array.store, path=array.path, mode="r")


@functools.lru_cache(maxsize=32)
def _markers(array: CheckedZarr) -> list[tuple[tuple[tuple[int, int], ...], str]] | None:
    """The block markers of a volseg-written array (``None``: not written by volseg)."""
    from volseg.io.store import is_claimed, markers, parse_marker

    target = array.open()
    if not is_claimed(target):
        return None
    found = []
    for name in markers(target).names():
        ranges = parse_marker(name)
        if ranges is not None and len(ranges) == array.ndim:
            found.append((ranges, name))
    return found


@functools.lru_cache(maxsize=4096)
def _left_out(array: CheckedZarr, name: str) -> frozenset[tuple[int, ...]] | None:
    """The chunks block marker ``name`` says were left out (``None``: not recorded)."""
    from volseg.io.store import markers

    content = markers(array.open()).content(name)
    if not content:
        return None  # an older volseg's empty marker: it did not record them
    try:
        return frozenset(tuple(int(i) for i in ix) for ix in json.loads(content))
    except (ValueError, TypeError):
        return frozenset()


def _filled(array: CheckedZarr, index: tuple[int, ...]) -> bool:
    """Whether volseg's block writer left chunk ``index`` out as equal to the fill value."""
    found = _markers(array)
    if not found:
        return False
    for ranges, name in found:
        if all(a <= i < b for (a, b), i in zip(ranges, index, strict=True)):
            left = _left_out(array, name)
            if left is None or index in left:
                return True
    return False


@dataclass(frozen=True, eq=True)
class CheckedZarr:
    """An array-like over a zarr array for ``da.from_array`` (picklable to workers).

    Attributes
    ----------
    store, path
        The array's store and path in it.
    label
        How messages name the array (its location).
    allow_missing
        Read missing chunks as the fill value.
    shape, dtype
        Of the array.
    layout
        Its chunks and shards: part of the key of the per-process caches of the opened
        array and its markers, so that an array rewritten with other chunks (an
        ``--overwrite`` with another block size) is opened afresh.
    """

    store: Any = field(compare=False, hash=False)
    path: str
    label: str
    allow_missing: bool
    shape: tuple[int, ...]
    dtype: np.dtype = field(compare=False, hash=False)
    layout: tuple[tuple[int, ...], ...] = ()

    @classmethod
    def of(cls, array: ZArray, label: str, *,
           allow_missing: bool | None = None) -> CheckedZarr:
        """Wrap ``array`` (named ``label``); ``allow_missing`` default: :func:`missing_allowed`."""
        allow = missing_allowed() if allow_missing is None else allow_missing
        shards = getattr(array, "shards", None)
        layout = (tuple(int(c) for c in array.chunks),
                  tuple(int(c) for c in shards) if shards else ())
        return cls(array.store, array.path, label, allow, tuple(array.shape),
                   np.dtype(array.dtype), layout)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def open(self) -> ZArray:
        """Open the zarr array (read-only; once per process)."""
        return _open(self)

    def _unit(self, array: ZArray) -> tuple[int, ...]:
        return tuple(int(c) for c in (getattr(array, "shards", None) or array.chunks))

    def _missing(self, array: ZArray, region: tuple[slice, ...]) -> str | None:
        """Return the key of the first storage chunk of ``region`` missing from the store."""
        from zarr.core.sync import sync

        from volseg.io.store import chunk_ranges, expand_ranges

        unit = self._unit(array)
        prefix = f"{self.path}/" if self.path else ""
        for index in expand_ranges(chunk_ranges(region, unit)):
            key = prefix + str(array.metadata.encode_chunk_key(index))
            if sync(self.store.exists(key)) or _filled(self, tuple(int(i) for i in index)):
                continue
            return key
        return None

    def __getitem__(self, key: Any) -> np.ndarray:
        array = self.open()
        region = tuple(
            slice(*k.indices(n)[:2]) if isinstance(k, slice) else slice(int(k), int(k) + 1)
            for k, n in zip(key if isinstance(key, tuple) else (key,), self.shape,
                            strict=False))
        region = region + tuple(slice(0, n) for n in self.shape[len(region):])
        if not self.allow_missing and all(r.stop > r.start for r in region):
            missing = self._missing(array, region)
            if missing is not None:
                raise InputError(
                    f"{self.label}: chunk {missing} is missing (deleted, never copied, or "
                    f"left out by its writer as equal to the fill value); re-copy or "
                    f"re-create the input, or pass --allow-missing-chunks to read missing "
                    f"chunks as the fill value")
        try:
            return np.asarray(array[key])
        except (InputError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise InputError(
                f"{self.label}: chunk {self._culprit(array, region)} cannot be decoded "
                f"({_first_line(exc)}); the input is corrupt, re-copy or re-create it"
            ) from None

    def _culprit(self, array: ZArray, region: tuple[slice, ...]) -> str:
        """Return the key of the first storage chunk of ``region`` that fails to read."""
        from volseg.io.store import chunk_ranges, expand_ranges

        unit = self._unit(array)
        prefix = f"{self.path}/" if self.path else ""
        for index in expand_ranges(chunk_ranges(region, unit)):
            box = tuple(slice(i * u, min((i + 1) * u, n))
                        for i, u, n in zip(index, unit, self.shape, strict=True))
            try:
                array[box]
            except Exception:
                return prefix + str(array.metadata.encode_chunk_key(index))
        return "[" + ", ".join(f"{r.start}:{r.stop}" for r in region) + "]"
