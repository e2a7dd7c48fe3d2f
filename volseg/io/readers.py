"""Opening any supported volume as a lazy dask array plus metadata.

Every reader returns a dask array whose tasks open the file themselves (by path),
so arrays pickle cheaply to cluster workers and nothing is read before it is
needed.  Default dask chunks follow the format: one section per block for TIFF
pages and slice folders, the stored chunks for Zarr / N5 / OME-Zarr, and C-order
slabs of at most :data:`SLAB_BYTES` for memory-mappable files (MRC, NPY, HDF5).
Pass ``chunks=`` to read in other blocks (each task then reads exactly its region).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize

from volseg.errors import InputError
from volseg.io import n5, omezarr
from volseg.io.location import Location, PathLike, as_path, zarr_store
from volseg.io.mrc import MRC_SUFFIXES
from volseg.io.tiff import TIFF_SUFFIXES

if TYPE_CHECKING:
    from upath import UPath

SLAB_BYTES = 64 * 2**20
"""Default largest dask block for memory-mappable formats."""

SLICE_SUFFIXES = (".tif", ".tiff", ".png")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
SUPPORTED = (
    "MRC (.mrc/.rec/.map), TIFF (.tif/.tiff), folders of .tif/.png slices, PNG, "
    "HDF5 (.h5/.hdf5), NumPy (.npy), Zarr, N5 and OME-Zarr"
)

VoxelSize = tuple[float, float, float]


@dataclass(frozen=True)
class VolumeMeta:
    """What is known about an opened volume besides its voxels.

    Attributes
    ----------
    voxel_size
        ``(z, y, x)`` in nanometres, or ``None`` when the file does not say.
    axes
        Axis names of the returned array: ``("z", "y", "x")`` or ``("c", "z", "y", "x")``.
    source
        The path that was opened (with ``:dataset`` / ``[level]`` when used).
    kind
        ``"labels"`` for an OME-Zarr label image, else ``"image"``.
    attrs
        Extra metadata: ``format`` always; for OME-Zarr the group attributes
        (provenance under ``volseg``).
    origin
        ``(z, y, x)`` position in nm of the first voxel (MRC header origin, OME-Zarr
        translation), or ``None`` when it is 0 or unknown.
    """

    voxel_size: VoxelSize | None
    axes: tuple[str, ...]
    source: str
    kind: Literal["image", "labels"] = "image"
    attrs: dict[str, Any] = field(default_factory=dict)
    origin: VoxelSize | None = None


ChunksArg = Sequence[int] | None


# --------------------------------------------------------------------------- lazy proxies


class _Lazy:
    """A picklable, array-like view of a file region reader for ``da.from_array``.

    Subclasses implement :meth:`read` for a tuple of step-1 slices over :attr:`shape`.
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        slices = tuple(slice(*k.indices(n)[:2]) for k, n in zip(key, self.shape, strict=True))
        return self.read(slices)

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        raise NotImplementedError


class _RawReader(_Lazy):
    """C-order raw data at a byte offset (MRC data blocks, C-order ``.npy``).

    Reads with ``readinto`` row range by row range rather than through a memory map,
    so the pages read are not charged to the process (bounded RSS on huge files).
    """

    def __init__(self, path: str | Location, offset: int, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self.path, self.offset, self.shape = path, offset, shape
        self.stored, self.dtype = dtype, dtype.newbyteorder("=")

    def _open(self) -> Any:
        """A local file, or a URL's file object (a ``UPath``: seekable, byte ranges)."""
        return open(self.path, "rb") if isinstance(self.path, str) else self.path.open("rb")

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        if self.ndim < 2:
            with self._open() as f:
                f.seek(self.offset + key[0].start * self.stored.itemsize)
                return _read_exact(f, key[0].stop - key[0].start, self.stored, str(self.path))
        *lead, ys, xs = key
        rows = ys.stop - ys.start
        width = self.shape[-1]
        out = np.empty([s.stop - s.start for s in key], dtype=self.dtype)
        item = self.stored.itemsize
        with self._open() as f:
            for index in np.ndindex(*(s.stop - s.start for s in lead)):
                plane = np.ravel_multi_index(
                    tuple(s.start + i for s, i in zip(lead, index, strict=True)),
                    self.shape[:-2]) if lead else 0
                f.seek(self.offset + ((plane * self.shape[-2] + ys.start) * width) * item)
                data = _read_exact(f, rows * width, self.stored, str(self.path))
                out[index] = data.reshape(rows, width)[:, xs]
        return out


def _read_exact(f: Any, count: int, dtype: np.dtype, path: str) -> np.ndarray:
    buffer = np.empty(count, dtype=dtype)
    got = f.readinto(buffer.data.cast("B"))
    if got != buffer.nbytes:
        raise InputError(f"{path} is truncated (read {got} of {buffer.nbytes} bytes); check "
                         f"that it was copied completely")
    return buffer


class _NpyReader(_Lazy):
    """A Fortran-order ``.npy`` file, read through a memory map."""

    def __init__(self, path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, dtype

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[key])


class _Hdf5Reader(_Lazy):
    def __init__(self, path: str, dataset: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.dataset, self.shape, self.dtype = path, dataset, shape, dtype

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.dataset][key])


