"""Workflow stage ``instances``: objects as connected components of chosen classes.

Example::

    instances:
      labels: crf.ome.zarr/labels/semantic   # default
      classes: [2, 5]                        # class ids that become objects
      connectivity: 26                       # 6, 18 or 26
      min_size: 100                          # voxels; smaller objects are dropped
      output: instances.ome.zarr             # default; writes labels/instances
      table: instances.csv                   # default; .parquet with pyarrow
      block_size: [128, 128, 128]            # default

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

    labels: str = Field("crf.ome.zarr/labels/semantic", description="semantic labels")
    output: str = Field("instances.ome.zarr", description="output group (labels/instances)")
    table: str | None = Field("instances.csv", description="per-object table (.csv/.parquet)")

    def reads(self) -> tuple[str, ...]:
        """The semantic labels."""
        return (self.labels,)

    def writes(self) -> tuple[str, ...]:
        """The instance group and the table."""
        return (self.output,) if self.table is None else (self.output, self.table)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Label the objects (or skip a finished run); return a JSON-able summary."""
    output = ctx.path(config.output)
    table = None if config.table is None else ctx.path(config.table)
    if (not ctx.overwrite and instances_output_state(output) == "complete"
            and (table is None or table.exists())):
        return {"output": str(output / "labels" / "instances"), "status": "complete (skipped)"}
    result = run_instances(ctx.resolve(config.labels), output,
                           options_of(InstanceOptions, config), table=table,
                           overwrite=ctx.overwrite, attrs=ctx.attrs(NAME, config),
                           client=ctx.client)
    return result.to_dict()
