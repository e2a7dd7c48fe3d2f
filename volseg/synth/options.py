"""Which phantom to make (:class:`SynthOptions`), light to import: the command line's
``--help`` reads them without importing dask.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from volseg.ngff import DEFAULT_NGFF, Ngff
from volseg.options import Options, PositiveSize3

__all__ = ["DEFAULT_CHUNKS", "Kind", "SynthOptions"]


Kind = Literal["fibsem", "cryoet", "em2d"]


DEFAULT_CHUNKS: dict[str, tuple[int, int, int]] = {
    "fibsem": (64, 128, 128),
    "cryoet": (64, 128, 128),
    "em2d": (1, 512, 512),
}


class SynthOptions(Options):
    """Which phantom to make: kind, size, seed, chunks and difficulty.

    Attributes
    ----------
    kind
        ``fibsem`` (FIB-SEM neuropil, seven classes), ``cryoet`` (low-SNR tomogram with
        a membrane mask) or ``em2d`` (a stack of independent micrographs).
    shape
        Size ``(z, y, x)`` in voxels.
    seed
        Random seed: the same seed gives the same bytes whatever the chunks.
    chunks
        ``(z, y, x)`` chunks (default 64 128 128; em2d 1 512 512).
    annotated_slices
        z-slices labelled in ``labels/annotation`` (default: fibsem 3, others 0).
    noise, blur
        Noise level and blur sigma in voxels (cryoet: one or z y x); the kind's
        defaults when unset.
    params
        Further generator parameters (see :mod:`volseg.synth`).
    ngff
        OME-Zarr version written (:func:`write_phantom`): ``"0.5"`` or ``"0.4"``.
    """

    kind: Kind = Field(description="phantom kind: fibsem, cryoet or em2d")
    shape: PositiveSize3 = Field(description="size z y x in voxels")
    seed: int = Field(0, ge=0, description="random seed (same seed, same bytes)")
    chunks: PositiveSize3 | None = Field(
        None, description="chunks z y x (default 64 128 128; em2d 1 512 512)")
    annotated_slices: int | None = Field(
        None, ge=0, description="label K evenly spaced z-slices in labels/annotation "
                                "(default: fibsem 3, others 0)")
    noise: float | None = Field(None, ge=0, description="noise level (default: the kind's)")
    blur: float | tuple[float, float, float] | None = Field(
        None, description="blur sigma in voxels (cryoet: z y x; default: the kind's)")
    params: dict[str, Any] = Field(
        default_factory=dict, description="further generator parameters (see volseg.synth)")
    ngff: Ngff = Field(DEFAULT_NGFF, description="OME-NGFF version written: 0.5 = zarr v3 "
                                                 "with shards, 0.4 = zarr v2")

    @field_validator("blur")
    @classmethod
    def _non_negative(cls, value: float | tuple[float, float, float] | None
                      ) -> float | tuple[float, float, float] | None:
        values = (value,) if isinstance(value, (int, float)) else (value or ())
        if any(v < 0 for v in values):
            raise ValueError("blur sigmas must be non-negative")
        return value

