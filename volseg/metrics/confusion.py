"""Exact blockwise accumulators for semantic segmentation.

Two summaries are accumulated in one pass over the volumes:

* the **confusion matrix** ``M[t, p]`` (``int64``): the number of evaluated voxels
  of true class ``t`` predicted as class ``p``, per block
  ``np.bincount(t * C + p, minlength=C * C)``;
* optionally, per class ``c``, a **score histogram** ``H[c, q, y]`` (``int64``,
  shape ``(C, 256, 2)``): the number of evaluated voxels whose quantised
  probability of class ``c`` is ``q`` (``0..255``) and whose truth is (``y=1``) or
  is not (``y=0``) class ``c``.  Precision–recall curves and average precision
  depend on the scores only through their order and ties, so the histogram gives
  them *exactly* for the quantised scores.

Both are sums over voxels, hence sums over blocks: the result is identical for
every chunking and block order.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.delayed import Delayed

from volseg.errors import InputError
from volseg.metrics._blocks import aligned_blocks, as_dask, check_same_shape, map_reduce

#: Number of score levels of quantised probabilities (``uint8``).
N_LEVELS = 256


@dataclass(frozen=True)
class SemanticCounts:
    """Sufficient statistics of semantic segmentation metrics.

    Attributes
    ----------
    confusion
        ``(C, C)`` int64; rows are true classes, columns predicted classes
        (the layout of :func:`sklearn.metrics.confusion_matrix`).
    histograms
        ``(C, 256, 2)`` int64 score histograms (see the module docstring), or
        ``None`` when no probabilities were given.
    ignored
        Number of voxels whose truth is the ignore label (not evaluated).
    """

    confusion: np.ndarray
    histograms: np.ndarray | None
    ignored: int

    @property
    def n_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.confusion.shape[0])

    def __add__(self, other: SemanticCounts) -> SemanticCounts:
        if (self.histograms is None) != (other.histograms is None):
            raise ValueError("cannot add counts with and without score histograms")
        hist = None
        if self.histograms is not None and other.histograms is not None:
            hist = self.histograms + other.histograms
        return SemanticCounts(self.confusion + other.confusion, hist, self.ignored + other.ignored)

    def trimmed(self, n_classes: int) -> SemanticCounts:
        """Return the counts restricted to classes ``0 .. n_classes - 1``.

        Raises :class:`~volseg.errors.InputError` if a dropped class has counts.
        """
        cm = self.confusion
        if cm[n_classes:, :].any() or cm[:, n_classes:].any():
            raise InputError(
                f"labels contain class ids >= {n_classes}; pass the class names "
                "(--classes) or the ignore label (--ignore-label)"
            )
        hist = None if self.histograms is None else self.histograms[:n_classes]
        return SemanticCounts(cm[:n_classes, :n_classes].copy(), hist, self.ignored)


def combine_semantic(parts: list[SemanticCounts]) -> SemanticCounts:
    """Sum partial :class:`SemanticCounts` (associative and commutative)."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def quantise_probabilities(prob: np.ndarray) -> np.ndarray:
    """Quantise class probabilities to ``uint8`` score levels ``0..255``.

    ``uint8`` input is returned unchanged (it is already quantised, as volseg
    writes probabilities); floating-point input ``p`` in ``[0, 1]`` becomes
    ``rint(clip(p, 0, 1) * 255)``.

    Parameters
    ----------
    prob
        Probabilities, any shape.

    Returns
    -------
    numpy.ndarray of uint8
    """
    if prob.dtype == np.uint8:
        return prob
    if not np.issubdtype(prob.dtype, np.floating):
        raise InputError(
            f"probabilities must be uint8 (quantised) or floating point, got {prob.dtype}"
        )
    out = np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False) * np.float32(255.0)
    return np.rint(out).astype(np.uint8)


