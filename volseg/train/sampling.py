"""Patch sampling anchored on foreground and rare classes, with a cap on oversampling.

A training patch is placed around an *anchor* voxel.  With probability ``p`` the
anchor is a voxel of an anchor class ``c`` drawn with the capped class-balanced
probabilities ``q`` of :func:`capped_class_probabilities`; otherwise it is a voxel
drawn uniformly from all annotated voxels (so every class then appears at its natural
frequency ``f``).  Anchors are found without loading the volume: a per-block table of
class counts (one pass over the labels) picks a block in proportion to its count of
the wanted class, then only that block's labels are read (and cached).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def capped_class_probabilities(
    frequencies: Sequence[float] | np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    cap: float = 10.0,
) -> np.ndarray:
    """Class-balanced anchor probabilities ``q`` with ``q_c <= cap * f_c``.

    Parameters
    ----------
    frequencies
        Annotated voxel count of every class.
    classes
        The classes that may be anchored (default: all); others get ``q = 0``.
    cap
        Largest oversampling factor relative to the class's share ``f_c`` of the
        anchorable annotated voxels (``cap >= 1``).

    Returns
    -------
    numpy.ndarray
        ``q`` summing to 1 (all zeros when no anchorable class is annotated).

    Notes
    -----
    Balanced sampling would give every present class ``1 / K``; a class with a tiny
    share would then be oversampled without bound.  ``q`` is the water-filling
    solution ``q_c = min(cap * f_c, lam)`` with ``lam`` chosen so that
    ``sum_c q_c = 1``: as balanced as the cap allows.  E.g. shares 0.90 / 0.09 / 0.01
    with cap 10 give 0.45 / 0.45 / 0.10.
    """
    f = np.asarray(frequencies, dtype=np.float64).copy()
    if classes is not None:
        keep = np.zeros(len(f), bool)
        keep[list(classes)] = True
        f[~keep] = 0.0
    total = f.sum()
    if total <= 0:
        return np.zeros(len(f))
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    f = f / total
    present = f > 0
    limits = cap * f[present]
    # find lam with sum(min(limits, lam)) = 1: sort limits, fill from the smallest
    order = np.sort(limits)
    remaining, k = 1.0, len(order)
    lam = order[-1]
    for i, lim in enumerate(order):
        share = remaining / (k - i)
        if lim >= share:
            lam = share
            break
        remaining -= lim
    q = np.zeros_like(f)
    q[present] = np.minimum(limits, lam)
    return q / q.sum()


@dataclass(frozen=True)
class BlockTable:
    """Class counts per block of one region's labels.

    Attributes
    ----------
    starts
        ``(B, 3)`` region-local start of every block.
    shapes
        ``(B, 3)`` shape of every block.
    counts
        ``(B, C)`` annotated voxels of each class in each block.
    """

    starts: np.ndarray
    shapes: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class Anchor:
    """A sampled anchor voxel (region-local coordinates)."""

    region: int
    position: tuple[int, int, int]
    anchored: bool
    cls: int


class AnchorSampler:
    """Draw anchor voxels: class-anchored with probability ``p``, else uniform.

    Parameters
    ----------
    tables
        One :class:`BlockTable` per region.
    load_block
        ``load_block(region, block) -> labels`` (class ids, ignore elsewhere), the
        labels of one block; results are cached (``cache_blocks`` most recent).
    anchor_probability
        p.
    anchor_classes
        Classes that may be anchored.
    max_oversampling
        The cap of :func:`capped_class_probabilities`.
    rng
        Random generator (seeded for repeatable runs).
    """

    def __init__(
        self,
        tables: Sequence[BlockTable],
        load_block: Callable[[int, int], np.ndarray],
        *,
        anchor_probability: float,
        anchor_classes: Sequence[int],
        max_oversampling: float,
        rng: np.random.Generator,
        cache_blocks: int = 64,
    ) -> None:
        self.tables = list(tables)
        self._load = load_block
        self.p = anchor_probability
        self.rng = rng
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_blocks
        n_classes = self.tables[0].counts.shape[1]
        # flat index over (region, block)
        self._keys = [(r, b) for r, t in enumerate(self.tables) for b in range(len(t.counts))]
        self.counts = np.concatenate([t.counts for t in self.tables], axis=0).astype(np.float64)
        self.frequencies = self.counts.sum(axis=0)
        if self.frequencies.sum() == 0:
            raise ValueError("no annotated voxel in the training region")
        self.class_probabilities = capped_class_probabilities(
            self.frequencies, classes=anchor_classes, cap=max_oversampling
        )
        if self.class_probabilities.sum() == 0:
            self.p = 0.0  # no anchor class annotated: uniform sampling only
        self._n_classes = n_classes

    def _labels(self, key: tuple[int, int]) -> np.ndarray:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        labels = np.asarray(self._load(*key))
        self._cache[key] = labels
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return labels

    def sample(self) -> Anchor:
        """Draw one anchor."""
        rng = self.rng
        anchored = bool(rng.random() < self.p)
        if anchored:
            cls = int(rng.choice(self._n_classes, p=self.class_probabilities))
            weights = self.counts[:, cls]
        else:
            weights = self.counts.sum(axis=1)
        i = int(rng.choice(len(weights), p=weights / weights.sum()))
        key = self._keys[i]
        labels = self._labels(key)
        if anchored:
            flat = np.flatnonzero(labels == cls)
        else:
            flat = np.flatnonzero(labels < self._n_classes)
        pick = int(flat[rng.integers(len(flat))])
        local = np.unravel_index(pick, labels.shape)
        table = self.tables[key[0]]
        start = table.starts[key[1]]
        pos = tuple(int(s + v) for s, v in zip(start, local, strict=True))
        if not anchored:
            cls = int(labels[local])
        return Anchor(region=key[0], position=pos, anchored=anchored, cls=cls)  # type: ignore[arg-type]


def window_start(
    anchor: int, size: int, extent: int, rng: np.random.Generator, *, jitter: float = 0.25
) -> int:
    """Start of a window of ``size`` containing ``anchor`` on an axis of ``extent``.

    The anchor sits at ``size // 2`` plus a random shift of up to ``jitter * size``;
    the window is then moved inside ``[0, extent)`` when it fits (the anchor stays
    inside), else centred on the axis (the outside is padded by the caller).
    """
    if size >= extent:
        return (extent - size) // 2
    j = int(jitter * size)
    start = anchor - size // 2 + (int(rng.integers(-j, j + 1)) if j else 0)
    return int(min(max(start, 0), extent - size))
