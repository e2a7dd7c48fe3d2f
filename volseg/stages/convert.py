"""Workflow stage ``convert``: bring the input volume (and label volumes) into OME-Zarr.

Example::

    convert:
      input: data/training.tif          # external path (relative to where you run)
      output: image.ome.zarr            # product in the workflow directory
      voxel_size: [5, 5, 5]             # nm, z y x (overrides the file)
      labels:
        truth: data/training_groundtruth.tif
        annotation: {path: data/cremi.h5, dataset: volumes/labels/clefts}

``dataset``, ``chunks``, ``voxel_size`` and ``pyramid`` are the fields of
:class:`volseg.io.convert.ConvertOptions` (the options of ``volseg convert`` too).  A
rerun resumes an interrupted conversion and skips a finished one; with the workflow's
``--overwrite`` everything is rewritten.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import Field

from volseg.checks import ignore_id_foreground
from volseg.io import omezarr
from volseg.io.convert import ConvertResult, convert_image, convert_labels
from volseg.io.options import ConvertOptions
from volseg.options import options_of
from volseg.workflow.stage import RunContext, StageConfig

NAME = "convert"
ORDER = 20


class LabelSource(StageConfig):
    """A label volume given with the dataset inside its container."""

    path: str = Field(description="external label volume (file or folder)")
    dataset: str | None = Field(None, description="dataset inside HDF5 / Zarr / N5")
    values: dict[int, int] | None = Field(
        None, description="raw value -> class id, e.g. {255: 1} for a 0/255 mask")


class Config(ConvertOptions, StageConfig):
    """The conversion's options plus the input, the output and the label volumes."""

    input: str = Field(description="external input volume (MRC, TIFF, slices, HDF5, NPY, "
                                   "Zarr, N5, OME-Zarr)")
    output: str = Field("image.ome.zarr", description="OME-Zarr image in the workflow dir")
    labels: dict[str, str | LabelSource] = Field(
        default_factory=dict,
        description="label images to add: name -> external label volume path")

    def reads(self) -> tuple[str, ...]:
        """The external input volumes."""
        return (self.input, *(s if isinstance(s, str) else s.path
                              for s in self.labels.values()))

    def writes(self) -> tuple[str, ...]:
        """The image group (with its label images)."""
        return (self.output,)


def _skip(path: Any, ctx: RunContext) -> bool:
    return not ctx.overwrite and omezarr.image_state(path) == "complete"


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Convert the image, then each label volume; return a JSON-able summary."""
    output = ctx.path(config.output)
    attrs = ctx.attrs(NAME, config)
    options = options_of(ConvertOptions, config)
    summary: dict[str, Any] = {"output": str(output), "labels": {}}
    if _skip(output, ctx):
        summary["image"] = "complete (skipped)"
    else:
        result = convert_image(ctx.resolve(config.input), output, options,
                               overwrite=ctx.overwrite, attrs=attrs, client=ctx.client)
        summary["image"] = _brief(result)
    for name, source in config.labels.items():
        src = source if isinstance(source, LabelSource) else LabelSource(path=source)
        if _skip(output / "labels" / name, ctx):
            summary["labels"][name] = "complete (skipped)"
            continue
        # labels take the image's voxel size, and their own dataset
        label_options = options.model_copy(update={"dataset": src.dataset, "voxel_size": None})
        result = convert_labels(ctx.resolve(src.path), output, name, label_options,
                                values=src.values, overwrite=ctx.overwrite, attrs=attrs,
                                client=ctx.client)
        summary["labels"][name] = _brief(result)
        warning = ignore_id_foreground(result.class_frequencies,
                                       name=f"convert.labels.{name} ({src.path})")
        if warning:
            print(f"volseg: warning: {warning}", file=sys.stderr)
    return summary


def _brief(result: ConvertResult) -> dict[str, Any]:
    data = result.to_dict()
    data.pop("output")
    return data
