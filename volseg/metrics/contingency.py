"""Sparse contingency tables of two instance segmentations, accumulated blockwise.

The contingency table ``n[i, j]`` counts the voxels labelled ``i`` in the truth and
``j`` in the prediction.  volseg stores only its non-zero entries as three parallel
arrays ``(truth id, prediction id, count)``: memory grows with the number of
distinct overlapping pairs, never with the number of voxels.  Per block the pairs
are counted after a run-length pass along the fastest axis (labels are piecewise
constant, so runs are long) and the tables of all blocks are merged by summing the
counts of equal pairs — the result equals the table of the whole volume exactly,
for any chunking.

Instance ids must be *globally* consistent (one object, one id in every block), as
the instances stage produces them; otherwise an object cut by a block face would
count as two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.delayed import Delayed

from volseg.errors import InputError
from volseg.metrics._blocks import aligned_blocks, as_dask, check_same_shape, map_reduce

_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


@dataclass(frozen=True)
class ContingencyTable:
    """Non-zero entries of a contingency table, sorted by ``(truth, prediction)``.

    Attributes
    ----------
    truth
        ``uint64`` truth ids of the entries.
    prediction
        ``uint64`` prediction ids of the entries.
    counts
        ``int64`` voxel counts (all positive); ``counts[k]`` voxels have truth id
        ``truth[k]`` and prediction id ``prediction[k]``.
    """

    truth: np.ndarray
    prediction: np.ndarray
    counts: np.ndarray

    @property
    def n_voxels(self) -> int:
        """Total number of voxels counted."""
        return int(self.counts.sum())

    @property
    def n_pairs(self) -> int:
        """Number of distinct ``(truth, prediction)`` pairs."""
        return int(self.counts.size)

    def without_truth(self, labels: Iterable[int]) -> ContingencyTable:
        """Return the table without the voxels whose truth id is in ``labels``.

        This is what ``ignore_labels`` does in :func:`skimage.metrics.contingency_table`.
        """
        labels = np.asarray(list(labels), dtype=np.uint64)
        if labels.size == 0:
            return self
        keep = ~np.isin(self.truth, labels)
        return ContingencyTable(self.truth[keep], self.prediction[keep], self.counts[keep])

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(truth ids, prediction ids, table)`` with a dense ``int64`` table.

        Only for small tables (tests, reports of a few objects).
        """
        t_ids, t_idx = np.unique(self.truth, return_inverse=True)
        p_ids, p_idx = np.unique(self.prediction, return_inverse=True)
        table = np.zeros((t_ids.size, p_ids.size), dtype=np.int64)
        np.add.at(table, (t_idx, p_idx), self.counts)
        return t_ids, p_ids, table

    def marginal(self, axis: str) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ids, sizes)`` of the truth (``axis="truth"``) or prediction segments."""
        if axis not in ("truth", "prediction"):
            raise ValueError(f"axis must be 'truth' or 'prediction', got {axis!r}")
        ids = self.truth if axis == "truth" else self.prediction
        uniq, inverse = np.unique(ids, return_inverse=True)
        sizes = np.zeros(uniq.size, dtype=np.int64)
        np.add.at(sizes, inverse, self.counts)
        return uniq, sizes


def _reduce_pairs(
    truth: np.ndarray, prediction: np.ndarray, weights: np.ndarray
) -> ContingencyTable:
    """Sum ``weights`` over equal ``(truth, prediction)`` pairs (uint64 ids)."""
    if truth.size == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return ContingencyTable(empty, empty.copy(), np.zeros(0, dtype=np.int64))
    if int(truth.max()) <= int(_LOW32) and int(prediction.max()) <= int(_LOW32):
        key = (truth << _SHIFT) | prediction
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        keys = key[starts]
        t_out, p_out = keys >> _SHIFT, keys & _LOW32
    else:
        order = np.lexsort((prediction, truth))
        ts, ps = truth[order], prediction[order]
        new = np.concatenate(([True], (ts[1:] != ts[:-1]) | (ps[1:] != ps[:-1])))
        starts = np.flatnonzero(new)
        t_out, p_out = ts[starts], ps[starts]
    counts = np.add.reduceat(weights[order].astype(np.int64, copy=False), starts)
    return ContingencyTable(t_out, p_out, counts)


def _as_ids(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{what} must hold integer instance ids, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.signedinteger) and a.size and a.min() < 0:
        raise InputError(f"{what} contains negative instance ids")
    return a


def contingency_block(truth: np.ndarray, prediction: np.ndarray) -> ContingencyTable:
    """Sparse contingency table of one block.

    Parameters
    ----------
    truth, prediction
        Non-negative integer instance ids of the same shape.

    Returns
    -------
    ContingencyTable
        Counts of all voxels of the block (nothing is ignored here; ignoring is a
        property of each metric, see :meth:`ContingencyTable.without_truth`).
    """
    t = _as_ids(np.asarray(truth), "truth").reshape(-1)
    p = _as_ids(np.asarray(prediction), "prediction").reshape(-1)
    if t.shape != p.shape:
        raise InputError(f"truth block has {t.size} voxels but prediction block has {p.size}")
    if t.size == 0:
        return _reduce_pairs(t.astype(np.uint64), p.astype(np.uint64), np.zeros(0, np.int64))
    # run-length pass: a run is a maximal stretch of equal (truth, prediction) pairs
    change = np.empty(t.size, dtype=bool)
    change[0] = True
    np.not_equal(t[1:], t[:-1], out=change[1:])
    change[1:] |= p[1:] != p[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, t.size))
    return _reduce_pairs(
        t[starts].astype(np.uint64), p[starts].astype(np.uint64), lengths.astype(np.int64)
    )


def combine_contingency(parts: list[ContingencyTable]) -> ContingencyTable:
    """Merge partial contingency tables by summing the counts of equal pairs."""
    if len(parts) == 1:
        return parts[0]
    return _reduce_pairs(
        np.concatenate([p.truth for p in parts]),
        np.concatenate([p.prediction for p in parts]),
        np.concatenate([p.counts for p in parts]),
    )


def contingency_table(prediction: da.Array | np.ndarray, truth: da.Array | np.ndarray) -> Delayed:
    """Lazily accumulate the sparse contingency table of two instance volumes.

    Parameters
    ----------
    prediction, truth
        Instance label volumes of the same shape with globally consistent,
        non-negative integer ids; the truth's chunks define the block grid.

    Returns
    -------
    dask.delayed.Delayed
        Computes to a :class:`ContingencyTable` of *all* voxels (no ignore).

    Notes
    -----
    Rows are truth, columns prediction, as in
    :func:`skimage.metrics.contingency_table` ``(im_true, im_test)``.
    """
    pred = as_dask(prediction, name="prediction")
    true = as_dask(truth, name="truth")
    for arr, what in ((pred, "prediction"), (true, "truth")):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise InputError(f"{what} must hold integer instance ids, got dtype {arr.dtype}")
    check_same_shape([pred.shape, true.shape], ["prediction", "truth"])
    blocks = aligned_blocks([true, pred])
    return map_reduce(contingency_block, blocks, combine_contingency)
