"""The ``pretrain`` workflow stage: unlabelled image -> ``pretrained.safetensors``.

The stage config is :class:`volseg.train.pretrain.PretrainConfig` (the schema of
``volseg pretrain``).  Fine-tune with ``train: {init: pretrained.safetensors}`` (same
``model.architecture`` and ``model.params``).  Products: ``pretrained.safetensors``,
``pretraining/metrics.csv``, ``pretraining/curve.png``.
"""

from __future__ import annotations

from typing import Any

from volseg.train.pretrain import PretrainConfig
from volseg.workflow.stage import RunContext, StageConfig

NAME = "pretrain"
ORDER = 25


class Config(PretrainConfig, StageConfig):
    """The ``pretrain:`` section of a workflow (see :class:`PretrainConfig`)."""

    def reads(self) -> tuple[str, ...]:
        """The image."""
        return (self.image,)

    def writes(self) -> tuple[str, ...]:
        """The model file and the curves."""
        return (self.model_path, self.training_dir)


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Pre-train and return a small summary (model path, validation losses, seconds)."""
    from volseg.train.pretrain import pretrain

    return pretrain(
        config, image=ctx.local(ctx.resolve(config.image), "pretrain.image"),
        output_dir=ctx.local(ctx.workdir, "a workflow with a pretrain stage: output_dir"),
        # an incomplete stage's model file is a leftover of an interrupted run
        overwrite=True,
        extra_summary={"provenance": ctx.provenance} if ctx.provenance else None,
    )
