"""The options of post-processing (:class:`PostprocessOptions`), light to import: the
command line's ``--help`` reads them without importing dask or scipy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from volseg.ngff import DEFAULT_NGFF
from volseg.options import (
    BlockChunks,
    NgffWritten,
    Options,
    PositiveSize3,
    Pyramid,
    VoxelSize3,
)

__all__ = ["DEFAULT_BLOCK", "PostprocessOptions", "median_shape"]

#: Default block size (the shards in NGFF 0.5).
DEFAULT_BLOCK = (128, 128, 128)


def median_shape(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    """Return the ``(z, y, x)`` footprint of a median size (0 and 1 mean "off" per axis).

    >>> median_shape(5), median_shape(0), median_shape((1, 5, 5))
    ((5, 5, 5), (1, 1, 1), (1, 5, 5))
    """
    edges = (size, size, size) if isinstance(size, int) else size
    return (max(1, int(edges[0])), max(1, int(edges[1])), max(1, int(edges[2])))


class PostprocessOptions(Options):
    """From class probabilities to labels: median filter, decision, objects, holes.

    The steps run in this order; with the defaults the result is the plain argmax
    (ties: the lowest class id; one channel: foreground where ``p >= 0.5``).

    Attributes
    ----------
    median_size
        Odd edge of a cubic 3-D median filter applied to each class probability before
        the decision, or an odd ``(z, y, x)`` footprint for anisotropic stacks (e.g.
        ``(1, 5, 5)``); 0 or 1: off (per axis in a tuple).  Borders are reflected
        (``scipy.ndimage.median_filter``'s ``mode="reflect"``).  On one channel, with a
        ``threshold``, or on two complementary channels (``p0 = 1 - p1``) the filter
        and the decision are one exact majority vote, a box count (a 7³ footprint at
        millions of voxels per second); two channels complementary up to rounding (a
        float softmax) take the same votes and exact medians where they cannot decide;
        more classes: each channel is median filtered (scipy: some 0.1 M voxels per
        second for 7³).
    threshold
        Two-class maps (background, foreground; or one foreground channel): foreground
        where ``p(foreground) >= threshold``.  ``None``: the argmax.
    min_size
        Connected components (``connectivity``) of each non-background class with
        fewer voxels become background (0), counted over the whole volume, across
        blocks.  0 keeps all.
    connectivity
        Connectivity of the objects of ``min_size``: 6 (faces), 18 (+ edges) or 26
        (+ corners).
    fill_holes
        Fill background components (face connectivity) that do not touch the volume's
        border with the foreground class.  Two-class maps only (refused with more
        classes: a hole between several classes has no one class to take).
    block_size
        Block size ``(z, y, x)`` (the shards in NGFF 0.5).
    pyramid
        Also write the downsampled levels (mode).
    ngff
        OME-Zarr version written: ``"0.5"`` (zarr v3, one shard per block) or ``"0.4"``.
    chunks
        ``(z, y, x)`` zarr chunks (0.5: inner chunks), the divisors of the block nearest
        these (default 64³).
    voxel_size
        ``(z, y, x)`` nm of the output; default: the probabilities'.
    """

    median_size: int | tuple[int, int, int] = Field(
        0, description="odd edge of a 3-D median filter on each class probability, or "
                       "an odd Z Y X footprint such as 1 5 5 (0 or 1: off)")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="two-class maps: foreground where p(foreground) "
                                          ">= this (default: the argmax)")
    min_size: int = Field(0, ge=0, description="objects of a non-background class with "
                                               "fewer voxels become background (0: keep all)")
    connectivity: Literal[6, 18, 26] = Field(
        26, description="connectivity of the objects of --min-size: 6 (faces), 18 "
                        "(+edges) or 26 (+corners)")
    fill_holes: bool = Field(False, description="fill background components that do not "
                                                "touch the border (two-class maps)")
    block_size: PositiveSize3 = Field(DEFAULT_BLOCK, description="block size z y x in voxels")
    voxel_size: VoxelSize3 | None = Field(
        None, description="voxel size z y x in nm (default: the probabilities')")
    pyramid: Pyramid = True
    ngff: NgffWritten = DEFAULT_NGFF
    chunks: BlockChunks = None

    @field_validator("median_size")
    @classmethod
    def _odd(cls, value: int | tuple[int, int, int]) -> int | tuple[int, int, int]:
        edges = (value,) if isinstance(value, int) else value
        if any(e < 0 for e in edges):
            raise ValueError("the median size must be 0 (off) or a positive odd number")
        if any(e > 1 and e % 2 == 0 for e in edges):
            raise ValueError(f"the median size must be odd (a centred footprint), got {value}")
        return value

    @property
    def median(self) -> tuple[int, int, int]:
        """The median footprint ``(z, y, x)`` (``(1, 1, 1)``: off)."""
        return median_shape(self.median_size)

    @property
    def halo(self) -> tuple[int, int, int]:
        """The halo of the median filter per axis: ``size // 2``."""
        z, y, x = self.median
        return (z // 2, y // 2, x // 2)
