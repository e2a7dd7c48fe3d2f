"""The workflow YAML schema: strict, typed, data only.

A workflow file is a mapping with a few top-level keys and one key per stage::

    name: demo
    output_dir: runs/demo          # relative to the current directory
    cluster: {type: threads}       # see volseg.cluster
    output: {ngff: "0.5"}          # OME-Zarr format of every output (0.4 or 0.5)
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
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from volseg.cluster import ClusterConfig, ThreadsCluster
from volseg.workflow.stage import OutputConfig
from volseg.yamlconfig import load_yaml_config, parse_override

__all__ = ["Workflow", "load_workflow", "parse_override", "stage_modules", "workflow_model"]


@cache
def stage_modules() -> tuple[ModuleType, ...]:
    """Return the stage modules of :mod:`volseg.stages`, in pipeline order."""
    import volseg.stages

    modules = []
    for info in pkgutil.iter_modules(volseg.stages.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"volseg.stages.{info.name}")
        if all(hasattr(module, attr) for attr in ("NAME", "ORDER", "Config", "run")):
            modules.append(module)
    return tuple(sorted(modules, key=lambda m: (m.ORDER, m.NAME)))


@cache
def workflow_model() -> type[BaseModel]:
    """Build the pydantic model of a whole workflow from the discovered stages."""
    fields: dict[str, Any] = {
        "name": (str, ...),
        "description": (str, ""),
        "output_dir": (str | None, None),
        "cluster": (ClusterConfig, ThreadsCluster()),
        "output": (OutputConfig, OutputConfig()),
    }
    for module in stage_modules():
        fields[module.NAME] = (module.Config | None, None)
    return create_model(
        "Workflow", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


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

    config: BaseModel
    source: Path
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        """The workflow's name."""
        return str(self.config.name)  # type: ignore[attr-defined]

    def output_dir(self, base_dir: Path) -> Path:
        """Where the products go: ``output_dir`` or ``runs/<name>`` under ``base_dir``."""
        out = self.config.output_dir or f"runs/{self.name}"  # type: ignore[attr-defined]
        path = Path(out).expanduser()
        return path if path.is_absolute() else base_dir / path

    def stages(self) -> list[tuple[ModuleType, Any]]:
        """Return ``(module, config)`` for every stage present, in pipeline order."""
        present = []
        for module in stage_modules():
            cfg = getattr(self.config, module.NAME)
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
