"""Exact, blockwise evaluation of semantic and instance segmentations.

Accumulators (sum exactly over blocks, any chunking):

* :func:`semantic_counts` — ``int64`` confusion matrix and per-class histograms
  of quantised probabilities (:mod:`volseg.metrics.confusion`);
* :func:`contingency_table` — sparse ``(truth, prediction, count)`` table of two
  instance segmentations (:mod:`volseg.metrics.contingency`).

Metrics from the counts: :mod:`volseg.metrics.semantic` (precision, recall, F1,
IoU, Dice, accuracy, Cohen's kappa, average precision — equal to
:mod:`sklearn.metrics`), :mod:`volseg.metrics.connectomics` (VOI, adapted Rand,
CREMI — equal to :mod:`skimage.metrics`) and :mod:`volseg.metrics.matching`
(object F1 / AP by IoU).  :mod:`volseg.metrics.report` writes ``metrics.json``,
``metrics.md`` and the plots; the layout is documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.lazy import lazy_exports

if TYPE_CHECKING:
    from volseg.metrics.confusion import SemanticCounts, semantic_counts
    from volseg.metrics.connectomics import adapted_rand, cremi_score, variation_of_information
    from volseg.metrics.contingency import ContingencyTable, contingency_table
    from volseg.metrics.evaluate import (
        evaluate,
        evaluate_instances,
        evaluate_semantic,
        instance_metrics,
    )
    from volseg.metrics.matching import IOU_THRESHOLDS, match_objects, object_overlaps
    from volseg.metrics.semantic import semantic_metrics

__all__ = [
    "IOU_THRESHOLDS",
    "ContingencyTable",
    "SemanticCounts",
    "adapted_rand",
    "contingency_table",
    "cremi_score",
    "evaluate",
    "evaluate_instances",
    "evaluate_semantic",
    "instance_metrics",
    "match_objects",
    "object_overlaps",
    "semantic_counts",
    "semantic_metrics",
    "variation_of_information",
]

lazy_exports(__name__, {
    "volseg.metrics.confusion": ("SemanticCounts", "semantic_counts"),
    "volseg.metrics.connectomics": ("adapted_rand", "cremi_score", "variation_of_information"),
    "volseg.metrics.contingency": ("ContingencyTable", "contingency_table"),
    "volseg.metrics.evaluate": ("evaluate", "evaluate_instances", "evaluate_semantic",
                                "instance_metrics"),
    "volseg.metrics.matching": ("IOU_THRESHOLDS", "match_objects", "object_overlaps"),
    "volseg.metrics.semantic": ("semantic_metrics",),
})
