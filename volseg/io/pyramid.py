"""Multiscale pyramids: which axes to halve at each level, and the 2× reductions.

Level ``k + 1`` halves (rounding up) every spatial axis of level ``k`` that is worth
halving: an axis of length > 1 whose voxel size is less than twice the finest voxel
size of the level.  Isotropic volumes therefore halve every axis; an anisotropic
serial-section stack (50 × 4 × 4 nm) first halves only ``y, x`` until their voxels are
about as coarse as ``z``.  Levels are added until the largest spatial axis is at most
:data:`TOP_SIZE` (or nothing can be halved).  Channel axes are never reduced.

Reductions work on blocks whose extent along a halved axis is even, except the last
block, which may be odd: its final, unpaired voxel is reduced on its own (``mean``:
the mean over the voxels that exist; ``mode``: the most frequent label among them,
ties going to the first voxel in C order of the 2 × 2 × 2 cell).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOP_SIZE = 256
"""The pyramid stops once the largest spatial axis of a level is at most this long."""


def level_factors(
    shape: Sequence[int], scale: Sequence[float], spatial: Sequence[bool]
) -> tuple[int, ...] | None:
    """Return the per-axis reduction factors (1 or 2) for the next level, or ``None``.

    Parameters
    ----------
    shape, scale
        Shape and voxel size of the current level (all axes).
    spatial
        Which axes are spatial (only those are reduced).

    Returns
    -------
    tuple of int or None
        ``None`` when the current level is already small enough or no axis can be
        halved.
    """
    sizes = [n for n, s in zip(shape, spatial, strict=True) if s]
    if not sizes or max(sizes) <= TOP_SIZE:
        return None
    finest = min(v for v, s in zip(scale, spatial, strict=True) if s)
    factors = tuple(
        2 if (is_space and n > 1 and v < 2 * finest) else 1
        for n, v, is_space in zip(shape, scale, spatial, strict=True)
    )
    return factors if any(f == 2 for f in factors) else None


def plan_levels(
    shape: Sequence[int], scale: Sequence[float], spatial: Sequence[bool]
) -> list[tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...]]]:
    """Return ``(shape, scale, factors)`` of every level (level 0 has factors all 1)."""
    levels = [(tuple(shape), tuple(float(v) for v in scale), (1,) * len(shape))]
    while True:
        cur_shape, cur_scale, _ = levels[-1]
        factors = level_factors(cur_shape, cur_scale, spatial)
        if factors is None:
            return levels
        levels.append((
            tuple(-(-n // f) for n, f in zip(cur_shape, factors, strict=True)),
            tuple(v * f for v, f in zip(cur_scale, factors, strict=True)),
            factors,
        ))


def _pad_even(block: np.ndarray, factors: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad odd halved axes by one edge voxel; return the padded block and a validity mask."""
    pad = [(0, (f - n % f) % f) for n, f in zip(block.shape, factors, strict=True)]
    valid = np.ones(block.shape, dtype=bool)
    if any(p for _, p in pad):
        block = np.pad(block, pad, mode="edge")
        valid = np.pad(valid, pad, mode="constant", constant_values=False)
    return block, valid


def _cells(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Reshape to ``(*out_shape, cell_size)``: the voxels of each reduction cell last."""
    out = [n // f for n, f in zip(block.shape, factors, strict=True)]
    split = [d for n, f in zip(out, factors, strict=True) for d in (n, f)]
    view = block.reshape(split)
    nd = block.ndim
    order = [2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)]
    return view.transpose(order).reshape(*out, -1)


def reduce_mean(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Average ``block`` over cells of ``factors`` voxels (integers rounded half-even).

    Examples
    --------
    >>> reduce_mean(np.array([[1, 3, 5]], dtype=np.uint8), (1, 2)).tolist()
    [[2, 5]]
    """
    padded, valid = _pad_even(block, factors)
    values = _cells(padded, factors).astype(np.float64)
    weights = _cells(valid, factors)
    mean = (values * weights).sum(axis=-1) / weights.sum(axis=-1)
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    elif block.dtype == np.bool_:
        mean = mean >= 0.5
    return mean.astype(block.dtype)


def reduce_mode(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Return the most frequent value in each cell of ``factors`` voxels (labels).

    Examples
    --------
    >>> reduce_mode(np.array([[7, 2, 2, 9, 4]], dtype=np.uint8), (1, 2)).tolist()
    [[7, 2, 4]]
    """
    padded, valid = _pad_even(block, factors)
    values = _cells(padded, factors)
    weights = _cells(valid, factors)
    # counts[..., k] = number of valid voxels in the cell equal to voxel k
    equal = values[..., :, None] == values[..., None, :]
    counts = (equal & weights[..., None, :]).sum(axis=-1)
    counts[~weights] = -1
    best = np.argmax(counts, axis=-1)
    return np.take_along_axis(values, best[..., None], axis=-1)[..., 0]


REDUCERS = {"mean": reduce_mean, "mode": reduce_mode}
