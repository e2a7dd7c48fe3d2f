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

A rerun resumes an interrupted stage and skips a finished one; with the workflow's
``--overwrite`` it is recomputed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from volseg.instances.pipeline import DEFAULT_BLOCK, instances_output_state, run_instances
from volseg.workflow.stage import RunContext, StageConfig

NAME = "instances"
ORDER = 60


class Config(StageConfig):
    """Which classes, how connected, how small is too small, and where to write."""

    labels: str = Field("crf.ome.zarr", description="semantic labels")
    classes: list[int] = Field(min_length=1, description="class ids that become objects")
    connectivity: Literal[6, 18, 26] = Field(26, description="6, 18 or 26")
    min_size: int = Field(0, ge=0, description="drop objects with fewer voxels")
    output: str = Field("instances.ome.zarr", description="output label image of object ids")
    table: str | None = Field("instances.csv", description="per-object table (.csv/.parquet)")
    block_size: tuple[int, int, int] = Field(DEFAULT_BLOCK, description="block size z y x")
    voxel_size: tuple[float, float, float] | None = Field(
        None, description="voxel size z y x in nm (default: the labels')")

    @field_validator("classes")
    @classmethod
    def _ids(cls, value: list[int]) -> list[int]:
        if any(not 0 <= c <= 65534 for c in value):
            raise ValueError("class ids must be in 0..65534")
        return value

    @field_validator("block_size")
    @classmethod
    def _positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(value) < 1:
            raise ValueError("block_size must be positive")
        return value


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Label the objects (or skip a finished run); return a JSON-able summary."""
    output = ctx.path(config.output)
    table = None if config.table is None else ctx.path(config.table)
    if (not ctx.overwrite and instances_output_state(output) == "complete"
            and (table is None or table.exists())):
        return {"output": str(output), "status": "complete (skipped)"}
    attrs = {"volseg": {**ctx.provenance, "stage": NAME, "config": config.to_dict()}}
    result = run_instances(
        ctx.resolve(config.labels), output, classes=config.classes,
        connectivity=config.connectivity, min_size=config.min_size, table=table,
        block_size=config.block_size, voxel_size=config.voxel_size,
        overwrite=ctx.overwrite, attrs=attrs, client=ctx.client, ngff=ctx.output.ngff,
        chunks=ctx.output.chunks,
    )
    return result.to_dict()
