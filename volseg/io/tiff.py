"""Writing a volume as an ImageJ multi-page TIFF, slab by slab (memory: one z-slab)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from volseg.errors import InputError
from volseg.io.mrc import partial_path, z_slabs

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["TIFF_SUFFIXES", "checked_cast", "write_tiff"]

#: File name endings of TIFF files.
TIFF_SUFFIXES = (".tif", ".tiff")


def checked_cast(slab: np.ndarray, dtype: np.dtype[Any], where: str) -> np.ndarray:
    """Return ``slab`` as ``dtype``, refusing values an integer type cannot hold exactly."""
    if slab.dtype == dtype:
        return slab
    if dtype.kind in "iu" and slab.size and slab.dtype != np.bool_:
        info = np.iinfo(dtype)
        lo, hi = slab.min(), slab.max()
        if lo < info.min or hi > info.max or (slab.dtype.kind == "f"
                                               and not np.array_equal(slab, np.round(slab))):
            raise InputError(f"{where}: values {lo}..{hi} do not fit {dtype}; choose another "
                             f"dtype")
    return slab.astype(dtype)


def write_tiff(
    array: Any,
    path: str | Path,
    *,
    voxel_size_nm: tuple[float, float, float] | None,
    dtype: np.dtype[Any],
    info: str = "",
    client: Client | None = None,
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
            yield from checked_cast(np.asarray(slab), dtype, f"{path} z={z0}..{z1}")

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
