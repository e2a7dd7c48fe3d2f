"""Blend weights (importance maps) of a sliding-window patch.

``gaussian`` and ``constant`` are MONAI's ``compute_importance_map`` itself (float32),
so that overlap-add blending reproduces ``monai.inferers.sliding_window_inference``;
``bump`` is a smooth window with compact support, clamped the way MONAI clamps.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from volseg.inference.options import BLENDS, Blend

MIN_WEIGHT = 1e-3
"""Lower bound of the clamp (MONAI's): weights are at least ``max(min(w), 1e-3)``."""


def _bump_1d(n: int) -> np.ndarray:
    half = (n + 1) / 2.0
    t = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) / half
    return np.exp(1.0 - 1.0 / (1.0 - t**2)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _importance_map(
    patch: tuple[int, ...], blend: str, sigma_scale: tuple[float, ...]
) -> np.ndarray:
    if blend in ("gaussian", "constant"):
        out = np.ascontiguousarray(_monai_map(patch, blend, sigma_scale).numpy(),
                                   dtype=np.float32)
        out.setflags(write=False)
        return out
    if blend != "bump":
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    weights = np.ones((), dtype=np.float32)
    for axis, n in enumerate(patch):
        w1 = _bump_1d(n)
        weights = weights[..., None] * w1 if axis else w1
    floor = max(float(weights.min()), MIN_WEIGHT)
    out = np.maximum(weights, np.float32(floor)).astype(np.float32)
    out.setflags(write=False)
    return out


def _monai_map(patch: tuple[int, ...], blend: str, sigma_scale: tuple[float, ...]) -> Any:
    """``monai.data.utils.compute_importance_map(patch, blend, sigma_scale)``, op for op.

    The same torch operations in the same order (float32), so the map is bit-equal to
    MONAI's (``tests/inference/test_inference.py`` compares them) without importing
    ``monai``, whose package import loads every MONAI subpackage (1.5-2 s).
    """
    import torch

    if blend == "constant":
        weights = torch.ones(patch, dtype=torch.float)
    else:
        sigmas = [n * s for n, s in zip(patch, sigma_scale, strict=True)]
        for i, n in enumerate(patch):
            x = torch.arange(start=-(n - 1) / 2.0, end=(n - 1) / 2.0 + 1, dtype=torch.float)
            x = torch.exp(x**2 / (-2 * sigmas[i] ** 2))
            weights = weights.unsqueeze(-1) * x[(None,) * i] if i > 0 else x
    floor = max(torch.min(weights).item(), 1e-3)
    return torch.clamp_(weights.to(torch.float), min=floor).to(torch.float32)


def importance_map(
    patch: Sequence[int], blend: Blend | str = "gaussian", *,
    sigma_scale: float | Sequence[float] = 0.125,
) -> np.ndarray:
    """Return the blend weight of every voxel of a patch (float32, read-only).

    Parameters
    ----------
    patch
        Patch size per axis.
    blend
        ``"gaussian"``, ``"constant"`` or ``"bump"``.
    sigma_scale
        Gaussian standard deviation as a fraction of the patch size (per axis or
        one number).

    Returns
    -------
    numpy.ndarray
        Weights of shape ``patch``, all > 0 (a cached array: do not modify).

    Notes
    -----
    With :math:`c_a = (n_a - 1)/2` the patch centre along axis :math:`a` and
    :math:`x_a = i_a - c_a`:

    * gaussian: :math:`w = \\prod_a \\exp(-x_a^2 / (2 \\sigma_a^2))`,
      :math:`\\sigma_a = \\mathrm{sigma\\_scale}_a \\, n_a` (unnormalised, peak 1);
    * constant: :math:`w = 1`;
    * bump: :math:`w = \\prod_a \\exp(1 - 1/(1 - t_a^2))` with
      :math:`t_a = x_a / ((n_a + 1)/2)`, a :math:`C^\\infty` window equal to 1 at the
      centre and vanishing (with all derivatives) one voxel outside the patch.

    All maps are then clamped from below at :math:`\\max(\\min w, 10^{-3})`, as
    MONAI's ``compute_importance_map`` does, so every voxel keeps a positive weight
    and the blend denominator never vanishes.  Gaussian and constant maps are
    ``monai.data.utils.compute_importance_map(patch, mode, sigma_scale)``.

    References
    ----------
    MONAI ``monai.data.utils.compute_importance_map`` and
    ``monai.inferers.sliding_window_inference``.
    """
    size = tuple(int(n) for n in patch)
    if any(n < 1 for n in size):
        raise ValueError(f"patch sizes must be >= 1, got {size}")
    ss = (
        (float(sigma_scale),) * len(size)
        if isinstance(sigma_scale, (int, float))
        else tuple(float(s) for s in sigma_scale)
    )
    if len(ss) != len(size):
        raise ValueError(f"sigma_scale {ss} does not match patch {size}")
    if blend == "gaussian" and any(s <= 0 for s in ss):
        raise ValueError(f"sigma_scale must be > 0, got {ss}")
    return _importance_map(size, str(blend), ss)
