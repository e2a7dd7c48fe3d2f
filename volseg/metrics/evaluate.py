"""Evaluate label volumes of any size: one Dask pass, exact counts, metrics in a dict.

:func:`evaluate_semantic` and :func:`evaluate_instances` build the blockwise
accumulators, compute them (with a progress bar, on a cluster when a client is
given) and turn the counts into metrics; :func:`evaluate` does both in a single
pass so that shared inputs are read once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
from dask.delayed import Delayed

from volseg.errors import InputError
from volseg.metrics.confusion import SemanticCounts, semantic_counts
from volseg.metrics.connectomics import (
    DEFAULT_IGNORE,
    adapted_rand,
    cremi_score,
    variation_of_information,
)
from volseg.metrics.contingency import ContingencyTable, contingency_table
from volseg.metrics.matching import (
    IOU_THRESHOLDS,
    average_precision,
    match_objects,
    object_overlaps,
)
from volseg.metrics.semantic import semantic_metrics
from volseg.progress import compute

if TYPE_CHECKING:
    from distributed import Client

#: Class ids are counted over this many classes when the number of classes is unknown.
_MAX_UINT8_CLASSES = 256


def instance_metrics(
    table: ContingencyTable,
    *,
    ignore_labels: Sequence[int] = DEFAULT_IGNORE,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    background: int = 0,
) -> dict[str, Any]:
    """Connectomics and object-matching metrics from a contingency table.

    Parameters
    ----------
    table
        Sparse contingency table of all voxels (rows truth, columns prediction).
    ignore_labels
        Truth ids left out of VOI and adapted Rand (as ``ignore_labels`` in
        :mod:`skimage.metrics`; default: background ``0``).  For object matching
        the ids other than ``background`` mark unlabelled voxels, which are
        removed; truth background voxels stay (see :mod:`volseg.metrics.matching`).
    iou_thresholds
        Thresholds of the averaged object "AP"; must contain 0.5.
    background
        Id meaning "no object" for object matching.

    Returns
    -------
    dict
        ``voi_split``, ``voi_merge``, ``adapted_rand_error``,
        ``adapted_rand_precision``, ``adapted_rand_recall``, ``cremi_score``,
        ``f1_iou50``, ``mean_matched_iou``, ``ap``, ``n_true_objects``,
        ``n_pred_objects``, ``evaluated_voxels`` and ``matching`` (a list of
        per-threshold :class:`~volseg.metrics.matching.MatchStats` dicts).
    """
    thresholds = [float(t) for t in iou_thresholds]
    if 0.5 not in thresholds:
        raise InputError(f"iou_thresholds must include 0.5, got {thresholds}")
    split, merge = variation_of_information(table, ignore_labels=ignore_labels)
    rand = adapted_rand(table, ignore_labels=ignore_labels)
    overlaps = object_overlaps(table, background=background, ignore_labels=ignore_labels)
    stats = match_objects(overlaps, thresholds=thresholds)
    at50 = stats[thresholds.index(0.5)]
    return {
        "voi_split": split,
        "voi_merge": merge,
        "adapted_rand_error": rand.error,
        "adapted_rand_precision": rand.precision,
        "adapted_rand_recall": rand.recall,
        "cremi_score": cremi_score(split, merge, rand.error),
        "f1_iou50": at50.f1,
        "mean_matched_iou": at50.mean_matched_iou,
        "ap": average_precision(stats),
        "n_true_objects": overlaps.n_true,
        "n_pred_objects": overlaps.n_pred,
        "evaluated_voxels": table.without_truth(ignore_labels).n_voxels,
        "matching": [s.to_dict() for s in stats],
    }


def _semantic_task(
    prediction: da.Array | np.ndarray,
    truth: da.Array | np.ndarray,
    *,
    n_classes: int | None,
    ignore_label: int | None,
    probabilities: da.Array | np.ndarray | None,
) -> tuple[Delayed, int | None]:
    """Return the lazy counts and the number of classes (``None``: infer after counting)."""
    if n_classes is None and probabilities is not None:
        n_classes = int(probabilities.shape[0])
    if n_classes is not None:
        return (
            semantic_counts(
                prediction,
                truth,
                n_classes=n_classes,
                ignore_label=ignore_label,
                probabilities=probabilities,
            ),
            n_classes,
        )
    for arr, what in ((prediction, "prediction"), (truth, "truth")):
        if np.dtype(arr.dtype).itemsize != 1:
            raise InputError(
                f"{what} has dtype {arr.dtype}: give the number of classes (--classes "
                "NAMES...) for labels wider than uint8"
            )
    return (
        semantic_counts(prediction, truth, n_classes=_MAX_UINT8_CLASSES, ignore_label=ignore_label),
        None,
    )


def _finish_semantic(
    counts: SemanticCounts,
    n_classes: int | None,
    *,
    class_names: Sequence[str] | None,
    zero_division: float,
) -> dict[str, Any]:
    if n_classes is None:
        cm = counts.confusion
        used = np.flatnonzero(cm.sum(axis=0) + cm.sum(axis=1))
        n_classes = int(used[-1]) + 1 if used.size else 1
        counts = counts.trimmed(n_classes)
    return semantic_metrics(counts, class_names=class_names, zero_division=zero_division)


def evaluate_semantic(
    prediction: da.Array | np.ndarray,
    truth: da.Array | np.ndarray,
    *,
    n_classes: int | None,
    ignore_label: int | None = None,
    probabilities: da.Array | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    zero_division: float = 0.0,
    client: Client | None = None,
) -> dict[str, Any]:
    """Semantic segmentation metrics of a predicted label volume, computed exactly.

    Parameters
    ----------
    prediction, truth
        Class-id volumes of the same shape (dask or numpy).
    n_classes
        Number of classes ``C``; ``None`` infers ``max id + 1`` for ``uint8``
        labels (or ``C`` from the probabilities' channel axis).
    ignore_label
        Truth id of unannotated voxels (sparse truth), left out of every metric;
        ``None`` evaluates every voxel.
    probabilities
        Optional ``(C, *shape)`` class probabilities (``uint8``-quantised as volseg
        writes them, or float in ``[0, 1]``, quantised to ``rint(255 p)``) for
        per-class average precision and PR curves.
    class_names
        Names of the classes (default ``class_0``, ...).
    zero_division
        Value of a precision/recall/F1/IoU whose denominator is zero (sklearn's
        ``zero_division``).
    client
        Optional ``distributed.Client`` to compute on.

    Returns
    -------
    dict
        See :func:`volseg.metrics.semantic.semantic_metrics` for the layout.

    Notes
    -----
    The confusion matrix and the score histograms are accumulated in one pass
    over the blocks and sum exactly; see :mod:`volseg.metrics.confusion`.
    """
    if class_names is not None and n_classes is None:
        n_classes = len(class_names)
    task, n = _semantic_task(
        prediction,
        truth,
        n_classes=n_classes,
        ignore_label=ignore_label,
        probabilities=probabilities,
    )
    (counts,) = compute(task, description="evaluating (semantic)", client=client)
    return _finish_semantic(counts, n, class_names=class_names, zero_division=zero_division)


def evaluate_instances(
    prediction: da.Array | np.ndarray,
    truth: da.Array | np.ndarray,
    *,
    ignore_labels: Sequence[int] = DEFAULT_IGNORE,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    client: Client | None = None,
) -> dict[str, Any]:
    """Connectomics and object-matching metrics of an instance segmentation.

    Parameters
    ----------
    prediction, truth
        Instance-id volumes of the same shape with globally consistent ids
        (as written by the instances stage); ``0`` is background.
    ignore_labels
        Truth ids left out of VOI / adapted Rand (default ``(0,)``: truth
        background, the convention of ``skimage.metrics.adapted_rand_error`` and of
        CREMI).  Pass ``()`` to score the background as a segment.
    iou_thresholds
        IoU thresholds of the object "AP" (default 0.5:0.05:0.95).
    client
        Optional ``distributed.Client`` to compute on.

    Returns
    -------
    dict
        See :func:`instance_metrics`.
    """
    task = contingency_table(prediction, truth)
    (table,) = compute(task, description="evaluating (instances)", client=client)
    return instance_metrics(table, ignore_labels=ignore_labels, iou_thresholds=iou_thresholds)


def evaluate(
    *,
    semantic: dict[str, Any] | None = None,
    instances: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    zero_division: float = 0.0,
    ignore_labels: Sequence[int] = DEFAULT_IGNORE,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    client: Client | None = None,
) -> dict[str, Any]:
    """Semantic and instance evaluation in one Dask pass.

    Parameters
    ----------
    semantic
        Keyword arguments of :func:`volseg.metrics.confusion.semantic_counts`
        (``prediction``, ``truth``, ``n_classes`` — may be ``None`` —,
        ``ignore_label``, ``probabilities``), or ``None`` to skip.
    instances
        ``{"prediction": ..., "truth": ...}`` instance volumes, or ``None``.
    class_names, zero_division
        As in :func:`evaluate_semantic`.
    ignore_labels, iou_thresholds
        As in :func:`evaluate_instances`.
    client
        Optional ``distributed.Client``.

    Returns
    -------
    dict
        ``{"semantic": ..., "instances": ...}`` with the sections that were asked for.
    """
    tasks: list[Delayed] = []
    n_sem: int | None = None
    if semantic is not None:
        n_classes = semantic.get("n_classes")
        if class_names is not None and n_classes is None:
            n_classes = len(class_names)
        task, n_sem = _semantic_task(
            semantic["prediction"],
            semantic["truth"],
            n_classes=n_classes,
            ignore_label=semantic.get("ignore_label"),
            probabilities=semantic.get("probabilities"),
        )
        tasks.append(task)
    if instances is not None:
        tasks.append(contingency_table(instances["prediction"], instances["truth"]))
    if not tasks:
        raise InputError("nothing to evaluate: give semantic and/or instance volumes")
    results = list(compute(*tasks, description="evaluating", client=client))
    out: dict[str, Any] = {}
    if semantic is not None:
        out["semantic"] = _finish_semantic(
            results.pop(0), n_sem, class_names=class_names, zero_division=zero_division
        )
    if instances is not None:
        out["instances"] = instance_metrics(
            results.pop(0), ignore_labels=ignore_labels, iou_thresholds=iou_thresholds
        )
    return out
