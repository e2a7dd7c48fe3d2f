"""The options of connected components (:class:`InstanceOptions`), light to import: the
command line's ``--help`` reads them without importing dask.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from volseg.ngff import DEFAULT_NGFF
from volseg.options import BlockChunks, NgffWritten, Options, PositiveSize3, Pyramid, VoxelSize3

__all__ = ["DEFAULT_BLOCK", "InstanceOptions"]


#: Default block size (the shards in NGFF 0.5).
DEFAULT_BLOCK = (128, 128, 128)


class InstanceOptions(Options):
    """Which classes become objects, how they connect, and how the volume is cut.

    Attributes
    ----------
    classes
        Class ids whose connected components become objects.
    connectivity
        6 (faces), 18 (+ edges) or 26 (+ corners).
    min_size
        Objects with fewer voxels are dropped (0 keeps all).
    block_size
        Block size ``(z, y, x)`` (the shards in NGFF 0.5).
    voxel_size
        ``(z, y, x)`` nm for the centroids; default: the labels'.
    pyramid
        Also write the downsampled levels (mode).
    ngff
        OME-Zarr version written: ``"0.5"`` (zarr v3, one shard per block) or ``"0.4"``.
    chunks
        ``(z, y, x)`` zarr chunks (0.5: inner chunks), the divisors of the block nearest
        these (default 64³).
    """

    classes: list[int] = Field(min_length=1, description="class ids whose connected "
                                                         "components become objects")
    connectivity: Literal[6, 18, 26] = Field(26, description="6 (faces), 18 (+edges) or 26 "
                                                             "(+corners)")
    min_size: int = Field(0, ge=0, description="drop objects with fewer voxels (0: keep all)")
    block_size: PositiveSize3 = Field(DEFAULT_BLOCK, description="block size z y x in voxels")
    voxel_size: VoxelSize3 | None = Field(
        None, description="voxel size z y x in nm (default: the labels')")
    pyramid: Pyramid = True
    ngff: NgffWritten = DEFAULT_NGFF
    chunks: BlockChunks = None

    @field_validator("classes")
    @classmethod
    def _ids(cls, value: list[int]) -> list[int]:
        if any(not 0 <= c <= 65534 for c in value):
            raise ValueError("class ids must be in 0..65534")
        return value