_tiff_cache = threading.local()


def _cached_tiff(path: str) -> Any:
    """Return a per-thread open ``TiffFile`` (page index loaded once per thread)."""
    import tifffile

    cache = getattr(_tiff_cache, "files", None)
    if cache is None:
        cache = _tiff_cache.files = {}
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in cache:
        for old in [k for k in cache if k[0] == path]:
            cache.pop(old).close()
        cache[key] = tifffile.TiffFile(path)
    return cache[key]


class _TiffPagesReader(_Lazy):
    """A multi-page TIFF read page by page (each page a ``y, x`` section)."""

    def __init__(self, path: str, shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.path, self.shape, self.dtype = path, shape, dtype

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        tif = _cached_tiff(self.path)
        out = np.empty([s.stop - s.start for s in key], dtype=self.dtype)
        for i, z in enumerate(range(key[0].start, key[0].stop)):
            try:
                out[i] = tif.pages[z].asarray(maxworkers=1)[key[1], key[2]]
            except (ValueError, RuntimeError, OSError, IndexError) as exc:
                raise InputError(f"{self.path}: page {z} cannot be decoded ({_first_line(exc)});"
                                 f" the file is corrupt, re-export it") from None
        return out


class _SlicesReader(_Lazy):
    """A folder of 2-D TIFF/PNG files, one section each (natural sort order)."""

    def __init__(self, files: list[str], shape: tuple[int, int, int], dtype: np.dtype) -> None:
        self.files, self.shape, self.dtype = files, shape, dtype

    def read(self, key: tuple[slice, ...]) -> np.ndarray:
        out = np.empty([s.stop - s.start for s in key], dtype=self.dtype)
        for i, z in enumerate(range(key[0].start, key[0].stop)):
            try:
                out[i] = _read_slice(self.files[z])[key[1], key[2]]
            except (ValueError, RuntimeError, OSError, IndexError) as exc:
                raise InputError(f"{self.files[z]} cannot be decoded ({_first_line(exc)}); the "
                                 f"file is corrupt, re-export it") from None
        return out


def _read_slice(path: str) -> np.ndarray:
    if path.lower().endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    import tifffile

    return np.asarray(tifffile.imread(path, key=0, maxworkers=1))


# --------------------------------------------------------------------------- helpers


def slab_chunks(shape: Sequence[int], itemsize: int, budget: int = SLAB_BYTES) -> tuple[int, ...]:
    """Return C-order slab chunks of at most ``budget`` bytes (whole trailing axes).

    Examples
    --------
    >>> slab_chunks((100, 1000, 1000), 1, budget=10_000_000)
    (10, 1000, 1000)
    """
    block = list(shape)
    for axis in range(len(shape)):
        rest = itemsize * math.prod(shape[axis + 1:])
        if rest * shape[axis] <= budget:
            break
        block[axis] = max(1, min(shape[axis], budget // max(1, rest)))
        if rest <= budget:
            break
    return tuple(int(b) for b in block)


def _token(path: Path, *extra: Any) -> str:
    stat = path.stat()
    return tokenize(str(path.resolve()), stat.st_mtime_ns, stat.st_size, *extra)


def _from_proxy(proxy: _Lazy, name: str, chunks: tuple[int, ...] | Any) -> da.Array:
    return da.from_array(
        proxy, chunks=chunks, name=name, asarray=False, fancy=False, lock=False,
        meta=np.empty((0,) * proxy.ndim, dtype=proxy.dtype),
    )


def _check_array(arr: da.Array, path: Location) -> da.Array:
    """Check dimensionality and dtype; 2-D becomes ``(1, y, x)``."""
    if arr.ndim not in (2, 3, 4):
        raise InputError(
            f"{path} has {arr.ndim} dimensions {tuple(arr.shape)}; volseg reads 2-D (y, x), "
            f"3-D (z, y, x) or 4-D (c, z, y, x) volumes, so reshape or split it first")
    kind = np.dtype(arr.dtype).kind
    if kind not in "biuf":
        raise InputError(f"{path} has dtype {arr.dtype}; volseg reads integer or real "
                         f"volumes, convert it (e.g. take the magnitude) first")
    if 0 in arr.shape:
        raise InputError(f"{path} is empty (shape {tuple(arr.shape)}); check the file")
    return arr[None] if arr.ndim == 2 else arr


def _axes(ndim: int) -> tuple[str, ...]:
    return ("c", "z", "y", "x") if ndim == 4 else ("z", "y", "x")


def _chunks_for(chunks: ChunksArg, ndim: int, default: tuple[int, ...]) -> Any:
    """Use ``chunks`` (given for the 3-/4-D result) on a possibly 2-D source."""
    if chunks is None:
        return default
    chunks = tuple(int(c) for c in chunks)
    return chunks[-ndim:] if len(chunks) > ndim else chunks


def _voxel_from(values: Sequence[float] | None, factor: float = 1.0) -> VoxelSize | None:
    """Return a ``(z, y, x)`` voxel size in nm from 2 or 3 values (zero/neg: unknown).

    Values are rounded to 12 significant digits after scaling, so ``14 Å`` is
    ``1.4`` nm, not ``1.4000000000000001``.
    """
    if values is None:
        return None
    vals = [omezarr.clean_number(float(v) * factor) if math.isfinite(float(v)) else float(v)
            for v in values]
    if len(vals) == 2:
        vals = [vals[0], *vals]
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals[1:]):
        return None
    if not (math.isfinite(vals[0]) and vals[0] > 0):
        vals[0] = vals[1]
    return (vals[0], vals[1], vals[2])


# --------------------------------------------------------------------------- formats

Opened = tuple[da.Array, VoxelSize | None, dict[str, Any]]


def _check_mrc_size(path: Path) -> None:
    """Raise ``ValueError`` naming the sizes when the MRC data block is cut short."""
    import mrcfile
    import mrcfile.utils

    with mrcfile.open(str(path), mode="r", permissive=False, header_only=True) as mrc:
        header = mrc.header
        for name in ("nx", "ny", "nz"):
            if int(header[name]) < 1:
                raise ValueError(f"impossible header: {name} = {int(header[name])}")
        if int(header.nsymbt) < 0:
            raise ValueError(f"impossible header: nsymbt = {int(header.nsymbt)}")
        if int(header.mz) > 0 and int(header.nz) > int(header.mz) and 401 <= int(
                header.ispg) <= 630:
            raise ValueError(
                f"a stack of {int(header.nz) // int(header.mz)} volumes (4-D, ispg "
                f"{int(header.ispg)}, nz {int(header.nz)}, mz {int(header.mz)}); volseg reads "
                f"one volume per file, so split the stack first")
        dtype = mrcfile.utils.data_dtype_from_header(header)
        count = int(header.nx) * int(header.ny) * int(header.nz)
        expected = 1024 + int(header.nsymbt) + count * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise ValueError(f"truncated: {size} bytes, the header describes {expected}")


def _open_mrc(path: Path, chunks: ChunksArg) -> Opened:
    import mrcfile

    try:
        _check_mrc_size(path)
        with mrcfile.mmap(str(path), mode="r", permissive=False) as mrc:
            data = mrc.data
            if data is None:
                raise ValueError("no data block")
            shape, dtype, offset = tuple(data.shape), data.dtype, int(data.offset)
            vs = mrc.voxel_size
            voxel = _voxel_from([_float32(v) for v in (vs.z, vs.y, vs.x)], factor=0.1)
            org = mrc.header.origin
            origin = tuple(omezarr.clean_number(_float32(v) * 0.1)
                           for v in (org.z, org.y, org.x))
    except (ValueError, OSError, EOFError, OverflowError) as exc:
        raise InputError(f"{path} is not a readable MRC file ({_first_line(exc)}); check that "
                         f"it was copied completely, or re-export it") from None
    if len(shape) not in (2, 3):
        raise InputError(f"{path} holds {len(shape)}-D data {shape}; volseg reads one 3-D "
                         f"volume (or 2-D image) per MRC file, so split it first")
    proxy = _RawReader(str(path), offset, shape, dtype)
    default = slab_chunks(shape, dtype.itemsize)
    arr = _from_proxy(proxy, f"mrc-{_token(path)}", _chunks_for(chunks, len(shape), default))
    attrs: dict[str, Any] = {"format": "mrc"}
    if any(origin) and all(math.isfinite(v) for v in origin):
        attrs["_origin"] = origin
    return arr, voxel, attrs


def _float32(value: Any) -> float:
    """Return a float32 header value as the decimal it was written as (``13.7``, not
    ``13.699999809265137``)."""
    return float(str(np.float32(value)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Complaints(logging.Handler):
    """Collects tifffile's log messages (warnings and errors about a damaged file)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[_Complaints]:
    """Keep tifffile's log messages about damaged files off the terminal; collect them.

    The caller turns them into one clear error (a broken page list means pages are
    lost: a truncated file).
    """
    logger = logging.getLogger("tifffile")
    level, propagate = logger.level, logger.propagate
    complaints = _Complaints()
    logger.addHandler(complaints)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield complaints
    finally:
        logger.removeHandler(complaints)
        logger.setLevel(level)
        logger.propagate = propagate


def _open_tiff(path: Path, chunks: ChunksArg) -> Opened:
    import tifffile

    try:
        with _quiet_tifffile() as complaints, tifffile.TiffFile(str(path)) as tif:
            pages = list(tif.pages)
            if not pages:
                raise ValueError("no readable pages; the file is corrupt")
            shape, dtype = _tiff_page_shape(path, pages)
            broken = [m for m in complaints.messages if "page" in m.lower()
                      or "offset" in m.lower() or "ifd" in m.lower()]
            if broken:
                raise ValueError(f"truncated or damaged page list after page "
                                 f"{len(pages) - 1}: {broken[0].split('> ', 1)[-1]}")
            described = _tiff_described_pages(tif)
            if described is not None and described > len(pages):
                raise ValueError(f"truncated: its metadata describes {described} pages, "
                                 f"{len(pages)} are in the file")
            voxel = _tiff_voxel_size(tif)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError) as exc:
        raise InputError(f"{path} is not a readable TIFF file ({_first_line(exc)}); check that "
                         f"it is complete, or re-export it") from None
    full = (len(pages), *shape)
    proxy = _TiffPagesReader(str(path), full, dtype)
    default = (1, *shape)
    arr = _from_proxy(proxy, f"tiff-{_token(path)}", _chunks_for(chunks, 3, default))
    return arr, voxel, {"format": "tiff"}


def _tiff_described_pages(tif: Any) -> int | None:
    """The number of pages the file's shaped/ImageJ metadata describes (``None``: none)."""
    try:
        if tif.is_shaped and tif.shaped_metadata:
            shape = tif.shaped_metadata[0].get("shape")
            return int(np.prod(shape[:-2])) if shape and len(shape) > 2 else None
        if tif.is_imagej and tif.imagej_metadata:
            return int(tif.imagej_metadata.get("images", 0)) or None
    except (TypeError, ValueError, AttributeError, IndexError):
        return None
    return None


def _tiff_page_shape(path: Path, pages: list[Any]) -> tuple[tuple[int, int], np.dtype]:
    """Check every page is a complete 2-D grey image of one shape; return shape, dtype."""
    size = path.stat().st_size
    first = pages[0]
    if first.ndim != 2 or first.samplesperpixel != 1:
        raise ValueError(f"pages of shape {first.shape} are not 2-D grey images; save one "
                         f"channel per file")
    for page in pages:
        if tuple(page.shape) != tuple(first.shape) or page.dtype != first.dtype:
            raise ValueError(f"page {page.index} has shape {page.shape} {page.dtype}, page 0 "
                             f"{first.shape} {first.dtype}")
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)]
        if not ends or max(ends) > size:
            raise ValueError(f"page {page.index} data extends past the end of the file "
                             f"(truncated)")
    return (int(first.shape[0]), int(first.shape[1])), np.dtype(first.dtype)


def _tiff_voxel_size(tif: Any) -> VoxelSize | None:
    """Voxel size from ImageJ metadata (``spacing`` + resolution in nm/µm units), if any."""
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).lower()
    factor = {"nm": 1.0, "nanometer": 1.0, "um": 1e3, "micron": 1e3, "\\u00b5m": 1e3,
              "µm": 1e3, "micrometer": 1e3}.get(unit)
    if factor is None:
        return None
    page = tif.pages[0]
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        x = xres[1] / xres[0] * factor
        y = yres[1] / yres[0] * factor
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    z = float(meta.get("spacing", 0.0)) * factor
    return _voxel_from((z, y, x))


def _open_slices(path: Path, chunks: ChunksArg) -> Opened:
    from natsort import natsorted

    files = natsorted(
        str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in SLICE_SUFFIXES
        and not f.name.startswith(".")
    )
    if not files:
        raise InputError(f"{path} is a folder without .tif/.tiff/.png slices, Zarr or N5 "
                         f"metadata; point to a volume file or a folder of slices")
    shape, dtype = _slice_header(files[0])
    for f in files[1:]:
        other = _slice_header(f)
        if other != (shape, dtype):
            raise InputError(f"{f} has shape {other[0]} {other[1]} but {files[0]} has "
                             f"{shape} {dtype}; all slices must match")
    proxy = _SlicesReader(files, (len(files), *shape), dtype)
    arr = _from_proxy(proxy, f"slices-{tokenize(files, [os.stat(f).st_mtime_ns for f in files])}",
                      _chunks_for(chunks, 3, (1, *shape)))
    return arr, None, {"format": "slices", "files": len(files)}


def _slice_header(path: str) -> tuple[tuple[int, int], np.dtype]:
    """Return the 2-D shape and dtype of one slice file without reading its pixels."""
    try:
        if path.lower().endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                name = _PIL_DTYPES.get(im.mode)
                if name is None:
                    raise ValueError(f"PNG mode {im.mode} is not a grey image")
                return (im.height, im.width), np.dtype(name)
        import tifffile

        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            if not len(tif.pages):
                raise ValueError("no readable pages; the file is corrupt")
            shape, dtype = _tiff_page_shape(Path(path), [tif.pages[0]])
            return shape, dtype
    except (ValueError, OSError, EOFError, IndexError) as exc:
        raise InputError(f"{path} is not a readable slice ({_first_line(exc)}); re-export it "
                         f"as a 2-D grey TIFF or PNG") from None


_PIL_DTYPES = {"L": "uint8", "1": "bool", "I;16": "uint16", "I;16B": "uint16", "I": "int32",
               "F": "float32"}


def _open_npy(path: Path, chunks: ChunksArg) -> Opened:
    try:
        mm = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable .npy file ({_first_line(exc)}); check that "
                         f"it is complete, or re-save it with numpy.save") from None
    shape, dtype = tuple(mm.shape), mm.dtype
    fortran = bool(mm.flags.f_contiguous and not mm.flags.c_contiguous)
    offset = int(mm.offset)
    del mm
    proxy: _Lazy = (_NpyReader(str(path), shape, dtype) if fortran
                    else _RawReader(str(path), offset, shape, dtype))
    default = slab_chunks(shape, dtype.itemsize)
    arr = _from_proxy(proxy, f"npy-{_token(path)}", _chunks_for(chunks, len(shape), default))
    return arr, None, {"format": "npy"}


