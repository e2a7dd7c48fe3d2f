"""Pure geometry: boxes, block grids, sliding-window patch grids and halos.

Nothing here reads data, imports torch or builds a Dask graph: every function maps
integers to integers, so it is tested on tiny 1-D and 2-D cases worked out by hand
(``tests/test_geometry.py``).  :mod:`volseg.inference` builds its Dask graphs from
these plans.

Coordinates are voxel indices of the whole volume, half-open intervals
``[start, stop)``, axis order ``z, y, x``.  A patch may start before 0 or end past
the volume only on an axis shorter than the patch, where the volume is padded as
MONAI's ``sliding_window_inference`` pads it (see :func:`border_padding`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Interval = tuple[int, int]
Index = tuple[int, ...]


# --------------------------------------------------------------------------- boxes
@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``[start, stop)`` of voxels in N dimensions.

    Parameters
    ----------
    start, stop
        Corner coordinates; ``stop[i] >= start[i]`` (an empty box has some
        ``stop[i] == start[i]``).  Coordinates may be negative (padding).

    Examples
    --------
    >>> Box((0, 2), (3, 5)).shape
    (3, 3)
    >>> Box((0, 2), (3, 5)).intersect(Box((1, 0), (9, 3)))
    Box(start=(1, 2), stop=(3, 3))
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.start) != len(self.stop):
            raise ValueError(f"start {self.start} and stop {self.stop} differ in length")
        if any(b < a for a, b in zip(self.start, self.stop, strict=True)):
            raise ValueError(f"box stop {self.stop} is before its start {self.start}")

    @classmethod
    def from_shape(cls, shape: Sequence[int], start: Sequence[int] | None = None) -> Box:
        """Return the box of ``shape`` at ``start`` (the origin by default)."""
        begin = tuple(int(s) for s in (start if start is not None else (0,) * len(shape)))
        return cls(begin, tuple(b + int(n) for b, n in zip(begin, shape, strict=True)))

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.start)

    @property
    def shape(self) -> tuple[int, ...]:
        """Edge lengths ``stop - start``."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def size(self) -> int:
        """Number of voxels."""
        return math.prod(self.shape)

    @property
    def empty(self) -> bool:
        """Whether the box holds no voxel."""
        return any(n == 0 for n in self.shape)

    def intersect(self, other: Box) -> Box:
        """Return the intersection (an empty box at a valid position if disjoint)."""
        start = tuple(max(a, b) for a, b in zip(self.start, other.start, strict=True))
        stop = tuple(
            max(s, min(a, b)) for s, a, b in zip(start, self.stop, other.stop, strict=True)
        )
        return Box(start, stop)

    def grow(self, before: Sequence[int], after: Sequence[int]) -> Box:
        """Return the box extended by ``before`` voxels at the start and ``after`` at the end."""
        return Box(
            tuple(a - int(b) for a, b in zip(self.start, before, strict=True)),
            tuple(a + int(b) for a, b in zip(self.stop, after, strict=True)),
        )

    def shift(self, offset: Sequence[int]) -> Box:
        """Return the box translated by ``offset``."""
        return Box(
            tuple(a + int(o) for a, o in zip(self.start, offset, strict=True)),
            tuple(a + int(o) for a, o in zip(self.stop, offset, strict=True)),
        )

    def relative_to(self, origin: Sequence[int]) -> Box:
        """Return the box in coordinates whose origin is ``origin``."""
        return self.shift(tuple(-int(o) for o in origin))

    def slices(self) -> tuple[slice, ...]:
        """Return the box as a tuple of slices (coordinates must be >= 0)."""
        if any(a < 0 for a in self.start):
            raise ValueError(f"cannot slice with negative start {self.start}")
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))


# ---------------------------------------------------------------------- block grids
def regular_chunks(size: int, block: int) -> tuple[int, ...]:
    """Split an axis of ``size`` voxels into blocks of ``block`` (the last one shorter).

    Examples
    --------
    >>> regular_chunks(10, 4)
    (4, 4, 2)
    """
    if size < 0 or block < 1:
        raise ValueError(f"need size >= 0 and block >= 1, got size={size}, block={block}")
    if size == 0:
        return (0,)
    full, rest = divmod(size, block)
    return (block,) * full + ((rest,) if rest else ())


