"""The OME-Zarr writer (NGFF 0.4 and 0.5): images, label images, pyramids, resume.

The metadata it writes and readers parse lives in :mod:`volseg.io.multiscales`, the
chunk and shard shapes in :mod:`volseg.io.layout`; both are re-exported here.

Layout and choices
------------------
* **Two formats.**  NGFF **0.5** on Zarr format 3 (``zarr.json``; NGFF keys under
  the ``ome`` attribute; arrays with ``dimension_names``) with **sharded** arrays:
  small inner chunks (default 64³) that viewers fetch one by one, packed into
  shards that are exactly the blocks volseg writes, so one task writes each shard
  (concurrent writes into one shard are unsafe in zarr 3).  NGFF **0.4** on Zarr
  format 2 (``.zattrs``/``.zarray``, ``/`` chunk separator), chunks only.  0.5 is
  the default (:data:`DEFAULT_NGFF`); ``ome-zarr`` 0.18 writes 0.5 by default,
  ``ome-zarr-models`` validates both, napari-ome-zarr and neuroglancer (``zarr3://``)
  read sharded 0.5.  Readers take either, sharded or not.
* A multiscale image is a group with arrays ``0, 1, ...`` (level 0 is full
  resolution).  Axes are ``z, y, x`` (type ``space``, unit ``nanometer``) with an
  optional leading ``c`` (type ``channel``).  Each level carries a ``scale``
  transform (voxel size in nm) and a ``translation``: the volume's origin (e.g. an
  MRC header origin; none when zero) plus, for levels ≥ 1, half the growth of the
  voxel, so that voxel centres stay in place.  Numbers are stored rounded to 12
  significant digits (``1.4``, not ``1.4000000000000001``).
* Label images live in ``<image>/labels/<name>`` with ``image-label`` metadata; the
  ``labels`` group lists them.  An output that is *only* a label image (the CRF's,
  the instances', a prediction without probabilities) is a **standalone label
  image**: its root group is the multiscale label image itself, with
  ``image-label.source.image`` pointing to the image it belongs to, so every group
  volseg writes validates and opens in viewers.
* Semantic label images carry ``image-label`` ``colors`` and ``properties`` (class
  id → ``class`` name) from :mod:`volseg.colors` — the ignore id transparent, named
  ``not annotated`` with ``ignore: true``; instance labels carry neither (viewers
  colour ids themselves).  Probability images carry ``omero`` channels named after
  the classes, in the class colours, windowed 0-255 (uint8) or 0-1 (float).
* Chunks default to 64³ for volumes (``1 × 256 × 256`` when there is a single
  section); a ``c`` axis is stored in one chunk.  Compression is Blosc-zstd level 1
  with byte shuffle.
* The pyramid (:mod:`volseg.io.pyramid`) halves axes until the largest is ≤ 256
  voxels: ``mean`` for images, ``mode`` for labels.  Levels keep the chunks of level
  0; a level's shard covers the voxels of one shard of the level below, so each
  pyramid task reads about one shard.
* Every level is written with :func:`volseg.io.store.store_blocks`, so writing is
  out-of-core (a few blocks in memory) and resumes after an interruption.
* Caller attributes (``attrs``) are merged into the group attributes (beside
  ``ome`` in 0.5); provenance goes under the key ``volseg``.  For ``uint8`` label
  images the voxel count of every class is stored under ``volseg.class_frequencies``.

Existing outputs
----------------
Creating an image or label group over an existing one *resumes* it when its level-0
array has the same shape, dtype, chunks, shards, axes and format (the block markers
say what is done); ``overwrite=True`` replaces it; anything else raises
:class:`~volseg.errors.OutputExistsError`.  Label images added to an existing image
take the image's format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numcodecs
import numpy as np
import zarr

from volseg.errors import ConfigError, InputError, OutputExistsError
from volseg.io import pyramid
from volseg.io.guard import (
    check_group_output,
    check_output_location,
    check_replaceable,
    written_by_volseg,
)
from volseg.io.layout import (
    DEFAULT_CHUNK_2D,
    DEFAULT_CHUNK_3D,
    READ_BLOCK_BYTES,
    SHARD_BYTES,
    Layout,
    block_layout,
    default_axes,
    default_chunks,
    image_layout,
    level_layout,
    nearest_divisor,
    spatial_chunks,
    writer_chunks,
)
from volseg.io.location import Location, as_path, check_writable, display, remove_tree, zarr_store
from volseg.io.multiscales import (
    NGFF_VERSION,
    UNIT,
    Level,
    Multiscales,
    PathLike,
    VoxelSize,
    check_ngff,
    class_names,
    clean_number,
    group_attrs,
    group_version,
    image_of,
    is_ome_zarr,
    label_metadata,
    label_names,
    multiscales_metadata,
    omero_metadata,
    read_multiscales,
    source_path,
    write_ome,
)
from volseg.io.store import (
    StoreReport,
    check_identity,
    claim,
    is_claimed,
    is_complete,
    storage_chunks,
    store_arrays,
    store_blocks,
    stored_identity,
)
from volseg.ngff import DEFAULT_NGFF, NGFF_VERSIONS, Ngff

if TYPE_CHECKING:
    from distributed import Client

__all__ = [  # the writer, and the layout and metadata names it re-exports for its callers
    "COMPRESSOR", "DEFAULT_CHUNK_2D", "DEFAULT_CHUNK_3D", "DEFAULT_NGFF", "NGFF_VERSION",
    "NGFF_VERSIONS", "READ_BLOCK_BYTES", "SHARD_BYTES", "UNIT", "Layout", "Level",
    "Multiscales", "Ngff", "PathLike", "VoxelSize", "block_layout", "check_ngff",
    "claim_label_output", "class_frequencies", "class_names", "clean_number", "create_image",
    "create_label_image",
    "create_labels", "default_axes", "default_chunks", "first_level", "group_attrs",
    "group_version", "image_layout", "image_of", "image_state", "is_ome_zarr",
    "label_metadata", "label_names", "nearest_divisor", "omero_metadata", "read_multiscales",
    "source_path", "spatial_chunks", "store_class_frequencies", "store_levels", "write_image",
    "write_label_image", "write_labels", "write_pyramid", "writer_chunks",
]

COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)
"""Zarr v2 compressor.  Level 1: on EM images and uint8 probabilities it compresses as
well as level 3 or better, 1.1x to 10x faster (Blosc's zstd levels 2-5 search long
matches for no gain)."""


def _compressor_v3() -> Any:
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


# --------------------------------------------------------------------------- helpers


def _check_voxel_size(voxel_size: Sequence[float] | None) -> VoxelSize | None:
    if voxel_size is None:
        return None
    vs = tuple(float(v) for v in voxel_size)
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise InputError(f"voxel size must be three positive numbers (z y x, nm), got "
                         f"{tuple(voxel_size)}")
    return (clean_number(vs[0]), clean_number(vs[1]), clean_number(vs[2]))


def _check_origin(origin: Sequence[float] | None, axes: Sequence[str]) -> tuple[float, ...]:
    if origin is None:
        return (0.0,) * len(axes)
    vals = tuple(float(v) for v in origin)
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise InputError(f"origin must be three finite numbers (z y x, nm), got "
                         f"{tuple(origin)}")
    by_axis = dict(zip("zyx", vals, strict=True))
    return tuple(clean_number(by_axis.get(a, 0.0)) for a in axes)


def _full_scale(axes: Sequence[str], voxel_size: VoxelSize | None) -> tuple[float, ...]:
    vs = dict(zip("zyx", voxel_size or (1.0, 1.0, 1.0), strict=True))
    return tuple(vs.get(a, 1.0) for a in axes)


def _remove(path: Location) -> None:
    """Remove an output volseg wrote (or an empty folder); refuse anything else."""
    check_replaceable(path)
    remove_tree(path)


def _exists_error(path: Location, why: str) -> OutputExistsError:
    return OutputExistsError(f"{path} exists{why}; pass --overwrite to replace it")


def _zarr_format(ngff: Ngff) -> Literal[2, 3]:
    return 2 if ngff == "0.4" else 3


def _create_array(
    group: zarr.Group, name: str, *, shape: Sequence[int], dtype: Any, layout: Layout,
    axes: Sequence[str], ngff: Ngff,
) -> zarr.Array:
    if ngff == "0.4":
        if layout.shards is not None:
            raise ConfigError("NGFF 0.4 (zarr v2) has no shards; write NGFF 0.5 instead")
        return group.create_array(
            name, shape=tuple(shape), chunks=layout.chunks, dtype=dtype,
            compressors=COMPRESSOR, fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"})
    return group.create_array(
        name, shape=tuple(shape), chunks=layout.chunks, shards=layout.shards, dtype=dtype,
        compressors=_compressor_v3(), fill_value=0, dimension_names=list(axes))


def _clip_layout(shape: Sequence[int], chunks: Sequence[int] | None,
                 shards: Sequence[int] | None, axes: Sequence[str]) -> Layout:
    inner = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(shape,
                                                                                    axes)
    inner = tuple(max(1, min(c, n)) for c, n in zip(inner, shape, strict=True))
    if shards is None:
        return Layout(inner, None, inner)
    outer = tuple(max(1, int(s)) for s in shards)
    if any(s % c for s, c in zip(outer, inner, strict=True)):
        raise ConfigError(f"shards {outer} must be whole multiples of the chunks {inner}")
    return Layout(inner, outer, outer)


def _create_multiscale(
    path: Location, *, shape: Sequence[int], dtype: Any, chunks: Sequence[int] | None,
    shards: Sequence[int] | None, voxel_size: Sequence[float] | None,
    origin: Sequence[float] | None, axes: Sequence[str] | None, overwrite: bool,
    attrs: Mapping[str, Any] | None, method: str, ngff: Ngff,
    extra: Mapping[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create (or reopen for resuming) a multiscale group with its level-0 array.

    A new group's first metadata already holds the ``volseg`` record (so a run killed
    while creating it leaves a group recognisably volseg's, which is resumed), and its
    level-0 array is claimed with the run ``identity``; a resumed one must have been
    started with the same identity.
    """
    ngff = check_ngff(ngff)
    shape = tuple(int(n) for n in shape)
    axes = tuple(axes) if axes is not None else default_axes(len(shape))
    if len(axes) != len(shape):
        raise ValueError(f"{len(axes)} axes {axes} for a {len(shape)}-D array")
    layout = _clip_layout(shape, chunks, shards, axes)
    vs = _check_voxel_size(voxel_size)
    shift = _check_origin(origin, axes)
    dtype = np.dtype(dtype)
    check_writable(path)
    if overwrite:
        _remove(path)
    elif path.exists():
        reopened = _reopen_for_resume(path, shape, dtype, layout, axes, attrs, ngff, identity)
        if reopened is not None:
            return reopened
    first: dict[str, Any] = {"volseg": dict((attrs or {}).get("volseg") or {})}
    group = zarr.open_group(zarr_store(path), mode="w", zarr_format=_zarr_format(ngff),
                            attributes=first)
    array = _create_array(group, "0", shape=shape, dtype=dtype, layout=layout, axes=axes,
                          ngff=ngff)
    claim(array, identity)
    meta: dict[str, Any] = {"multiscales": multiscales_metadata(
        path.name.removesuffix(".ome.zarr"), axes, [_full_scale(axes, vs)],
        UNIT if vs is not None else None, method, ngff, shift)}
    meta.update(extra or {})
    write_ome(group, ngff, meta)
    group.attrs.update(dict(attrs or {}))
    return array


