"""Workflow stage ``synth``: write a synthetic phantom with its ground truth.

Example::

    synth:
      kind: fibsem                 # fibsem | cryoet | em2d
      shape: [128, 256, 256]       # z y x voxels
      seed: 0
      annotated_slices: 3          # sparse training labels on K evenly spaced z-slices
      noise: 0.08                  # optional difficulty knobs (kind defaults otherwise)
      blur: 1.0
      output: image.ome.zarr       # default; labels/truth and labels/annotation beside it

Every key but ``output`` is a field of :class:`volseg.synth.pipeline.SynthOptions` (the
options of ``volseg synth`` too); :func:`volseg.synth.pipeline.write_phantom` writes it
(OME-Zarr, or MRC for a cryo-ET ``output`` ending ``.mrc``).  A rerun resumes a
partially written OME-Zarr output and skips a finished one; the workflow's
``--overwrite`` rewrites it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from volseg.options import options_of
from volseg.synth.pipeline import (
    SynthOptions,
    check_space,
    make_phantom,
    summary,
    write_phantom,
)
from volseg.workflow.stage import RunContext, StageConfig

NAME = "synth"
ORDER = 10


class Config(SynthOptions, StageConfig):
    """The phantom's options plus where to write it."""

    output: str = Field("image.ome.zarr",
                        description="OME-Zarr group (or .mrc for cryoet) in the workflow dir")

    def reads(self) -> tuple[str, ...]:
        """Nothing: the phantom is made from its options."""
        return ()

    def writes(self) -> tuple[str, ...]:
        """The image group (with its label images), or the MRC files."""
        return (self.output,)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Make the phantom and write it; return a JSON-able summary."""
    options = options_of(SynthOptions, config)
    check_space(options, ctx.path(config.output))
    phantom = make_phantom(options)
    provenance = {**ctx.provenance, "stage": NAME, "config": config.to_dict()}
    result = write_phantom(phantom, ctx.path(config.output), provenance=provenance,
                           overwrite=ctx.overwrite, if_complete="skip", client=ctx.client,
                           ngff=config.ngff)
    return summary(phantom, result)
