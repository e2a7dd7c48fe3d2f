"""Writing a dask array into a zarr array block by block, with resume.

Every zarr *chunk* gets a completion marker once the data covering it has been
written: an empty file ``<array dir>/.volseg_done/<i>_<j>_<k>`` named by the chunk's
grid index.  A dask block may cover several zarr chunks (it must never split one), so
after a block's data is in the store its chunks' markers are created, in that order:
a marker therefore never exists for data that is not on disk, and an interrupted run
leaves at worst a block whose data is written but not marked (it is recomputed).

Markers are per zarr chunk rather than per dask block so that a rerun with a
different dask chunking still finds what is done.  A rerun builds write tasks only
for blocks with at least one unmarked chunk, from ``array.to_delayed()``; computing
them together lets dask cull every upstream task that only fed finished blocks.

The marker directory starts with a dot, so zarr and OME-Zarr readers ignore it.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from volseg.progress import compute

MARKER_DIR = ".volseg_done"

Chunks = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class StoreReport:
    """What :func:`store_blocks` did.

    Attributes
    ----------
    total_blocks
        Number of dask blocks of the array.
    computed_blocks
        Blocks computed and written in this call.
    skipped_blocks
        Blocks already complete (all their chunks marked) and therefore skipped.
    """

    total_blocks: int
    computed_blocks: int
    skipped_blocks: int


def array_dir(target: zarr.Array) -> Path:
    """Return the directory of a zarr array in a local store.

    Raises
    ------
    ValueError
        If the array is not in a local (directory) store.
    """
    root = getattr(target.store, "root", None)
    if root is None:
        raise ValueError(
            f"store_blocks needs a zarr array in a local directory store, got {target.store!r}"
        )
    return Path(root) / target.path if target.path else Path(root)


def marker_dir(target: zarr.Array) -> Path:
    """Return the directory holding the completion markers of ``target``."""
    return array_dir(target) / MARKER_DIR


def marker_name(chunk_index: Sequence[int]) -> str:
    """Return the marker file name of a chunk grid index, e.g. ``3_0_12``."""
    return "_".join(str(int(i)) for i in chunk_index)


def completed_chunks(target: zarr.Array) -> set[str]:
    """Return the marker names of the chunks of ``target`` that are complete."""
    try:
        return set(os.listdir(marker_dir(target)))
    except FileNotFoundError:
        return set()


def is_complete(target: zarr.Array) -> bool:
    """Return whether every chunk of ``target`` is marked complete."""
    done = completed_chunks(target)
    if len(done) < target.nchunks:
        return False
    return all(marker_name(ix) in done for ix in np.ndindex(*_chunk_grid(target)))


def clear_markers(target: zarr.Array) -> None:
    """Forget which chunks of ``target`` are complete (the data itself is kept)."""
    shutil.rmtree(marker_dir(target), ignore_errors=True)


def _chunk_grid(target: zarr.Array) -> tuple[int, ...]:
    return tuple(-(-s // c) for s, c in zip(target.shape, target.chunks, strict=True))


def check_alignment(chunks: Chunks, shape: Sequence[int], target_chunks: Sequence[int]) -> None:
    """Check that dask ``chunks`` never split a zarr chunk of size ``target_chunks``.

    Every dask block boundary must be a multiple of the zarr chunk size along its axis
    (the end of the array excepted).

    Raises
    ------
    ValueError
        Naming the first axis and boundary that does not align.
    """
    if tuple(sum(c) for c in chunks) != tuple(shape):
        raise ValueError(f"array shape {tuple(sum(c) for c in chunks)} != target shape "
                         f"{tuple(shape)}")
    for axis, (sizes, step) in enumerate(zip(chunks, target_chunks, strict=True)):
        edges = np.cumsum(sizes)[:-1]
        bad = edges[edges % step != 0]
        if bad.size:
            raise ValueError(
                f"dask chunks {sizes} along axis {axis} split zarr chunks of size {step} "
                f"(boundary at {int(bad[0])}); rechunk the array to multiples of the "
                f"target chunks, e.g. array.rechunk(target.chunks)"
            )


def _block_slices(chunks: Chunks, index: Sequence[int]) -> tuple[slice, ...]:
    starts = [int(sum(c[:i])) for c, i in zip(chunks, index, strict=True)]
    return tuple(
        slice(s, s + c[i]) for s, c, i in zip(starts, chunks, index, strict=True)
    )


def _covered_chunks(region: Sequence[slice], target_chunks: Sequence[int]) -> list[str]:
    ranges = [
        range(r.start // c, -(-r.stop // c)) for r, c in zip(region, target_chunks, strict=True)
    ]
    return [marker_name(ix) for ix in itertools.product(*ranges)]


def _write_block(
    block: np.ndarray, directory: str, region: tuple[slice, ...], markers: list[str]
) -> int:
    """Write ``block`` into ``region`` of the zarr array in ``directory``, then mark it.

    Top-level and given only plain data so that it pickles to cluster workers; the
    array is re-opened by path in the worker.
    """
    target = zarr.open_array(store=directory, mode="r+")
    target[region] = np.asarray(block)
    mdir = Path(directory) / MARKER_DIR
    mdir.mkdir(exist_ok=True)
    for name in markers:
        (mdir / name).touch()
    return 1


def _iter_blocks(numblocks: Sequence[int]) -> Iterator[tuple[int, ...]]:
    return iter(np.ndindex(*numblocks))


def store_blocks(
    array: da.Array,
    target: zarr.Array,
    *,
    description: str,
    client: Any = None,
    overwrite: bool = False,
) -> StoreReport:
    """Compute ``array`` into ``target`` block by block, skipping blocks already done.

    Parameters
    ----------
    array
        The lazy values; same shape as ``target``.  Its chunks must align with the
        target's chunks: a block may span several zarr chunks but never split one.
    target
        A zarr array in a local directory store (re-opened by path on workers).
    description
        Label of the progress bar.
    client
        A ``distributed.Client`` to compute on, or ``None`` for the local scheduler.
    overwrite
        Forget existing completion markers and write every block.

    Returns
    -------
    StoreReport
        How many blocks there are, were computed now and were skipped.

    Raises
    ------
    ValueError
        If the shapes differ, the chunks do not align or the store is not local.
    """
    if tuple(array.shape) != tuple(target.shape):
        raise ValueError(f"array shape {array.shape} != target shape {target.shape}")
    check_alignment(array.chunks, target.shape, target.chunks)
    adir = array_dir(target)
    if overwrite:
        clear_markers(target)
    done = completed_chunks(target)
    blocks = array.to_delayed()
    writes = []
    total = 0
    for index in _iter_blocks(array.numblocks):
        total += 1
        region = _block_slices(array.chunks, index)
        markers = _covered_chunks(region, target.chunks)
        if all(m in done for m in markers):
            continue
        writes.append(
            dask.delayed(_write_block, pure=False)(
                blocks[index], str(adir), region, markers
            )
        )
    if writes:
        marker_dir(target).mkdir(exist_ok=True)
        compute(*writes, description=description, client=client)
    return StoreReport(total_blocks=total, computed_blocks=len(writes),
                       skipped_blocks=total - len(writes))

