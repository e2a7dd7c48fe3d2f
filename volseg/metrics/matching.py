"""Object-level matching of instance segmentations by intersection over union.

Computed from the sparse contingency table, so it is exact for volumes of any
size: the IoU of truth object ``i`` and predicted object ``j`` is
``n_ij / (a_i + b_j - n_ij)`` and pairs that do not overlap have IoU 0.

Conventions
-----------
* Id ``background`` (default 0) is "no object" in truth and prediction.
* Truth ids in ``ignore_labels`` other than the background mark unlabelled voxels:
  those voxels are removed before sizes and overlaps are counted.  Truth
  background voxels are *kept* (a predicted object lying on truth background is
  a false positive, and its area counts in its IoU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from volseg.metrics.contingency import ContingencyTable

#: IoU thresholds 0.50, 0.55, ..., 0.95 of the averaged "AP" (as in COCO / DSB 2018).
IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


@dataclass(frozen=True)
class ObjectOverlaps:
    """Objects of both segmentations and the IoU of every overlapping pair.

    Attributes
    ----------
    truth_ids, pred_ids
        Ids of the truth and predicted objects (background excluded).
    truth_index, pred_index
        For every overlapping pair, indices into ``truth_ids`` / ``pred_ids``.
    iou
        IoU of every overlapping pair (``float64``, in ``(0, 1]``).
    """

    truth_ids: np.ndarray
    pred_ids: np.ndarray
    truth_index: np.ndarray
    pred_index: np.ndarray
    iou: np.ndarray

    @property
    def n_true(self) -> int:
        """Number of truth objects."""
        return int(self.truth_ids.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return int(self.pred_ids.size)


def object_overlaps(
    table: ContingencyTable, *, background: int = 0, ignore_labels: Sequence[int] = ()
) -> ObjectOverlaps:
    """IoU of every overlapping (truth object, predicted object) pair.

    Parameters
    ----------
    table
        Sparse contingency table of *all* voxels.
    background
        Id meaning "no object" in both segmentations.
    ignore_labels
        Truth ids of unlabelled voxels (removed); ``background`` in this list is
        not removed (see the module docstring).

    Returns
    -------
    ObjectOverlaps
    """
    drop = [int(v) for v in ignore_labels if int(v) != background]
    tab = table.without_truth(drop)
    truth_ids, truth_sizes = tab.marginal("truth")
    pred_ids, pred_sizes = tab.marginal("prediction")
    bg = np.uint64(background)
    t_obj = truth_ids != bg
    p_obj = pred_ids != bg
    pair = (tab.truth != bg) & (tab.prediction != bg)
    t_index = np.searchsorted(truth_ids, tab.truth[pair])
    p_index = np.searchsorted(pred_ids, tab.prediction[pair])
    inter = tab.counts[pair].astype(np.float64)
    union = truth_sizes[t_index].astype(np.float64) + pred_sizes[p_index] - inter
    iou = inter / union
    # re-index onto objects only
    t_map = np.cumsum(t_obj) - 1
    p_map = np.cumsum(p_obj) - 1
    return ObjectOverlaps(
        truth_ids=truth_ids[t_obj],
        pred_ids=pred_ids[p_obj],
        truth_index=t_map[t_index],
        pred_index=p_map[p_index],
        iou=iou,
    )


@dataclass(frozen=True)
class MatchStats:
    """Detection counts and scores at one IoU threshold.

    Zero-division follows StarDist: precision, recall, F1 and accuracy are 0 when
    there is no true positive, ``mean_matched_iou`` is 0 when nothing matched.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    mean_matched_iou: float

    def to_dict(self) -> dict[str, float | int]:
        """Return the statistics as plain data."""
        return asdict(self)


def _match(ov: ObjectOverlaps, threshold: float) -> np.ndarray:
    """Return the indices of the overlapping pairs chosen by a one-to-one matching at ``threshold``.

    Maximises the number of matched pairs with IoU >= threshold, then their total
    IoU.  For ``threshold > 0.5`` candidate pairs are already disjoint; ties are
    only possible at exactly 0.5 (or below) and are solved per connected component
    of the candidate graph with :func:`scipy.optimize.linear_sum_assignment`.
    """
    cand = np.flatnonzero(ov.iou >= threshold)
    if cand.size == 0:
        return cand
    ti = ov.truth_index[cand]
    pi = ov.pred_index[cand]
    t_deg = np.bincount(ti, minlength=ov.n_true)
    p_deg = np.bincount(pi, minlength=ov.n_pred)
    simple = (t_deg[ti] == 1) & (p_deg[pi] == 1)
    matched = [cand[simple]]
    hard = cand[~simple]
    if hard.size:
        # nodes: truth objects 0..n_true-1, predicted objects n_true..
        rows = ov.truth_index[hard]
        cols = ov.pred_index[hard] + ov.n_true
        n_nodes = ov.n_true + ov.n_pred
        graph = coo_array((np.ones(hard.size), (rows, cols)), shape=(n_nodes, n_nodes)).tocsr()
        _, comp = connected_components(graph, directed=False)
        edge_comp = comp[rows]
        for c in np.unique(edge_comp):
            edges = hard[edge_comp == c]
            t_nodes, t_loc = np.unique(ov.truth_index[edges], return_inverse=True)
            p_nodes, p_loc = np.unique(ov.pred_index[edges], return_inverse=True)
            m = min(t_nodes.size, p_nodes.size)
            cost = np.zeros((t_nodes.size, p_nodes.size))
            cost[t_loc, p_loc] = -1.0 - ov.iou[edges] / (2.0 * m)
            lookup = np.full((t_nodes.size, p_nodes.size), -1, dtype=np.int64)
            lookup[t_loc, p_loc] = edges
            r, k = linear_sum_assignment(cost)
            chosen = lookup[r, k]
            matched.append(chosen[chosen >= 0])
    return np.concatenate(matched)