def chunk_bounds(chunks: Sequence[int]) -> tuple[int, ...]:
    """Return block boundaries ``(0, c0, c0 + c1, ..., size)`` of an axis's chunk sizes.

    Examples
    --------
    >>> chunk_bounds((4, 4, 2))
    (0, 4, 8, 10)
    """
    bounds = [0]
    for c in chunks:
        if c < 0:
            raise ValueError(f"negative chunk size in {tuple(chunks)}")
        bounds.append(bounds[-1] + int(c))
    return tuple(bounds)


def block_boxes(chunks: Sequence[Sequence[int]]) -> Iterator[tuple[Index, Box]]:
    """Yield ``(block index, box)`` of every block of a chunked N-D grid in C order."""
    bounds = [chunk_bounds(c) for c in chunks]
    for index in itertools.product(*(range(len(b) - 1) for b in bounds)):
        start = tuple(b[i] for b, i in zip(bounds, index, strict=True))
        stop = tuple(b[i + 1] for b, i in zip(bounds, index, strict=True))
        yield index, Box(start, stop)


def tiles(box: Box, tile: Sequence[int]) -> list[Box]:
    """Split ``box`` into sub-boxes of at most ``tile`` voxels per axis (C order).

    Examples
    --------
    >>> [t.shape for t in tiles(Box((0,), (5,)), (2,))]
    [(2,), (2,), (1,)]
    """
    chunks = [regular_chunks(n, max(1, int(t))) for n, t in zip(box.shape, tile, strict=True)]
    return [b.shift(box.start) for _, b in block_boxes(chunks)]


def halo_box(box: Box, halo: Sequence[Interval]) -> Box:
    """Return ``box`` grown by a ``(before, after)`` halo per axis (may leave the volume).

    Examples
    --------
    >>> halo_box(Box((0, 4), (4, 8)), [(1, 2), (0, 0)])
    Box(start=(-1, 4), stop=(6, 8))
    """
    return box.grow([h[0] for h in halo], [h[1] for h in halo])


def centre_halo(receptive_field: int) -> Interval:
    """Halo ``(before, after)`` of a network deciding one voxel from an R-cube (per axis).

    The decided voxel has ``R // 2`` voxels of its cube before it and
    ``R - 1 - R // 2`` after it: the exact centre for odd R, the voxel just past
    the middle for even R (the convention of :mod:`volseg.models.centre_voxel`
    and of ``scipy.ndimage`` filters).

    Examples
    --------
    >>> centre_halo(5), centre_halo(4)
    ((2, 2), (2, 1))
    """
    if receptive_field < 1:
        raise ValueError(f"receptive field must be >= 1, got {receptive_field}")
    return receptive_field // 2, receptive_field - 1 - receptive_field // 2


def border_pad(request: Interval, size: int) -> tuple[Interval, Interval]:
    """Split a requested interval into its in-volume part and the padding outside.

    Parameters
    ----------
    request
        ``[lo, hi)`` along an axis of a volume of ``size`` voxels; may extend past
        either end.
    size
        Volume length along the axis.

    Returns
    -------
    valid, pad
        ``valid = [max(lo, 0), min(hi, size))`` and ``pad = (before, after)`` voxels
        that must be synthesised (zero, reflected, ...) around it.

    Examples
    --------
    >>> border_pad((-2, 5), 4)
    ((0, 4), (2, 1))
    """
    lo, hi = request
    vlo, vhi = max(lo, 0), min(hi, size)
    if vhi <= vlo:
        raise ValueError(f"interval {request} does not meet the volume [0, {size})")
    return (vlo, vhi), (vlo - lo, hi - vhi)