def semantic_block(
    truth: np.ndarray,
    prediction: np.ndarray,
    probabilities: np.ndarray | None = None,
    *,
    n_classes: int,
    ignore_label: int | None = None,
) -> SemanticCounts:
    """Confusion matrix and score histograms of one block.

    Parameters
    ----------
    truth, prediction
        Integer class ids of the same shape.
    probabilities
        ``(C, *shape)`` class probabilities (``uint8`` quantised or float) or ``None``.
    n_classes
        Number of classes ``C``; ids must lie in ``0 .. C - 1``.
    ignore_label
        Truth id of voxels that are not evaluated (sparse annotation), or ``None``.

    Returns
    -------
    SemanticCounts
    """
    t = np.asarray(truth).reshape(-1)
    p = np.asarray(prediction).reshape(-1)
    n_total = t.size
    keep: np.ndarray | None = None
    if ignore_label is not None:
        keep = t != ignore_label
        if keep.all():
            keep = None
        else:
            t = t[keep]
            p = p[keep]
    ignored = n_total - t.size
    _check_ids(t, n_classes, "truth")
    _check_ids(p, n_classes, "prediction")
    # ids are < n_classes now: a uint16 index suffices up to 256 classes (4x less memory
    # traffic than int64 for uint8 labels)
    index_dtype = np.dtype(np.uint16 if n_classes * n_classes <= 2**16 else np.int64)
    index: np.ndarray = t.astype(index_dtype)
    np.multiply(index, n_classes, out=index, casting="unsafe")
    np.add(index, p, out=index, casting="unsafe")
    confusion = np.bincount(index, minlength=n_classes * n_classes).astype(np.int64)
    confusion = confusion.reshape(n_classes, n_classes)
    hist: np.ndarray | None = None
    if probabilities is not None:
        prob = np.asarray(probabilities)
        if prob.shape[0] != n_classes:
            raise InputError(
                f"probabilities have {prob.shape[0]} channels but there are {n_classes} classes"
            )
        prob = prob.reshape(n_classes, -1)
        if keep is not None:
            prob = prob[:, keep]
        q = quantise_probabilities(prob)
        hist = np.empty((n_classes, N_LEVELS, 2), dtype=np.int64)
        for c in range(n_classes):
            idx = q[c].astype(np.uint16)  # 2 * score + is-positive < 512
            np.left_shift(idx, 1, out=idx)
            np.add(idx, t == c, out=idx, casting="unsafe")
            hist[c] = np.bincount(idx, minlength=2 * N_LEVELS).reshape(N_LEVELS, 2)
    return SemanticCounts(confusion, hist, int(ignored))


def _check_ids(ids: np.ndarray, n_classes: int, what: str) -> None:
    if ids.size == 0:
        return
    if np.issubdtype(ids.dtype, np.signedinteger) and ids.min() < 0:
        raise InputError(f"{what} contains negative class ids")
    top = int(ids.max())
    if top >= n_classes:
        hint = " or the ignore label (--ignore-label)" if what == "truth" else ""
        raise InputError(
            f"{what} contains class id {top} but there are only {n_classes} classes; "
            f"check the number of classes (--classes){hint}"
        )


def semantic_counts(
    prediction: da.Array | np.ndarray,
    truth: da.Array | np.ndarray,
    *,
    n_classes: int,
    ignore_label: int | None = None,
    probabilities: da.Array | np.ndarray | None = None,
) -> Delayed:
    """Lazily accumulate :class:`SemanticCounts` over all blocks of two label volumes.

    Parameters
    ----------
    prediction, truth
        Label volumes (``z, y, x`` or any equal shapes) with integer class ids;
        the truth's chunks define the block grid (the others are rechunked to it,
        a no-op when they share chunks as volseg's outputs do).
    n_classes
        Number of classes ``C``.
    ignore_label
        Truth id that marks unannotated voxels, which are left out of every count
        (``None``: every voxel is evaluated).
    probabilities
        Optional ``(C, *shape)`` class probabilities, ``uint8``-quantised or float.

    Returns
    -------
    dask.delayed.Delayed
        Computes to :class:`SemanticCounts`.
    """
    if n_classes < 1:
        raise InputError(f"the number of classes must be positive, got {n_classes}")
    pred = as_dask(prediction, name="prediction")
    true = as_dask(truth, name="truth")
    for arr, what in ((pred, "prediction"), (true, "truth")):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise InputError(f"{what} must hold integer class ids, got dtype {arr.dtype}")
    shapes = [pred.shape, true.shape]
    names = ["prediction", "truth"]
    prob = None
    if probabilities is not None:
        prob = as_dask(probabilities, name="probabilities")
        if prob.ndim != pred.ndim + 1:
            raise InputError(
                f"probabilities must have a leading class axis (c, z, y, x); got shape "
                f"{prob.shape} for labels of shape {pred.shape}"
            )
        if prob.shape[0] != n_classes:
            raise InputError(
                f"probabilities have {prob.shape[0]} channels but there are {n_classes} classes"
            )
        shapes.append(prob.shape[1:])
        names.append("probabilities")
    check_same_shape(shapes, names)
    blocks = aligned_blocks([true, pred, prob], channel_first=[False, False, True])
    return map_reduce(
        semantic_block, blocks, combine_semantic, n_classes=n_classes, ignore_label=ignore_label
    )
