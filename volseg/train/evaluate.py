"""Validation during training: the prediction of ``volseg predict``, the metrics of ``evaluate``.

:func:`predict_array` runs :func:`volseg.inference.predict_logits` on an in-memory
region: the same patch grid, padding and blending as ``volseg predict`` (MONAI's
Gaussian overlap-add, zero padding of axes shorter than the patch, mirrored 2.5-D
context, dense centre-voxel blocks).  :func:`confusion_matrix` and :func:`scores` are
:mod:`volseg.metrics`' confusion matrix and per-class scores, so the validation
figures equal those of ``volseg predict`` + ``volseg evaluate`` on the same sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from volseg.inference import Network, PredictOptions, predict_logits
from volseg.metrics.confusion import semantic_block
from volseg.metrics.semantic import accuracy, per_class_scores
from volseg.models.spec import ModelSpec


def predict_array(
    module: nn.Module,
    spec: ModelSpec,
    image: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    overlap: float = 0.25,
    amp: bool = False,
    normalize: bool = True,
    sections: Any = None,
) -> np.ndarray:
    """Logits ``(C, z, y, x)`` of a whole in-memory image ``(z, y, x)``.

    Parameters
    ----------
    module
        The network (switched to eval mode; on the CPU it runs with the torch threads
        as they are set).
    spec
        Its spec (kind, patch size, context, receptive field, normalisation).
    image
        Raw image; it is the whole volume (2.5-D context beyond its faces is mirrored
        from inside, as in ``volseg predict``).
    device
        Torch device.
    batch_size
        Windows per forward pass.
    overlap
        Window overlap (Gaussian blending, as in MONAI).
    amp
        float16 autocast (CUDA only).
    normalize
        Apply ``spec.normalization`` first (``False`` if ``image`` is normalised).
    sections
        2.5-D only: predict just these z indices (context still comes from their
        neighbours); the result then has ``len(sections)`` sections.

    Returns
    -------
    numpy.ndarray
        float32 logits.
    """
    import dask

    dev = torch.device(device)
    network = Network.from_spec(spec)
    if not normalize:
        network = network.model_copy(update={"normalization": None})
    shape = tuple(int(n) for n in np.shape(image))
    block = None
    if spec.kind == "2.5d" and sections is not None:
        block = (1, shape[1], shape[2])  # one block per section: the others are not run
    options = PredictOptions(overlap=overlap, batch_size=batch_size, device=dev.type,
                             precision="fp16" if amp and dev.type == "cuda" else "fp32",
                             cpu_threads=None, block_size=block)
    logits = predict_logits(np.asarray(image), module, options, network=network)
    if sections is not None:
        logits = logits[:, np.asarray(sections, dtype=np.int64)]
    with dask.config.set(scheduler="synchronous"):  # one forward pass at a time
        return np.ascontiguousarray(logits.compute(), dtype=np.float32)


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, *, n_classes: int, ignore_id: int
) -> np.ndarray:
    """``(C, C)`` counts ``M[t, p]`` over voxels whose truth is not ``ignore_id``.

    :func:`volseg.metrics.confusion.semantic_block`, the block kernel of ``volseg
    evaluate``.
    """
    counts = semantic_block(truth, pred, n_classes=n_classes, ignore_label=ignore_id)
    return counts.confusion


def scores(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and IoU, and their macro means.

    Notes
    -----
    The per-class scores are :func:`volseg.metrics.semantic.per_class_scores` (``F1 =
    2 TP / (2 TP + FP + FN)``, ``IoU = TP / (TP + FP + FN)``), with ``nan`` where a
    denominator is zero.  The macro means here are over the classes present in the
    truth (support > 0), so that a class missing from the validation sections does not
    count as a zero; ``volseg evaluate``'s ``macro`` averages all classes.
    """
    per = per_class_scores(cm, zero_division=float("nan"))
    support = per["support"]
    present = support > 0
    per_class = {
        name: {
            "f1": float(per["f1"][i]), "iou": float(per["iou"][i]),
            "precision": float(per["precision"][i]), "recall": float(per["recall"][i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "macro_f1": float(np.mean(per["f1"][present])) if present.any() else float("nan"),
        "macro_iou": float(np.mean(per["iou"][present])) if present.any() else float("nan"),
        "accuracy": accuracy(cm),
        "per_class": per_class,
    }
