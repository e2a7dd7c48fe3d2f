"""Streaming execution of blockwise write tasks on the local scheduler, row by row.

Overlap-add makes every output block depend on the emissions of its lower
neighbours.  Handed the whole graph at once, Dask's static ordering may run
emissions far ahead of the merges that consume them, keeping many partial sums in
memory.  :func:`compute_in_rows` runs the write tasks one *row* of blocks (fixed
``z, y`` block index, all ``x``) at a time, in raster order, with the threaded
scheduler inside each row, and carries over only the *pieces* that later rows
need (the overhangs of this row's emissions into the next row and the next
slab).  Each emission is still computed exactly once, and memory holds one row's
work plus the overhangs of one cross-section: ``(C + 1) (P - s)`` values per voxel
of a ``y x`` plane with blocks on the patch grid (see
:func:`volseg.inference.default_block_size`).

Inputs are re-read where neighbouring rows' reads overlap (the patches' overhang),
which costs only I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
from dask.core import get_dependencies

PIECE_PREFIX = "volseg-piece-"
EMIT_PREFIX = "volseg-emit-"


def _name(key: Any) -> str:
    return str(key[0]) if isinstance(key, tuple) and key else str(key)


def _cull(dsk: dict[Any, Any], keys: Sequence[Any]) -> dict[Any, Any]:
    """Return the sub-graph that ``keys`` need (a plain walk; O(needed tasks))."""
    out: dict[Any, Any] = {}
    stack = list(keys)
    while stack:
        key = stack.pop()
        if key in out:
            continue
        out[key] = dsk[key]
        stack.extend(d for d in get_dependencies(dsk, key) if d not in out)
    return out


def compute_in_rows(
    writes: Sequence[Any], indices: Sequence[tuple[int, ...]], *, num_workers: int | None = None
) -> int:
    """Compute delayed write tasks row by row, carrying overlap-add pieces between rows.

    Parameters
    ----------
    writes
        ``dask.delayed`` write tasks, one per output block.
    indices
        The block index of each write (same length; any order).
    num_workers
        Threads of the local scheduler inside a row (default: dask's).

    Returns
    -------
    int
        Number of rows computed.

    Notes
    -----
    A piece key is ``(volseg-piece-<token>, *src, *dst)``: the part of block
    ``src``'s emission falling into output block ``dst``.  When the row computing an
    emission does not contain ``dst`` and ``dst`` is still to be written, the piece is
    computed in that row too and kept as data in the graph until ``dst``'s row.
    """
    from dask.base import collections_to_expr

    if not writes:
        return 0
    # no optimisation: fusing a piece into its merge would hide it from the carrying
    graph = collections_to_expr(list(writes), optimize_graph=False).__dask_graph__()
    dsk: dict[Any, Any] = dict(graph)
    ndim = len(indices[0])
    todo = {tuple(i): w.key for i, w in zip(indices, writes, strict=True)}
    # pieces by the emission they come from
    by_emission: dict[Any, list[tuple[Any, tuple[int, ...]]]] = {}
    for key in dsk:
        if _name(key).startswith(PIECE_PREFIX) and isinstance(key, tuple):
            dst = tuple(int(v) for v in key[1 + ndim:])
            for dep in get_dependencies(dsk, key):
                by_emission.setdefault(dep, []).append((key, dst))
    rows: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for idx in sorted(todo):
        rows.setdefault(idx[:-1], []).append(idx)
    carried: dict[tuple[int, ...], list[Any]] = {}
    for row, blocks in rows.items():
        keys: list[Any] = [todo[b] for b in blocks]
        sub = _cull(dsk, keys)
        extra = []
        for key in sub:
            if not _name(key).startswith(EMIT_PREFIX):
                continue
            for pkey, dst in by_emission.get(key, ()):
                if dst[:-1] != row and dst in todo and pkey not in sub:
                    extra.append(pkey)
                    carried.setdefault(dst, []).append(pkey)
        if extra:
            sub.update({k: dsk[k] for k in extra})
        results = dask.threaded.get(sub, [*keys, *extra], num_workers=num_workers)
        for pkey, value in zip(extra, results[len(keys):], strict=True):
            dsk[pkey] = value  # keep the data, forget how it was made
        for b in blocks:  # pieces consumed by this row can go
            for pkey in carried.pop(b, ()):
                dsk.pop(pkey, None)
    return len(rows)
