"""Shared machinery of the phantom generators: the result type and the lazy builders.

A generator describes its phantom by *box functions*: pure functions of a global box
``(start, shape)`` (``start`` may lie outside the volume) returning that box's labels
or clean intensities.  The builders here turn box functions into dask arrays whose
blocks are computed independently, so the bytes of a phantom never depend on its
chunking.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from volseg.errors import ConfigError

if TYPE_CHECKING:  # dask and scipy are imported where used (`volseg synth --help` stays light)
    import dask.array as da

Box = tuple[tuple[int, int, int], tuple[int, int, int]]
BoxFn = Callable[[tuple[int, int, int], tuple[int, int, int]], np.ndarray]

IGNORE_ID = 255


class PhantomParameterError(ConfigError, ValueError):
    """A phantom parameter is out of range (a :class:`~volseg.errors.ConfigError`)."""


@dataclass(frozen=True)
class Phantom:
    """A synthetic volume with its ground truth, all lazy dask arrays.

    Attributes
    ----------
    image
        The synthetic image, axes ``(z, y, x)``: ``uint8`` (FIB-SEM, 2-D EM) or
        ``float32`` (cryo-ET).
    truth
        Ground-truth class id of every voxel, ``uint8``, same shape and chunks.
    annotation
        Sparse training labels: ``truth`` on a few annotated z-slices and
        :attr:`ignore_id` elsewhere; ``None`` when no slice is annotated.
    voxel_size
        Voxel size in nanometres, ``(z, y, x)``.
    class_names
        Name of each class id ``0 .. n_classes - 1``.
    ignore_id
        The "not annotated" id used in :attr:`annotation`.
    extra
        Kind, seed, parameters and the annotated slice indices (JSON-able).
    """

    image: da.Array
    truth: da.Array
    annotation: da.Array | None
    voxel_size: tuple[float, float, float]
    class_names: tuple[str, ...]
    ignore_id: int = IGNORE_ID
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def annotated_slices(self) -> tuple[int, ...]:
        """The z indices labelled in :attr:`annotation` (empty when none)."""
        return tuple(self.extra.get("annotated_slices", ()))


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a ``(z, y, x)`` shape of positive integers."""
    if len(shape) != 3 or any(int(s) != s or int(s) < 1 for s in shape):
        raise PhantomParameterError(
            f"phantom shape must be three positive integers (z, y, x), got {tuple(shape)}"
        )
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def check_chunks(
    chunks: Sequence[int] | None, shape: tuple[int, int, int], default: Sequence[int]
) -> tuple[tuple[int, ...], ...]:
    """Normalise ``(z, y, x)`` chunk sizes (capped at the shape) to dask chunks."""
    import dask.array as da

    c = tuple(default if chunks is None else chunks)
    if len(c) != 3 or any(int(v) < 1 for v in c):
        raise PhantomParameterError(f"chunks must be three positive integers, got {c}")
    capped = tuple(min(int(v), s) for v, s in zip(c, shape, strict=True))
    return da.core.normalize_chunks(capped, shape)


def check_nonneg(name: str, value: float) -> float:
    """Validate a non-negative finite number."""
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise PhantomParameterError(f"{name} must be a non-negative number, got {value!r}")
    return v


