"""Test helpers: write a small array in every input format volseg reads.

Used by the test suite (and handy for trying readers by hand).  Each writer takes a
``(z, y, x)`` array and a directory and returns ``(path, dataset)`` to pass to
:func:`volseg.io.open_volume`.  Files are written with the formats' own libraries,
except N5, which is written by hand to the N5 specification (big-endian block
headers, reversed axis order), as zarr-python 3 has no N5 support.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Written = tuple[Path, str | None]

VOXEL_SIZE_ANGSTROM = (80.0, 60.0, 40.0)
"""``(z, y, x)`` voxel size written into MRC test files (Å)."""


def write_mrc(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as ``volume.mrc`` with voxel size :data:`VOXEL_SIZE_ANGSTROM`.

    MRC has no unsigned 8-bit mode, so mrcfile stores ``uint8`` data as ``uint16``.
    """
    import mrcfile

    path = directory / "volume.mrc"
    data = array.astype(np.int16) if array.dtype == np.int64 else array
    with mrcfile.new(str(path), overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        z, y, x = VOXEL_SIZE_ANGSTROM
        mrc.voxel_size = (x, y, z)
    return path, None


def write_tiff(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as a zlib-compressed multi-page ``volume.tif`` (one page per z)."""
    import tifffile

    path = directory / "volume.tif"
    with tifffile.TiffWriter(str(path)) as tif:
        for section in array:
            tif.write(section, compression="zlib", contiguous=False)
    return path, None


def write_tif_slices(array: np.ndarray, directory: Path) -> Written:
    """Write one TIFF per section into ``slices/`` named so natural sort matters."""
    import tifffile

    folder = directory / "slices"
    folder.mkdir()
    for i, section in enumerate(array):
        tifffile.imwrite(str(folder / f"s{i}.tif"), section)
    return folder, None


def write_png_slices(array: np.ndarray, directory: Path) -> Written:
    """Write one PNG per section into ``png/`` (``img_1.png``, ..., ``img_10.png``)."""
    from PIL import Image

    folder = directory / "png"
    folder.mkdir()
    for i, section in enumerate(array):
        Image.fromarray(section).save(folder / f"img_{i + 1}.png")
    return folder, None


def write_hdf5(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as dataset ``volumes/raw`` (chunked, gzip) plus a decoy dataset."""
    import h5py

    path = directory / "volume.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=array, chunks=(8, 16, 16), compression="gzip")
        f.create_dataset("volumes/other", data=np.zeros((2, 2), dtype=np.uint8))
    return path, "volumes/raw"


def write_npy(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as ``volume.npy``."""
    path = directory / "volume.npy"
    np.save(path, array)
    return path, None


COMPLETE: Any = {"write_empty_chunks": True}
"""zarr array config that stores every chunk (zarr leaves out chunks equal to the fill
value by default, which volseg's readers refuse as missing: :mod:`volseg.io.chunks`)."""


def write_zarr2(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as a Zarr format 2 array ``volume.zarr``."""
    import zarr

    path = directory / "volume.zarr"
    z = zarr.create_array(str(path), shape=array.shape, chunks=(10, 20, 30), dtype=array.dtype,
                          zarr_format=2, config=COMPLETE)
    z[:] = array
    return path, None


def write_zarr3_group(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as array ``raw`` in a Zarr format 3 group ``container.zarr``."""
    import zarr

    path = directory / "container.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    z = group.create_array("raw", shape=array.shape, chunks=(7, 13, 17), dtype=array.dtype,
                           config=COMPLETE)
    z[:] = array
    return path, "raw"


def write_n5(array: np.ndarray, directory: Path, *, compression: str = "gzip",
             block: tuple[int, int, int] = (10, 20, 30), skip_zero_blocks: bool = True
             ) -> Written:
    """Write ``array`` as N5 dataset ``raw`` in ``volume.n5``, by hand from the spec.

    Blocks that are all zero are not written (readers must return zeros for them).
    """
    root = directory / "volume.n5"
    dataset = root / "raw"
    dataset.mkdir(parents=True)
    (root / "attributes.json").write_text(json.dumps({"n5": "4.0.0"}))
    (dataset / "attributes.json").write_text(json.dumps({
        "dimensions": list(array.shape[::-1]), "blockSize": list(block[::-1]),
        "dataType": array.dtype.name, "compression": {"type": compression},
    }))
    grid = [range(-(-n // b)) for n, b in zip(array.shape, block, strict=True)]
    for index in np.ndindex(*(len(g) for g in grid)):
        region = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block, strict=True))
        data = array[region]
        if skip_zero_blocks and not data.any():
            continue
        header = (np.array([0, data.ndim], dtype=">u2").tobytes()
                  + np.array(data.shape[::-1], dtype=">u4").tobytes())
        payload = np.ascontiguousarray(data).astype(data.dtype.newbyteorder(">")).tobytes()
        if compression == "gzip":
            payload = gzip.compress(payload)
        target = dataset.joinpath(*(str(i) for i in index[::-1]))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(header + payload)
    return root, "raw"


def write_zarr3_sharded(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as a sharded Zarr format 3 array ``sharded.zarr`` (odd shards)."""
    import zarr

    path = directory / "sharded.zarr"
    z = zarr.create_array(str(path), shape=array.shape, chunks=(5, 7, 9), shards=(10, 21, 27),
                          dtype=array.dtype, zarr_format=3, config=COMPLETE)
    z[:] = array
    return path, None


def write_ome_zarr(array: np.ndarray, directory: Path, ngff: str = "0.5") -> Written:
    """Write ``array`` with volseg's own OME-Zarr writer (voxel size 5 × 4 × 4 nm)."""
    from volseg.io.omezarr import check_ngff, write_image

    path = directory / f"volume-{ngff}.ome.zarr"
    write_image(array, path, voxel_size=(5.0, 4.0, 4.0), chunks=(16, 16, 16),
                ngff=check_ngff(ngff))
    return path, None


def write_ome_zarr_04(array: np.ndarray, directory: Path) -> Written:
    """Write ``array`` as NGFF 0.4 (zarr v2) with volseg's writer."""
    return write_ome_zarr(array, directory, ngff="0.4")


WRITERS: dict[str, Callable[[np.ndarray, Path], Written]] = {
    "mrc": write_mrc,
    "tiff": write_tiff,
    "tif-slices": write_tif_slices,
    "png-slices": write_png_slices,
    "hdf5": write_hdf5,
    "npy": write_npy,
    "zarr2": write_zarr2,
    "zarr3": write_zarr3_group,
    "zarr3-sharded": write_zarr3_sharded,
    "n5": write_n5,
    "ome-zarr": write_ome_zarr,
    "ome-zarr-0.4": write_ome_zarr_04,
}
"""Every format, by name; all take a ``uint8`` or ``uint16`` ``(z, y, x)`` array."""


def sample_volume(shape: tuple[int, int, int] = (37, 61, 83), dtype: str = "uint8",
                  seed: int = 0) -> np.ndarray:
    """Return a reproducible random volume with a few all-zero blocks at one corner."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(np.dtype(dtype))
    array = rng.integers(0, int(info.max) + 1, size=shape, dtype=np.dtype(dtype))
    array[:10, :20, :30] = 0
    return array


PORTAL_SPACING = 13.48
"""Voxel spacing (Å) of the CryoET Data Portal-style test tomogram."""


def write_cryoet_portal(array: np.ndarray, root: Path, run: str = "TS_026",
                        spacing: float = PORTAL_SPACING) -> Path:
    """Write ``array`` laid out like a CryoET Data Portal tomogram; return the ``.zarr`` path.

    ``<root>/<run>/Tomograms/VoxelSpacing13.480/CanonicalTomogram/<run>.zarr``: OME-NGFF
    0.4 on Zarr v2 (``/`` chunk keys, Blosc), three scales (2× means), axes in
    ångström, float32 — as the portal serves its tomograms over S3 and HTTPS.
    """
    import numcodecs
    import zarr

    path = (root / run / "Tomograms" / f"VoxelSpacing{spacing:.3f}" / "CanonicalTomogram"
            / f"{run}.zarr")
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    level = np.asarray(array, dtype=np.float32)
    datasets: list[Any] = []
    for index in range(3):
        stored = group.create_array(
            str(index), shape=level.shape, chunks=tuple(min(32, n) for n in level.shape),
            dtype="float32", compressors=numcodecs.Blosc(cname="zstd", clevel=5),
            chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0)
        stored[...] = level
        scale = spacing * 2**index
        datasets.append({"path": str(index), "coordinateTransformations": [
            {"type": "scale", "scale": [scale, scale, scale]}]})
        even = tuple(slice(0, n - n % 2) for n in level.shape)
        z, y, x = (n // 2 for n in level[even].shape)
        level = level[even].reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5), dtype=np.float32)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "/", "datasets": datasets,
        "axes": [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]}]
    return path
