"""The options of a conversion (:class:`ConvertOptions`), light to import: the command
line's ``--help`` reads them without importing dask or zarr.
"""

from __future__ import annotations

from pydantic import Field

from volseg.ngff import DEFAULT_NGFF, Ngff
from volseg.options import Options, PositiveSize3, VoxelSize3

__all__ = ["ConvertOptions"]


class ConvertOptions(Options):
    """How a volume is read and written as OME-Zarr.

    Attributes
    ----------
    dataset
        Dataset inside an HDF5 file / Zarr group / N5 container.
    chunks
        ``(z, y, x)`` zarr chunks, the inner chunks of the shards in NGFF 0.5 (default
        :func:`volseg.io.omezarr.default_chunks`).
    voxel_size
        ``(z, y, x)`` nm; overrides what the file says (labels: the image's).
    pyramid
        Build the downsampled levels.
    ngff
        ``"0.5"`` (zarr v3, sharded) or ``"0.4"`` (zarr v2).  Labels added to an
        existing image take the image's version.
    """

    dataset: str | None = Field(None, description="dataset inside an HDF5 file, Zarr group "
                                                  "or N5 container")
    chunks: PositiveSize3 | None = Field(
        None, description="output chunk shape z y x in voxels (default 64 64 64; 1 256 256 "
                          "for a single section; in NGFF 0.5 the inner chunks of the shards)")
    voxel_size: VoxelSize3 | None = Field(
        None, description="voxel size z y x in nm (overrides what the input file says)")
    pyramid: bool = Field(True, description="write the downsampled levels")
    ngff: Ngff = Field(DEFAULT_NGFF, description="OME-NGFF version written: 0.5 = zarr v3 "
                                                 "with shards, 0.4 = zarr v2")

