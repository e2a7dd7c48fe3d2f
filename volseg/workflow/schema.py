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
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from volseg.cluster import ClusterConfig, ThreadsCluster
from volseg.errors import ConfigError

RESERVED_KEYS = ("name", "description", "output_dir", "cluster")


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


def _locate(
    loc: Sequence[int | str], data: Any, tree: yaml.Node | None
) -> tuple[str, int | None]:
    """Map a pydantic error location to a dotted key path and a 1-based YAML line.

    Parts of ``loc`` that pydantic inserts (union tags, model names) are not keys of the
    data and are skipped, except the last part (a missing or unknown key), which is kept.
    """
    names: list[str] = []
    node = tree
    line = None if node is None else node.start_mark.line + 1
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(data, dict) and part in data:
            data = data[part]
            names.append(str(part))
            if isinstance(node, yaml.MappingNode):
                key, value = next(((k, v) for k, v in node.value if k.value == part),
                                  (None, None))
                node = value
                if key is not None:
                    line = key.start_mark.line + 1
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
            names.append(f"[{part}]")
            if isinstance(node, yaml.SequenceNode) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
        elif last:
            names.append(str(part))
    return ".".join(names).replace(".[", "["), line


def _describe(error: Any) -> tuple[tuple[int | str, ...], str]:
    """Turn one pydantic error into (location, message with the fix)."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return loc, "unknown key; remove it or check its spelling (see docs/workflows.md)"
    if error["type"] == "missing":
        return loc, "required key is missing; add it"
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    return loc, f"{error['msg']}{got_text}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``stage.key=value`` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. predict.batch_size=8")
    key, value = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key; use e.g. predict.batch_size=8")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from None
    return path, parsed


def _apply_override(data: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    node: Any = data
    for part in path[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {part!r} is not a mapping")
    node[path[-1]] = value


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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: workflow file not found; check the path (see workflows/)")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a workflow must be a mapping of keys to sections")
    for text_override in overrides:
        keys, value = parse_override(text_override)
        _apply_override(data, keys, value, text_override)
    model = workflow_model()
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        loc, message = _describe(exc.errors()[0])
        key, line = _locate(loc, data, tree)
        if line is None or any(key == o.split("=", 1)[0].strip() for o in overrides):
            where = f"{path} (--set {key})" if overrides else str(path)
        else:
            where = f"{path}:{line}"
        raise ConfigError(f"{where}: {key}: {message}") from None
    return Workflow(config=config, source=path, raw=data)
