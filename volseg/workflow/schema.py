"""The workflow YAML schema: strict, typed, data only.

A workflow file is a mapping with a few top-level keys and one key per stage::

    name: demo
    output_dir: runs/demo          # relative to the current directory, or a bucket URL
    storage_options:               # optional: per URL scheme, fsspec file-system options
      s3: {anon: true}
    cluster: {type: threads}       # see volseg.cluster
    output: {ngff: "0.5"}          # defaults of every writing stage's ngff / chunks
    synth: {...}                   # one optional section per stage (volseg.stages.*)
    train: {...}
    predict: {...}

Stages run in their fixed pipeline order, whatever the order of the keys. The YAML is
loaded with ``yaml.safe_load`` (no tags, no code) and validated by frozen pydantic
models that forbid unknown keys; an error names the file, the line and the key path.
``--set stage.key=value`` overrides are parsed as YAML scalars and validated the same
way.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field, create_model, model_validator

from volseg.cluster import ClusterConfig, ThreadsCluster
from volseg.errors import ConfigError
from volseg.ngff import DEFAULT_NGFF, Ngff
from volseg.options import Options, PositiveSize3
from volseg.workflow.stage import Location, Stage, StageConfig, locate
from volseg.yamlconfig import load_yaml_config, parse_override

__all__ = ["OutputDefaults", "Workflow", "WorkflowConfig", "load_workflow", "parse_override",
           "stage_modules", "workflow_model"]


class OutputDefaults(Options):
    """The workflow's ``output`` key: how every stage that writes OME-Zarr writes it.

    Each value is the default of that option in every writing stage (``synth``,
    ``convert``, ``predict``, ``crf``, ``instances``) whose own section does not set it::

        output:
          ngff: "0.4"            # NGFF 0.4 on zarr v2 for older tools (default 0.5)
          chunks: [32, 128, 128] # chunks z y x (0.5: the inner chunks of the shards)
    """

    ngff: Ngff = Field(DEFAULT_NGFF, description="OME-NGFF version written: 0.5 = zarr v3 "
                                                 "with shards, 0.4 = zarr v2")
    chunks: PositiveSize3 | None = Field(
        None, description="chunks z y x (default: each stage's own default)")


class WorkflowConfig(Options):
    """The keys every workflow has; :func:`workflow_model` adds one optional key per stage."""

    name: str = Field(description="the workflow's name (default output: runs/<name>)")
    description: str = ""
    output_dir: str | None = Field(
        None, description="where the products go: a folder, or a URL such as s3://bucket/run")
    storage_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="fsspec file-system options for the workflow's URLs, per scheme or URL "
                    "prefix (longer prefixes win), e.g. {s3: {endpoint_url: ...}, "
                    "'s3://cryoet-data-portal-public': {anon: true}}")
    cluster: ClusterConfig = Field(default_factory=ThreadsCluster)
    output: OutputDefaults = Field(default_factory=OutputDefaults,
                                   description="ngff / chunks of every writing stage")

    @model_validator(mode="before")
    @classmethod
    def _output_defaults(cls, data: Any) -> Any:
        """Give writing stages the ``output`` values their own sections leave unset."""
        if not isinstance(data, dict) or not isinstance(data.get("output"), dict):
            return data
        given = {k: v for k, v in data["output"].items() if k in OutputDefaults.model_fields}
        data = dict(data)
        for module in stage_modules():
            section = data.get(module.NAME)
            fields = module.Config.model_fields
            if isinstance(section, dict) and "ngff" in fields:
                data[module.NAME] = {**{k: v for k, v in given.items() if k in fields},
                                     **section}
        return data

    def stage_config(self, name: str) -> StageConfig | None:
        """Return the config of stage ``name`` (``None`` when the workflow has no such key)."""
        config = getattr(self, name, None)
        return config if isinstance(config, StageConfig) else None


@cache
def stage_modules() -> tuple[Stage, ...]:
    """Return the stage modules of :mod:`volseg.stages`, in pipeline order."""
    import volseg.stages

    modules: list[Stage] = []
    for info in pkgutil.iter_modules(volseg.stages.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"volseg.stages.{info.name}")
        if isinstance(module, Stage):
            modules.append(module)
    return tuple(sorted(modules, key=lambda m: (m.ORDER, m.NAME)))


@cache
def workflow_model() -> type[WorkflowConfig]:
    """Build the pydantic model of a whole workflow from the discovered stages."""
    fields: dict[str, Any] = {
        module.NAME: (module.Config | None, None) for module in stage_modules()
    }
    return create_model("Workflow", __base__=WorkflowConfig, **fields)


@dataclass(frozen=True)
class Workflow:
    """A validated workflow.

    Attributes
    ----------
    config
        The validated pydantic model (one attribute per stage, ``None`` when absent).
    source
        The file it came from.
    raw
        The plain data after overrides (recorded in provenance).
    """

    config: WorkflowConfig
    source: Path
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self.config.name

    def output_dir(self, base_dir: Path) -> Location:
        """Where the products go: ``output_dir`` (a folder or a URL) or ``runs/<name>``.

        Relative folders are taken from ``base_dir``.
        """
        out = self.config.output_dir or f"runs/{self.name}"
        path = locate(out, self.config.storage_options)
        return path if not isinstance(path, Path) or path.is_absolute() else base_dir / path

    def stages(self) -> list[tuple[Stage, StageConfig]]:
        """Return ``(module, config)`` for every stage present, in pipeline order."""
        present = []
        for module in stage_modules():
            cfg = self.config.stage_config(module.NAME)
            if cfg is not None:
                present.append((module, cfg))
        return present


def packaged_workflows() -> dict[str, Path]:
    """The workflows shipped with volseg (``volseg/workflows/*.yaml``): ``{name: file}``."""
    folder = Path(__file__).resolve().parents[1] / "workflows"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def find_workflow(path: str | Path) -> Path:
    """Return the workflow file ``path`` names: the file if it exists, else a packaged one.

    ``volseg run demo`` (or ``demo.yaml``, or ``workflows/demo.yaml`` from a folder that
    has no such file) runs the packaged ``demo.yaml``; a file of that name in the
    current folder wins.

    Raises
    ------
    ConfigError
        When neither exists (naming the packaged workflows).
    """
    given = Path(path)
    if given.exists():
        return given
    shipped = packaged_workflows()
    stem = given.name.removesuffix(".yaml").removesuffix(".yml")
    if given.suffix in ("", ".yaml", ".yml") and stem in shipped:
        return shipped[stem]
    raise ConfigError(f"workflow file {path} not found; give a YAML file or one of "
                      f"the packaged workflows: {', '.join(shipped)}")


def load_workflow(path: str | Path, overrides: Sequence[str] = ()) -> Workflow:
    """Read, override and validate a workflow file.

    Parameters
    ----------
    path
        The workflow YAML, or the name of a packaged one (:func:`find_workflow`).
    overrides
        ``stage.key=value`` strings, applied before validation.

    Raises
    ------
    ConfigError
        One line naming the file, line and key path, and the fix.
    """
    path = find_workflow(path)
    config, data = load_yaml_config(path, workflow_model(), overrides, what="workflow file")
    return Workflow(config=config, source=path, raw=data)
