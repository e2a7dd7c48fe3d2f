"""Workflow stage ``instances``: objects as connected components of chosen classes.

Example::

    instances:
      labels: crf.ome.zarr                   # default
      classes: [2, 5]                        # class ids that become objects
      connectivity: 26                       # 6, 18 or 26
      min_size: 100                          # voxels; smaller objects are dropped
      output: instances.ome.zarr             # default; a label image of object ids
      table: instances.csv                   # default; .parquet with pyarrow
      block_size: [128, 128, 128]            # default
      truth: image.ome.zarr/labels/truth     # optional: the same objects of the truth,
      truth_output: instances_truth.ome.zarr #   the reference of evaluate.instances

Every key but the paths is a field of :class:`volseg.instances.pipeline.InstanceOptions`
(the options of ``volseg instances`` too).  A rerun resumes an interrupted stage and
skips a finished one; with the workflow's ``--overwrite`` it is recomputed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from volseg.instances.pipeline import InstanceOptions, instances_output_state, run_instances
from volseg.options import options_of
from volseg.workflow.stage import RunContext, StageConfig

NAME = "instances"
ORDER = 60


class Config(InstanceOptions, StageConfig):
    """The instances' options plus the labels, the output group and the table."""

    labels: str = Field("crf.ome.zarr", description="semantic labels")
    output: str = Field("instances.ome.zarr", description="output label image of object ids")
    table: str | None = Field("instances.csv", description="per-object table (.csv/.parquet)")
    truth: str | None = Field(
        None, description="semantic ground truth whose objects (the same classes, "
                          "connectivity and minimum size) become the reference instances")
    truth_output: str = Field("instances_truth.ome.zarr",
                              description="output label image of the truth's object ids")

    def reads(self) -> tuple[str, ...]:
        """The semantic labels (and the truth)."""
        return (self.labels,) if self.truth is None else (self.labels, self.truth)

    def writes(self) -> tuple[str, ...]:
        """The instance label image(s) and the table."""
        out = (self.output,) if self.table is None else (self.output, self.table)
        return out if self.truth is None else (*out, self.truth_output)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Label the objects (or skip a finished run); return a JSON-able summary."""
    output = ctx.path(config.output)
    table = None if config.table is None else ctx.path(config.table)
    options = options_of(InstanceOptions, config)
    summary: dict[str, Any]
    if (not ctx.overwrite and instances_output_state(output) == "complete"
            and (table is None or table.exists())):
        summary = {"output": str(output), "status": "complete (skipped)"}
    else:
        summary = run_instances(ctx.resolve(config.labels), output, options, table=table,
                                overwrite=ctx.overwrite, attrs=ctx.attrs(NAME, config),
                                client=ctx.client).to_dict()
    if config.truth is not None:
        truth_output = ctx.path(config.truth_output)
        if not ctx.overwrite and instances_output_state(truth_output) == "complete":
            summary["truth"] = {"output": str(truth_output), "status": "complete (skipped)"}
        else:
            summary["truth"] = run_instances(
                ctx.resolve(config.truth), truth_output, options, table=None,
                overwrite=ctx.overwrite, attrs=ctx.attrs(NAME, config),
                client=ctx.client).to_dict()
    return summary
