"""Workflow stage ``export_model``: the trained model as a bioimage.io model package.

Example::

    export_model:
      model: model.safetensors          # default (a product of ``train``)
      output: model.bioimageio.zip      # default
      name: null                        # default: architecture and classes
      authors: ["Ada Lovelace; EPFL"]
      license: CC-BY-4.0                # SPDX id
      cite: [{text: "Lucchi et al. 2012", doi: 10.1109/TMI.2011.2171705}]
      covers: [preview/xy.png]          # default; missing covers are made from the test tensors
      sample: image.ome.zarr            # default: the test input is cut from its centre
      weights: [torchscript, onnx]
      state_dict: false                 # true: also a pickled state dict (never read by volseg)

It runs after ``preview`` so that the preview PNGs can be its covers.  A rerun skips a
package exported from the same model file (its SHA-256 is recorded in the package)
and refuses one from another model unless ``--overwrite``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from volseg.errors import OutputExistsError
from volseg.workflow.stage import RunContext, StageConfig

NAME = "export_model"
ORDER = 85


class Citation(BaseModel):
    """A citation: text plus a DOI or URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    doi: str | None = None
    url: str | None = None


class Config(StageConfig):
    """The model, the package and its metadata."""

    model: str = Field("model.safetensors", description="trained model file")
    output: str = Field("model.bioimageio.zip", description="the package (.zip)")
    name: str | None = Field(None, description="package name")
    description: str | None = Field(None, description="one-line description")
    authors: list[str] = Field(default_factory=list, description="'Name' or 'Name; Affil'")
    license: str | None = Field(None, description="SPDX licence id")
    cite: list[Citation] = Field(default_factory=list, description="citations")
    covers: list[str] = Field(["preview/xy.png"], description="cover images (if present)")
    sample: str | None = Field("image.ome.zarr", description="image the test input comes from")
    weights: list[Literal["torchscript", "onnx"]] = Field(["torchscript", "onnx"])
    state_dict: bool = Field(False, description="also write a pickled state dict")


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
    from volseg.inference.export import ExportOptions, export_model, file_sha256

    model = ctx.resolve(config.model)
    output = ctx.path(config.output)
    if output.exists() and not ctx.overwrite:
        if model.exists() and _recorded_sha(output) == file_sha256(model):
            return {"output": str(output), "status": "complete (skipped)"}
        raise OutputExistsError(f"{output} exists (not exported from {model}); pass "
                                "--overwrite to replace it")
    sample = ctx.resolve(config.sample) if config.sample else None
    options = ExportOptions(
        name=config.name, description=config.description, authors=tuple(config.authors),
        license=config.license,
        cite=tuple((c.text, c.doi or c.url or "") for c in config.cite),
        covers=tuple(str(ctx.path(c)) for c in config.covers if ctx.path(c).is_file()),
        sample=str(sample) if sample is not None and sample.exists() else None,
        weights=tuple(config.weights), state_dict=config.state_dict, overwrite=True,
        extra_config={"workflow": json.loads(json.dumps(config.to_dict()))},
    )
    return export_model(model, output, options).to_dict()
