"""Exporting a volume to MRC or multi-page TIFF, with a stamp of the settings that made it.

:class:`ExportOptions` is the operation's one options object (the ``export`` workflow
stage's config is it plus the paths).  :func:`export_volume` picks a channel, builds a
binary mask of chosen classes, and writes the file slab by slab (memory bounded by one
z-slab) into ``<output>.partial``, renamed when complete, so it is complete or absent.
MRC files carry the voxel size and the origin (the OME-Zarr translation, e.g. of the
MRC the volume came from) in ångström in the header; TIFF files are ImageJ
hyperstacks with the voxel size in nanometres (``spacing``, resolution, ``unit: nm``)
and zlib compression.

Each file carries a stamp (an MRC header label, the ImageJ ``Info`` field): a digest
of the source and the options.  An output with the same stamp is left as it is, one
with another stamp or none is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from volseg.errors import ConfigError, InputError, OutputExistsError
from volseg.io.guard import check_output_location
from volseg.io.location import Location, PathLike, as_path
from volseg.io.mrc import MRC_SUFFIXES, default_mode, is_mrc, write_mrc
from volseg.io.readers import open_volume
from volseg.io.tiff import TIFF_SUFFIXES, write_tiff
from volseg.options import Options, VoxelSize3

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["EXPORT_SUFFIXES", "STAMP_PREFIX", "ExportOptions", "export_volume", "read_stamp",
           "settings_stamp"]

STAMP_PREFIX = "volseg export "
#: File name endings an export can write.
EXPORT_SUFFIXES = MRC_SUFFIXES + TIFF_SUFFIXES

ExportDtype = Literal["uint8", "int8", "uint16", "int16", "float16", "float32"]

_MRC_MODE = {"int8": 0, "int16": 1, "float32": 2, "uint16": 6, "float16": 12}
_TIFF_DTYPES = ("uint8", "uint16", "int16", "float32")  # what ImageJ hyperstacks hold


class ExportOptions(Options):
    """What to export and how it is stored.

    Attributes
    ----------
    classes
        Class ids that become 1 in a binary mask (``None``: the values as they are).
    dtype
        Stored data type; default int8 (MRC) / uint8 (TIFF) for masks, else as stored
        (MRC: uint8 -> uint16).
    channel
        One channel of a ``(c, z, y, x)`` input, e.g. a class probability map.
    voxel_size
        ``(z, y, x)`` nm (default: the input's).
    """

    classes: list[int] | None = Field(
        None, min_length=1, description="class ids that become 1 in a binary mask "
                                        "(null: export the values as they are)")
    dtype: ExportDtype | None = Field(None, description="stored data type (default: see docs)")
    channel: int | None = Field(None, ge=0, description="channel of a (c, z, y, x) input")
    voxel_size: VoxelSize3 | None = Field(
        None, description="voxel size z y x in nm (default: the input's)")


def settings_stamp(settings: Mapping[str, Any]) -> str:
    """Return the stamp of export settings: a digest (< 80 characters) of the JSON data."""
    digest = hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()
    return f"{STAMP_PREFIX}{digest[:16]}"


def read_stamp(path: str | Path) -> str | None:
    """Return the export stamp of an existing file (``None``: no stamp, or unreadable)."""
    path = Path(path)
    try:
        if is_mrc(path):
            import mrcfile

            with mrcfile.open(str(path), mode="r", header_only=True, permissive=True) as mrc:
                labels = [bytes(lab).decode("ascii", "replace").strip()
                          for lab in mrc.header.label[: int(mrc.header.nlabl)]]
            found = [lab for lab in labels if lab.startswith(STAMP_PREFIX)]
            return found[0] if found else None
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            info = (tif.imagej_metadata or {}).get("Info")
        return str(info) if isinstance(info, str) and info.startswith(STAMP_PREFIX) else None
    except Exception:  # any unreadable file is "not ours"
        return None


def _select(array: Any, options: ExportOptions, source: Location) -> Any:
    """Pick the channel (4-D inputs) and build the binary mask (``classes``)."""
    import dask.array as da

    if array.ndim == 4:
        if options.channel is None:
            if array.shape[0] != 1:
                raise ConfigError(
                    f"export: {source} has {array.shape[0]} channels (c, z, y, x); choose one "
                    f"with export.channel")
            array = array[0]
        elif options.channel >= array.shape[0]:
            raise ConfigError(f"export.channel: {options.channel} is not a channel of {source} "
                              f"(0..{array.shape[0] - 1})")
        else:
            array = array[options.channel]
    elif options.channel is not None:
        raise ConfigError(f"export.channel: {source} has no channel axis (shape "
                          f"{tuple(array.shape)})")
    if array.ndim != 3:
        raise InputError(f"{source}: expected a (z, y, x) volume, got shape {tuple(array.shape)}")
    if options.classes is not None:
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"export.classes: {source} holds {array.dtype} values, not class "
                              f"ids; drop classes or export a label image")
        array = da.isin(array, np.asarray(options.classes)).astype(np.uint8)
    return array


def _mrc_mode(options: ExportOptions, dtype: np.dtype[Any]) -> int:
    if options.dtype is None:
        return 0 if options.classes is not None else default_mode(dtype)
    if options.dtype not in _MRC_MODE:
        raise ConfigError(f"export.dtype: MRC has no {options.dtype} mode; use one of "
                          f"{', '.join(_MRC_MODE)}")
    return _MRC_MODE[options.dtype]


def _tiff_dtype(options: ExportOptions, dtype: np.dtype[Any]) -> np.dtype[Any]:
    name: str
    if options.dtype is not None:
        name = options.dtype
    elif options.classes is not None:
        name = "uint8"
    else:
        name = np.dtype(dtype).name
        if name == "bool":
            name = "uint8"
    if name not in _TIFF_DTYPES:
        raise ConfigError(f"export.dtype: an ImageJ TIFF cannot hold {name}; set export.dtype to "
                          f"one of {', '.join(_TIFF_DTYPES)}")
    return np.dtype(name)


def export_volume(
    source: PathLike,
    output: PathLike,
    options: ExportOptions | None = None,
    *,
    stamp: str,
    overwrite: bool = False,
    client: Client | None = None,
) -> dict[str, Any]:
    """Export ``source`` to ``output`` (``.mrc``/``.rec``/``.map``/... or ``.tif``/``.tiff``).

    Parameters
    ----------
    source
        Anything :func:`volseg.io.open_volume` reads.
    output
        The file to write.
    options
        Classes, dtype, channel and voxel size (:class:`ExportOptions`, used whole).
    stamp
        The settings stamp written into the file (:func:`settings_stamp`).
    overwrite
        Replace an existing export of volseg's made with other settings (a file volseg
        did not write is never replaced).
    client
        Optional ``distributed.Client``.

    Returns
    -------
    dict
        A JSON-able summary (``status: "complete (skipped)"`` when ``output`` already
        holds this stamp).

    Raises
    ------
    InputError
        When ``output`` is the input or lies inside it.
    OutputExistsError
        When ``output`` is a folder or a file volseg did not export, or an export with
        another stamp and ``overwrite`` is false.
    """
    t0 = time.perf_counter()
    options = options or ExportOptions()
    source, location = as_path(source), as_path(output)
    if not isinstance(location, Path):
        raise InputError(f"{location}: export writes MRC/TIFF files to local disk only; "
                         f"write it to a local path and copy it to the bucket afterwards")
    output = location
    check_output_location(output, [source])
    if output.is_dir():
        raise OutputExistsError(f"{output} is a folder; export writes one MRC/TIFF file, "
                                f"choose a file path")
    if output.exists():
        found = read_stamp(output)
        if found is None:
            raise OutputExistsError(f"{output} exists and was not written by volseg export; "
                                    f"volseg replaces only its own exports: choose another "
                                    f"path or remove the file yourself")
        if not overwrite:
            if found == stamp:
                return {"output": str(output), "status": "complete (skipped)"}
            raise OutputExistsError(f"{output} was exported with other settings; pass "
                                    f"--overwrite to replace it")
    array, meta = open_volume(source)
    array = _select(array, options, source)
    voxel_size = options.voxel_size or meta.voxel_size
    if is_mrc(output):
        mode = _mrc_mode(options, array.dtype)
        write_mrc(array, output, voxel_size_nm=voxel_size, overwrite=True, mode=mode,
                  labels=[stamp, f"from {source.name}"[:80]], client=client,
                  origin_nm=meta.origin)
        stored = f"MRC mode {mode}"
    else:
        dtype = _tiff_dtype(options, array.dtype)
        write_tiff(array, output, voxel_size_nm=voxel_size, dtype=dtype, info=stamp,
                   client=client)
        stored = f"TIFF {dtype.name}"
    return {"output": str(output), "input": str(source), "shape": list(array.shape),
            "stored": stored, "voxel_size_nm": None if voxel_size is None else list(voxel_size),
            "classes": options.classes, "seconds": round(time.perf_counter() - t0, 3)}
