"""Workflow stage ``export_model``: the trained model as a bioimage.io model package.

Example::

    export_model:
      model: model.safetensors          # default (a product of ``train``)
      output: model.bioimageio.zip      # default
      name: null                        # default: architecture and classes
      authors: ["Ada Lovelace; EPFL"]
      license: CC-BY-4.0                # SPDX id
      cite: [{text: "Lucchi et al. 2012", doi: 10.1109/TMI.2011.2171705}]
      covers: []                        # default: preview (below) if present, else made
      preview: preview/xy.png           #   from the test tensors
      sample: null                      # the test input is cut from its centre; default:
      image: image.ome.zarr             #   the workflow's image
      weights: [torchscript, onnx]
      state_dict: false                 # true: also a pickled state dict (never read by volseg)

Every key but the paths ``model``, ``output``, ``image`` and ``preview`` is a field of
:class:`volseg.inference.package.PackageOptions` (the options of ``volseg
export-model`` too).  It runs after ``preview`` so that the preview PNGs can be its
covers.  A rerun skips a package exported from the same model file (its SHA-256 is
recorded in the package) and refuses one from another model unless ``--overwrite``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from pydantic import Field

from volseg.errors import OutputExistsError
from volseg.inference.package import PackageOptions
from volseg.options import options_of
from volseg.workflow.stage import RunContext, StageConfig

NAME = "export_model"
ORDER = 85


class Config(PackageOptions, StageConfig):
    """The package's options plus the model and the package path."""

    model: str = Field("model.safetensors", description="trained model file")
    output: str = Field("model.bioimageio.zip", description="the package (.zip)")
    image: str = Field("image.ome.zarr",
                       description="image the test input is cut from when sample is unset")
    preview: str = Field("preview/xy.png",
                         description="cover when covers is empty (if the file exists)")

    def reads(self) -> tuple[str, ...]:
        """The model and the image the test input comes from."""
        return (self.model, self.sample or self.image)

    def writes(self) -> tuple[str, ...]:
        """The package."""
        return (self.output,)


def _recorded_sha(path: Path) -> str | None:
    """The model SHA-256 recorded in a package volseg wrote, else ``None``."""
    import yaml

    try:
        with zipfile.ZipFile(path) as archive:
            rdf = yaml.safe_load(archive.read("rdf.yaml"))
        return str(rdf["config"]["volseg"]["model_sha256"])
    except (OSError, KeyError, TypeError, zipfile.BadZipFile, yaml.YAMLError):
        return None


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Export (or skip a package already exported from this model); return a summary."""
    from volseg.inference.package import export_model, file_sha256

    model = ctx.local(ctx.resolve(config.model), "export_model.model")
    output = ctx.local(ctx.path(config.output), "export_model.output")
    if output.exists() and not ctx.overwrite:
        if model.exists() and _recorded_sha(output) == file_sha256(model):
            return {"output": str(output), "status": "complete (skipped)"}
        raise OutputExistsError(f"{output} exists (not exported from {model}); pass "
                                "--overwrite to replace it")
    sample = ctx.resolve(config.sample or config.image)
    covers = [str(ctx.resolve(c)) for c in (config.covers or [config.preview])]
    options = options_of(PackageOptions, config).model_copy(update={
        "covers": [c for c in covers if Path(c).is_file()] if not config.covers else covers,
        "sample": str(sample) if sample.exists() or config.sample else None,
    })
    return export_model(model, output, options, overwrite=True,
                        record={"workflow": config.to_dict()}).to_dict()