def _unfinished_creation(path: Location) -> bool:
    """Whether ``path`` is a group volseg began to create but has no claimed level 0 yet."""
    try:
        attrs = group_attrs(path)
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.GroupNotFoundError):
        return False
    if "volseg" not in attrs:
        return False
    try:
        ms = read_multiscales(path)
        return not is_claimed(zarr.open_array(zarr_store(path / ms.levels[0].path,
                                                         read_only=True), mode="r"))
    except (InputError, FileNotFoundError, KeyError, ValueError, IndexError,
            zarr.errors.GroupNotFoundError, zarr.errors.ArrayNotFoundError):
        return True


def _reopen_for_resume(
    path: Location, shape: tuple[int, ...], dtype: np.dtype, layout: Layout,
    axes: tuple[str, ...], attrs: Mapping[str, Any] | None, ngff: Ngff,
    identity: Mapping[str, Any] | None = None,
) -> zarr.Array | None:
    """Reopen a partial output; ``None`` when it was left half-created (start it afresh)."""
    if (_unfinished_creation(path) and written_by_volseg(path)
            and not (path / "labels").exists()):
        remove_tree(path)
        return None
    try:
        ms = read_multiscales(path)
        array = zarr.open_array(zarr_store(path / ms.levels[0].path), mode="r+")
    except (InputError, FileNotFoundError, KeyError, ValueError,
            zarr.errors.GroupNotFoundError, zarr.errors.ArrayNotFoundError):
        raise _exists_error(path, "") from None
    found = (tuple(array.shape), np.dtype(array.dtype), tuple(array.chunks),
             None if array.shards is None else tuple(array.shards), ms.axes,
             group_version(path))
    wanted = (shape, dtype, layout.chunks, layout.shards, axes, ngff)
    if found != wanted:
        raise _exists_error(
            path, f" as NGFF {found[5]} with shape {found[0]}, dtype {found[1]}, chunks "
                  f"{found[2]}, shards {found[3]} (not NGFF {ngff}, {shape}, {dtype}, "
                  f"{layout.chunks}, {layout.shards}), so it cannot be resumed")
    check_identity(array, identity, label=str(path))
    if attrs:
        zarr.open_group(zarr_store(path), mode="a").attrs.update(dict(attrs))
    return array