# ---------------------------------------------------------------------- patch grids
def scan_interval(size: int, patch: int, overlap: float) -> int:
    """Distance between neighbouring patch starts, as MONAI's ``_get_scan_interval``.

    Parameters
    ----------
    size
        Axis length **after** border padding (``max(volume, patch)``).
    patch
        Patch length.
    overlap
        Fraction in ``[0, 1)``.

    Notes
    -----
    ``interval = patch`` when ``patch == size`` (a single patch), else
    ``max(int(patch * (1 - overlap)), 1)`` (``int`` truncates towards zero).

    Examples
    --------
    >>> scan_interval(100, 32, 0.25), scan_interval(100, 3, 0.9), scan_interval(32, 32, 0.5)
    (24, 1, 32)
    """
    _check_overlap(overlap)
    if patch == size:
        return int(patch)
    interval = int(patch * (1 - overlap))
    return interval if interval > 0 else 1


def border_padding(size: int, patch: int) -> Interval:
    """Padding ``(before, after)`` of an axis shorter than the patch, as MONAI pads it.

    Notes
    -----
    ``diff = max(patch - size, 0)``; ``before = diff // 2``, ``after = diff - before``
    (``sliding_window_inference`` builds this list for ``torch.nn.functional.pad``).
    The padded voxels hold the constant 0 (MONAI's default ``padding_mode="constant"``,
    ``cval=0``).

    Examples
    --------
    >>> border_padding(5, 8), border_padding(9, 8)
    ((1, 2), (0, 0))
    """
    diff = max(int(patch) - int(size), 0)
    return diff // 2, diff - diff // 2


def patch_starts(size: int, patch: int, overlap: float) -> tuple[int, ...]:
    """Starts of the sliding-window patches along one axis, in volume coordinates.

    The grid is MONAI's: ``dense_patch_slices(padded, patch, interval)`` on the axis
    padded to ``padded = max(size, patch)``, shifted back by the padding before.

    Notes
    -----
    With ``L = max(size, patch)`` and ``s = scan_interval(L, patch, overlap)`` the
    number of patches is ``n = 1 + min{d >= 0 : d s + patch >= L}`` and patch ``d``
    starts at ``min(d s, L - patch)`` (the last patch is aligned to the end).
    On an axis shorter than the patch there is one patch starting at
    ``-border_padding(size, patch)[0]``.

    Examples
    --------
    >>> patch_starts(10, 4, 0.5)
    (0, 2, 4, 6)
    >>> patch_starts(11, 4, 0.25)
    (0, 3, 6, 7)
    >>> patch_starts(3, 6, 0.25)
    (-1,)
    """
    if size < 1 or patch < 1:
        raise ValueError(f"need size >= 1 and patch >= 1, got size={size}, patch={patch}")
    padded = max(size, patch)
    before = border_padding(size, patch)[0]
    step = scan_interval(padded, patch, overlap)
    count = 1
    while (count - 1) * step + patch < padded:
        count += 1
    return tuple(min(d * step, padded - patch) - before for d in range(count))


def _check_overlap(overlap: float) -> None:
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")


@dataclass(frozen=True)
class PatchGrid:
    """The global sliding-window grid of a volume (MONAI's ``dense_patch_slices``).

    Parameters
    ----------
    shape
        Spatial shape of the volume.
    patch
        Patch size per axis.
    overlap
        Overlap fraction per axis (a scalar applies to all axes).
    """

    shape: tuple[int, ...]
    patch: tuple[int, ...]
    overlap: tuple[float, ...]

    @classmethod
    def create(
        cls, shape: Sequence[int], patch: Sequence[int], overlap: float | Sequence[float]
    ) -> PatchGrid:
        """Validate and build a grid (``overlap`` may be one number)."""
        if len(shape) != len(patch):
            raise ValueError(f"patch {tuple(patch)} and shape {tuple(shape)} differ in length")
        ov = (
            (float(overlap),) * len(shape)
            if isinstance(overlap, (int, float))
            else tuple(float(o) for o in overlap)
        )
        for o in ov:
            _check_overlap(o)
        return cls(tuple(int(s) for s in shape), tuple(int(p) for p in patch), ov)

    @property
    def starts(self) -> tuple[tuple[int, ...], ...]:
        """Patch starts per axis (volume coordinates)."""
        return tuple(
            patch_starts(n, p, o)
            for n, p, o in zip(self.shape, self.patch, self.overlap, strict=True)
        )

    @property
    def padding(self) -> tuple[Interval, ...]:
        """Border padding ``(before, after)`` per axis (non-zero on axes shorter than the patch)."""
        return tuple(border_padding(n, p) for n, p in zip(self.shape, self.patch, strict=True))

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def boxes(self) -> Iterator[Box]:
        """Yield every patch box in C order of starts (MONAI's order)."""
        for start in itertools.product(*self.starts):
            yield Box.from_shape(self.patch, start)


