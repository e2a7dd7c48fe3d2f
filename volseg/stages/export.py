"""Workflow stage ``export``: a product written back to MRC or multi-page TIFF.

Example (cryo-ET: the membrane class as a binary mask for downstream tools)::

    export:
      input: prediction.ome.zarr/labels/semantic   # a product (or an external volume)
      output: membranes.mrc                        # .mrc / .rec / .map / .tif / .tiff
      classes: [1]                                 # these class ids -> 1, the rest -> 0
      dtype: null                                  # default: int8 (MRC) / uint8 (TIFF) for
                                                   # masks, else as stored (MRC: uint8 -> uint16)
      channel: null                                # one channel of a (c, z, y, x) input,
                                                   # e.g. a class probability map
      voxel_size: null                             # nm z y x (default: the input's)

Without ``classes`` the labels (or the chosen channel) are written as they are.  The
file lands in the workflow directory (an absolute ``output`` anywhere else).  It is
written slab by slab (memory bounded by one z-slab) into ``<output>.partial`` and
renamed when complete, so it is complete or absent.  MRC files carry the voxel size
and the origin (the OME-Zarr translation, e.g. from the MRC the volume came from) in
ångström in the header; TIFF files are ImageJ hyperstacks with the voxel size in
nanometres (``spacing``, resolution, ``unit: nm``) and zlib compression.

Each file carries a stamp of the settings that made it (an MRC header label, the
ImageJ ``Info`` field).  A rerun skips an output with the same stamp, refuses one
written with other settings or by something else, and ``--overwrite`` replaces it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from volseg.errors import ConfigError, InputError, OutputExistsError
from volseg.io import open_volume
from volseg.io.mrc import default_mode, partial_path, write_mrc, z_slabs
from volseg.workflow.stage import RunContext, StageConfig

NAME = "export"
ORDER = 75

MRC_SUFFIXES = (".mrc", ".rec", ".map")
TIFF_SUFFIXES = (".tif", ".tiff")
STAMP_PREFIX = "volseg export "

ExportDtype = Literal["uint8", "int8", "uint16", "int16", "float16", "float32"]

_MRC_MODE = {"int8": 0, "int16": 1, "float32": 2, "uint16": 6, "float16": 12}
_TIFF_DTYPES = ("uint8", "uint16", "int16", "float32")  # what ImageJ hyperstacks hold


class Config(StageConfig):
    """What to export, where, and how."""

    input: str = Field("prediction.ome.zarr/labels/semantic",
                       description="volume to export: a product or an external path")
    output: str = Field(description="file to write: .mrc/.rec/.map or .tif/.tiff (workflow dir)")
    classes: list[int] | None = Field(
        None, min_length=1, description="class ids that become 1 in a binary mask "
                                        "(null: export the values as they are)")
    dtype: ExportDtype | None = Field(None, description="stored data type (default: see docs)")
    channel: int | None = Field(None, ge=0, description="channel of a (c, z, y, x) input")
    voxel_size: tuple[float, float, float] | None = Field(
        None, description="voxel size z y x in nm (default: the input's)")

    @field_validator("output")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if Path(value).suffix.lower() not in MRC_SUFFIXES + TIFF_SUFFIXES:
            raise ValueError(f"output must end in one of {', '.join(MRC_SUFFIXES + TIFF_SUFFIXES)}")
        return value

    @field_validator("voxel_size")
    @classmethod
    def _positive(cls, value: tuple[float, float, float] | None
                  ) -> tuple[float, float, float] | None:
        if value is not None and min(value) <= 0:
            raise ValueError("voxel sizes must be positive")
        return value

    def stamp(self) -> str:
        """Return the text stamped into the file: a digest of the settings (< 80 characters)."""
        data = self.to_dict()
        data.pop("output")
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        return f"{STAMP_PREFIX}{digest}"


def is_mrc(path: str | Path) -> bool:
    """Whether ``path`` names an MRC file (by suffix)."""
    return Path(path).suffix.lower() in MRC_SUFFIXES


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


def _select(array: Any, config: Config, source: Path) -> Any:
    """Pick the channel (4-D inputs) and build the binary mask (``classes``)."""
    import dask.array as da

    if array.ndim == 4:
        if config.channel is None:
            if array.shape[0] != 1:
                raise ConfigError(
                    f"export: {source} has {array.shape[0]} channels (c, z, y, x); choose one "
                    f"with export.channel")
            array = array[0]
        elif config.channel >= array.shape[0]:
            raise ConfigError(f"export.channel: {config.channel} is not a channel of {source} "
                              f"(0..{array.shape[0] - 1})")
        else:
            array = array[config.channel]
    elif config.channel is not None:
        raise ConfigError(f"export.channel: {source} has no channel axis (shape "
                          f"{tuple(array.shape)})")
    if array.ndim != 3:
        raise InputError(f"{source}: expected a (z, y, x) volume, got shape {tuple(array.shape)}")
    if config.classes is not None:
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"export.classes: {source} holds {array.dtype} values, not class "
                              f"ids; drop classes or export a label image")
        array = da.isin(array, np.asarray(config.classes)).astype(np.uint8)
    return array


def _mrc_mode(config: Config, dtype: np.dtype[Any]) -> int:
    if config.dtype is None:
        return 0 if config.classes is not None else default_mode(dtype)
    if config.dtype not in _MRC_MODE:
        raise ConfigError(f"export.dtype: MRC has no {config.dtype} mode; use one of "
                          f"{', '.join(_MRC_MODE)}")
    return _MRC_MODE[config.dtype]


def _tiff_dtype(config: Config, dtype: np.dtype[Any]) -> np.dtype[Any]:
    name: str
    if config.dtype is not None:
        name = config.dtype
    elif config.classes is not None:
        name = "uint8"
    else:
        name = np.dtype(dtype).name
        if name == "bool":
            name = "uint8"
    if name not in _TIFF_DTYPES:
        raise ConfigError(f"export.dtype: an ImageJ TIFF cannot hold {name}; set export.dtype to "
                          f"one of {', '.join(_TIFF_DTYPES)}")
    return np.dtype(name)


def _checked_cast(slab: np.ndarray, dtype: np.dtype[Any], where: str) -> np.ndarray:
    if slab.dtype == dtype:
        return slab
    if dtype.kind in "iu" and slab.size and slab.dtype != np.bool_:
        info = np.iinfo(dtype)
        lo, hi = slab.min(), slab.max()
        if lo < info.min or hi > info.max or (slab.dtype.kind == "f"
                                               and not np.array_equal(slab, np.round(slab))):
            raise InputError(f"{where}: values {lo}..{hi} do not fit {dtype}; choose another "
                             f"export.dtype")
    return slab.astype(dtype)


def write_tiff(
    array: Any,
    path: str | Path,
    *,
    voxel_size_nm: tuple[float, float, float] | None,
    dtype: np.dtype[Any],
    info: str = "",
    client: Any = None,
) -> Path:
    """Write a ``(z, y, x)`` array as an ImageJ multi-page TIFF, slab by slab.

    Parameters
    ----------
    array
        Dask or numpy ``(z, y, x)`` array; computed one z-slab at a time
        (:func:`volseg.io.mrc.z_slabs`), pages streamed into the file.
    path
        The TIFF to write (via ``<path>.partial``, renamed when complete).
    voxel_size_nm
        ``(z, y, x)`` nm, written as ImageJ ``spacing``/resolution with unit ``nm``.
    dtype
        Stored type (uint8, uint16, int16 or float32); values must fit.
    info
        Text for the ImageJ ``Info`` field.
    client
        Optional ``distributed.Client``.

    Returns
    -------
    Path
        ``path``.
    """
    import dask.array as da
    import tifffile

    from volseg.progress import compute

    path = Path(path)
    shape = tuple(int(s) for s in array.shape)
    partial = partial_path(path)

    def pages() -> Iterator[np.ndarray]:
        for z0, z1 in z_slabs(array):
            slab = array[z0:z1]
            if isinstance(slab, da.Array):
                (slab,) = compute(slab, description=f"{path.name}: sections {z0}-{z1} of "
                                                    f"{shape[0]}", client=client)
            yield from _checked_cast(np.asarray(slab), dtype, f"{path} z={z0}..{z1}")

    metadata: dict[str, Any] = {"axes": "ZYX", "Info": info}
    resolution = None
    if voxel_size_nm is not None:
        vz, vy, vx = voxel_size_nm
        metadata.update(spacing=float(vz), unit="nm")
        resolution = (1.0 / float(vx), 1.0 / float(vy))
    nbytes = int(np.prod(shape)) * dtype.itemsize
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tifffile.TiffWriter(str(partial), imagej=True, bigtiff=nbytes > 2**32 - 2**25
                                 ) as tif:
            tif.write(pages(), shape=shape, dtype=dtype, compression="zlib",
                      resolution=resolution, metadata=metadata)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Export the volume (or skip a finished export); return a JSON-able summary."""
    t0 = time.perf_counter()
    output = ctx.path(config.output)
    stamp = config.stamp()
    if output.exists() and not ctx.overwrite:
        found = read_stamp(output)
        if found == stamp:
            return {"output": str(output), "status": "complete (skipped)"}
        why = ("was exported with other settings" if found is not None
               else "exists and was not written by volseg export")
        raise OutputExistsError(f"{output} {why}; pass --overwrite to replace it")
    source = ctx.resolve(config.input)
    if not source.exists():
        raise InputError(f"export.input: {config.input} not found in {ctx.workdir} or "
                         f"{ctx.base_dir}; run the stage that makes it first")
    array, meta = open_volume(source)
    array = _select(array, config, source)
    voxel_size = config.voxel_size or meta.voxel_size
    if is_mrc(output):
        mode = _mrc_mode(config, array.dtype)
        write_mrc(array, output, voxel_size_nm=voxel_size, overwrite=True, mode=mode,
                  labels=[stamp, f"from {source.name}"[:80]], client=ctx.client,
                  origin_nm=meta.origin)
        stored = f"MRC mode {mode}"
    else:
        dtype = _tiff_dtype(config, array.dtype)
        write_tiff(array, output, voxel_size_nm=voxel_size, dtype=dtype, info=stamp,
                   client=ctx.client)
        stored = f"TIFF {dtype.name}"
    return {"output": str(output), "input": str(source), "shape": list(array.shape),
            "stored": stored, "voxel_size_nm": None if voxel_size is None else list(voxel_size),
            "classes": config.classes, "seconds": round(time.perf_counter() - t0, 3)}
