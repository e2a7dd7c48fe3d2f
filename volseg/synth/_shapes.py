"""Painting simple shapes into a box given in global voxel coordinates."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def local_grid(
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    centre: npt.ArrayLike,
    reach: float | npt.ArrayLike,
) -> tuple[tuple[slice, ...], list[npt.NDArray[np.float64]]] | None:
    """The part of the box ``[lo, hi)`` within ``reach`` (per axis) of ``centre``.

    Returns the slices of that part in box-local indices and open-grid coordinates
    relative to ``centre`` (``None`` when it is empty).
    """
    c = np.asarray(centre, dtype=np.float64)
    r = np.broadcast_to(np.asarray(reach, dtype=np.float64), c.shape)
    a = np.maximum(np.floor(c - r).astype(np.int64), lo)
    b = np.minimum(np.ceil(c + r).astype(np.int64) + 1, hi)
    if np.any(b <= a):
        return None
    nd = len(c)
    sl = tuple(slice(int(a[i] - lo[i]), int(b[i] - lo[i])) for i in range(nd))
    rel = [
        (np.arange(a[i], b[i], dtype=np.float64) - c[i]).reshape(
            [-1 if j == i else 1 for j in range(nd)]
        )
        for i in range(nd)
    ]
    return sl, rel


def sqnorm(rel: list[npt.NDArray[np.float64]]) -> Any:
    """Squared length of open-grid relative coordinates (fixed summation order)."""
    out = rel[0] * rel[0]
    for r in rel[1:]:
        out = out + r * r
    return out


def grid_cells(
    lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64], size: npt.ArrayLike, margin: int
) -> npt.NDArray[np.int64]:
    """Integer cubes of side ``size`` meeting the box grown by ``margin`` cubes, ``(m, d)``."""
    s = np.asarray(size, dtype=np.int64)
    c_lo = lo // s - margin
    c_hi = (hi - 1) // s + margin
    axes = [np.arange(a, b + 1) for a, b in zip(c_lo, c_hi, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