# ------------------------------------------------------------ overlap-add plans
@dataclass(frozen=True)
class AxisPlan:
    """Overlap-add plan along one axis.

    Block ``j`` (``[bounds[j], bounds[j+1])``) *owns* the patches whose output start
    lies in it (the first block also owns starts before 0, the last one starts past
    its end).  It reads the input its patches need and *writes* (emits) weighted sums
    over the union of its patches' outputs clipped to the volume; output block ``j``
    sums the emissions of ``sources[j]``.

    Attributes
    ----------
    size
        Axis length.
    bounds
        Block boundaries ``(0, ..., size)``.
    patch
        Output patch length.
    context
        ``(before, after)``: input voxels a patch reads around its output window
        (``(0, 0)`` for 3-D networks, ``(k // 2, k // 2)`` in z for 2.5-D ones).
    starts
        Output patch starts (volume coordinates).
    owned
        Per block, the index range ``[i0, i1)`` into :attr:`starts` of its patches.
    write
        Per block, the output interval its emission covers (clipped to the volume;
        ``(b, b)`` when it owns no patch).
    read
        Per block, the input interval its patches read (may leave the volume; the
        reader pads), ``(b, b)`` when it owns no patch.
    sources
        Per output block, the blocks whose emissions overlap it.
    """

    size: int
    bounds: tuple[int, ...]
    patch: int
    context: Interval
    starts: tuple[int, ...]
    owned: tuple[Interval, ...]
    write: tuple[Interval, ...]
    read: tuple[Interval, ...]
    sources: tuple[tuple[int, ...], ...]

    @property
    def nblocks(self) -> int:
        """Number of blocks."""
        return len(self.bounds) - 1


def plan_axis(
    size: int,
    chunks: Sequence[int],
    *,
    patch: int,
    overlap: float,
    context: Interval = (0, 0),
) -> AxisPlan:
    """Build the overlap-add plan of one axis (see :class:`AxisPlan`).

    Parameters
    ----------
    size
        Axis length.
    chunks
        Block sizes along the axis (sum to ``size``); independent of ``patch``.
    patch, overlap
        Output patch length and overlap fraction (MONAI's grid, :func:`patch_starts`).
    context
        Input voxels read ``(before, after)`` each output patch.

    Examples
    --------
    >>> p = plan_axis(10, (4, 4, 2), patch=4, overlap=0.5)
    >>> p.starts, p.owned, p.write, p.sources
    ((0, 2, 4, 6), ((0, 2), (2, 4), (4, 4)), ((0, 6), (4, 10), (8, 8)), ((0,), (0, 1), (1,)))
    """
    bounds = chunk_bounds(chunks)
    if bounds[-1] != size:
        raise ValueError(f"chunks {tuple(chunks)} do not add up to the axis size {size}")
    starts = patch_starts(size, patch, overlap)
    nb = len(bounds) - 1
    owned: list[Interval] = []
    i = 0
    for j in range(nb):
        i0 = i
        last = j == nb - 1
        while i < len(starts) and (last or starts[i] < bounds[j + 1]):
            i += 1
        owned.append((i0, i))
    write: list[Interval] = []
    read: list[Interval] = []
    for j, (i0, i1) in enumerate(owned):
        if i1 == i0:
            write.append((bounds[j], bounds[j]))
            read.append((bounds[j], bounds[j]))
            continue
        lo, hi = starts[i0], starts[i1 - 1] + patch
        write.append((max(lo, 0), min(hi, size)))
        read.append((lo - context[0], hi + context[1]))
    sources = tuple(
        tuple(
            k for k in range(nb)
            if write[k][0] < write[k][1]
            and write[k][0] < bounds[j + 1] and bounds[j] < write[k][1]
        )
        for j in range(nb)
    )
    return AxisPlan(
        size=size, bounds=bounds, patch=patch, context=context, starts=starts,
        owned=tuple(owned), write=tuple(write), read=tuple(read), sources=sources,
    )


