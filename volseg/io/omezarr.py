"""The OME-Zarr (NGFF 0.4) writer, and the metadata helpers that readers share.

Layout and choices
------------------
* **NGFF 0.4 on Zarr format 2** (``.zattrs``/``.zarray``, ``/`` chunk separator).
  Checked against the installed libraries: ``ome-zarr`` 0.18 writes 0.5 by default
  but reads 0.4 images and labels (``ome_zarr.reader.Reader``), and
  ``ome-zarr-models`` 1.7 validates both (``open_ome_zarr(group, version="0.4")``),
  so neither favours 0.5 clearly; 0.4 is what more viewers and tools read today and
  what docs/architecture.md fixes.  :func:`read_multiscales` reads 0.5 / Zarr 3 too.
* A multiscale image is a group with arrays ``0, 1, ...`` (level 0 is full
  resolution).  Axes are ``z, y, x`` (type ``space``, unit ``nanometer``) with an
  optional leading ``c`` (type ``channel``).  Each level carries a ``scale``
  transform (voxel size in nm) and, for levels ≥ 1, a ``translation`` of half the
  growth of the voxel, so that voxel centres stay in place (level 0 has none).
* Label images live in ``<image>/labels/<name>`` with ``image-label`` metadata; the
  ``labels`` group lists them.
* Chunks default to 64³ for volumes (``1 × 256 × 256`` when there is a single
  section); a ``c`` axis is stored in one chunk.  Compression is Blosc-zstd level 1
  with byte shuffle.
* The pyramid (:mod:`volseg.io.pyramid`) halves axes until the largest is ≤ 256
  voxels: ``mean`` for images, ``mode`` for labels.
* Every level is written with :func:`volseg.io.store.store_blocks`, so writing is
  out-of-core (a few blocks in memory) and resumes after an interruption.
* Caller attributes (``attrs``) are merged into the group attributes; provenance
  goes under the key ``volseg``.  For ``uint8`` label images the voxel count of
  every class is stored under ``volseg.class_frequencies``.

Existing outputs
----------------
Creating an image or label group over an existing one *resumes* it when its level-0
array has the same shape, dtype, chunks and axes (the block markers say what is
done); ``overwrite=True`` replaces it; anything else raises
:class:`~volseg.errors.OutputExistsError`.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numcodecs
import numpy as np
import zarr

from volseg.errors import InputError, OutputExistsError
from volseg.io import pyramid
from volseg.io.store import is_complete, marker_dir, store_blocks

if TYPE_CHECKING:
    from distributed import Client

NGFF_VERSION = "0.4"
UNIT = "nanometer"
DEFAULT_CHUNK_3D = 64
DEFAULT_CHUNK_2D = 256
COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)
"""Level 1: on EM images and uint8 probabilities it compresses as well as level 3 or
better, 1.1x to 10x faster (Blosc's zstd levels 2-5 search long matches for no gain)."""
READ_BLOCK_BYTES = 64 * 2**20
"""Target size of the dask blocks that feed the writer (bounded memory per task)."""

_UNIT_TO_NM = {
    "angstrom": 0.1, "picometer": 1e-3, "nanometer": 1.0, "micrometer": 1e3,
    "micron": 1e3, "millimeter": 1e6, "centimeter": 1e7, "meter": 1e9,
}

VoxelSize = tuple[float, float, float]
PathLike = str | Path


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Level:
    """One level of a multiscale image as described by its metadata."""

    path: str
    shape: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...] | None