def _open_hdf5(path: Path, dataset: str | None, chunks: ChunksArg) -> Opened:
    import h5py

    try:
        with h5py.File(str(path), "r") as f:
            names = _hdf5_datasets(f)
            if dataset is None:
                if len(names) != 1:
                    raise InputError(f"{path} holds datasets {names or 'none'}; choose one with "
                                     f"--dataset")
                dataset = names[0]
            node = f.get(dataset)
            if not isinstance(node, h5py.Dataset):
                raise InputError(f"{path} has no dataset {dataset!r}; available: "
                                 f"{', '.join(names) or 'none'}")
            shape, dtype = tuple(node.shape), node.dtype
            voxel = _attrs_voxel_size(dict(node.attrs))
    except OSError as exc:
        raise InputError(f"{path} is not a readable HDF5 file ({_first_line(exc)}); check "
                         f"that it is complete") from None
    proxy = _Hdf5Reader(str(path), dataset, shape, dtype)
    default = slab_chunks(shape, dtype.itemsize)
    arr = _from_proxy(proxy, f"h5-{_token(path, dataset)}",
                      _chunks_for(chunks, len(shape), default))
    return arr, voxel, {"format": "hdf5", "dataset": dataset}


def _hdf5_datasets(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _attrs_voxel_size(attrs: dict[str, Any]) -> VoxelSize | None:
    """Voxel size from common attributes: ``resolution`` (nm) or ``element_size_um``."""
    try:
        if "resolution" in attrs:
            return _voxel_from(list(np.ravel(attrs["resolution"])))
        if "element_size_um" in attrs:
            return _voxel_from(list(np.ravel(attrs["element_size_um"])), factor=1e3)
    except (TypeError, ValueError):
        return None
    return None


def _is_zarr(path: Location) -> bool:
    return (path / ".zarray").exists() or (path / ".zgroup").exists() or (
        path / "zarr.json").exists()


def _zarr_kind(path: Location) -> str:
    if (path / ".zarray").exists():
        return "array"
    if (path / ".zgroup").exists():
        return "group"
    try:
        return str(json.loads((path / "zarr.json").read_text()).get("node_type", "group"))
    except (OSError, ValueError):
        return "group"


def _open_zarr(path: Location, dataset: str | None, level: int, chunks: ChunksArg
               ) -> tuple[da.Array, VoxelSize | None, dict[str, Any], tuple[str, ...] | None,
                          Literal["image", "labels"]]:
    if dataset:
        path = path / dataset
        if not (path.exists() if isinstance(path, Path) else _is_zarr(path)):
            raise InputError(f"{path.parent} has no member {dataset!r}; available: "
                             f"{', '.join(_zarr_members(path.parent)) or 'none'}")
    if _zarr_kind(path) == "array":
        arr = zarr.open_array(zarr_store(path, read_only=True), mode="r")
        attrs = dict(arr.attrs)
        return (_checked_zarr(arr, path, chunks),
                _attrs_voxel_size(attrs), {"format": "zarr", **attrs}, None, "image")
    attrs = omezarr.group_attrs(path)
    if "multiscales" not in attrs:
        labels = [str(n) for n in omezarr.label_names(path)]
        hint = (f"it holds label images only: open {path}/labels/<name> ({', '.join(labels)})"
                if labels else f"choose an array with --dataset "
                f"({', '.join(_zarr_members(path)) or 'none'})")
        raise InputError(f"{path} is a Zarr group without an image; {hint}")
    ms = omezarr.read_multiscales(path)
    if not 0 <= level < len(ms.levels):
        raise InputError(f"{path} has pyramid levels 0..{len(ms.levels) - 1}, not {level}; "
                         f"choose another level")
    if not set(ms.axes) <= set("czyx"):
        raise InputError(f"{path} has axes {ms.axes}; volseg reads (c,) z, y, x images only")
    arr = zarr.open_array(zarr_store(path / ms.levels[level].path, read_only=True), mode="r")
    attrs = {"format": "ome-zarr", **ms.attrs}
    origin = ms.level_origin(level)
    if origin is not None:
        attrs["_origin"] = origin
    return (_checked_zarr(arr, path / ms.levels[level].path, chunks),
            ms.level_voxel_size(level), attrs, ms.axes, ms.kind)


def _zarr_chunks(chunks: ChunksArg, arr: zarr.Array) -> Any:
    return _chunks_for(chunks, arr.ndim, tuple(arr.chunks))


def _checked_zarr(arr: zarr.Array, path: Location, chunks: ChunksArg) -> da.Array:
    """A zarr array as dask, each read checked for missing and corrupt chunks.

    See :mod:`volseg.io.chunks`: a chunk missing from the store is an error (unless
    volseg's markers say it was left out as the fill value, or missing chunks are
    allowed), a chunk that fails to decode is an error naming it.
    """
    from volseg.io.chunks import CheckedZarr

    proxy = CheckedZarr.of(arr, str(path))
    return da.from_array(
        proxy, chunks=_zarr_chunks(chunks, arr),
        name=f"zarr-{tokenize(str(path), arr.metadata.to_dict(), proxy.allow_missing)}",
        asarray=False, fancy=False, lock=False,
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))