def lazy_array(
    fn: Callable[..., np.ndarray],
    *,
    chunks: tuple[tuple[int, ...], ...],
    dtype: npt.DTypeLike,
    name: str,
    token: Any,
) -> da.Array:
    """A dask array whose block at ``start`` with ``shape`` is ``fn(start, shape)``.

    The graph has one independent task per block (no dependencies), keyed by a
    deterministic name derived from ``token``.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    key = f"{name}-{tokenize(token, chunks)}"
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in chunks]
    dsk: dict[Any, Any] = {}
    for idx in np.ndindex(*[len(c) for c in chunks]):
        start = tuple(int(offsets[a][i]) for a, i in enumerate(idx))
        shape = tuple(int(chunks[a][i]) for a, i in enumerate(idx))
        dsk[(key, *idx)] = (fn, start, shape)
    graph = HighLevelGraph.from_collections(key, dsk, dependencies=())
    dt = np.dtype(dtype)
    return da.Array(graph, key, chunks, dtype=dt, meta=np.empty((0,) * len(chunks), dt))


def blur_radius(sigma: Sequence[float], truncate: float = 4.0) -> tuple[int, int, int]:
    """Half-width of :func:`scipy.ndimage.gaussian_filter` kernels (``int(t σ + 0.5)``)."""
    r = [int(truncate * float(s) + 0.5) if s > 0 else 0 for s in sigma]
    return (r[0], r[1], r[2])


def blurred_box(
    clean: BoxFn,
    start: tuple[int, int, int],
    shape: tuple[int, int, int],
    sigma: Sequence[float],
    *,
    truncate: float = 4.0,
) -> np.ndarray:
    """The Gaussian-blurred clean field on a box, exact whatever the box.

    Notes
    -----
    The clean field is a function of global coordinates, so it is evaluated on the
    box grown by the kernel radius :math:`r = \\lfloor 4\\sigma + 1/2 \\rfloor` on
    every side and the blur result is cropped back: every output voxel sees exactly
    the same input values and kernel, wherever the block boundaries are (the halo
    plays the role of ``map_overlap``'s depth, without duplicating neighbour tasks).
    """
    from scipy import ndimage

    r = blur_radius(sigma, truncate)
    ext_start = (start[0] - r[0], start[1] - r[1], start[2] - r[2])
    ext_shape = (shape[0] + 2 * r[0], shape[1] + 2 * r[1], shape[2] + 2 * r[2])
    field_ = clean(ext_start, ext_shape)
    if any(r):
        field_ = ndimage.gaussian_filter(
            field_, sigma=[float(s) for s in sigma], truncate=truncate, mode="nearest"
        )
    crop = tuple(slice(h, h + n) for h, n in zip(r, shape, strict=True))
    return np.ascontiguousarray(field_[crop])


def evenly_spaced_slices(depth: int, k: int) -> tuple[int, ...]:
    """``k`` evenly spaced z indices in ``range(depth)``.

    :math:`z_i = \\lfloor (i + 1/2) Z / k \\rfloor`; all slices when ``k >= depth``.
    """
    if k < 0:
        raise PhantomParameterError(f"annotated_slices must be >= 0, got {k}")
    if k >= depth:
        return tuple(range(depth))
    return tuple(int((i + 0.5) * depth / k) for i in range(k))


def annotation_box(
    labels: BoxFn,
    slices: Sequence[int],
    ignore_id: int,
    start: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Sparse labels on a box: ``labels`` on the annotated z-slices, ``ignore_id`` elsewhere."""
    out = np.full(shape, ignore_id, dtype=np.uint8)
    for z in slices:
        if start[0] <= z < start[0] + shape[0]:
            out[z - start[0]] = labels((z, start[1], start[2]), (1, shape[1], shape[2]))[0]
    return out


def to_uint8(v: np.ndarray) -> np.ndarray:
    """Map intensities in ``[0, 1]`` to ``uint8`` (``round(255 v)``, clipped)."""
    return np.clip(np.rint(v * np.float32(255.0)), 0, 255).astype(np.uint8)


def _block_counts(block: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(block.ravel(), minlength=n)[:n].astype(np.int64)
    return counts.reshape((1,) * block.ndim + (n,))


def class_frequencies(truth: da.Array, n_classes: int) -> da.Array:
    """Voxel count of each class id, computed blockwise (lazy).

    Parameters
    ----------
    truth
        Integer label array (any number of dimensions).
    n_classes
        Count ids ``0 .. n_classes - 1``; other ids (e.g. the ignore id) are not counted.

    Returns
    -------
    dask.array.Array
        ``int64`` array of shape ``(n_classes,)``; call ``.compute()``.

    Notes
    -----
    Each block contributes ``np.bincount(block, minlength=n)[:n]``; the per-block
    counts are summed, so memory stays at one block whatever the volume size and the
    totals are exact.
    """
    import dask.array as da

    if n_classes < 1:
        raise PhantomParameterError(f"n_classes must be >= 1, got {n_classes}")
    nd = truth.ndim
    parts = da.map_blocks(
        _block_counts,
        truth,
        n_classes,
        new_axis=nd,
        chunks=(*((1,) * len(c) for c in truth.chunks), (n_classes,)),
        dtype=np.int64,
        meta=np.empty((0,) * (nd + 1), np.int64),
    )
    return parts.sum(axis=tuple(range(nd)))


def assemble_phantom(
    kind: str,
    params: Any,
    shape: tuple[int, int, int],
    chunks: tuple[tuple[int, ...], ...],
    *,
    annotated_slices: int,
    image_block: Callable[..., np.ndarray],
    truth_block: Callable[..., np.ndarray],
    annotation_block: Callable[..., np.ndarray],
    image_dtype: npt.DTypeLike,
    voxel_size: float,
    class_names: tuple[str, ...],
    ignore_id: int,
) -> Phantom:
    """Build a :class:`Phantom` from a kind's block functions (shared by every kind).

    ``image_block``, ``truth_block`` take ``(params, start, shape)``;
    ``annotation_block`` takes ``(params, slices, start, shape)``. The annotation is
    present only when ``annotated_slices`` > 0. The dask names and tokens depend on
    the kind, the parameters and the shape only, so equal phantoms share graph keys.
    """
    slices = evenly_spaced_slices(shape[0], int(annotated_slices))
    token = (kind, asdict(params), shape)
    image = lazy_array(functools.partial(image_block, params), chunks=chunks,
                       dtype=image_dtype, name=f"synth-{kind}-image", token=token)
    truth = lazy_array(functools.partial(truth_block, params), chunks=chunks, dtype=np.uint8,
                       name=f"synth-{kind}-truth", token=token)
    annotation = None
    if slices:
        annotation = lazy_array(functools.partial(annotation_block, params, slices),
                                chunks=chunks, dtype=np.uint8,
                                name=f"synth-{kind}-annotation", token=(token, slices))
    vs = float(voxel_size)
    return Phantom(
        image=image, truth=truth, annotation=annotation, voxel_size=(vs, vs, vs),
        class_names=class_names, ignore_id=ignore_id,
        extra={"kind": kind, "params": asdict(params), "annotated_slices": list(slices)},
    )

