"""The workflow YAML schema: strict, typed, data only.

A workflow file is a mapping with a few top-level keys and one key per stage::

    name: demo
    output_dir: runs/demo          # relative to the current directory
    cluster: {type: threads}       # see volseg.cluster
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

from pydantic import Field, create_model

from volseg.cluster import ClusterConfig, ThreadsCluster
from volseg.options import Options
from volseg.workflow.stage import Stage, StageConfig
from volseg.yamlconfig import load_yaml_config, parse_override

__all__ = ["Workflow", "WorkflowConfig", "load_workflow", "parse_override", "stage_modules",
           "workflow_model"]


class WorkflowConfig(Options):
    """The keys every workflow has; :func:`workflow_model` adds one optional key per stage."""

    name: str = Field(description="the workflow's name (default output: runs/<name>)")
    description: str = ""
    output_dir: str | None = Field(None, description="where the products go")
    cluster: ClusterConfig = Field(default_factory=ThreadsCluster)

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

    def output_dir(self, base_dir: Path) -> Path:
        """Where the products go: ``output_dir`` or ``runs/<name>`` under ``base_dir``."""
        out = self.config.output_dir or f"runs/{self.name}"
        path = Path(out).expanduser()
        return path if path.is_absolute() else base_dir / path

    def stages(self) -> list[tuple[Stage, StageConfig]]:
        """Return ``(module, config)`` for every stage present, in pipeline order."""
        present = []
        for module in stage_modules():
            cfg = self.config.stage_config(module.NAME)
            if cfg is not None:
                present.append((module, cfg))
        return present


def load_workflow(path: str | Path, overrides: Sequence[str] = ()) -> Workflow:
    """Read, override and validate a workflow file.

    Parameters
    ----------
    path
        The workflow YAML.
    overrides
        ``stage.key=value`` strings, applied before validation.

    Raises
    ------
    ConfigError
        One line naming the file, line and key path, and the fix.
    """
    config, data = load_yaml_config(path, workflow_model(), overrides, what="workflow file")
    return Workflow(config=config, source=Path(path), raw=data)
