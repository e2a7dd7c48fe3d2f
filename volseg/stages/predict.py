"""Workflow stage ``predict``: the trained model over the whole image, block by block.

Example::

    predict:
      model: model.safetensors          # default (a product of ``train``)
      input: image.ome.zarr             # default
      output: prediction.ome.zarr       # default; probabilities + labels/semantic
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

Every key but the three paths is a field of :class:`volseg.inference.PredictOptions`
(the options of ``volseg predict`` too).  A rerun resumes an interrupted prediction
and skips a finished one; with the workflow's ``--overwrite`` it is recomputed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from volseg.inference.options import PredictOptions
from volseg.options import options_of
from volseg.workflow.stage import RunContext, StageConfig

NAME = "predict"
ORDER = 40


class Config(PredictOptions, StageConfig):
    """The prediction's options plus the model, the input and the output."""

    model: str = Field("model.safetensors",
                       description="trained model file or bioimage.io package")
    input: str = Field("image.ome.zarr", description="input image")
    output: str = Field("prediction.ome.zarr",
                        description="output group: probabilities + labels/semantic (without "
                                    "probabilities: a label image)")

    def reads(self) -> tuple[str, ...]:
        """The model and the image."""
        return (self.model, self.input)

    def writes(self) -> tuple[str, ...]:
        """The prediction group."""
        return (self.output,)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Predict (or skip a finished prediction); return a JSON-able summary."""
    from volseg.inference.pipeline import output_state, run_predict

    output = ctx.path(config.output)
    if not ctx.overwrite and output_state(output, config.probabilities) == "complete":
        return {"output": str(output), "status": "complete (skipped)"}
    model = ctx.local(ctx.resolve(config.model), "the model file (predict.model)")
    result = run_predict(model, ctx.resolve(config.input), output,
                         options_of(PredictOptions, config), overwrite=ctx.overwrite,
                         attrs=ctx.attrs(NAME, config), client=ctx.client)
    return result.to_dict()