def _zarr_members(path: Location) -> list[str]:
    try:
        group = zarr.open_group(zarr_store(path, read_only=True), mode="r")
        return sorted(name for name, _ in group.members(max_depth=None))
    except (FileNotFoundError, ValueError, TypeError, zarr.errors.GroupNotFoundError):
        return []


def _open_n5(path: Path, dataset: str | None, chunks: ChunksArg) -> Opened:
    if dataset:
        path = path / dataset
    if not n5.is_n5_dataset(path):
        names = n5.list_datasets(path)
        raise InputError(f"{path} is an N5 container, not a dataset; choose one with --dataset "
                         f"({', '.join(names) or 'none found'})")
    proxy = n5.N5Dataset(path)
    arr = da.from_array(proxy, chunks=_chunks_for(chunks, proxy.ndim, proxy.block),
                        name=f"n5-{_token(path / 'attributes.json')}", asarray=False,
                        fancy=False, lock=False,
                        meta=np.empty((0,) * proxy.ndim, dtype=proxy.dtype))
    voxel = _attrs_voxel_size({k: v[::-1] if k == "resolution" and isinstance(v, list) else v
                               for k, v in proxy.attrs.items()})
    return arr, voxel, {"format": "n5"}


# --------------------------------------------------------------------------- entry point


