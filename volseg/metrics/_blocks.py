"""Dask plumbing shared by the metric accumulators: aligned blocks and tree reductions.

Every accumulator in :mod:`volseg.metrics` follows the same pattern: a pure numpy
function turns one block (the same region of each input) into a small summary
(a confusion matrix, a histogram, a sparse contingency table), and an associative,
commutative ``combine`` merges summaries.  Because the summaries are *counts*, the
merged result is exactly the summary of the whole volume, whatever the chunking
or the order in which blocks finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

from volseg.errors import InputError

T = TypeVar("T")

#: How many partial results one combine task merges (the fan-in of the tree).
SPLIT_EVERY = 16


def check_same_shape(shapes: Sequence[tuple[int, ...]], names: Sequence[str]) -> tuple[int, ...]:
    """Raise :class:`~volseg.errors.InputError` unless all ``shapes`` are equal.

    Parameters
    ----------
    shapes
        The shapes to compare (spatial shapes, ``z, y, x``).
    names
        What each shape belongs to, for the message (e.g. ``"prediction"``).

    Returns
    -------
    tuple of int
        The common shape.
    """
    first = tuple(int(s) for s in shapes[0])
    for shape, name in zip(shapes[1:], names[1:], strict=True):
        if tuple(int(s) for s in shape) != first:
            raise InputError(
                f"{name} has shape {tuple(shape)} but {names[0]} has shape {first}; "
                "evaluate volumes of the same shape (same level, same crop)"
            )
    return first


def aligned_blocks(
    arrays: Sequence[da.Array | None], *, channel_first: Sequence[bool] | None = None
) -> list[tuple[Delayed | None, ...]]:
    """Return per-block delayed numpy arrays of several volumes over one common grid.

    The first array defines the block grid; the others are rechunked to it (a no-op
    when, as usual, they were written with the same chunks).  Arrays flagged in
    ``channel_first`` have a leading channel axis that is kept whole in every block.

    Parameters
    ----------
    arrays
        Dask arrays of the same spatial shape; ``None`` entries are passed through.
    channel_first
        For each array, whether it has a leading channel axis (``c, z, y, x``).

    Returns
    -------
    list of tuple
        One tuple per block: the blocks of each array (``None`` where the array is).
    """
    if channel_first is None:
        channel_first = [False] * len(arrays)
    first = arrays[0]
    assert first is not None
    grid = first.chunks
    per_array: list[list[Delayed] | None] = []
    for arr, has_c in zip(arrays, channel_first, strict=True):
        if arr is None:
            per_array.append(None)
            continue
        chunks = ((arr.shape[0],), *grid) if has_c else grid
        if arr.chunks != chunks:
            arr = arr.rechunk(chunks)
        blocks = arr.to_delayed(optimize_graph=False).ravel().tolist()
        per_array.append(blocks)
    n_blocks = int(np.prod(first.numblocks))
    return [tuple(None if b is None else b[i] for b in per_array) for i in range(n_blocks)]


def tree_reduce(
    parts: Sequence[Delayed],
    combine: Callable[[list[Any]], Any],
    *,
    split_every: int = SPLIT_EVERY,
) -> Delayed:
    """Merge delayed partial results with ``combine`` in a tree of fan-in ``split_every``.

    Parameters
    ----------
    parts
        Delayed partial results (at least one).
    combine
        Merges a list of partial results into one; must be associative and
        commutative so that the tree shape does not matter.
    split_every
        Fan-in of each merge task.
    Returns
    -------
    Delayed
        The merged result.
    """
    if not parts:
        raise ValueError("tree_reduce needs at least one part")
    merge = dask.delayed(combine, pure=True)
    level = list(parts)
    while True:
        level = [merge(level[i : i + split_every]) for i in range(0, len(level), split_every)]
        if len(level) == 1:
            return level[0]


def map_reduce(
    block_fn: Callable[..., T],
    blocks: Sequence[tuple[Delayed | None, ...]],
    combine: Callable[[list[T]], T],
    *,
    split_every: int = SPLIT_EVERY,
    **kwargs: Any,
) -> Delayed:
    """Apply ``block_fn(*block, **kwargs)`` to every block and merge with ``combine``.

    Parameters
    ----------
    block_fn
        Numpy function from the blocks of one region to a partial result.
    blocks
        Output of :func:`aligned_blocks`.
    combine
        Associative, commutative merge of partial results.
    split_every
        Fan-in of the reduction tree.
    **kwargs
        Constant keyword arguments of ``block_fn``.

    Returns
    -------
    Delayed
        The result for the whole volume.
    """
    fn = dask.delayed(block_fn, pure=True)
    parts = [fn(*block, **kwargs) for block in blocks]
    return tree_reduce(parts, combine, split_every=split_every)


def as_dask(array: Any, *, name: str) -> da.Array:
    """Return ``array`` as a dask array (numpy arrays become one block)."""
    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=array.shape)
    raise InputError(f"{name} must be a dask or numpy array, got {type(array).__name__}")