@dataclass(frozen=True)
class OverlapAddPlan:
    """The N-D overlap-add plan: the product of one :class:`AxisPlan` per axis.

    Every patch of the global grid (the product of the axes' starts) is owned by
    exactly one block, so it is evaluated exactly once whatever the block sizes.
    """

    axes: tuple[AxisPlan, ...]

    @classmethod
    def create(
        cls,
        shape: Sequence[int],
        chunks: Sequence[Sequence[int]],
        *,
        patch: Sequence[int],
        overlap: float | Sequence[float],
        context: Sequence[Interval] | None = None,
    ) -> OverlapAddPlan:
        """Plan every axis (see :func:`plan_axis`)."""
        nd = len(shape)
        ov = (overlap,) * nd if isinstance(overlap, (int, float)) else tuple(overlap)
        ctx = tuple(context) if context is not None else ((0, 0),) * nd
        if not len(chunks) == len(patch) == len(ov) == len(ctx) == nd:
            raise ValueError("shape, chunks, patch, overlap and context differ in length")
        return cls(
            tuple(
                plan_axis(n, c, patch=p, overlap=float(o), context=(int(x[0]), int(x[1])))
                for n, c, p, o, x in zip(shape, chunks, patch, ov, ctx, strict=True)
            )
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Volume shape."""
        return tuple(a.size for a in self.axes)

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of blocks per axis."""
        return tuple(a.nblocks for a in self.axes)

    @property
    def patch(self) -> tuple[int, ...]:
        """Output patch size."""
        return tuple(a.patch for a in self.axes)

    @property
    def n_patches(self) -> int:
        """Number of patches of the global grid."""
        return math.prod(len(a.starts) for a in self.axes)

    def blocks(self) -> Iterator[Index]:
        """Yield every block index in C order."""
        return itertools.product(*(range(n) for n in self.grid))

    def block_box(self, index: Index) -> Box:
        """Return the region of output block ``index``."""
        return Box(
            tuple(a.bounds[i] for a, i in zip(self.axes, index, strict=True)),
            tuple(a.bounds[i + 1] for a, i in zip(self.axes, index, strict=True)),
        )

    def write_box(self, index: Index) -> Box:
        """Return the region block ``index`` emits weighted sums over (empty: owns none)."""
        return Box(
            tuple(a.write[i][0] for a, i in zip(self.axes, index, strict=True)),
            tuple(a.write[i][1] for a, i in zip(self.axes, index, strict=True)),
        )

    def read_box(self, index: Index) -> Box:
        """Return the input region block ``index`` reads (may leave the volume)."""
        return Box(
            tuple(a.read[i][0] for a, i in zip(self.axes, index, strict=True)),
            tuple(a.read[i][1] for a, i in zip(self.axes, index, strict=True)),
        )

    def patch_starts(self, index: Index) -> list[tuple[int, ...]]:
        """Return the output starts of the patches block ``index`` owns, in C order."""
        per_axis = [a.starts[a.owned[i][0]:a.owned[i][1]] for a, i in zip(self.axes, index,
                                                                          strict=True)]
        return list(itertools.product(*per_axis))

    def sources(self, index: Index) -> list[Index]:
        """Return the blocks whose emissions overlap output block ``index``."""
        return list(itertools.product(*(a.sources[i] for a, i in zip(self.axes, index,
                                                                     strict=True))))
