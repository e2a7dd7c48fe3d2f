"""What every workflow stage shares: the frozen config base and the run context.

A stage is a module ``volseg/stages/<name>.py`` defining::

    NAME = "predict"            # the top-level key in the workflow YAML
    ORDER = 40                  # stages run in increasing ORDER
    class Config(StageConfig):  # the stage's typed, frozen, strict schema
        ...
    def run(config: Config, ctx: RunContext) -> dict[str, object]: ...
        # does the work (resuming at block granularity where it can) and returns a
        # small JSON-able summary that the runner prints and records.

Stages are discovered from the ``volseg.stages`` package, so adding a stage means
adding a module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from volseg.ngff import DEFAULT_NGFF, Ngff


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain JSON-able data (paths as strings)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageConfig:
        """Validate ``data`` into a config (raises ``pydantic.ValidationError``)."""
        return cls.model_validate(data)


class OutputConfig(BaseModel):
    """How every stage writes its OME-Zarr outputs (the workflow's top-level ``output``).

    Example::

        output:
          ngff: "0.5"             # 0.5: zarr v3, one shard per block; 0.4: zarr v2
          chunks: [64, 64, 64]    # z y x chunks (in 0.5 the inner chunks of the shards)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ngff: Ngff = Field(DEFAULT_NGFF, description="OME-NGFF version written (0.4 or 0.5)")
    chunks: tuple[int, int, int] | None = Field(
        None, description="chunks z y x (default 64 64 64, divisors of each stage's blocks)")

    @field_validator("chunks")
    @classmethod
    def _positive(cls, value: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError("chunks must be positive")
        return value


@dataclass(frozen=True)
class RunContext:
    """Where a stage reads and writes, and how it computes.

    Attributes
    ----------
    workdir
        The workflow's output directory; products of stages live here.
    base_dir
        Directory that relative paths to *external* inputs resolve against (the
        current directory when the workflow was started).
    overwrite
        Replace existing outputs instead of resuming / refusing.
    provenance
        Workflow YAML, versions, git revision, hardware: recorded in every output group.
    client
        A ``distributed.Client`` when the workflow runs on a cluster, else ``None``
        (the local threaded scheduler is used).
    output
        Format and chunks of the OME-Zarr outputs.
    """

    workdir: Path
    base_dir: Path = field(default_factory=Path.cwd)
    overwrite: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    client: Any = None
    output: OutputConfig = field(default_factory=OutputConfig)

    def path(self, p: str | Path) -> Path:
        """Resolve a product path: relative paths live in :attr:`workdir`."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else self.workdir / p

    def resolve(self, p: str | Path) -> Path:
        """Resolve an input that may be a product or an external file.

        A product of the workflow (in :attr:`workdir`) wins if it exists, then an
        existing external path (from :attr:`base_dir`); otherwise the product path,
        so that a later error names where the product was expected.
        """
        product = self.path(p)
        if product.exists():
            return product
        external = self.external(p)
        return external if external.exists() else product

    def external(self, p: str | Path) -> Path:
        """Resolve an external input path: relative paths are taken from :attr:`base_dir`."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else self.base_dir / p
