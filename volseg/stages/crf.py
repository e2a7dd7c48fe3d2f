"""Workflow stage ``crf``: blockwise dense CRF on the predicted class probabilities.

Example::

    crf:
      probabilities: prediction.ome.zarr   # default (c, z, y, x; uint8 or float)
      image: image.ome.zarr                # default (bilateral term)
      output: crf.ome.zarr                 # default; a label image
      gaussian_sigma_nm: 10
      gaussian_weight: 3
      bilateral_sigma_nm: 20
      bilateral_intensity: 10
      bilateral_weight: 2                  # 0 switches the bilateral term off
      compatibility: 1.0                   # Potts weight, or a C x C cost matrix:
      # compatibility: [[0, 1, 1], [1, 0, 4], [1, 4, 0]]
      iterations: 5
      block_size: null                     # default: from memory_budget_mib
      memory_budget_mib: 2048
      processes: null                      # without a cluster: worker processes (all cores)

Widths are in nanometres (per-axis widths in voxels follow from the voxel size);
the halo follows from the widths, weights and iterations
(:func:`volseg.crf.crf_halo`). A rerun resumes an interrupted CRF and skips a
finished one; with the workflow's ``--overwrite`` it is recomputed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from volseg.crf.blockwise import CRFConfig, check_compatibility
from volseg.crf.pipeline import crf_output_state, run_crf
from volseg.workflow.stage import RunContext, StageConfig

NAME = "crf"
ORDER = 50

_D = CRFConfig()


class Config(StageConfig):
    """Inputs, outputs and CRF parameters (widths in nm)."""

    probabilities: str = Field("prediction.ome.zarr",
                               description="class probabilities (c, z, y, x)")
    image: str = Field("image.ome.zarr", description="image for the bilateral term")
    output: str = Field("crf.ome.zarr", description="output label image")
    gaussian_sigma_nm: float = Field(_D.gaussian_sigma_nm, gt=0,
                                     description="smoothness kernel width (nm)")
    gaussian_weight: float = Field(_D.gaussian_weight, ge=0,
                                   description="smoothness kernel weight (0 = off)")
    bilateral_sigma_nm: float = Field(_D.bilateral_sigma_nm, gt=0,
                                      description="bilateral spatial width (nm)")
    bilateral_intensity: float = Field(_D.bilateral_intensity, gt=0,
                                       description="bilateral intensity width (image units)")
    bilateral_weight: float = Field(_D.bilateral_weight, ge=0,
                                    description="bilateral weight (0 = off)")
    compatibility: float | list[list[float]] = Field(
        1.0, description="Potts weight or C x C label cost matrix")
    iterations: int = Field(_D.iterations, ge=0, le=100, description="mean-field iterations")
    halo: tuple[int, int, int] | None = Field(
        None, description="halo in voxels z y x (default: derived)")
    block_size: tuple[int, int, int] | None = Field(
        None, description="block size z y x (default: from memory_budget_mib)")
    memory_budget_mib: int = Field(2048, ge=16, description="memory per block (MiB)")
    voxel_size: tuple[float, float, float] | None = Field(
        None, description="voxel size z y x in nm (default: the inputs')")
    processes: int | None = Field(
        None, ge=1, description="local worker processes when the workflow has no cluster "
                                "(default: the threads setting or all cores); pydensecrf2 "
                                "holds the GIL")

    @field_validator("compatibility")
    @classmethod
    def _square(cls, value: float | list[list[float]]) -> float | list[list[float]]:
        return check_compatibility(value)

    @field_validator("block_size")
    @classmethod
    def _positive(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("block_size must be positive")
        return value

    def crf_config(self) -> CRFConfig:
        """The CRF parameters as a :class:`~volseg.crf.CRFConfig`."""
        return CRFConfig(
            gaussian_sigma_nm=self.gaussian_sigma_nm, gaussian_weight=self.gaussian_weight,
            bilateral_sigma_nm=self.bilateral_sigma_nm,
            bilateral_intensity=self.bilateral_intensity,
            bilateral_weight=self.bilateral_weight, compatibility=self.compatibility,
            iterations=self.iterations, halo=self.halo,
        )


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Run the CRF (or skip a finished one); return a JSON-able summary."""
    output = ctx.path(config.output)
    if not ctx.overwrite and crf_output_state(output) == "complete":
        return {"output": str(output), "status": "complete (skipped)"}
    attrs = {"volseg": {**ctx.provenance, "stage": NAME, "config": config.to_dict()}}
    image = ctx.resolve(config.image) if config.bilateral_weight > 0 else None
    result = run_crf(
        ctx.resolve(config.probabilities), image, output, config=config.crf_config(),
        voxel_size=config.voxel_size, block_size=config.block_size,
        memory_budget=config.memory_budget_mib * 2**20, overwrite=ctx.overwrite,
        attrs=attrs, client=ctx.client, processes=config.processes,
        ngff=ctx.output.ngff, chunks=ctx.output.chunks,
    )
    return result.to_dict()