@dataclass(frozen=True)
class Multiscales:
    """The parsed ``multiscales`` metadata of an OME-Zarr image or label group.

    Attributes
    ----------
    axes
        Axis names, e.g. ``("z", "y", "x")``.
    units
        Unit of each axis (``None`` when not given).
    levels
        The levels, finest first, with scales converted to nanometres for space axes
        that state a unit.
    kind
        ``"labels"`` for a group with ``image-label`` metadata, else ``"image"``.
    version
        The NGFF version string.
    attrs
        All group attributes (OME metadata flattened for 0.5 groups).
    """

    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    levels: tuple[Level, ...]
    kind: Literal["image", "labels"]
    version: str
    attrs: dict[str, Any]

    @property
    def voxel_size(self) -> VoxelSize | None:
        """Voxel size ``(z, y, x)`` in nm of level 0 (``None`` if no axis has a unit)."""
        return self.level_voxel_size(0)

    def level_voxel_size(self, level: int) -> VoxelSize | None:
        """Voxel size ``(z, y, x)`` in nm of ``level`` (``None`` if no space unit)."""
        if all(self.units[i] is None for i, a in enumerate(self.axes) if a in "zyx"):
            return None
        scale = dict(zip(self.axes, self.levels[level].scale, strict=True))
        y, x = scale.get("y", 1.0), scale.get("x", 1.0)
        return (float(scale.get("z", y)), float(y), float(x))


def group_attrs(path: PathLike) -> dict[str, Any]:
    """Return the attributes of the Zarr group at ``path`` (0.5 ``ome`` key flattened)."""
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, Mapping):
        attrs = {**attrs, **ome}
    return attrs


def _to_nm(value: float, unit: str | None) -> float:
    return value * _UNIT_TO_NM.get(unit, 1.0) if unit else value


def read_multiscales(path: PathLike) -> Multiscales:
    """Parse the first ``multiscales`` entry of the OME-Zarr group at ``path``.

    Raises
    ------
    InputError
        If the group has no (or malformed) multiscales metadata.
    """
    path = Path(path)
    attrs = group_attrs(path)
    entries = attrs.get("multiscales")
    if not entries:
        raise InputError(f"{path} is a Zarr group without OME-Zarr 'multiscales' metadata; "
                         f"pass one of its arrays as the input instead")
    try:
        ms = entries[0]
        axes_meta = [a if isinstance(a, Mapping) else {"name": a} for a in ms["axes"]]
        axes = tuple(str(a["name"]) for a in axes_meta)
        units = tuple(a.get("unit") for a in axes_meta)
        global_scale = _transform(ms.get("coordinateTransformations"), "scale", len(axes))
        group = zarr.open_group(str(path), mode="r")
        levels = []
        for ds in ms["datasets"]:
            arr = group[ds["path"]]
            if not isinstance(arr, zarr.Array):
                raise ValueError(f"dataset {ds['path']!r} is not an array")
            scale = _transform(ds.get("coordinateTransformations"), "scale", len(axes))
            trans = _transform(ds.get("coordinateTransformations"), "translation", len(axes))
            scale_nm = tuple(
                _to_nm(s * (g or 1.0), u)
                for s, g, u in zip(scale or (1.0,) * len(axes), global_scale or (1.0,) * len(axes),
                                   units, strict=True)
            )
            trans_nm = None if trans is None else tuple(
                _to_nm(t, u) for t, u in zip(trans, units, strict=True))
            levels.append(Level(str(ds["path"]), tuple(arr.shape), scale_nm, trans_nm))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError(f"{path} has malformed OME-Zarr multiscales metadata ({exc}); "
                         f"rewrite it with `volseg convert`") from None
    kind: Literal["image", "labels"] = "labels" if "image-label" in attrs else "image"
    version = str(ms.get("version") or attrs.get("version") or NGFF_VERSION)
    return Multiscales(axes, units, tuple(levels), kind, version, attrs)


def _transform(transforms: Any, kind: str, ndim: int) -> tuple[float, ...] | None:
    for t in transforms or ():
        if t.get("type") == kind and kind in t:
            values = tuple(float(v) for v in t[kind])
            if len(values) != ndim:
                raise ValueError(f"{kind} has {len(values)} values for {ndim} axes")
            return values
    return None


def is_ome_zarr(path: PathLike) -> bool:
    """Return whether ``path`` is a Zarr group with multiscales or labels metadata."""
    try:
        attrs = group_attrs(path)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, TypeError):
        return False
    return "multiscales" in attrs or "labels" in attrs