# --------------------------------------------------------------------------- public API


def create_image(
    path: PathLike, *, shape: Sequence[int], dtype: Any, chunks: Sequence[int] | None,
    voxel_size: Sequence[float] | None, axes: Sequence[str] | None = None,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None,
    shards: Sequence[int] | None = None, origin: Sequence[float] | None = None,
    ngff: Ngff = DEFAULT_NGFF, channel_names: Sequence[str] | None = None,
    identity: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create an OME-Zarr image group with an empty level-0 array, for blockwise writers.

    Parameters
    ----------
    path
        The image group, e.g. ``prediction.ome.zarr``.
    shape, dtype, chunks
        Of the level-0 array (``chunks=None``: :func:`default_chunks`); in 0.5 the
        chunks are the inner chunks of the shards.
    voxel_size
        ``(z, y, x)`` in nm, or ``None`` when unknown (scale 1, no unit).
    axes
        Axis names; default ``z, y, x`` (3-D) or ``c, z, y, x`` (4-D).
    overwrite
        Replace an existing group.  Without it an existing compatible group (same
        shape, dtype, chunks, shards, axes, format) is reopened so that a writer can
        resume.
    attrs
        Extra group attributes; provenance under ``"volseg"``.
    shards
        Shard shape (0.5 only; whole multiples of ``chunks``); ``None``: unsharded.
        Blocks written into the array must cover whole shards.
    origin
        ``(z, y, x)`` position in nm of the first voxel (the level-0 translation).
    ngff
        ``"0.5"`` (zarr v3) or ``"0.4"`` (zarr v2).
    channel_names
        Names of the ``c`` axis entries (class probabilities): ``omero`` channels.
    identity
        The run identity (:func:`volseg.io.guard.run_identity`), stored with the new
        level-0 array; resuming an existing group requires the same one.

    Returns
    -------
    zarr.Array
        The level-0 array; fill it (e.g. with :func:`volseg.io.store.store_blocks`)
        and then call :func:`write_pyramid`.

    Raises
    ------
    OutputExistsError
        If ``path`` exists, is not compatible (or was started by a run with another
        identity) and ``overwrite`` is false, or with ``overwrite`` when ``path`` is not
        an output volseg wrote.
    """
    extra = None
    if channel_names is not None:
        extra = {"omero": omero_metadata(channel_names, dtype)}
    return _create_multiscale(
        as_path(path), shape=shape, dtype=dtype, chunks=chunks, shards=shards,
        voxel_size=voxel_size, origin=origin, axes=axes, overwrite=overwrite, attrs=attrs,
        method="mean", ngff=ngff, extra=extra, identity=identity)


def create_labels(
    image_path: PathLike, name: str, *, shape: Sequence[int], dtype: Any,
    chunks: Sequence[int] | None, voxel_size: Sequence[float] | None,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None,
    shards: Sequence[int] | None = None, origin: Sequence[float] | None = None,
    classes: Sequence[str] | None = None, ignore_id: int | None = None,
    identity: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create the label image ``image_path/labels/<name>`` with an empty level-0 array.

    The image group must exist (with its multiscales): the labels take its format
    and, when ``voxel_size`` / ``origin`` are ``None``, its level-0 voxel size and
    origin.  ``classes`` / ``ignore_id`` give the ``image-label`` colours and names
    (:func:`label_metadata`; ``None``: instance ids).  See :func:`create_image` for
    the rest.

    Raises
    ------
    InputError
        If ``image_path`` is not an OME-Zarr image.
    """
    image_path = as_path(image_path)
    check_writable(image_path)
    try:
        ms = read_multiscales(image_path)
    except (InputError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise InputError(f"{image_path} is not an OME-Zarr image; write the image first, or "
                         f"write the labels as a standalone label image") from None
    ngff: Ngff = group_version(image_path) or DEFAULT_NGFF
    if voxel_size is None:
        voxel_size = ms.voxel_size
    if origin is None:
        origin = ms.origin
    labels = zarr.open_group(zarr_store(image_path / "labels"), mode="a",
                             zarr_format=_zarr_format(ngff))
    array = _create_multiscale(
        image_path / "labels" / name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
        voxel_size=voxel_size, origin=origin, axes=None, overwrite=overwrite, attrs=attrs,
        method="mode", ngff=ngff, extra={"image-label": label_metadata(
            classes=classes, ignore_id=ignore_id, source="../../", ngff=ngff)},
        identity=identity,
    )
    names = label_names(image_path)
    if name not in names:
        write_ome(labels, ngff, {"labels": [*names, name]})
    return array


def create_label_image(
    path: PathLike, *, shape: Sequence[int], dtype: Any, chunks: Sequence[int] | None,
    voxel_size: Sequence[float] | None, overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None, shards: Sequence[int] | None = None,
    origin: Sequence[float] | None = None, ngff: Ngff = DEFAULT_NGFF,
    classes: Sequence[str] | None = None, ignore_id: int | None = None,
    image: PathLike | None = None, identity: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create a standalone label image: the group at ``path`` is the label multiscale.

    For outputs that are only labels (CRF, instances, predictions without
    probabilities).  ``image`` is the image the labels belong to; its relative path
    goes to ``image-label.source.image`` so viewers open the two together.  See
    :func:`create_labels` and :func:`create_image` for the rest.
    """
    path = as_path(path)
    return _create_multiscale(
        path, shape=shape, dtype=dtype, chunks=chunks, shards=shards, voxel_size=voxel_size,
        origin=origin, axes=None, overwrite=overwrite, attrs=attrs, method="mode", ngff=ngff,
        extra={"image-label": label_metadata(classes=classes, ignore_id=ignore_id,
                                             source=source_path(path, image), ngff=ngff)},
        identity=identity)


def write_pyramid(
    group_path: PathLike, *, method: Literal["mean", "mode"] = "mean", client: Client | None = None,
    overwrite: bool = False,
) -> None:
    """Build levels 1, 2, ... of a multiscale group from its level 0.

    Each level is reduced 2× from the previous one (:mod:`volseg.io.pyramid`) and
    written with :func:`~volseg.io.store.store_blocks`, so an interrupted pyramid
    resumes.  Levels keep level 0's format and chunks; their shards (0.5) or blocks
    (0.4) are sized so that a task reads about one shard (64 MiB) of the level below
    (:func:`volseg.io.layout.level_layout`).  The multiscales metadata then lists every
    level.

    Parameters
    ----------
    group_path
        An image or label group made by :func:`create_image` / :func:`create_labels`
        / :func:`create_label_image`.
    method
        ``"mean"`` for images, ``"mode"`` for labels.
    client
        Optional ``distributed.Client``.
    overwrite
        Recompute levels even where their markers say they are complete.
    """
    path = as_path(group_path)
    ms = read_multiscales(path)
    ngff: Ngff = group_version(path) or DEFAULT_NGFF
    group = zarr.open_group(zarr_store(path), mode="a")
    base = group[ms.levels[0].path]
    assert isinstance(base, zarr.Array)
    spatial = [a in ("z", "y", "x") for a in ms.axes]
    plan = pyramid.plan_levels(base.shape, ms.levels[0].scale, spatial)
    source = base
    layout = Layout(tuple(base.chunks), base.shards, storage_chunks(base))
    identity = stored_identity(base)  # a level belongs to the run that wrote level 0
    for index, (shape, _scale, factors) in enumerate(plan[1:], start=1):
        kept = None if overwrite else _complete_level(group, str(index), shape, base.dtype)
        if kept is not None:  # e.g. level 1 written with level 0 (first_level)
            layout = Layout(tuple(kept.chunks), kept.shards, storage_chunks(kept))
            source = kept
            continue
        layout = level_layout(layout, shape, factors, np.dtype(base.dtype).itemsize)
        target = _require_level(group, str(index), shape, layout, base.dtype, ms.axes, ngff,
                                overwrite, identity)
        reduced = _reduced(source, factors, layout.blocks, method)
        store_blocks(reduced, target, description=f"{path.name} level {index}",
                     client=client, overwrite=overwrite, identity=identity)
        source = target
    unit = next((u for u in ms.units if u), None)
    origin = ms.levels[0].translation
    write_ome(group, ngff, {"multiscales": multiscales_metadata(
        ms.attrs["multiscales"][0].get("name", path.name), ms.axes,
        [scale for _, scale, _ in plan], unit, method, ngff, origin)})
    for stale in range(len(plan), len(ms.levels) + 1):
        if str(stale) in group:
            del group[str(stale)]


def first_level(
    group_path: PathLike, values: da.Array, *, method: Literal["mean", "mode"] = "mean",
) -> list[tuple[da.Array, zarr.Array]]:
    """Level 1 of a multiscale group reduced from the blocks that write its level 0.

    For a blockwise writer (:func:`~volseg.io.store.store_arrays`): ``values`` is the
    lazy level 0 in its write blocks; the returned ``(reduced, target)`` pair — the
    2× reduction of each block (:mod:`volseg.io.pyramid`) and the group's level-1
    array (created, or kept for resuming) — goes into the same
    :func:`~volseg.io.store.store_arrays` call, so each block's level 1 is written by
    the task that writes its level 0, from the block in memory, and
    :func:`write_pyramid` afterwards finds level 1 complete and starts from it
    instead of re-reading level 0.  The voxels equal :func:`write_pyramid`'s: each
    2 × 2 × 2 cell lies inside one block, and the last block's odd end is the
    array's.

    Level 1's layout follows the blocks: one shard per reduced block (0.5; chunks
    along each axis the divisor of the reduced block nearest to level 0's chunks),
    or those chunks (0.4).  Returns ``[]`` (level 1 is then left to
    :func:`write_pyramid`) when the group needs no level 1 or an interior block has an
    odd extent along a halved axis, or blocks of different sizes.

    Parameters
    ----------
    group_path
        The group, created by :func:`create_image` / :func:`create_labels` /
        :func:`create_label_image` (level 0 only, or resumed).
    values
        Level 0 as a dask array, chunked as it will be written.
    method
        ``"mean"`` for images, ``"mode"`` for labels.
    """
    path = as_path(group_path)
    ms = read_multiscales(path)
    group = zarr.open_group(zarr_store(path), mode="a")
    base = group[ms.levels[0].path]
    assert isinstance(base, zarr.Array)
    spatial = [a in ("z", "y", "x") for a in ms.axes]
    plan = pyramid.plan_levels(base.shape, ms.levels[0].scale, spatial)
    if len(plan) < 2 or tuple(values.shape) != tuple(base.shape):
        return []
    shape, _scale, factors = plan[1]
    blocks = []
    for sizes, f, n in zip(values.chunks, factors, shape, strict=True):
        interior = set(sizes[:-1])
        if len(interior) > 1 or any(b % f for b in interior):
            return []
        blocks.append(interior.pop() // f if interior else n)
    chunks = tuple(nearest_divisor(b, min(int(c), b))
                   for b, c in zip(blocks, base.chunks, strict=True))
    layout = Layout(chunks, tuple(blocks) if base.shards is not None else None,
                    tuple(blocks))
    target = _require_level(group, "1", shape, layout, base.dtype, ms.axes,
                            group_version(path) or DEFAULT_NGFF, overwrite=False,
                            identity=stored_identity(base))
    out_chunks = tuple(tuple(-(-b // f) for b in sizes)
                       for sizes, f in zip(values.chunks, factors, strict=True))
    reduced = da.map_blocks(
        pyramid.REDUCERS[method], values, factors=tuple(factors), chunks=out_chunks,
        dtype=base.dtype, meta=np.empty((0,) * base.ndim, dtype=base.dtype))
    return [(reduced, target)]


def store_levels(
    values: da.Array, target: zarr.Array, group_path: PathLike, *,
    method: Literal["mean", "mode"], pyramid: bool = True, description: str,
    client: Client | None = None, overwrite: bool = False,
    identity: Mapping[str, Any] | None = None,
) -> StoreReport:
    """Write level 0 of a multiscale group blockwise, and its pyramid from those blocks.

    :func:`~volseg.io.store.store_blocks` of ``values`` into ``target`` (the group's
    level 0), with level 1 reduced from each block in memory by the same task
    (:func:`first_level`, where the blocks allow it) and then :func:`write_pyramid`
    for the levels above, which starts from level 1 instead of re-reading level 0.

    ``identity``: the run identity a resume must match (:func:`store_arrays`).

    Returns
    -------
    StoreReport
        Level 0's blocks: computed now and skipped (resume).
    """
    first = first_level(group_path, values, method=method) if pyramid else []
    report = store_arrays([(values, target), *first], description=description, client=client,
                          overwrite=overwrite, identity=identity)
    if pyramid:  # a new group when overwriting: level 1 just written is kept
        write_pyramid(group_path, method=method, client=client, overwrite=overwrite and not first)
    return report


def _complete_level(group: zarr.Group, name: str, shape: tuple[int, ...], dtype: Any
                    ) -> zarr.Array | None:
    """The level ``name`` if it exists with this shape and dtype and is complete."""
    existing = group.get(name)
    if (isinstance(existing, zarr.Array) and tuple(existing.shape) == shape
            and existing.dtype == dtype and is_claimed(existing) and is_complete(existing)):
        return existing
    return None


def _require_level(
    group: zarr.Group, name: str, shape: tuple[int, ...], layout: Layout, dtype: Any,
    axes: Sequence[str], ngff: Ngff, overwrite: bool,
    identity: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Return pyramid level ``name``: the existing one when it fits and belongs to the run
    that wrote level 0 (``identity``), else a new empty one."""
    if name in group:
        existing = group[name]
        if (isinstance(existing, zarr.Array) and not overwrite
                and tuple(existing.shape) == shape and tuple(existing.chunks) == layout.chunks
                and existing.shards == layout.shards and existing.dtype == dtype
                and (identity is None or stored_identity(existing) in (None, dict(identity)))):
            return existing
        del group[name]
    array = _create_array(group, name, shape=shape, dtype=dtype, layout=layout, axes=axes,
                          ngff=ngff)
    claim(array, identity)
    return array


def _reduced(
    source: zarr.Array, factors: Sequence[int], blocks: Sequence[int], method: str
) -> da.Array:
    """Return the lazy 2× reduction of ``source`` in output blocks of ``blocks``."""
    read = tuple(c * f for c, f in zip(blocks, factors, strict=True))
    src = da.from_zarr(source, chunks=read)
    out_chunks = tuple(
        tuple(-(-b // f) for b in bc) for bc, f in zip(src.chunks, factors, strict=True))
    return src.map_blocks(
        pyramid.REDUCERS[method], factors=tuple(factors), chunks=out_chunks,
        dtype=source.dtype, meta=np.empty((0,) * source.ndim, dtype=source.dtype),
    )


def _as_dask(array: Any, blocks: Sequence[int]) -> da.Array:
    """Return ``array`` as a dask array in the writer's blocks."""
    if not isinstance(array, da.Array):
        array = da.from_array(np.asarray(array), chunks=tuple(blocks))
    return array.rechunk(tuple(blocks))


def _with_z(array: Any) -> Any:
    return array[None] if array.ndim == 2 else array


def _spatial_request(chunks: Sequence[int] | None, ndim: int) -> tuple[int, ...] | None:
    """Chunks given for all axes (as before) or for ``z, y, x`` only → ``z, y, x``."""
    if chunks is None:
        return None
    values = tuple(int(c) for c in chunks)
    return values[-3:] if len(values) == ndim and ndim > 3 else values


def write_image(
    array: Any, path: PathLike, *, voxel_size: Sequence[float] | None,
    chunks: Sequence[int] | None = None, axes: Sequence[str] | None = None,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None, pyramid: bool = True,
    client: Client | None = None, ngff: Ngff = DEFAULT_NGFF, origin: Sequence[float] | None = None,
    channel_names: Sequence[str] | None = None, identity: Mapping[str, Any] | None = None,
) -> None:
    """Write a whole array as an OME-Zarr multiscale image, out-of-core and resumable.

    Parameters
    ----------
    array
        Dask or numpy array, ``(z, y, x)``, ``(c, z, y, x)`` or 2-D ``(y, x)`` (stored
        as one section).
    path
        The image group to write.
    voxel_size
        ``(z, y, x)`` in nm (``None``: unknown).
    chunks
        Chunk shape, ``z, y, x`` (or all axes); default :func:`default_chunks`.  In
        0.5 the inner chunks; shards are writer slabs of about
        :data:`READ_BLOCK_BYTES` (:func:`image_layout`).
    axes
        Axis names (default from the number of dimensions).
    overwrite
        Replace an existing group; without it a compatible partial group resumes.
    attrs
        Extra group attributes; provenance under ``"volseg"``.
    pyramid
        Also build the downsampled levels (mean).
    client
        Optional ``distributed.Client``.
    ngff
        ``"0.5"`` or ``"0.4"``.
    origin
        ``(z, y, x)`` nm of the first voxel.
    channel_names
        Names of the ``c`` entries (``omero`` channels).
    identity
        The run identity a resume must match (:func:`create_image`).
    """
    array = _with_z(array)
    axes = tuple(axes) if axes is not None else default_axes(array.ndim)
    layout = image_layout(array.shape, axes, np.dtype(array.dtype).itemsize, ngff=ngff,
                          chunks=_spatial_request(chunks, array.ndim))
    target = create_image(path, shape=array.shape, dtype=array.dtype, chunks=layout.chunks,
                          shards=layout.shards, voxel_size=voxel_size, axes=axes,
                          overwrite=overwrite, attrs=attrs, origin=origin, ngff=ngff,
                          channel_names=channel_names, identity=identity)
    store_levels(_as_dask(array, layout.blocks), target, path, method="mean", pyramid=pyramid,
                 description=f"writing {path}", client=client, identity=identity)


def _label_array(array: Any, name: str) -> Any:
    array = _with_z(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"label image {name!r} must have an integer dtype, got {array.dtype}; "
                         f"pass integer class or instance ids")
    return array


def write_labels(
    array: Any, image_path: PathLike, name: str, *, voxel_size: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None, overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None, pyramid: bool = True, client: Client | None = None,
    classes: Sequence[str] | None = None, ignore_id: int | None = None,
    identity: Mapping[str, Any] | None = None,
) -> None:
    """Write an NGFF label image ``image_path/labels/<name>`` (mode pyramid).

    Parameters
    ----------
    array
        Integer labels, ``(z, y, x)`` or 2-D ``(y, x)``.
    image_path
        The image group (must exist; the labels take its format).
    name
        Name of the label image, e.g. ``"truth"``.
    voxel_size
        ``(z, y, x)`` in nm; default: the image's.
    chunks, overwrite, attrs, pyramid, client
        As for :func:`write_image`.  For ``uint8`` labels the voxel count per class is
        stored under ``volseg.class_frequencies``.
    classes, ignore_id
        Class names and the ignore id (``image-label`` colours and properties).
    identity
        The run identity a resume must match (:func:`create_image`).
    """
    array = _label_array(array, name)
    ngff: Ngff = group_version(image_path) or DEFAULT_NGFF
    layout = image_layout(array.shape, default_axes(3), np.dtype(array.dtype).itemsize,
                          ngff=ngff, chunks=chunks)
    target = create_labels(image_path, name, shape=array.shape, dtype=array.dtype,
                           chunks=layout.chunks, shards=layout.shards, voxel_size=voxel_size,
                           overwrite=overwrite, attrs=attrs, classes=classes,
                           ignore_id=ignore_id, identity=identity)
    group_path = as_path(image_path) / "labels" / name
    _fill_labels(array, target, group_path, layout, pyramid, client, identity)


def write_label_image(
    array: Any, path: PathLike, *, voxel_size: Sequence[float] | None,
    chunks: Sequence[int] | None = None, overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None, pyramid: bool = True, client: Client | None = None,
    ngff: Ngff = DEFAULT_NGFF, origin: Sequence[float] | None = None,
    classes: Sequence[str] | None = None, ignore_id: int | None = None,
    image: PathLike | None = None, identity: Mapping[str, Any] | None = None,
) -> None:
    """Write a whole array as a standalone label image (see :func:`create_label_image`)."""
    array = _label_array(array, as_path(path).name)
    layout = image_layout(array.shape, default_axes(3), np.dtype(array.dtype).itemsize,
                          ngff=ngff, chunks=chunks)
    target = create_label_image(
        path, shape=array.shape, dtype=array.dtype, chunks=layout.chunks, shards=layout.shards,
        voxel_size=voxel_size, overwrite=overwrite, attrs=attrs, origin=origin, ngff=ngff,
        classes=classes, ignore_id=ignore_id, image=image, identity=identity)
    _fill_labels(array, target, as_path(path), layout, pyramid, client, identity)


def _fill_labels(array: Any, target: zarr.Array, group_path: Location, layout: Layout,
                 pyramid: bool, client: Client | None,
                 identity: Mapping[str, Any] | None = None) -> None:
    store_blocks(_as_dask(array, layout.blocks), target, description=f"writing {group_path}",
                 client=client, identity=identity)
    if np.dtype(array.dtype) == np.uint8:
        store_class_frequencies(group_path, client=client)
    if pyramid:
        write_pyramid(group_path, method="mode", client=client)


def _bincount(block: np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(block).ravel(), minlength=256)


def class_frequencies(target: zarr.Array, client: Client | None = None) -> dict[str, int]:
    """Return ``{class id: voxel count}`` of a ``uint8`` label array (nonzero counts only)."""
    import dask

    from volseg.progress import compute

    blocks = da.from_zarr(target, chunks=storage_chunks(target)).to_delayed().ravel()
    counts = [dask.delayed(_bincount)(b) for b in blocks]
    total = dask.delayed(sum)(counts)
    (result,) = compute(total, description="class frequencies", client=client)
    return {str(i): int(n) for i, n in enumerate(np.asarray(result)) if n}


def store_class_frequencies(group_path: PathLike, *, client: Client | None = None
                            ) -> dict[str, int]:
    """Count the voxels of each class of a ``uint8`` label group's level 0 and store them.

    The counts go to the group attribute ``volseg.class_frequencies`` (``{id: count}``,
    nonzero counts only) and are returned.
    """
    group = zarr.open_group(zarr_store(as_path(group_path)), mode="a")
    target = group[read_multiscales(group_path).levels[0].path]
    assert isinstance(target, zarr.Array)
    previous = group.attrs.get("volseg")
    volseg = dict(previous) if isinstance(previous, Mapping) else {}
    counts = class_frequencies(target, client)
    volseg["class_frequencies"] = counts
    group.attrs["volseg"] = volseg
    return counts


def image_state(path: PathLike) -> Literal["absent", "partial", "complete", "other"]:
    """Say whether an image group is absent, partially written, complete or not ours.

    ``partial``: written by volseg's block store (its level 0 is claimed) but some
    storage chunk of some level is not marked complete, or pyramid levels are
    missing.  ``other``: exists but was not written block by block by volseg (or is
    not an OME-Zarr image), so it cannot be resumed.
    """
    path = as_path(path)
    if not path.exists():
        return "absent"
    if _unfinished_creation(path):
        return "partial"
    try:
        ms = read_multiscales(path)
        arrays = [zarr.open_array(zarr_store(path / lv.path, read_only=True), mode="r")
                  for lv in ms.levels]
    except (InputError, FileNotFoundError, KeyError, ValueError, TypeError,
            zarr.errors.GroupNotFoundError, zarr.errors.ArrayNotFoundError):
        return "other"
    if not arrays or not is_claimed(arrays[0]):
        return "other"
    spatial = [a in ("z", "y", "x") for a in ms.axes]
    expected = len(pyramid.plan_levels(arrays[0].shape, ms.levels[0].scale, spatial))
    if len(arrays) < expected or not all(is_complete(a) for a in arrays):
        return "partial"
    return "complete"


def claim_label_output(output: PathLike, inputs: Iterable[PathLike | None], *,
                       overwrite: bool) -> str:
    """The checks every block writer of a label image makes before it writes anything.

    The output must be writable, must not be, contain or lie in any of ``inputs``, must
    not be inside another OME-Zarr group's image; an existing complete output (or one
    volseg did not write) is refused unless ``overwrite``, and with ``overwrite`` only a
    folder volseg wrote (or an empty one) may be replaced.

    Parameters
    ----------
    output
        The output label image (local path or :class:`~volseg.io.location.Location`).
    inputs
        The paths the run reads (``None`` entries are skipped).
    overwrite
        Whether the caller was asked to replace an existing output.

    Returns
    -------
    str
        The output's state before the run (:func:`image_state`):
        ``"absent"``, ``"partial"`` (an interrupted run, to resume), ``"complete"`` or
        ``"other"``.

    Raises
    ------
    OutputExistsError
        If the output exists and ``overwrite`` is false, or may not be replaced.
    InputError
        If the output overlaps an input.
    """
    output = as_path(output)
    check_writable(output)
    check_output_location(output, inputs)
    check_group_output(output)
    state = image_state(output)
    if not overwrite and state in ("complete", "other"):
        raise OutputExistsError(f"{display(output)} exists; pass --overwrite to replace it")
    if overwrite:
        check_replaceable(output)
    return state
