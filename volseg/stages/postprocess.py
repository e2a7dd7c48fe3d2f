"""Workflow stage ``postprocess``: median filter, threshold, small objects and holes.

Example::

    postprocess:
      probabilities: prediction.ome.zarr   # default (c, z, y, x; uint8 or float)
      image: image.ome.zarr                # default; only for the output's image link
      output: postprocess.ome.zarr         # default; a label image
      median_size: 7                       # or [1, 5, 5] for an anisotropic stack
      threshold: 0.45                      # two-class maps (default: the argmax)
      min_size: 500                        # voxels; smaller objects become background
      connectivity: 26
      fill_holes: true                     # two-class maps
      block_size: [128, 128, 128]

Every key but the three paths is a field of
:class:`volseg.postprocess.PostprocessOptions` (the options of ``volseg postprocess``
too); with none of them the output is the plain argmax.  A rerun resumes an
interrupted run and skips a finished one; with the workflow's ``--overwrite`` it is
recomputed.  ``evaluate`` scores it with ``prediction: postprocess.ome.zarr``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from volseg.options import options_of
from volseg.postprocess.options import PostprocessOptions
from volseg.workflow.stage import RunContext, StageConfig

NAME = "postprocess"
ORDER = 55


class Config(PostprocessOptions, StageConfig):
    """The post-processing options plus the probabilities, the image and the output."""

    probabilities: str = Field("prediction.ome.zarr",
                               description="class probabilities (c, z, y, x)")
    image: str = Field("image.ome.zarr",
                       description="the image the labels belong to (the output's image link)")
    output: str = Field("postprocess.ome.zarr", description="output label image")

    def reads(self) -> tuple[str, ...]:
        """The probabilities."""
        return (self.probabilities,)

    def writes(self) -> tuple[str, ...]:
        """The post-processed label image."""
        return (self.output,)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Post-process (or skip a finished output); return a JSON-able summary."""
    from volseg.postprocess.pipeline import postprocess_output_state, run_postprocess

    output = ctx.path(config.output)
    if not ctx.overwrite and postprocess_output_state(output) == "complete":
        return {"output": str(output), "status": "complete (skipped)"}
    result = run_postprocess(ctx.resolve(config.probabilities), output,
                             options_of(PostprocessOptions, config),
                             image=ctx.resolve(config.image), overwrite=ctx.overwrite,
                             attrs=ctx.attrs(NAME, config), client=ctx.client)
    return result.to_dict()
