"""The options of the dense CRF (:class:`CRFConfig`, the kernel; :class:`CRFOptions`, a
run), light to import: the command line's ``--help`` reads them without importing dask.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from volseg.ngff import DEFAULT_NGFF
from volseg.options import BlockChunks, NgffWritten, Options, PositiveSize3, Pyramid, VoxelSize3

__all__ = ["CRFConfig", "CRFOptions", "check_compatibility"]


def check_compatibility(value: float | list[list[float]]) -> float | list[list[float]]:
    """Accept a Potts weight or a square C x C cost matrix (one row per class)."""
    if isinstance(value, list):
        n = len(value)
        if n == 0 or any(len(row) != n for row in value):
            raise ValueError("compatibility matrix must be square (one row per class)")
    return value


class CRFConfig(Options):
    """Parameters of the dense CRF (widths in nanometres), frozen and validated.

    Attributes
    ----------
    gaussian_sigma_nm, gaussian_weight
        Smoothness kernel width θγ (nm) and weight w⁽²⁾ (0 disables it).
    bilateral_sigma_nm, bilateral_intensity, bilateral_weight
        Appearance kernel: spatial width θα (nm), intensity width θβ (image units)
        and weight w⁽¹⁾ (0 disables it).
    compatibility
        Potts weight (cost of two different labels) or a full ``C × C`` cost matrix.
    iterations
        Mean-field iterations.
    halo
        Halo in voxels ``(z, y, x)``; ``None`` derives it with :func:`crf_halo`.
    """

    gaussian_sigma_nm: float = Field(10.0, gt=0, description="smoothness kernel width in nm")
    gaussian_weight: float = Field(3.0, ge=0, description="smoothness kernel weight, 0 = off")
    bilateral_sigma_nm: float = Field(20.0, gt=0, description="bilateral spatial width in nm")
    bilateral_intensity: float = Field(
        10.0, gt=0, description="bilateral intensity width in image units")
    bilateral_weight: float = Field(2.0, ge=0, description="bilateral weight, 0 = off")
    compatibility: float | list[list[float]] = Field(
        1.0, description="Potts weight (cost of two different labels) or a C x C cost matrix")
    iterations: int = Field(5, ge=0, le=100, description="mean-field iterations")
    halo: tuple[int, int, int] | None = Field(
        None, description="halo in voxels z y x (default: derived from the kernel widths, "
                          "weights and iterations)")

    @field_validator("compatibility")
    @classmethod
    def _square(cls, value: float | list[list[float]]) -> float | list[list[float]]:
        return check_compatibility(value)



class CRFOptions(CRFConfig):
    """The options of a CRF run: kernel parameters, blocks, voxel size, processes, pyramid.

    Attributes
    ----------
    block_size
        Core block size ``(z, y, x)`` (the shards in NGFF 0.5); ``None`` chooses it from
        ``memory_budget_mib``.
    memory_budget_mib
        Memory per block (per worker) when ``block_size`` is ``None``.
    voxel_size
        ``(z, y, x)`` nm; default: the probabilities', else the image's.
    processes
        Without a cluster: compute the blocks on this many local worker processes
        (``None``: dask's ``num_workers`` setting, else all cores; 1: the threaded
        scheduler).  pydensecrf2 holds the GIL during inference, so threads would run
        the CRF of one block at a time; each process holds one block at a time, so
        peak memory is about ``processes ×`` the per-block estimate.
    pyramid
        Also write the downsampled levels.
    ngff
        OME-Zarr version written: ``"0.5"`` (zarr v3, one shard per block) or ``"0.4"``.
    chunks
        ``(z, y, x)`` zarr chunks (0.5: inner chunks), the divisors of the block nearest
        these (default 64³).

    See :class:`volseg.crf.CRFConfig` for the kernel parameters (widths in nm).
    """

    block_size: PositiveSize3 | None = Field(
        None, description="block size z y x in voxels (default: from the memory budget)")
    memory_budget_mib: int = Field(2048, ge=16, description="memory per block in MiB when "
                                                            "no block size is given")
    voxel_size: VoxelSize3 | None = Field(
        None, description="voxel size z y x in nm (default: the inputs')")
    processes: int | None = Field(
        None, ge=1, description="local worker processes without a cluster (default: all "
                                "cores; pydensecrf2 holds the GIL)")
    pyramid: Pyramid = True
    ngff: NgffWritten = DEFAULT_NGFF
    chunks: BlockChunks = None

