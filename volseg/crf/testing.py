"""Synthetic inputs for testing and benchmarking the CRF (shipped with the package)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = ["noisy_phantom"]


def noisy_phantom(
    shape: Sequence[int],
    n_classes: int,
    *,
    seed: int = 0,
    signal: float = 1.5,
    noise: float = 1.2,
    smoothness: Sequence[float] = (2.0, 4.0, 4.0),
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Return ``(truth, probabilities, image)`` for CRF tests.

    ``truth`` is ``(Z, Y, X)`` uint8: smooth random class regions (argmax of
    Gaussian-filtered noise, ``smoothness`` = filter widths in voxels);
    ``probabilities`` is ``(C, Z, Y, X)`` uint8 (``q/255``): a softmax of
    ``signal · onehot(truth) + noise · N(0, 1)`` — locally noisy unaries, so the
    argmax is right on only ~60 % of voxels; ``image`` is uint8 with one grey
    level per class plus Gaussian noise (σ = 10) for the bilateral term.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    field = ndi.gaussian_filter(rng.standard_normal((n_classes, *shape)), (0, *smoothness))
    truth = np.argmax(field, axis=0).astype(np.uint8)
    logits = np.eye(n_classes, dtype=np.float32)[truth].transpose(3, 0, 1, 2) * signal
    logits += rng.standard_normal(logits.shape).astype(np.float32) * noise
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    q = np.round(p * 255).astype(np.uint8)
    grey = truth.astype(np.float32) * (200.0 / max(n_classes - 1, 1))
    image = (grey + rng.normal(0, 10, shape)).clip(0, 255).astype(np.uint8)
    return truth, q, image
