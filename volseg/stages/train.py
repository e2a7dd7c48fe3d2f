"""The ``train`` workflow stage: image + sparse labels -> ``model.safetensors``.

The stage config is :class:`volseg.train.config.TrainConfig` (the same schema as
``volseg train``).  Relative ``image``/``labels`` paths name products of earlier stages
in the workflow directory when they exist there (default ``image.ome.zarr`` and its
``labels/annotation``), else files relative to where the workflow was started.
Products: ``model.safetensors``, ``training/metrics.csv``, ``training/curve.png``.
"""

from __future__ import annotations

from typing import Any

from volseg.train.config import TrainConfig
from volseg.workflow.stage import RunContext, StageConfig

NAME = "train"
ORDER = 30


class Config(TrainConfig, StageConfig):
    """The ``train:`` section of a workflow (see :class:`volseg.train.config.TrainConfig`)."""

    def reads(self) -> tuple[str, ...]:
        """The image, the labels and the model file to start from (``init``)."""
        return (self.image, self.labels) + ((self.init,) if self.init else ())

    def writes(self) -> tuple[str, ...]:
        """The model file and the training curves."""
        return (self.model_path, self.training_dir)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Train and return a small summary (model path, best epoch and metrics, seconds)."""
    from volseg.train import train

    summary = train(
        config, image=ctx.local(ctx.resolve(config.image), "train.image"),
        labels=ctx.local(ctx.resolve(config.labels), "train.labels"),
        output_dir=ctx.local(ctx.workdir, "a workflow with a train stage: output_dir"),
        # the runner only calls an incomplete stage (or one the user asked to redo), so
        # a model file here is a leftover of an interrupted run: replace it
        overwrite=True,
        init=ctx.local(ctx.resolve(config.init), "train.init") if config.init else None,
        extra_summary={"provenance": ctx.provenance} if ctx.provenance else None,
    )
    return {k: v for k, v in summary.items() if k != "per_class"}
