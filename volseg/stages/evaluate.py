"""Workflow stage ``evaluate``: exact metrics of the segmentation against ground truth.

Example::

    evaluate:
      prediction: crf.ome.zarr/labels/semantic     # default
      truth: image.ome.zarr/labels/truth           # default; may be sparse (ignore label)
      probabilities: prediction.ome.zarr           # optional: AP and PR curves
      ignore_label: 255                            # default; null evaluates every voxel
      classes: [cytoplasm, membrane, mito]         # optional; default from label attrs
      instances:                                   # optional: connectomics metrics
        prediction: instances.ome.zarr/labels/instances
        truth: image.ome.zarr/labels/cells
      report: report                               # default

Every key but the paths is a field of :class:`volseg.metrics.pipeline.EvaluateOptions`
(the options of ``volseg evaluate`` too).  Paths are products of the workflow
directory; a relative path that does not exist there is looked up from where the
workflow was started (an external file).  The report layout is documented in
``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from volseg.metrics.pipeline import EvaluateOptions, EvaluationInputs, run_evaluation
from volseg.options import options_of
from volseg.provenance import provenance
from volseg.workflow.stage import RunContext, StageConfig

NAME = "evaluate"
ORDER = 70


class InstanceInputs(StageConfig):
    """The instance volumes to compare (globally consistent ids, 0 = background)."""

    prediction: str = Field(
        "instances.ome.zarr/labels/instances", description="predicted instance labels"
    )
    truth: str = Field(description="ground-truth instance labels")


class Config(EvaluateOptions, StageConfig):
    """The evaluation's options plus what to evaluate and where to write the report."""

    prediction: str | None = Field(
        "crf.ome.zarr/labels/semantic",
        description="predicted semantic labels (null: only evaluate instances)",
    )
    truth: str = Field("image.ome.zarr/labels/truth", description="ground-truth semantic labels")
    probabilities: str | None = Field(
        None, description="class probabilities (c, z, y, x) for average precision / PR curves"
    )
    instances: InstanceInputs | None = Field(
        None, description="instance volumes for VOI / adapted Rand / CREMI / object matching"
    )
    report: str = Field("report", description="report directory in the workflow dir")

    @model_validator(mode="after")
    def _something(self) -> Config:
        if self.prediction is None and self.instances is None:
            raise ValueError("give a semantic 'prediction' and/or 'instances'")
        return self

    def reads(self) -> tuple[str, ...]:
        """The volumes compared."""
        paths = [self.prediction, self.truth, self.probabilities]
        if self.instances is not None:
            paths += [self.instances.prediction, self.instances.truth]
        return tuple(p for p in paths if p is not None)

    def writes(self) -> tuple[str, ...]:
        """The report directory."""
        return (self.report,)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Evaluate in one pass and write the report; return the headline figures."""
    report = ctx.path(config.report)
    semantic = config.prediction is not None
    inputs = EvaluationInputs(
        prediction=str(ctx.resolve(config.prediction)) if config.prediction else None,
        truth=str(ctx.resolve(config.truth)) if semantic else None,
        probabilities=(str(ctx.resolve(config.probabilities))
                       if semantic and config.probabilities else None),
        instances=None if config.instances is None else (
            str(ctx.resolve(config.instances.prediction)),
            str(ctx.resolve(config.instances.truth))),
    )
    record = {**(ctx.provenance or provenance(command=f"stage {NAME}")), "stage": NAME,
              "stage_config": config.to_dict()}
    metrics = run_evaluation(inputs, report, options_of(EvaluateOptions, config),
                             overwrite=ctx.overwrite, record=record, client=ctx.client)
    summary: dict[str, Any] = {"report": str(report)}
    sem = metrics.get("semantic")
    if sem:
        summary.update(
            accuracy=sem["accuracy"], macro_f1=sem["macro"]["f1"], cohen_kappa=sem["cohen_kappa"]
        )
    inst = metrics.get("instances")
    if inst:
        summary.update(
            voi_split=inst["voi_split"],
            voi_merge=inst["voi_merge"],
            adapted_rand_error=inst["adapted_rand_error"],
            f1_iou50=inst["f1_iou50"],
        )
    return summary