def label_names(image_path: PathLike) -> list[str]:
    """Return the names of the label images listed in ``image_path/labels``."""
    try:
        return [str(n) for n in _as_list(group_attrs(Path(image_path) / "labels").get("labels"))]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, TypeError):
        return []


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _axes_metadata(axes: Sequence[str], unit: str | None) -> list[dict[str, str]]:
    out = []
    for name in axes:
        if name == "c":
            out.append({"name": "c", "type": "channel"})
        elif name == "t":
            out.append({"name": "t", "type": "time"})
        else:
            entry = {"name": name, "type": "space"}
            if unit:
                entry["unit"] = unit
            out.append(entry)
    return out


def _dataset_metadata(path: str, scale: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if any(s != b for s, b in zip(scale, base, strict=True)):
        transforms.append({
            "type": "translation",
            "translation": [(s - b) / 2 for s, b in zip(scale, base, strict=True)],
        })
    return {"path": path, "coordinateTransformations": transforms}


def _multiscales_metadata(
    name: str, axes: Sequence[str], scales: Sequence[Sequence[float]], unit: str | None,
    method: str,
) -> list[dict[str, Any]]:
    return [{
        "version": NGFF_VERSION,
        "name": name,
        "axes": _axes_metadata(axes, unit),
        "datasets": [_dataset_metadata(str(i), s, scales[0]) for i, s in enumerate(scales)],
        "type": method,
        "metadata": {"method": f"volseg.io.pyramid.reduce_{method}", "factor": 2},
    }]


# --------------------------------------------------------------------------- helpers


def default_axes(ndim: int) -> tuple[str, ...]:
    """Return the default axes for an array of ``ndim`` dimensions (3: zyx, 4: czyx)."""
    if ndim == 3:
        return ("z", "y", "x")
    if ndim == 4:
        return ("c", "z", "y", "x")
    raise ValueError(f"volumes are 3-D (z, y, x) or 4-D (c, z, y, x), got {ndim} dimensions")


def default_chunks(shape: Sequence[int], axes: Sequence[str]) -> tuple[int, ...]:
    """Return the default chunk shape: 64³ (1 × 256² for one section), ``c`` whole."""
    sizes = dict(zip(axes, shape, strict=True))
    flat = sizes.get("z", 1) == 1
    chunks = []
    for name, n in zip(axes, shape, strict=True):
        if name in ("c", "t"):
            chunks.append(n if name == "c" else 1)
        elif name == "z" and flat:
            chunks.append(1)
        else:
            chunks.append(min(n, DEFAULT_CHUNK_2D if flat else DEFAULT_CHUNK_3D))
    return tuple(max(1, c) for c in chunks)


def writer_chunks(
    shape: Sequence[int], chunks: Sequence[int], itemsize: int,
    budget: int = READ_BLOCK_BYTES,
) -> tuple[int, ...]:
    """Return dask block sizes aligned to ``chunks`` for feeding a writer.

    Blocks are one chunk deep along the first axes and grow along the last axes
    (whole multiples of the chunk) up to ``budget`` bytes: a slab of ``chunk-depth``
    sections read in as few pieces as the budget allows.
    """
    block = list(chunks)
    for axis in range(len(shape) - 1, -1, -1):
        per_unit = itemsize * math.prod(block) // block[axis]
        fit = max(1, budget // max(1, per_unit) // chunks[axis]) * chunks[axis]
        block[axis] = min(shape[axis], max(chunks[axis], fit))
        if block[axis] < shape[axis]:
            break
    return tuple(block)


def _check_voxel_size(voxel_size: Sequence[float] | None) -> VoxelSize | None:
    if voxel_size is None:
        return None
    vs = tuple(float(v) for v in voxel_size)
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise InputError(f"voxel size must be three positive numbers (z y x, nm), got "
                         f"{tuple(voxel_size)}")
    return (vs[0], vs[1], vs[2])


def _full_scale(axes: Sequence[str], voxel_size: VoxelSize | None) -> tuple[float, ...]:
    vs = dict(zip("zyx", voxel_size or (1.0, 1.0, 1.0), strict=True))
    return tuple(vs.get(a, 1.0) for a in axes)


def _is_zarr_node(path: Path) -> bool:
    return any((path / f).exists() for f in (".zgroup", ".zarray", "zarr.json"))


def _remove(path: Path) -> None:
    if path.is_dir():
        if not _is_zarr_node(path) and any(path.iterdir()):
            raise OutputExistsError(
                f"{path} exists and is not a Zarr group; refusing to replace it, choose "
                f"another output path")
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _exists_error(path: Path, why: str) -> OutputExistsError:
    return OutputExistsError(f"{path} exists{why}; pass --overwrite to replace it")


def _open_parent_group(path: Path, attrs: Mapping[str, Any] | None) -> zarr.Group:
    group = zarr.open_group(str(path), mode="a", zarr_format=2)
    if attrs:
        group.attrs.update(dict(attrs))
    return group


def _create_multiscale(
    path: Path, *, shape: Sequence[int], dtype: Any, chunks: Sequence[int] | None,
    voxel_size: Sequence[float] | None, axes: Sequence[str] | None, overwrite: bool,
    attrs: Mapping[str, Any] | None, method: str, extra: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create (or reopen for resuming) a multiscale group with its level-0 array."""
    shape = tuple(int(n) for n in shape)
    axes = tuple(axes) if axes is not None else default_axes(len(shape))
    if len(axes) != len(shape):
        raise ValueError(f"{len(axes)} axes {axes} for a {len(shape)}-D array")
    chunks = tuple(int(c) for c in chunks) if chunks is not None else default_chunks(shape, axes)
    chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True))
    vs = _check_voxel_size(voxel_size)
    dtype = np.dtype(dtype)
    if overwrite:
        _remove(path)
    elif path.exists():
        return _reopen_for_resume(path, shape, dtype, chunks, axes, attrs)
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array(
        "0", shape=shape, chunks=chunks, dtype=dtype, compressors=COMPRESSOR, fill_value=0,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    meta: dict[str, Any] = {"multiscales": _multiscales_metadata(
        path.name.removesuffix(".ome.zarr"), axes, [_full_scale(axes, vs)],
        UNIT if vs is not None else None, method)}
    meta.update(extra or {})
    meta.update(dict(attrs or {}))
    group.attrs.update(meta)
    return array


def _reopen_for_resume(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
    axes: tuple[str, ...], attrs: Mapping[str, Any] | None,
) -> zarr.Array:
    try:
        ms = read_multiscales(path)
        array = zarr.open_array(str(path / ms.levels[0].path), mode="r+")
    except (InputError, FileNotFoundError, KeyError, ValueError,
            zarr.errors.GroupNotFoundError, zarr.errors.ArrayNotFoundError):
        raise _exists_error(path, "") from None
    found = (tuple(array.shape), np.dtype(array.dtype), tuple(array.chunks), ms.axes)
    if found != (shape, dtype, chunks, axes):
        raise _exists_error(
            path, f" with shape {found[0]}, dtype {found[1]}, chunks {found[2]} (not "
                  f"{shape}, {dtype}, {chunks}), so it cannot be resumed")
    if attrs:
        zarr.open_group(str(path), mode="a").attrs.update(dict(attrs))
    return array


# --------------------------------------------------------------------------- public API


def create_image(
    path: PathLike, *, shape: Sequence[int], dtype: Any, chunks: Sequence[int] | None,
    voxel_size: Sequence[float] | None, axes: Sequence[str] | None = None,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create an OME-Zarr image group with an empty level-0 array, for blockwise writers.

    Parameters
    ----------
    path
        The image group, e.g. ``prediction.ome.zarr``.
    shape, dtype, chunks
        Of the level-0 array (``chunks=None``: :func:`default_chunks`).
    voxel_size
        ``(z, y, x)`` in nm, or ``None`` when unknown (scale 1, no unit).
    axes
        Axis names; default ``z, y, x`` (3-D) or ``c, z, y, x`` (4-D).
    overwrite
        Replace an existing group.  Without it an existing compatible group (same
        shape, dtype, chunks, axes) is reopened so that a writer can resume.
    attrs
        Extra group attributes; provenance under ``"volseg"``.

    Returns
    -------
    zarr.Array
        The level-0 array; fill it (e.g. with :func:`volseg.io.store.store_blocks`)
        and then call :func:`write_pyramid`.

    Raises
    ------
    OutputExistsError
        If ``path`` exists, is not compatible and ``overwrite`` is false.
    """
    return _create_multiscale(
        Path(path), shape=shape, dtype=dtype, chunks=chunks, voxel_size=voxel_size,
        axes=axes, overwrite=overwrite, attrs=attrs, method="mean")


def create_labels(
    image_path: PathLike, name: str, *, shape: Sequence[int], dtype: Any,
    chunks: Sequence[int] | None, voxel_size: Sequence[float] | None,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None,
) -> zarr.Array:
    """Create the label image ``image_path/labels/<name>`` with an empty level-0 array.

    The image group is created (empty) when it does not exist.  ``voxel_size=None``
    takes the image's level-0 voxel size.  See :func:`create_image` for the rest.
    """
    image_path = Path(image_path)
    if voxel_size is None and (image_path / ".zattrs").exists():
        try:
            voxel_size = read_multiscales(image_path).voxel_size
        except InputError:
            voxel_size = None
    _open_parent_group(image_path, None)
    labels = zarr.open_group(str(image_path / "labels"), mode="a", zarr_format=2)
    array = _create_multiscale(
        image_path / "labels" / name, shape=shape, dtype=dtype, chunks=chunks,
        voxel_size=voxel_size, axes=None, overwrite=overwrite, attrs=attrs, method="mode",
        extra={"image-label": {"version": NGFF_VERSION, "source": {"image": "../../"}}},
    )
    names = [str(n) for n in _as_list(labels.attrs.get("labels"))]
    if name not in names:
        labels.attrs["labels"] = [*names, name]
    return array


def write_pyramid(
    group_path: PathLike, *, method: Literal["mean", "mode"] = "mean", client: Client | None = None,
    overwrite: bool = False,
) -> None:
    """Build levels 1, 2, ... of a multiscale group from its level 0.

    Each level is reduced 2× from the previous one (:mod:`volseg.io.pyramid`) and
    written with :func:`~volseg.io.store.store_blocks`, so an interrupted pyramid
    resumes.  The multiscales metadata then lists every level.

    Parameters
    ----------
    group_path
        An image or label group made by :func:`create_image` / :func:`create_labels`.
    method
        ``"mean"`` for images, ``"mode"`` for labels.
    client
        Optional ``distributed.Client``.
    overwrite
        Recompute levels even where their markers say they are complete.
    """
    path = Path(group_path)
    ms = read_multiscales(path)
    group = zarr.open_group(str(path), mode="a")
    base = group[ms.levels[0].path]
    assert isinstance(base, zarr.Array)
    spatial = [a in ("z", "y", "x") for a in ms.axes]
    plan = pyramid.plan_levels(base.shape, ms.levels[0].scale, spatial)
    source = base
    for index, (shape, _scale, factors) in enumerate(plan[1:], start=1):
        chunks = tuple(min(c, n) for c, n in zip(base.chunks, shape, strict=True))
        target = _require_level(group, str(index), shape, chunks, base.dtype, overwrite)
        reduced = _reduced(source, factors, chunks, method)
        store_blocks(reduced, target, description=f"{path.name} level {index}",
                     client=client, overwrite=overwrite)
        source = target
    attrs = dict(group.attrs)
    unit = next((u for u in ms.units if u), None)
    attrs["multiscales"] = _multiscales_metadata(
        ms.attrs["multiscales"][0].get("name", path.name), ms.axes,
        [scale for _, scale, _ in plan], unit, method)
    for stale in range(len(plan), len(ms.levels) + 1):
        if str(stale) in group:
            del group[str(stale)]
    group.attrs.update(attrs)


def _require_level(
    group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
    dtype: Any, overwrite: bool,
) -> zarr.Array:
    if name in group:
        existing = group[name]
        if (isinstance(existing, zarr.Array) and not overwrite
                and tuple(existing.shape) == shape and tuple(existing.chunks) == chunks
                and existing.dtype == dtype):
            return existing
        del group[name]
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, compressors=COMPRESSOR, fill_value=0,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )


def _reduced(
    source: zarr.Array, factors: Sequence[int], chunks: Sequence[int], method: str
) -> da.Array:
    """Return the lazy 2× reduction of ``source``, blocks aligned to ``chunks``."""
    read = tuple(c * f for c, f in zip(chunks, factors, strict=True))
    src = da.from_zarr(source, chunks=read)
    out_chunks = tuple(
        tuple(-(-b // f) for b in bc) for bc, f in zip(src.chunks, factors, strict=True))
    return src.map_blocks(
        pyramid.REDUCERS[method], factors=tuple(factors), chunks=out_chunks,
        dtype=source.dtype, meta=np.empty((0,) * source.ndim, dtype=source.dtype),
    )


def _as_dask(array: Any, chunks: Sequence[int]) -> da.Array:
    """Return ``array`` as a dask array in writer-sized blocks aligned to ``chunks``."""
    if not isinstance(array, da.Array):
        array = da.from_array(np.asarray(array), chunks=tuple(chunks))
    block = writer_chunks(array.shape, chunks, array.dtype.itemsize)
    return array.rechunk(block)


def _with_z(array: Any) -> Any:
    return array[None] if array.ndim == 2 else array


def write_image(
    array: Any, path: PathLike, *, voxel_size: Sequence[float] | None,
    chunks: Sequence[int] | None = None, axes: Sequence[str] | None = None,
    overwrite: bool = False, attrs: Mapping[str, Any] | None = None, pyramid: bool = True,
    client: Client | None = None,
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
        Zarr chunk shape (default :func:`default_chunks`).
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
    """
    array = _with_z(array)
    target = create_image(path, shape=array.shape, dtype=array.dtype, chunks=chunks,
                          voxel_size=voxel_size, axes=axes, overwrite=overwrite, attrs=attrs)
    store_blocks(_as_dask(array, target.chunks), target, description=f"writing {path}",
                 client=client)
    if pyramid:
        write_pyramid(path, method="mean", client=client)


def write_labels(
    array: Any, image_path: PathLike, name: str, *, voxel_size: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None, overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None, pyramid: bool = True, client: Client | None = None,
) -> None:
    """Write an NGFF label image ``image_path/labels/<name>`` (mode pyramid).

    Parameters
    ----------
    array
        Integer labels, ``(z, y, x)`` or 2-D ``(y, x)``.
    image_path
        The image group (created empty if absent).
    name
        Name of the label image, e.g. ``"truth"``.
    voxel_size
        ``(z, y, x)`` in nm; default: the image's.
    chunks, overwrite, attrs, pyramid, client
        As for :func:`write_image`.  For ``uint8`` labels the voxel count per class is
        stored under ``volseg.class_frequencies``.
    """
    array = _with_z(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"label image {name!r} must have an integer dtype, got {array.dtype}; "
                         f"pass integer class or instance ids")
    target = create_labels(image_path, name, shape=array.shape, dtype=array.dtype,
                           chunks=chunks, voxel_size=voxel_size, overwrite=overwrite,
                           attrs=attrs)
    group_path = Path(image_path) / "labels" / name
    store_blocks(_as_dask(array, target.chunks), target, description=f"writing {group_path}",
                 client=client)
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

    blocks = da.from_zarr(target).to_delayed().ravel()
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
    group = zarr.open_group(str(group_path), mode="a")
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

    ``partial``: written by volseg's block store (its level 0 has a marker directory)
    but some chunk of some level is not marked complete, or pyramid levels are
    missing.  ``other``: exists but was not written block by block by volseg (or is
    not an OME-Zarr image), so it cannot be resumed.
    """
    path = Path(path)
    if not path.exists():
        return "absent"
    try:
        ms = read_multiscales(path)
        arrays = [zarr.open_array(str(path / lv.path), mode="r") for lv in ms.levels]
    except (InputError, FileNotFoundError, KeyError, ValueError, TypeError,
            zarr.errors.GroupNotFoundError, zarr.errors.ArrayNotFoundError):
        return "other"
    if not marker_dir(arrays[0]).exists():
        return "other"
    spatial = [a in ("z", "y", "x") for a in ms.axes]
    expected = len(pyramid.plan_levels(arrays[0].shape, ms.levels[0].scale, spatial))
    if len(arrays) < expected or not all(is_complete(a) for a in arrays):
        return "partial"
    return "complete"