def match_objects(
    overlaps: ObjectOverlaps, *, thresholds: Sequence[float] = IOU_THRESHOLDS
) -> list[MatchStats]:
    """One-to-one matching of objects by IoU at each threshold.

    Parameters
    ----------
    overlaps
        Output of :func:`object_overlaps`.
    thresholds
        IoU thresholds; a pair matches when ``IoU >= threshold``.

    Returns
    -------
    list of MatchStats
        One entry per threshold.

    Notes
    -----
    At threshold :math:`\\tau` a one-to-one matching with the largest number
    :math:`TP` of pairs with :math:`\\mathrm{IoU} \\ge \\tau` is chosen (ties broken
    by the largest total IoU).  For :math:`\\tau > 0.5` the matching is unique:
    :math:`\\mathrm{IoU}(i, j) > 1/2` implies :math:`n_{ij} > a_i / 2` and
    :math:`n_{ij} > b_j / 2`, so no object can have two candidates.  Then
    :math:`FP = N_{pred} - TP`, :math:`FN = N_{true} - TP`,

    .. math::

        \\text{precision} = \\frac{TP}{TP + FP}, \\quad
        \\text{recall} = \\frac{TP}{TP + FN}, \\quad
        F_1 = \\frac{2\\,TP}{2\\,TP + FP + FN}, \\quad
        \\text{accuracy} = \\frac{TP}{TP + FP + FN},

    where *accuracy* is the per-image "average precision" of the 2018 Data
    Science Bowl [1]_ and of StarDist [2]_ / Cellpose [3]_ (it is *not* the area
    under a precision–recall curve).  This follows ``stardist.matching.matching``
    (``criterion="iou"``), whose assignment additionally lets the IoU of
    non-matching pairs take part in the tie-break; the two can differ only in
    which of several exactly tied pairs at IoU 0.5 is chosen.

    References
    ----------
    .. [1] J. C. Caicedo et al. (2019), Nucleus segmentation across imaging
       experiments: the 2018 Data Science Bowl. Nature Methods 16:1247–1253.
       :doi:`10.1038/s41592-019-0612-7`
    .. [2] U. Schmidt, M. Weigert, C. Broaddus, G. Myers (2018), Cell detection
       with star-convex polygons. MICCAI 2018. :doi:`10.1007/978-3-030-00934-2_30`
    .. [3] C. Stringer, T. Wang, M. Michaelos, M. Pachitariu (2021), Cellpose: a
       generalist algorithm for cellular segmentation. Nature Methods 18:100–106.
       :doi:`10.1038/s41592-020-01018-x`
    """
    out = []
    for thr in thresholds:
        pairs = _match(overlaps, float(thr))
        tp = int(pairs.size)
        fp = overlaps.n_pred - tp
        fn = overlaps.n_true - tp
        sum_iou = float(overlaps.iou[pairs].sum()) if tp else 0.0
        out.append(
            MatchStats(
                threshold=float(thr),
                tp=tp,
                fp=fp,
                fn=fn,
                n_true=overlaps.n_true,
                n_pred=overlaps.n_pred,
                precision=tp / (tp + fp) if tp else 0.0,
                recall=tp / (tp + fn) if tp else 0.0,
                f1=2 * tp / (2 * tp + fp + fn) if tp else 0.0,
                accuracy=tp / (tp + fp + fn) if tp else 0.0,
                mean_matched_iou=sum_iou / tp if tp else 0.0,
            )
        )
    return out


def average_precision(stats: Sequence[MatchStats]) -> float:
    """Mean of ``TP / (TP + FP + FN)`` over the thresholds of ``stats``.

    With the default thresholds 0.5:0.05:0.95 this is the score of the 2018 Data
    Science Bowl for one image, averaged over IoU thresholds as in COCO.
    """
    return float(np.mean([s.accuracy for s in stats])) if stats else float("nan")
