"""Data augmentation on numpy patches (default: flips, in-plane 90°, mild intensity).

Geometric changes apply to the image and the labels together.  The image carries a
symmetric halo (see :func:`volseg.train.data.extract`), so flipping or rotating it
keeps every output voxel aligned with its input context.  Intensity changes act on
the normalised image only.
"""

from __future__ import annotations

import numpy as np

from volseg.train.config import AugmentConfig


def augment(
    image: np.ndarray, labels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment one sample.

    Parameters
    ----------
    image
        Normalised float32 ``(z, y, x)`` input with a symmetric halo.
    labels
        Class ids ``(z, y, x)`` of the output window.
    cfg
        What to apply.
    rng
        Random generator.

    Returns
    -------
    image, labels
        New contiguous arrays.
    """
    if cfg.flips:
        for axis in range(3):
            if rng.random() < 0.5:
                image = np.flip(image, axis)
                labels = np.flip(labels, axis)
    if cfg.rot90:
        square = image.shape[1] == image.shape[2] and labels.shape[1] == labels.shape[2]
        k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        if k:
            image = np.rot90(image, k, axes=(1, 2))
            labels = np.rot90(labels, k, axes=(1, 2))
    image = np.ascontiguousarray(image, dtype=np.float32)
    labels = np.ascontiguousarray(labels)
    p = cfg.probability
    if cfg.gamma is not None and rng.random() < p:
        lo, hi = float(image.min()), float(image.max())
        if hi > lo:
            g = float(np.exp(rng.uniform(np.log(cfg.gamma[0]), np.log(cfg.gamma[1]))))
            image = ((image - lo) / (hi - lo)) ** g * (hi - lo) + lo
    if cfg.contrast is not None and rng.random() < p:
        c = float(rng.uniform(*cfg.contrast))
        mean = float(image.mean())
        image = (image - mean) * c + mean
    if cfg.brightness and rng.random() < p:
        image = image + float(rng.uniform(-cfg.brightness, cfg.brightness))
    if cfg.noise_std and rng.random() < p:
        sigma = float(rng.uniform(0, cfg.noise_std))
        image = image + rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False), labels
