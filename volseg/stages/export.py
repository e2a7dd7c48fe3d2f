"""Workflow stage ``export``: a product written back to MRC or multi-page TIFF.

Example (cryo-ET: the membrane class as a binary mask for downstream tools)::

    export:
      input: prediction.ome.zarr/labels/semantic   # a product (or an external volume)
      output: membranes.mrc                        # .mrc / .rec / .map / .tif / .tiff
      classes: [1]                                 # these class ids -> 1, the rest -> 0
      dtype: null                                  # default: int8 (MRC) / uint8 (TIFF) for
                                                   # masks, else as stored (MRC: uint8 -> uint16)
      channel: null                                # one channel of a (c, z, y, x) input,
                                                   # e.g. a class probability map
      voxel_size: null                             # nm z y x (default: the input's)

Every key but the paths is a field of :class:`volseg.io.export.ExportOptions`.  Without
``classes`` the labels (or the chosen channel) are written as they are.  The file lands
in the workflow directory (an absolute ``output`` anywhere else), complete or absent,
with a stamp of the settings (:mod:`volseg.io.export`): a rerun skips an output with
the same stamp, refuses one written with other settings or by something else, and
``--overwrite`` replaces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from volseg.errors import InputError
from volseg.io.export import (
    EXPORT_SUFFIXES,
    ExportOptions,
    export_volume,
    read_stamp,
    settings_stamp,
)
from volseg.options import options_of
from volseg.workflow.stage import RunContext, StageConfig

__all__ = ["NAME", "ORDER", "Config", "read_stamp", "run"]

NAME = "export"
ORDER = 75


class Config(ExportOptions, StageConfig):
    """The export's options plus what to export and where."""

    input: str = Field("prediction.ome.zarr/labels/semantic",
                       description="volume to export: a product or an external path")
    output: str = Field(description="file to write: .mrc/.rec/.map or .tif/.tiff (workflow dir)")

    @field_validator("output")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if Path(value).suffix.lower() not in EXPORT_SUFFIXES:
            raise ValueError(f"output must end in one of {', '.join(EXPORT_SUFFIXES)}")
        return value

    def stamp(self) -> str:
        """Return the text stamped into the file: a digest of the settings but the output."""
        data = self.to_dict()
        data.pop("output")
        return settings_stamp(data)

    def reads(self) -> tuple[str, ...]:
        """The exported volume."""
        return (self.input,)

    def writes(self) -> tuple[str, ...]:
        """The exported file."""
        return (self.output,)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Export the volume (or skip a finished export); return a JSON-able summary."""
    output = ctx.path(config.output)
    source = ctx.resolve(config.input)
    if not source.exists() and not (output.exists() and not ctx.overwrite):
        raise InputError(f"export.input: {config.input} not found in {ctx.workdir} or "
                         f"{ctx.base_dir}; run the stage that makes it first")
    return export_volume(source, output, options_of(ExportOptions, config),
                         stamp=config.stamp(), overwrite=ctx.overwrite, client=ctx.client)
