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

import itertools
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


def _pad_even(block: np.ndarray, factors: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad odd reduced axes by one edge voxel; return the block and a validity mask.

    The mask is ``None`` when nothing had to be padded (every voxel is valid).
    """
    pad = [(0, (f - n % f) % f) for n, f in zip(block.shape, factors, strict=True)]
    if not any(p for _, p in pad):
        return block, None
    valid = np.pad(np.ones(block.shape, dtype=bool), pad, mode="constant",
                   constant_values=False)
    return np.pad(block, pad, mode="edge"), valid


def _views(block: np.ndarray, factors: Sequence[int]) -> list[np.ndarray]:
    """Return the strided views ``block[o0::f0, o1::f1, ...]``, one per cell offset."""
    offsets = itertools.product(*(range(f) for f in factors))
    return [block[tuple(slice(o, None, f) for o, f in zip(offs, factors, strict=True))]
            for offs in offsets]


def _accumulator(dtype: np.dtype) -> type[np.floating]:
    small = np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2
    return np.float32 if small or dtype == np.bool_ else np.float64


def reduce_mean(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Average ``block`` over cells of ``factors`` voxels (integers rounded half-even).

    Examples
    --------
    >>> reduce_mean(np.array([[1, 3, 5]], dtype=np.uint8), (1, 2)).tolist()
    [[2, 5]]
    """
    padded, valid = _pad_even(block, factors)
    acc_type = _accumulator(block.dtype)
    views = _views(padded, factors)
    total = views[0].astype(acc_type)
    if valid is None:
        for view in views[1:]:
            total += view
        mean = total / acc_type(len(views))
    else:
        masks = _views(valid, factors)
        total *= masks[0]
        count = masks[0].astype(acc_type)
        for view, mask in zip(views[1:], masks[1:], strict=True):
            total += view * mask
            count += mask
        mean = total / count
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    elif block.dtype == np.bool_:
        mean = mean >= 0.5
    return mean.astype(block.dtype)


def reduce_mode(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Return the most frequent value in each cell of ``factors`` voxels (labels).

    Ties go to the value met first in C order within the cell.  Cells whose voxels
    all agree (most of a label volume) are settled without counting (padding copies
    an edge voxel, so an all-equal padded cell has that value as its mode too).

    Examples
    --------
    >>> reduce_mode(np.array([[7, 2, 2, 9, 4]], dtype=np.uint8), (1, 2)).tolist()
    [[7, 2, 4]]
    """
    padded, valid = _pad_even(block, factors)
    views = _views(padded, factors)
    out = views[0].copy()
    mixed = np.zeros(out.shape, dtype=bool)
    for view in views[1:]:
        mixed |= view != views[0]
    if not mixed.any():
        return out
    masks = _views(valid, factors) if valid is not None else None
    if len(views) <= 8 and out.dtype.itemsize == 1:
        out[mixed] = _mode_few_values([v[mixed] for v in views],
                                      [m[mixed] for m in masks] if masks else None)
        return out
    values = np.stack([v[mixed] for v in views], axis=-1)
    weights = (np.stack([m[mixed] for m in masks], axis=-1)
               if masks is not None else np.ones(values.shape, dtype=bool))
    counts = ((values[:, :, None] == values[:, None, :]) & weights[:, None, :]).sum(axis=-1)
    counts[~weights] = -1
    best = np.argmax(counts, axis=-1)
    out[mixed] = np.take_along_axis(values, best[:, None], axis=-1)[:, 0]
    return out


def _mode_few_values(values: Sequence[np.ndarray], valid: Sequence[np.ndarray] | None
                     ) -> np.ndarray:
    """Mode of one-byte values, cell by cell (``values[j][i]``: voxel ``j`` of cell ``i``).

    At most 8 voxels per cell.  For each value present, a cell's key is
    ``256 * count + bits`` where bit ``7 - j`` marks voxel ``j``: the positions of
    different values are disjoint, so among equal counts the value met first has
    the larger key — the same tie rule as the general path, with a few byte-wide
    passes per value instead of an all-pairs comparison.
    """
    k = len(values)
    present = np.flatnonzero(np.bincount(
        np.concatenate([v.view(np.uint8) for v in values]), minlength=256))
    result = values[0].copy()
    best = np.zeros(values[0].shape, dtype=np.uint16)
    key = np.empty(values[0].shape, dtype=np.uint16)
    eq = np.empty(values[0].shape, dtype=bool)
    for code in present:
        value = np.array(code, dtype=np.uint8).view(values[0].dtype)
        key.fill(0)
        for j, v in enumerate(values):
            np.equal(v, value, out=eq)
            if valid is not None:
                eq &= valid[j]
            key += eq.view(np.uint8).astype(np.uint16) * np.uint16(256 + (1 << (k - 1 - j)))
        better = key > best
        np.copyto(result, value, where=better)
        np.maximum(best, key, out=best)
    return result


REDUCERS = {"mean": reduce_mean, "mode": reduce_mode}
