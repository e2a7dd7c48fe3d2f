"""In-memory prediction of a region and the validation metrics.

:func:`predict_array` is a plain whole-array sliding window (MONAI
``sliding_window_inference`` with a Gaussian importance map for UNets; dense blocks for
centre-voxel networks).  It serves validation during training and the quality
benchmarks on held-out regions; large volumes go through :mod:`volseg.inference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from volseg.models.spec import ModelSpec


def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Mirror indices into ``[0, n)`` (like ``numpy.pad(mode="reflect")``)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


def _pad_to(x: np.ndarray, size: Any) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Mirror-pad ``x`` to at least ``size`` per axis; return it and the crop back."""
    pads = []
    for n, p in zip(x.shape, size, strict=True):
        extra = max(0, int(p) - n)
        pads.append((extra // 2, extra - extra // 2))
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, x.shape, strict=True))
    if not any(a or b for a, b in pads):
        return x, crop
    mode = "reflect" if all(n > 1 or not (a or b) for n, (a, b) in zip(x.shape, pads,
                                                                        strict=True)) else "edge"
    return np.pad(x, pads, mode=mode), crop  # type: ignore[call-overload]


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
        The network (switched to eval mode here).
    spec
        Its spec (kind, patch size, context, receptive field, normalisation).
    image
        Raw image; context beyond its faces is mirrored from inside.
    device
        Torch device.
    batch_size
        Windows per forward pass.
    overlap
        Window overlap for UNets (Gaussian blending, as in MONAI).
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
    from monai.inferers import sliding_window_inference

    module.eval()
    device = torch.device(device)
    x = spec.normalization.apply(image) if normalize else np.asarray(image, np.float32)
    use_amp = amp and device.type == "cuda"

    def run(t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            return module(t).float()

    with torch.no_grad():
        if spec.kind == "3d":
            xp, crop = _pad_to(x, spec.patch_size)
            t = torch.from_numpy(xp)[None, None].to(device)
            out = sliding_window_inference(
                t, spec.patch_size, batch_size, run, overlap=overlap, mode="gaussian"
            )
            return np.ascontiguousarray(out[0].cpu().numpy()[(slice(None), *crop)])
        if spec.kind == "2.5d":
            k = spec.context or 1
            x, crop = _pad_to(x, (1, *spec.patch_size[1:]))
            nz = x.shape[0]
            wanted = np.arange(nz) if sections is None else np.asarray(sections, dtype=np.int64)
            out_all = np.empty((spec.out_channels, len(wanted), *x.shape[1:]), np.float32)
            per_pass = max(1, batch_size)
            for i0 in range(0, len(wanted), per_pass):
                pos = np.arange(i0, min(len(wanted), i0 + per_pass))
                zs = wanted[pos]
                idx = _reflect_index(zs[:, None] + np.arange(k)[None, :] - k // 2, nz)
                stack = torch.from_numpy(x[idx]).to(device)  # (n, k, y, x)
                res: Any = sliding_window_inference(
                    stack, spec.patch_size[1:], batch_size, run, overlap=overlap,
                    mode="gaussian",
                )
                out_all[:, pos] = res.cpu().numpy().transpose(1, 0, 2, 3)
            return np.ascontiguousarray(out_all[(slice(None), slice(None), *crop[1:])])
        # centre voxel: mirror-pad by the halo, then dense blocks
        pads = [(b, a) for b, a in spec.halo]
        xp = np.pad(x, pads, mode="reflect") if min(x.shape) > 1 else np.pad(x, pads, "edge")
        r1 = (spec.receptive_field or 1) - 1
        block = [max(p, 1) for p in spec.patch_size]
        out_all = np.empty((spec.out_channels, *x.shape), np.float32)
        for z in range(0, x.shape[0], block[0]):
            for y in range(0, x.shape[1], block[1]):
                for xx in range(0, x.shape[2], block[2]):
                    sz = min(block[0], x.shape[0] - z)
                    sy = min(block[1], x.shape[1] - y)
                    sx = min(block[2], x.shape[2] - xx)
                    inp = xp[z:z + sz + r1, y:y + sy + r1, xx:xx + sx + r1]
                    t = torch.from_numpy(np.ascontiguousarray(inp))[None, None].to(device)
                    out_all[:, z:z + sz, y:y + sy, xx:xx + sx] = run(t)[0].cpu().numpy()
        return out_all


def confusion_matrix(
    pred: np.ndarray, truth: np.ndarray, *, n_classes: int, ignore_id: int
) -> np.ndarray:
    """``(C, C)`` counts ``M[t, p]`` over voxels whose truth is not ``ignore_id``."""
    t = np.asarray(truth).ravel()
    p = np.asarray(pred).ravel()
    keep = t != ignore_id
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def scores(cm: np.ndarray, class_names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and IoU, and their macro means.

    Notes
    -----
    ``F1 = 2 TP / (2 TP + FP + FN)``, ``IoU = TP / (TP + FP + FN)``.  Macro means are
    over the classes present in the truth (support > 0); a class absent from the
    truth has no defined recall and is reported with ``support = 0``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    present = support > 0
    per_class = {
        name: {
            "f1": float(f1[i]), "iou": float(iou[i]), "precision": float(precision[i]),
            "recall": float(recall[i]), "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    total = cm.sum()
    return {
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "macro_iou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class": per_class,
    }