def open_volume(
    path: PathLike, *, dataset: str | None = None, level: int = 0,
    chunks: Sequence[int] | None = None,
) -> tuple[da.Array, VolumeMeta]:
    """Open a volume lazily as a dask array ``(z, y, x)`` or ``(c, z, y, x)``.

    Parameters
    ----------
    path
        An MRC/REC/MAP file, a (multi-page) TIFF, a folder of TIFF/PNG slices (natural
        sort order), a PNG, an HDF5 file, a ``.npy`` file, a Zarr array or group, an
        N5 dataset or container, or an OME-Zarr image or label group (e.g.
        ``image.ome.zarr/labels/truth``).
    dataset
        The dataset inside an HDF5 file, Zarr group or N5 container.
    level
        The pyramid level of an OME-Zarr image (0 = full resolution).
    chunks
        Dask chunks of the result; default: the format's natural blocks (see module
        notes).

    Returns
    -------
    array : dask.array.Array
        Lazy voxels; 2-D inputs become ``(1, y, x)``.
    meta : VolumeMeta
        Voxel size (nm), axes, source, kind and extra attributes.

    Raises
    ------
    InputError
        With one line naming the file and the fix, for a missing, unknown, truncated
        or corrupt file, a wrong dimensionality or a missing dataset.
    """
    location = as_path(path)
    if not isinstance(location, Path):
        return _open_url(location, dataset, level, chunks)
    p = location
    if not p.exists():
        raise InputError(f"{p} does not exist; {_missing_hint(p)}")
    _check_regular(p)
    axes: tuple[str, ...] | None = None
    kind: Literal["image", "labels"] = "image"
    source = str(p) + (f":{dataset}" if dataset else "") + (f"[{level}]" if level else "")
    if p.is_dir():
        if _is_zarr(p):
            try:
                arr, voxel, attrs, axes, kind = _open_zarr(p, dataset, level, chunks)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{_bad_metadata(p, dataset)}: invalid Zarr metadata "
                                 f"({_first_line(exc)}); repair or re-create the file"
                                 ) from None
        elif n5.is_n5_dataset(p) or n5.is_n5_container(p):
            arr, voxel, attrs = _open_n5(p, dataset, chunks)
        else:
            arr, voxel, attrs = _open_slices(p, chunks)
    else:
        arr, voxel, attrs = _open_file(p, dataset, chunks)
    return _result(arr, voxel, attrs, axes, kind, p, source)


