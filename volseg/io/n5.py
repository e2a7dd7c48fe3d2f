"""A small read-only reader for N5 datasets.

zarr-python 3 has no N5 store (N5 was deprecated in zarr 2.18 and dropped in 3,
zarr-developers/zarr-python#2085), so volseg reads N5 itself.

An N5 dataset is a directory with ``attributes.json`` giving ``dimensions``,
``blockSize``, ``dataType`` and ``compression``; block ``(i0, i1, ...)`` (grid index
in N5 axis order) is the file ``<dataset>/<i0>/<i1>/...``.  A block file holds a
big-endian header (``uint16`` mode, ``uint16`` number of dimensions, ``uint32``
size per dimension, and for mode 1 a ``uint32`` element count) followed by the
compressed big-endian elements.  N5 lists axes fastest-first, so the NumPy view
of the dimensions and of every block is the reverse (``z, y, x``).  Edge blocks
store their actual (truncated) size; missing blocks read as zeros.

Specification: https://github.com/saalfeldlab/n5 (README, "File-system
specification").
"""

from __future__ import annotations

import bz2
import json
import lzma
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from volseg.errors import InputError

_DTYPES = {
    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
    "int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8",
    "float32": "f4", "float64": "f8",
}


def is_n5_dataset(path: Path) -> bool:
    """Return whether ``path`` is an N5 dataset directory (``attributes.json`` + dims)."""
    attrs = path / "attributes.json"
    if not attrs.is_file():
        return False
    try:
        return "dimensions" in json.loads(attrs.read_text())
    except (OSError, ValueError):
        return False


def is_n5_container(path: Path) -> bool:
    """Return whether ``path`` looks like an N5 container (``.n5`` or root ``n5`` key)."""
    if path.suffix.lower() == ".n5" and path.is_dir():
        return True
    try:
        return "n5" in json.loads((path / "attributes.json").read_text())
    except (OSError, ValueError):
        return False


def list_datasets(path: Path) -> list[str]:
    """Return the dataset paths (relative, ``/``-separated) inside an N5 container."""
    found = []
    for attrs in sorted(path.rglob("attributes.json")):
        if attrs.parent != path and is_n5_dataset(attrs.parent):
            found.append(attrs.parent.relative_to(path).as_posix())
    return found


class N5Dataset:
    """A lazily read N5 dataset with a NumPy-like ``shape``, ``dtype`` and slicing.

    Picklable (it holds only the path and the parsed attributes), so it can be
    wrapped with :func:`dask.array.from_array` and read on cluster workers.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            attrs = json.loads((Path(path) / "attributes.json").read_text())
            self.attrs: dict[str, Any] = attrs
            self.shape = tuple(int(n) for n in reversed(attrs["dimensions"]))
            self.block = tuple(int(n) for n in reversed(attrs["blockSize"]))
            self.stored = np.dtype(">" + _DTYPES[attrs["dataType"]])
            self.dtype = self.stored.newbyteorder("=")
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path} is not a valid N5 dataset ({exc}); check its "
                             f"attributes.json") from None
        self.compression = dict(attrs.get("compression") or {"type": attrs.get(
            "compressionType", "raw")})
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        """Read the region ``key`` (a tuple of step-1 slices) as native-endian array."""
        region = [s.indices(n) for s, n in zip(key, self.shape, strict=True)]
        out = np.zeros([stop - start for start, stop, _ in region], dtype=self.dtype)
        grids = [range(start // b, -(-stop // b)) if stop > start else range(0)
                 for (start, stop, _), b in zip(region, self.block, strict=True)]
        for index in np.ndindex(*(len(g) for g in grids)):
            grid = tuple(g[i] for g, i in zip(grids, index, strict=True))
            data = self.read_block(grid)
            if data is None:
                continue
            self._paste(out, data, grid, region)
        return out

    def _paste(self, out: np.ndarray, data: np.ndarray, grid: tuple[int, ...],
               region: list[tuple[int, int, int]]) -> None:
        src, dst = [], []
        for g, b, n, (start, stop, _) in zip(grid, self.block, data.shape, region, strict=True):
            lo, hi = max(g * b, start), min(g * b + n, stop)
            src.append(slice(lo - g * b, hi - g * b))
            dst.append(slice(lo - start, hi - start))
        out[tuple(dst)] = data[tuple(src)]

    def read_block(self, grid: tuple[int, ...]) -> np.ndarray | None:
        """Return block ``grid`` (numpy order) or ``None`` when its file is absent."""
        path = Path(self.path).joinpath(*(str(i) for i in reversed(grid)))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        mode, ndim = int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")
        dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
        offset = 4 + 4 * ndim + (4 if mode == 1 else 0)
        if mode not in (0, 1) or ndim != self.ndim:
            raise InputError(f"{path} is not a valid N5 block (mode {mode}, {ndim} dims); "
                             f"the dataset is corrupt, rewrite it")
        count = math.prod(int(d) for d in dims)
        payload = self._decompress(raw[offset:], path)
        try:
            data = np.frombuffer(payload, dtype=self.stored, count=count)
        except ValueError:
            raise InputError(f"{path} is truncated ({len(payload)} bytes for {count} "
                             f"elements); the dataset is corrupt, rewrite it") from None
        return data.reshape(tuple(int(d) for d in reversed(dims))).astype(self.dtype)

    def _decompress(self, data: bytes, path: Path) -> bytes:
        kind = self.compression.get("type", "raw")
        try:
            if kind == "raw":
                return data
            if kind == "gzip":
                wbits = zlib.MAX_WBITS if self.compression.get("useZlib") else 16 + zlib.MAX_WBITS
                return zlib.decompress(data, wbits)
            if kind == "bzip2":
                return bz2.decompress(data)
            if kind == "xz":
                return lzma.decompress(data)
            if kind in ("blosc", "zstd"):
                return _numcodecs_decompress(kind, data)
        except (OSError, ValueError, RuntimeError, zlib.error, lzma.LZMAError) as exc:
            raise InputError(f"{path} cannot be decompressed ({kind}: {exc}); the dataset "
                             f"is corrupt, rewrite it") from None
        raise InputError(f"{self.path} uses N5 compression {kind!r}, which volseg cannot "
                         f"read; recompress it as raw, gzip, bzip2, xz, zstd or blosc")


def _numcodecs_decompress(kind: str, data: bytes) -> bytes:
    import numcodecs

    codec: Any = numcodecs.Blosc() if kind == "blosc" else numcodecs.Zstd()
    return bytes(codec.decode(data))
