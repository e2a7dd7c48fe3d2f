"""Blockwise inference: blend weights, batched patch predictor, Dask overlap-add, model cache.

>>> from volseg.inference import predict_logits, logits_to_labels, logits_to_probabilities

* :class:`PredictOptions` — the options of a prediction (shared with the ``predict``
  stage and ``volseg predict``); :class:`Network` — how a network consumes a volume.
* :func:`predict_logits` — lazy ``(C, Z, Y, X)`` float32 blended logits of a volume
  (3-D sliding window equal to MONAI's, 2.5-D, or dense centre-voxel).
* :func:`logits_to_probabilities`, :func:`logits_to_labels` — softmax/argmax (sigmoid
  and threshold 0.5 for one channel).

Parts: :mod:`volseg.geometry` (patch grid, overlap-add plan), :mod:`.weights`
(importance maps), :mod:`.predictor` (batched device-aware forward passes, TTA),
:mod:`.cache` (per-process model cache), :mod:`.dense` (filter rarefaction),
:mod:`.blockwise` (the Dask graphs) and :mod:`.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.lazy import lazy_exports

if TYPE_CHECKING:
    from volseg.inference.api import (
        Network,
        default_block_size,
        logits_to_labels,
        logits_to_probabilities,
        predict_logits,
    )
    from volseg.inference.cache import ModelRef, cache_stats, clear_cache
    from volseg.inference.dense import densify, receptive_field
    from volseg.inference.options import PredictOptions
    from volseg.inference.weights import importance_map

__all__ = [
    "ModelRef",
    "Network",
    "PredictOptions",
    "cache_stats",
    "clear_cache",
    "default_block_size",
    "densify",
    "importance_map",
    "logits_to_labels",
    "logits_to_probabilities",
    "predict_logits",
    "receptive_field",
]

lazy_exports(__name__, {
    "volseg.inference.api": ("Network", "default_block_size", "logits_to_labels",
                              "logits_to_probabilities", "predict_logits"),
    "volseg.inference.cache": ("ModelRef", "cache_stats", "clear_cache"),
    "volseg.inference.dense": ("densify", "receptive_field"),
    "volseg.inference.options": ("PredictOptions",),
    "volseg.inference.weights": ("importance_map",),
})