def _result(arr: da.Array, voxel: VoxelSize | None, attrs: dict[str, Any],
            axes: tuple[str, ...] | None, kind: Literal["image", "labels"], p: Location,
            source: str) -> tuple[da.Array, VolumeMeta]:
    if axes is not None and arr.ndim == len(axes) and len(axes) == 2:
        axes = None
    arr = _check_array(arr, p)
    origin = attrs.pop("_origin", None)
    return arr, VolumeMeta(voxel_size=voxel, axes=axes if axes and len(axes) == arr.ndim
                           else _axes(arr.ndim), source=source, kind=kind, attrs=attrs,
                           origin=None if origin is None else tuple(origin))


def _open_url(p: UPath, dataset: str | None, level: int, chunks: ChunksArg
              ) -> tuple[da.Array, VolumeMeta]:
    """Open a Zarr array or (OME-)Zarr group at a URL; other formats: copy them first."""
    source = str(p) + (f":{dataset}" if dataset else "") + (f"[{level}]" if level else "")
    try:
        found = _is_zarr(p)
    except (OSError, ValueError) as exc:
        raise InputError(f"{p} cannot be read ({_first_line(exc)}); check the URL, the "
                         f"credentials and the endpoint (AWS_ENDPOINT_URL, ...)") from None
    if not found:
        suffix = p.suffix.lower()
        if suffix in (*MRC_SUFFIXES, ".npy") and p.is_file():  # raw C-order: byte ranges
            opener = _open_mrc_url if suffix in MRC_SUFFIXES else _open_npy_url
            arr, voxel, attrs = opener(p, chunks)
            return _result(arr, voxel, attrs, None, "image", p, source)
        single = (*TIFF_SUFFIXES, *HDF5_SUFFIXES, ".png")
        if suffix in single and p.exists():
            raise InputError(f"{p}: volseg reads {suffix} files from local disk only; copy it "
                             f"first (e.g. fsspec/aws s3 cp) or convert it to OME-Zarr")
        if p.exists():
            raise InputError(f"{p} is not a Zarr array or group (no .zarray, .zgroup or "
                             f"zarr.json); volseg reads Zarr and OME-Zarr from URLs, copy "
                             f"other volumes to local disk first")
        raise InputError(f"{p} does not exist; check the URL")
    arr, voxel, attrs, axes, kind = _open_zarr(p, dataset, level, chunks)
    return _result(arr, voxel, attrs, axes, kind, p, source)


