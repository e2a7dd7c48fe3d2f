"""Storage layout of OME-Zarr arrays: chunks, shards and the dask blocks that write them.

NGFF 0.5 arrays are sharded: small inner chunks (default 64³; 1 × 256 × 256 for a
single section) packed into shards that are exactly the blocks one write task
produces (:func:`block_layout` for blockwise outputs, :func:`image_layout` for
whole-array writes).  NGFF 0.4 arrays have chunks only, and blocks of whole chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from volseg.errors import InputError
from volseg.io.multiscales import check_ngff
from volseg.ngff import Ngff

DEFAULT_CHUNK_3D = 64
DEFAULT_CHUNK_2D = 256
READ_BLOCK_BYTES = 64 * 2**20
"""Target size of the dask blocks that feed the writer (bounded memory per task)."""
SHARD_BYTES = 16 * 2**20
"""Target size of the shards of whole-array writes (0.5): one write task each."""
PYRAMID_READ_BYTES = 16 * 2**20
"""What an unsharded (0.4) pyramid task reads of the level below (64 MiB tasks held
2-3x their size in reduction temporaries: 1.7 GiB peak on 2 threads)."""


def default_axes(ndim: int) -> tuple[str, ...]:
    """Return the default axes for an array of ``ndim`` dimensions (3: zyx, 4: czyx)."""
    if ndim == 3:
        return ("z", "y", "x")
    if ndim == 4:
        return ("c", "z", "y", "x")
    raise ValueError(f"volumes are 3-D (z, y, x) or 4-D (c, z, y, x), got {ndim} dimensions")


def default_chunks(shape: Sequence[int], axes: Sequence[str]) -> tuple[int, ...]:
    """Return the default chunk shape: 64³ (1 × 256² for one section), ``c`` whole."""
    sizes = dict(zip(axes, shape, strict=True))
    flat = sizes.get("z", 1) == 1
    chunks = []
    for name, n in zip(axes, shape, strict=True):
        if name in ("c", "t"):
            chunks.append(n if name == "c" else 1)
        elif name == "z" and flat:
            chunks.append(1)
        else:
            chunks.append(min(n, DEFAULT_CHUNK_2D if flat else DEFAULT_CHUNK_3D))
    return tuple(max(1, c) for c in chunks)


def spatial_chunks(shape: Sequence[int], axes: Sequence[str],
                   chunks: Sequence[int] | None) -> tuple[int, ...]:
    """Return full chunks from ``z, y, x`` chunks (``None``: defaults); ``c`` whole."""
    if chunks is None:
        return default_chunks(shape, axes)
    spatial = [int(c) for c in chunks]
    if len(spatial) != 3 or min(spatial) < 1:
        raise InputError(f"chunks must be three positive integers (z y x), got {tuple(chunks)}")
    lead = [int(n) for n in shape[:len(shape) - 3]]
    return tuple(min(c, n) for c, n in zip([*lead, *spatial], shape, strict=True))


def nearest_divisor(n: int, target: int) -> int:
    """Return the divisor of ``n`` closest to ``target`` by ratio (ties: the smaller).

    >>> nearest_divisor(192, 64), nearest_divisor(96, 64), nearest_divisor(97, 64)
    (64, 48, 97)
    """
    n, target = max(1, int(n)), max(1, int(target))
    divisors = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    divisors += [n // d for d in divisors]
    return min(sorted(set(divisors)), key=lambda d: abs(math.log(d / target)))


@dataclass(frozen=True)
class Layout:
    """How an array is stored: chunks, shards and the dask blocks that write it.

    Attributes
    ----------
    chunks
        Zarr chunks (0.4) or the inner chunks of each shard (0.5).
    shards
        Shard shape (0.5), ``None`` for unsharded arrays.
    blocks
        Dask block shape that feeds the writer: whole storage chunks (shards).
    """

    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    blocks: tuple[int, ...]


def block_layout(
    shape: Sequence[int], block: Sequence[int], axes: Sequence[str], *, ngff: Ngff,
    chunks: Sequence[int] | None = None,
) -> Layout:
    """Return the layout of an output written in blocks of ``block`` (all axes).

    0.5: one shard per block, inner chunks the divisors of the block nearest to
    ``chunks`` (``z, y, x``; default :func:`default_chunks`).  0.4: those chunks.

    >>> block_layout((7, 100, 500, 500), (7, 64, 192, 192), "czyx", ngff="0.5")
    Layout(chunks=(7, 64, 64, 64), shards=(7, 64, 192, 192), blocks=(7, 64, 192, 192))
    """
    check_ngff(ngff)
    full = tuple(max(1, min(int(b), int(n))) for b, n in zip(block, shape, strict=True))
    want = spatial_chunks(shape, axes, chunks)
    inner = tuple(nearest_divisor(b, min(w, b)) for b, w in zip(full, want, strict=True))
    return Layout(inner, full if ngff == "0.5" else None, full)


def image_layout(
    shape: Sequence[int], axes: Sequence[str], itemsize: int, *, ngff: Ngff,
    chunks: Sequence[int] | None = None, budget: int = READ_BLOCK_BYTES,
) -> Layout:
    """Return the layout of a whole-array write (conversion, phantom).

    Chunks as given (``z, y, x``; default :func:`default_chunks`); the writer's blocks
    are :func:`writer_chunks` slabs of about ``budget`` bytes (0.4), or of about
    :data:`SHARD_BYTES` in 0.5, where they are the shards (rounded up to whole
    chunks).
    """
    check_ngff(ngff)
    inner = spatial_chunks(shape, axes, chunks)
    if ngff == "0.4":
        return Layout(inner, None, writer_chunks(shape, inner, itemsize, budget))
    blocks = writer_chunks(shape, inner, itemsize, min(budget, SHARD_BYTES))
    shards = tuple(-(-b // c) * c for b, c in zip(blocks, inner, strict=True))
    return Layout(inner, shards, shards)


def writer_chunks(
    shape: Sequence[int], chunks: Sequence[int], itemsize: int,
    budget: int = READ_BLOCK_BYTES,
) -> tuple[int, ...]:
    """Return dask block sizes aligned to ``chunks`` for feeding a writer.

    Blocks are one chunk deep along the first axes and grow along the last axes
    (whole multiples of the chunk) up to ``budget`` bytes: a slab of ``chunk-depth``
    sections read in as few pieces as the budget allows.
    """
    block = list(chunks)
    for axis in range(len(shape) - 1, -1, -1):
        per_unit = itemsize * math.prod(block) // block[axis]
        fit = max(1, budget // max(1, per_unit) // chunks[axis]) * chunks[axis]
        block[axis] = min(shape[axis], max(chunks[axis], fit))
        if block[axis] < shape[axis]:
            break
    return tuple(block)


def level_layout(previous: Layout, shape: Sequence[int], factors: Sequence[int],
                 itemsize: int, budget: int = PYRAMID_READ_BYTES) -> Layout:
    """Layout of the next pyramid level, whose tasks read about one block of ``previous``.

    Chunks are those of the level below (clipped to ``shape``).  Sharded (0.5): each
    shard covers the voxels of one shard of the level below (its shape divided by the
    reduction factors, at least one chunk, whole chunks), so a task reads one or two
    shards of the level below (:data:`SHARD_BYTES` for conversions, a block for
    blockwise outputs).  Unsharded (0.4): blocks of whole chunks reading about
    ``budget`` bytes (:data:`PYRAMID_READ_BYTES`).

    >>> base = Layout((64, 64, 64), (64, 256, 256), (64, 256, 256))
    >>> level_layout(base, (50, 512, 512), (2, 2, 2), 1)
    Layout(chunks=(50, 64, 64), shards=(50, 128, 128), blocks=(50, 128, 128))
    """
    chunks = tuple(min(c, n) for c, n in zip(previous.chunks, shape, strict=True))
    if previous.shards is None:
        cell = math.prod(int(f) for f in factors)
        return Layout(chunks, None, writer_chunks(shape, chunks, itemsize, budget // cell))
    shards = tuple(
        min(-(-max(c, -(-s // f)) // c) * c, -(-n // c) * c)
        for s, f, n, c in zip(previous.shards, factors, shape, chunks, strict=True))
    return Layout(chunks, shards, shards)
