"""Workflow stage ``evaluate``: exact metrics of the segmentation against ground truth.

Example::

    evaluate:
      prediction: crf.ome.zarr     # default
      truth: image.ome.zarr/labels/truth           # default; may be sparse (ignore label)
      probabilities: prediction.ome.zarr           # optional: AP and PR curves
      ignore_label: 255                            # default; null evaluates every voxel
      classes: [cytoplasm, membrane, mito]         # optional; default from label attrs
      instances:                                   # optional: connectomics metrics
        prediction: instances.ome.zarr
        truth: image.ome.zarr/labels/cells
      report: report                               # default

Paths are products of the workflow directory; a relative path that does not exist
there is looked up from where the workflow was started (an external file).  The
report layout is documented in ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from volseg.cli.evaluate import run_evaluation
from volseg.errors import ConfigError
from volseg.provenance import provenance
from volseg.workflow.stage import RunContext, StageConfig

NAME = "evaluate"
ORDER = 70


class InstanceInputs(StageConfig):
    """The instance volumes to compare (globally consistent ids, 0 = background)."""

    prediction: str = Field(
        "instances.ome.zarr", description="predicted instance labels"
    )
    truth: str = Field(description="ground-truth instance labels")


class Config(StageConfig):
    """What to evaluate and where to write the report."""

    prediction: str | None = Field(
        "crf.ome.zarr",
        description="predicted semantic labels (null: only evaluate instances)",
    )
    truth: str = Field("image.ome.zarr/labels/truth", description="ground-truth semantic labels")
    probabilities: str | None = Field(
        None, description="class probabilities (c, z, y, x) for average precision / PR curves"
    )
    ignore_label: int | None = Field(
        255, ge=0, description="truth id of unannotated voxels (null: evaluate every voxel)"
    )
    classes: list[str] | None = Field(
        None, description="class names in id order (default: the labels' volseg.class_names)"
    )
    instances: InstanceInputs | None = Field(
        None, description="instance volumes for VOI / adapted Rand / CREMI / object matching"
    )
    zero_division: Literal[0, 1] = Field(
        0, description="score of a class whose denominator is zero (as scikit-learn)"
    )
    z_range: tuple[int, int] | None = Field(
        None, description="evaluate only sections [start, stop), e.g. the held-out ones"
    )
    report: str = Field("report", description="report directory in the workflow dir")


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Evaluate in one pass and write the report; return the headline figures."""
    if config.prediction is None and config.instances is None:
        raise ConfigError("evaluate: give a semantic 'prediction' and/or 'instances'")
    report = ctx.path(config.report)
    instances = None
    if config.instances is not None:
        instances = (
            str(ctx.resolve(config.instances.prediction)),
            str(ctx.resolve(config.instances.truth)),
        )
    common: dict[str, Any] = {
        "report": str(report),
        "overwrite": ctx.overwrite,
        "record": {
            **(ctx.provenance or provenance(command=f"stage {NAME}")),
            "stage": NAME,
            "stage_config": config.to_dict(),
        },
        "client": ctx.client,
        "zero_division": float(config.zero_division),
        "z_range": config.z_range,
    }
    if config.prediction is None:
        assert instances is not None
        metrics = run_evaluation(
            prediction=instances[0], truth=instances[1], instances_only=True, **common
        )
    else:
        metrics = run_evaluation(
            prediction=str(ctx.resolve(config.prediction)),
            truth=str(ctx.resolve(config.truth)),
            probabilities=(
                None if config.probabilities is None else str(ctx.resolve(config.probabilities))
            ),
            ignore_label=config.ignore_label,
            classes=config.classes,
            instances=instances,
            **common,
        )
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
