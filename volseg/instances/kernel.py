"""Connected components on one numpy block, block statistics and cross-face equivalences."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from volseg.errors import ConfigError, InputError

__all__ = [
    "BlockStats",
    "block_stats",
    "class_mask",
    "label_block",
    "neighbour_offsets",
    "plane_pairs",
    "unique_pairs",
]

CONNECTIVITIES = (6, 18, 26)


def neighbour_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """Return the 3-D neighbour offsets of a connectivity (all of them, both signs).

    Parameters
    ----------
    connectivity
        6: the faces (one non-zero component), 18: faces and edges (≤ 2 non-zero
        components), 26: faces, edges and corners.

    Returns
    -------
    list of tuple
        ``(dz, dy, dx)`` offsets, 6, 18 or 26 of them.

    Raises
    ------
    ConfigError
        For any other connectivity.
    """
    if connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    max_nonzero = {6: 1, 18: 2, 26: 3}[connectivity]
    return [
        (dz, dy, dx)
        for dz, dy, dx in itertools.product((-1, 0, 1), repeat=3)
        if 0 < abs(dz) + abs(dy) + abs(dx) <= max_nonzero
    ]


def class_mask(
    block: npt.NDArray[Any], classes: Sequence[int]
) -> npt.NDArray[np.uint16]:
    """Return ``class + 1`` where the block holds one of ``classes``, else 0.

    Parameters
    ----------
    block
        Integer semantic labels.
    classes
        Class ids to keep (0..65534).

    Returns
    -------
    numpy.ndarray
        uint16 mask of the block's shape. Shifting by one keeps class 0 selectable
        while 0 stays "background" for cc3d; different classes keep different
        values, so cc3d never joins them.
    """
    if not np.issubdtype(block.dtype, np.integer):
        raise InputError(f"semantic labels must be integers, got {block.dtype}")
    wanted = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
    if block.dtype.itemsize <= 2:
        # a lookup table over every possible value: one gather, no sorting
        info = np.iinfo(block.dtype)
        table = np.zeros(int(info.max) - int(info.min) + 1, dtype=np.uint16)
        inside = wanted[(wanted >= info.min) & (wanted <= info.max)]
        table[inside - int(info.min)] = (inside + 1).astype(np.uint16)
        index = block.astype(np.int64) - int(info.min) if info.min else block
        return table[index]
    keep = np.isin(block, wanted)
    out = np.zeros(block.shape, dtype=np.uint16)
    out[keep] = block[keep].astype(np.uint16) + 1
    return out


def label_block(
    block: npt.NDArray[Any], *, classes: Sequence[int], connectivity: int
) -> tuple[npt.NDArray[np.uint32], int]:
    """Label the connected components of ``classes`` in one block.

    Parameters
    ----------
    block
        Integer semantic labels ``(Z, Y, X)``.
    classes
        Class ids whose components are labelled.
    connectivity
        6, 18 or 26.

    Returns
    -------
    labels : numpy.ndarray
        Local ids ``1..n`` (uint32, 0 = background, numbered in scan order).
    n : int
        The number of components. Components never join voxels of different
        classes (cc3d on the multi-valued class mask).
    """
    import cc3d

    if connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    mask = class_mask(block, classes)
    labels, n = cc3d.connected_components(
        mask, connectivity=connectivity, return_N=True, out_dtype=np.uint32  # type: ignore[call-overload]
    )
    return labels.astype(np.uint32, copy=False), int(n)


@dataclass(frozen=True)
class BlockStats:
    """Per-component sums of one block (index ``i`` is local id ``i + 1``).

    All fields are exact integers so that sums over blocks are exact.
    """

    n: int
    classes: npt.NDArray[np.int64]  # (n,)
    counts: npt.NDArray[np.int64]  # (n,)
    bbox_min: npt.NDArray[np.int64]  # (n, 3) global, inclusive
    bbox_max: npt.NDArray[np.int64]  # (n, 3) global, inclusive
    coord_sums: npt.NDArray[np.int64]  # (n, 3) sum of global voxel indices


def block_stats(
    labels: npt.NDArray[Any],
    n: int,
    block: npt.NDArray[Any],
    *,
    origin: Sequence[int],
) -> BlockStats:
    """Return the exact per-component statistics of a labelled block.

    Parameters
    ----------
    labels
        Local labels ``1..n`` from :func:`label_block`.
    n
        Number of components.
    block
        The semantic block the labels were made from (gives each component's class).
    origin
        Global index of the block's first voxel.
    """
    import cc3d

    org = np.asarray(origin, dtype=np.int64)
    if n == 0:
        empty = np.zeros((0, 3), dtype=np.int64)
        return BlockStats(0, np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, empty)
    stats = cc3d.statistics(labels, no_slice_conversion=True)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)[1 : n + 1]
    boxes = np.asarray(stats["bounding_boxes"], dtype=np.int64)[1 : n + 1]
    bmin = boxes[:, 0::2] + org
    bmax = boxes[:, 1::2] + org
    # cc3d returns centroids = sum / count in float64; sums of block indices are far
    # below 2**51, so rounding centroid * count recovers the exact integer sum.
    centroids = np.asarray(stats["centroids"], dtype=np.float64)[1 : n + 1]
    sums = np.rint(centroids * counts[:, None]).astype(np.int64) + counts[:, None] * org
    # components are class-pure, so the mean class over a component is its class
    # (a sum of k equal integers divided by k is exact in float64)
    class_sums = np.bincount(labels.ravel(), weights=block.ravel(), minlength=n + 1)[1 : n + 1]
    classes = np.rint(class_sums / counts).astype(np.int64)
    return BlockStats(n, classes, counts, bmin, bmax, sums)


def plane_pairs(
    ids: npt.NDArray[Any],
    cls: npt.NDArray[Any],
    *,
    axis: int,
    low: int,
    connectivity: int,
) -> npt.NDArray[np.uint64]:
    """Equivalent id pairs between planes ``low`` and ``low + 1`` along ``axis``.

    A voxel ``p`` in plane ``low`` and ``q = p + d`` in plane ``low + 1`` (``d`` any
    offset of the connectivity with ``d[axis] = +1``, so edge and corner
    neighbours are included for 18/26) are equivalent when both are labelled,
    have the same class and carry different ids.

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` uint64 unique pairs ``(min, max)``.
    """
    a = np.moveaxis(ids, axis, 0)
    c = np.moveaxis(cls, axis, 0)
    p_ids, q_ids = a[low], a[low + 1]
    p_cls, q_cls = c[low], c[low + 1]
    ny, nx = p_ids.shape
    found = []
    for d in neighbour_offsets(connectivity):
        d_ax = d[axis]
        if d_ax != 1:
            continue
        dy, dx = (d[i] for i in range(3) if i != axis)
        # p at (y, x) in plane low; q at (y + dy, x + dx) in plane low + 1
        ps = (slice(max(0, -dy), ny - max(0, dy)), slice(max(0, -dx), nx - max(0, dx)))
        qs = (slice(max(0, dy), ny - max(0, -dy)), slice(max(0, dx), nx - max(0, -dx)))
        pi, qi = p_ids[ps], q_ids[qs]
        hit = (pi != 0) & (qi != 0) & (pi != qi) & (p_cls[ps] == q_cls[qs])
        if hit.any():
            u, v = pi[hit].astype(np.uint64), qi[hit].astype(np.uint64)
            found.append(np.stack([np.minimum(u, v), np.maximum(u, v)], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.uint64)
    return unique_pairs(np.concatenate(found))


def unique_pairs(pairs: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Return the unique rows of a ``(K, 2)`` id-pair array, sorted.

    Ids are first mapped to compact ranks, so each row becomes one int64 code and
    a 1-D sort replaces a (much slower) row sort.
    """
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    ids, inverse = np.unique(pairs.ravel(), return_inverse=True)
    inverse = inverse.reshape(pairs.shape).astype(np.int64)
    codes = np.unique(inverse[:, 0] * len(ids) + inverse[:, 1])
    return np.stack([ids[codes // len(ids)], ids[codes % len(ids)]], axis=1)