def _check_regular(p: Path) -> None:
    """Refuse a FIFO, device or socket before anything opens it (reading one blocks)."""
    mode = p.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
                if stat.S_ISSOCK(mode) else "not a regular file")
        raise InputError(f"{p} is {kind}, not a file volseg can read; give a regular file "
                         f"or folder")


def _bad_metadata(p: Path, dataset: str | None) -> str:
    """Name the Zarr metadata file under ``p`` that is not valid JSON (else ``p``)."""
    root = p / dataset if dataset else p
    names = (".zattrs", ".zgroup", ".zarray", "zarr.json")
    candidates = [root / n for n in names]
    candidates += [f for f in sorted(root.glob("*/*")) if f.name in names]
    for file in candidates:
        if file.is_file():
            try:
                json.loads(file.read_bytes().decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return str(file)
    return str(root)


def _url_token(p: UPath) -> str:
    """A dask name token of a URL: its location, size and version (ETag / mtime) if known."""
    info = p.fs.info(p.path)
    version = [info.get(k) for k in ("ETag", "LastModified", "mtime", "etag") if info.get(k)]
    return tokenize(str(p), info.get("size"), [str(v) for v in version])


def _open_mrc_url(p: UPath, chunks: ChunksArg) -> Opened:
    """An MRC file at a URL: header from the first bytes, data read by byte ranges."""
    import mrcfile.utils
    from mrcfile.mrcinterpreter import MrcInterpreter

    try:
        with p.open("rb") as f:
            mrc = MrcInterpreter(iostream=f, permissive=False, header_only=True)
            header = mrc.header
            dtype = mrcfile.utils.data_dtype_from_header(header)
            nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
            if min(nx, ny, nz) < 1 or int(header.nsymbt) < 0:
                raise ValueError(f"impossible header: nx, ny, nz = {nx}, {ny}, {nz}")
            if int(header.mz) > 0 and nz > int(header.mz) and 401 <= int(header.ispg) <= 630:
                raise ValueError(f"a stack of {nz // int(header.mz)} volumes (4-D); volseg "
                                 f"reads one volume per file, so split the stack first")
            vs = mrc.voxel_size
            voxel = _voxel_from([_float32(v) for v in (vs.z, vs.y, vs.x)], factor=0.1)
            org = header.origin
            origin = tuple(omezarr.clean_number(_float32(v) * 0.1)
                           for v in (org.z, org.y, org.x))
            offset = 1024 + int(header.nsymbt)
        size = int(p.fs.info(p.path)["size"])
        if size < offset + nx * ny * nz * dtype.itemsize:
            raise ValueError(f"truncated: {size} bytes, the header describes "
                             f"{offset + nx * ny * nz * dtype.itemsize}")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p} is not a readable MRC file ({_first_line(exc)}); check that "
                         f"it was copied completely, or re-export it") from None
    shape = (nz, ny, nx)
    proxy = _RawReader(p, offset, shape, dtype)
    default = slab_chunks(shape, dtype.itemsize)
    arr = _from_proxy(proxy, f"mrc-{_url_token(p)}", _chunks_for(chunks, 3, default))
    attrs: dict[str, Any] = {"format": "mrc"}
    if any(origin) and all(math.isfinite(v) for v in origin):
        attrs["_origin"] = origin
    return arr, voxel, attrs


