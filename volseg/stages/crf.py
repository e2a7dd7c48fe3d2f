"""Workflow stage ``crf``: blockwise dense CRF on the predicted class probabilities.

Example::

    crf:
      probabilities: prediction.ome.zarr   # default (c, z, y, x; uint8 or float)
      image: image.ome.zarr                # default (bilateral term)
      output: crf.ome.zarr                 # default; writes labels/semantic
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

Every key but the three paths is a field of :class:`volseg.crf.pipeline.CRFOptions`
(the options of ``volseg crf`` too).  Widths are in nanometres (per-axis widths in
voxels follow from the voxel size); the halo follows from the widths, weights and
iterations (:func:`volseg.crf.crf_halo`).  A rerun resumes an interrupted CRF and skips
a finished one; with the workflow's ``--overwrite`` it is recomputed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from volseg.crf.pipeline import CRFOptions, crf_output_state, run_crf
from volseg.options import options_of
from volseg.workflow.stage import RunContext, StageConfig

NAME = "crf"
ORDER = 50


class Config(CRFOptions, StageConfig):
    """The CRF's options plus the probabilities, the image and the output."""

    probabilities: str = Field("prediction.ome.zarr",
                               description="class probabilities (c, z, y, x)")
    image: str = Field("image.ome.zarr", description="image for the bilateral term")
    output: str = Field("crf.ome.zarr", description="output group (labels/semantic)")

    def reads(self) -> tuple[str, ...]:
        """The probabilities (and the image when the bilateral term is on)."""
        return (self.probabilities, self.image) if self.bilateral_weight > 0 \
            else (self.probabilities,)

    def writes(self) -> tuple[str, ...]:
        """The CRF group."""
        return (self.output,)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Run the CRF (or skip a finished one); return a JSON-able summary."""
    output = ctx.path(config.output)
    if not ctx.overwrite and crf_output_state(output) == "complete":
        return {"output": str(output / "labels" / "semantic"), "status": "complete (skipped)"}
    image = ctx.resolve(config.image) if config.bilateral_weight > 0 else None
    result = run_crf(ctx.resolve(config.probabilities), image, output,
                     options_of(CRFOptions, config), overwrite=ctx.overwrite,
                     attrs=ctx.attrs(NAME, config), client=ctx.client)
    return result.to_dict()
