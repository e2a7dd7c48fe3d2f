"""Workflow stage ``predict``: the trained model over the whole image, block by block.

Example::

    predict:
      model: model.safetensors          # default (a product of ``train``)
      input: image.ome.zarr             # default
      output: prediction.ome.zarr       # default; labels/semantic + probabilities
      patch_size: null                  # default: the model's
      overlap: 0.25
      blend: gaussian                   # gaussian | bump | constant
      batch_size: 4
      device: auto                      # auto | cpu | cuda
      precision: fp32                   # fp32 | bf16 | fp16 (CUDA autocast)
      probabilities: uint8              # none | uint8 | float16 | float32
      tta: false
      block_size: null                  # default: two patch strides per axis
      backend: auto                     # auto | torch | onnx (onnxruntime)

``model`` may also be a bioimage.io package (``.zip`` or ``rdf.yaml``) with ONNX or
TorchScript weights.

A rerun resumes an interrupted prediction and skips a finished one; with the
workflow's ``--overwrite`` it is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from volseg.inference.pipeline import output_state, run_predict
from volseg.workflow.stage import RunContext, StageConfig

NAME = "predict"
ORDER = 40


class Config(StageConfig):
    """Model, input, output and the sliding-window settings."""

    model: str = Field("model.safetensors",
                       description="trained model file or bioimage.io package")
    input: str = Field("image.ome.zarr", description="input image")
    output: str = Field("prediction.ome.zarr",
                        description="output group (labels/semantic + probabilities)")
    patch_size: tuple[int, int, int] | None = Field(
        None, description="patch z y x (default: the model's)")
    overlap: float = Field(0.25, ge=0, lt=1, description="overlap of neighbouring patches")
    blend: Literal["gaussian", "bump", "constant"] = Field(
        "gaussian", description="patch blending weights")
    batch_size: int = Field(4, ge=1, description="patches per forward pass")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the net runs")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast precision on CUDA")
    probabilities: Literal["none", "uint8", "float16", "float32"] = Field(
        "uint8", description="how class probabilities are stored (none: not written)")
    tta: bool = Field(False, description="average over flips (test-time augmentation)")
    block_size: tuple[int, int, int] | None = Field(
        None, description="block (= output chunk) z y x (default: two patch strides)")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="torch (TorchScript for packages) or onnx (onnxruntime)")

    @field_validator("patch_size", "block_size")
    @classmethod
    def _positive(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("sizes must be positive")
        return value


def _resolve(ctx: RunContext, path: str) -> Path:
    """A workflow product if it exists there, else an external path, else the product."""
    product = ctx.path(path)
    if product.exists():
        return product
    external = ctx.external(path)
    return external if external.exists() else product


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Predict (or skip a finished prediction); return a JSON-able summary."""
    output = ctx.path(config.output)
    if not ctx.overwrite and output_state(output, config.probabilities) == "complete":
        return {"output": str(output), "status": "complete (skipped)"}
    attrs = {"volseg": {**ctx.provenance, "stage": NAME, "config": config.to_dict()}}
    result = run_predict(
        _resolve(ctx, config.model), _resolve(ctx, config.input), output,
        patch_size=config.patch_size, overlap=config.overlap, blend=config.blend,
        batch_size=config.batch_size, device=config.device, precision=config.precision,
        probabilities=config.probabilities, tta=config.tta, block_size=config.block_size,
        overwrite=ctx.overwrite, attrs=attrs, client=ctx.client, backend=config.backend,
    )
    return result.to_dict()