def _open_npy_url(p: UPath, chunks: ChunksArg) -> Opened:
    """A C-order ``.npy`` file at a URL: header parsed, data read by byte ranges."""
    try:
        with p.open("rb") as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            offset = int(f.tell())
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{p} is not a readable .npy file ({_first_line(exc)}); check that "
                         f"it is complete, or re-save it with numpy.save") from None
    if fortran or dtype.hasobject:
        raise InputError(f"{p}: a Fortran-order or object .npy is read from local disk only; "
                         f"copy it first, or re-save it in C order")
    shape = tuple(int(n) for n in shape)
    proxy = _RawReader(p, offset, shape, np.dtype(dtype))
    default = slab_chunks(shape, dtype.itemsize)
    arr = _from_proxy(proxy, f"npy-{_url_token(p)}", _chunks_for(chunks, len(shape), default))
    return arr, None, {"format": "npy"}


def _missing_hint(p: Path) -> str:
    """Say what to open instead of a missing ``G/labels/<name>`` of a label image ``G``."""
    if p.parent.name == "labels" and p.parent.parent.is_dir():
        group = p.parent.parent
        with contextlib.suppress(Exception):
            if omezarr.read_multiscales(group).kind == "labels":
                return f"{group} is itself a label image, open {group}"
    return "check the path"


def _open_file(p: Path, dataset: str | None, chunks: ChunksArg) -> Opened:
    suffix = p.suffix.lower()
    openers: dict[tuple[str, ...], Callable[[], Opened]] = {
        MRC_SUFFIXES: lambda: _open_mrc(p, chunks),
        TIFF_SUFFIXES: lambda: _open_tiff(p, chunks),
        (".png",): lambda: _open_png(p, chunks),
        HDF5_SUFFIXES: lambda: _open_hdf5(p, dataset, chunks),
        (".npy",): lambda: _open_npy(p, chunks),
    }
    for suffixes, opener in openers.items():
        if suffix in suffixes:
            return opener()
    raise InputError(f"{p}: unknown file type {suffix or '(no extension)'!r}; volseg reads "
                     f"{SUPPORTED}")


def _open_png(path: Path, chunks: ChunksArg) -> Opened:
    shape, dtype = _slice_header(str(path))
    proxy = _SlicesReader([str(path)], (1, *shape), dtype)
    arr = _from_proxy(proxy, f"png-{_token(path)}", _chunks_for(chunks, 3, (1, *shape)))
    return arr, None, {"format": "png"}
