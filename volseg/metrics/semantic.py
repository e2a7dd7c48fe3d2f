"""Semantic segmentation metrics from an exact confusion matrix and score histograms.

Every function here takes the accumulated counts (see
:mod:`volseg.metrics.confusion`) and reproduces the corresponding
:mod:`sklearn.metrics` function evaluated on the flattened voxels, including its
zero-division conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from volseg.errors import InputError
from volseg.metrics.confusion import N_LEVELS, SemanticCounts

#: Per-class scores reported for every class and averaged.
SCORES = ("precision", "recall", "f1", "iou", "dice")


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    """``num / den`` with ``zero_division`` where ``den == 0`` (sklearn's ``_prf_divide``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    mask = den == 0
    out = num / np.where(mask, 1.0, den)
    out[mask] = zero_division
    return out


def _nanaverage(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Average ignoring NaN entries; zero total weight falls back to the plain mean.

    Mirrors ``sklearn.utils.extmath._nanaverage`` as used by the ``"macro"`` and
    ``"weighted"`` averages.
    """
    values = np.asarray(values, dtype=np.float64)
    mask = np.isnan(values)
    if values.size == 0 or mask.all():
        return math.nan
    if weights is None:
        return float(np.mean(values[~mask]))
    w = np.asarray(weights, dtype=np.float64)[~mask]
    if w.sum() == 0:
        return float(np.mean(values[~mask]))
    return float(np.average(values[~mask], weights=w))


def per_class_scores(confusion: np.ndarray, *, zero_division: float = 0.0) -> dict[str, np.ndarray]:
    """Precision, recall, F1, IoU, Dice and support of every class.

    Parameters
    ----------
    confusion
        ``(C, C)`` confusion matrix, rows true classes, columns predicted classes.
    zero_division
        Value of a score whose denominator is zero (``0.0``, ``1.0`` or ``nan``),
        as sklearn's ``zero_division`` (whose default ``"warn"`` acts as 0).

    Returns
    -------
    dict
        Arrays of length ``C``: ``precision``, ``recall``, ``f1``, ``iou``, ``dice``
        (float64) and ``support`` (int64).

    Notes
    -----
    With :math:`TP_c = M_{cc}`, :math:`FP_c = \\sum_t M_{tc} - TP_c` and
    :math:`FN_c = \\sum_p M_{cp} - TP_c`:

    .. math::

        P_c = \\frac{TP_c}{TP_c + FP_c}, \\quad R_c = \\frac{TP_c}{TP_c + FN_c}, \\quad
        F1_c = \\mathrm{Dice}_c = \\frac{2 TP_c}{2 TP_c + FP_c + FN_c}, \\quad
        \\mathrm{IoU}_c = \\frac{TP_c}{TP_c + FP_c + FN_c},

    support :math:`= TP_c + FN_c`.  These equal
    ``sklearn.metrics.precision_recall_fscore_support(average=None)`` and
    ``jaccard_score(average=None)`` with ``labels=range(C)`` and the same
    ``zero_division`` (F1 is computed from counts, so it takes ``zero_division``
    only when :math:`2 TP_c + FP_c + FN_c = 0`, as in sklearn ≥ 1.3).
    """
    cm = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(cm)
    pred_sum = cm.sum(axis=0)
    true_sum = cm.sum(axis=1)
    f1 = _divide(2 * tp, true_sum + pred_sum, zero_division)
    return {
        "precision": _divide(tp, pred_sum, zero_division),
        "recall": _divide(tp, true_sum, zero_division),
        "f1": f1,
        "iou": _divide(tp, true_sum + pred_sum - tp, zero_division),
        "dice": f1.copy(),
        "support": true_sum,
    }


def accuracy(confusion: np.ndarray) -> float:
    """Fraction of evaluated voxels predicted correctly, ``trace(M) / sum(M)``.

    Equals ``sklearn.metrics.accuracy_score``; ``nan`` when nothing was evaluated.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    total = int(cm.sum())
    return int(np.trace(cm)) / total if total else math.nan


def cohen_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa between truth and prediction from the confusion matrix.

    Parameters
    ----------
    confusion
        ``(C, C)`` confusion matrix.

    Returns
    -------
    float
        :math:`\\kappa`, or ``nan`` where undefined (no voxel, or chance agreement
        of 1), as ``sklearn.metrics.cohen_kappa_score`` (``replace_undefined_by=nan``).

    Notes
    -----
    With :math:`N` voxels, observed agreement :math:`p_o = \\mathrm{tr}(M) / N` and
    chance agreement :math:`p_e = \\sum_c t_c p_c / N^2` (:math:`t_c`, :math:`p_c`
    the true and predicted class totals),

    .. math:: \\kappa = \\frac{p_o - p_e}{1 - p_e} = 1 - \\frac{N - \\mathrm{tr}(M)}
              {N - \\sum_c t_c p_c / N}

    [1]_; the second form is the one sklearn evaluates.

    References
    ----------
    .. [1] J. Cohen (1960), A coefficient of agreement for nominal scales.
       Educational and Psychological Measurement 20(1):37–46.
       :doi:`10.1177/001316446002000104`
    """
    cm = np.asarray(confusion, dtype=np.float64)
    total = cm.sum()
    if total == 0:
        return math.nan
    expected = np.outer(cm.sum(axis=0), cm.sum(axis=1)) / total
    w = np.ones_like(cm)
    np.fill_diagonal(w, 0.0)
    denominator = float(np.sum(w * expected))
    if denominator == 0:
        return math.nan
    return float(1.0 - np.sum(w * cm) / denominator)


def precision_recall_curve(
    histogram: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact precision–recall curve of one class from its score histogram.

    Parameters
    ----------
    histogram
        ``(256, 2)`` counts of (quantised score ``q``, is-positive).

    Returns
    -------
    precision, recall : numpy.ndarray
        As ``sklearn.metrics.precision_recall_curve(y_true, q)``: one point per
        distinct score in increasing order of threshold, followed by the point
        ``(precision=1, recall=0)``.  When there is no positive, recall is 1 at
        every threshold (as sklearn).
    thresholds : numpy.ndarray
        The distinct quantised scores ``q`` (``0..255``) in increasing order.

    Notes
    -----
    The score histogram is a sufficient statistic: thresholding at ``q`` predicts
    positive every voxel with score ``>= q``, so ``TP(q)`` and ``FP(q)`` are
    cumulative sums of the histogram from the top score down.
    """
    hist = np.asarray(histogram, dtype=np.int64)
    if hist.shape != (N_LEVELS, 2):
        raise ValueError(f"histogram must have shape ({N_LEVELS}, 2), got {hist.shape}")
    present = np.flatnonzero(hist.sum(axis=1))[::-1]  # distinct scores, descending
    if present.size == 0:
        return np.array([1.0]), np.array([0.0]), np.zeros(0, dtype=np.int64)
    tps = np.cumsum(hist[present, 1])
    fps = np.cumsum(hist[present, 0])
    precision = tps / (tps + fps)
    recall = np.ones(tps.shape) if tps[-1] == 0 else tps / tps[-1]
    return (
        np.concatenate([precision[::-1], [1.0]]),
        np.concatenate([recall[::-1], [0.0]]),
        present[::-1].copy(),
    )


def average_precision(histogram: np.ndarray) -> float:
    """Average precision of one class from its score histogram.

    Notes
    -----
    :math:`\\mathrm{AP} = \\sum_n (R_n - R_{n-1}) P_n` over the thresholds in
    decreasing order (no interpolation), exactly
    ``sklearn.metrics.average_precision_score(y_true == c, q_c)`` on the
    quantised scores :math:`q_c`.  A class without positive voxels gets 0 (as in
    sklearn, which warns); a class without any evaluated voxel gets ``nan``.
    """
    hist = np.asarray(histogram)
    if hist.sum() == 0:
        return math.nan
    precision, recall, _ = precision_recall_curve(hist)
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def default_class_names(n_classes: int) -> list[str]:
    """Return ``["class_0", "class_1", ...]``."""
    return [f"class_{i}" for i in range(n_classes)]


def _names(class_names: Sequence[str] | None, n_classes: int) -> list[str]:
    if class_names is None:
        return default_class_names(n_classes)
    names = [str(n) for n in class_names]
    if len(names) != n_classes:
        raise InputError(f"got {len(names)} class names for {n_classes} classes")
    if len(set(names)) != len(names):
        raise InputError(f"class names must be unique, got {names}")
    return names


def semantic_metrics(
    counts: SemanticCounts,
    *,
    class_names: Sequence[str] | None = None,
    zero_division: float = 0.0,
) -> dict[str, Any]:
    """All semantic metrics from accumulated counts, in the report layout.

    Parameters
    ----------
    counts
        Confusion matrix (and optional score histograms) of the whole volume.
    class_names
        Names of classes ``0 .. C-1`` (default ``class_0``, ...).
    zero_division
        Score of a class whose denominator is zero (see :func:`per_class_scores`).

    Returns
    -------
    dict
        ``class_names``, ``n_classes``, ``evaluated_voxels``, ``ignored_voxels``,
        ``per_class.<name>.{precision,recall,f1,iou,dice,support}``,
        ``macro`` and ``weighted`` (each ``precision,recall,f1,iou,dice``),
        ``accuracy``, ``cohen_kappa``, ``confusion_matrix`` (rows truth) and, with
        histograms, ``average_precision.<name>`` and
        ``pr_curves.<name>.{precision,recall,thresholds}``.  Undefined values are
        ``nan``.

    Notes
    -----
    ``macro`` is the unweighted mean over all ``C`` classes, ``weighted`` the mean
    weighted by support, both skipping ``nan`` (sklearn's ``average="macro"`` /
    ``"weighted"`` with ``labels=range(C)``; with zero total support the weighted
    average falls back to the plain mean, as in sklearn).
    """
    cm = counts.confusion
    names = _names(class_names, counts.n_classes)
    scores = per_class_scores(cm, zero_division=zero_division)
    support = scores["support"]
    result: dict[str, Any] = {
        "class_names": names,
        "n_classes": counts.n_classes,
        "evaluated_voxels": int(cm.sum()),
        "ignored_voxels": int(counts.ignored),
        "per_class": {
            name: {
                **{s: float(scores[s][i]) for s in SCORES},
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "macro": {s: _nanaverage(scores[s]) for s in SCORES},
        "weighted": {s: _nanaverage(scores[s], support) for s in SCORES},
        "accuracy": accuracy(cm),
        "cohen_kappa": cohen_kappa(cm),
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }
    if counts.histograms is not None:
        result["average_precision"] = {}
        result["pr_curves"] = {}
        for i, name in enumerate(names):
            hist = counts.histograms[i]
            result["average_precision"][name] = average_precision(hist)
            precision, recall, thresholds = precision_recall_curve(hist)
            result["pr_curves"][name] = {
                "precision": precision.tolist(),
                "recall": recall.tolist(),
                "thresholds": (thresholds / (N_LEVELS - 1)).tolist(),
            }
    return result
