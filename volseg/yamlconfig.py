"""Strict YAML configs: safe loading, ``--set`` overrides, errors naming file, line and key.

Shared by workflow files (:mod:`volseg.workflow.schema`) and training configs
(:mod:`volseg.train.config`).  YAML is data only: ``yaml.safe_load`` (no tags, no code),
then a frozen pydantic model that forbids unknown keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from volseg.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)


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
    return loc, f"{str(error['msg']).removeprefix('Value error, ')}{got_text}"


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


def load_yaml_config(
    path: str | Path, model: type[Model], overrides: Sequence[str] = (), *, what: str = "config"
) -> tuple[Model, dict[str, Any]]:
    """Read ``path`` with ``yaml.safe_load``, apply ``key=value`` overrides, validate.

    Parameters
    ----------
    path
        The YAML file: a mapping of ``model``'s keys.
    model
        The pydantic model to validate against.
    overrides
        ``key.sub=value`` strings (values parsed as YAML), applied before validation.
    what
        What the file is, for messages ("workflow file", "training config").

    Returns
    -------
    (config, data)
        The validated model and the plain data it was built from.

    Raises
    ------
    ConfigError
        One line naming the file, the line (or the ``--set``) and the key, and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found; check the path")
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
        raise ConfigError(f"{path}: a {what} must be a mapping of keys to values")
    for text_override in overrides:
        keys, value = parse_override(text_override)
        _apply_override(data, keys, value, text_override)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        loc, message = _describe(exc.errors()[0])
        key, line = _locate(loc, data, tree)
        if line is None or any(key == o.split("=", 1)[0].strip() for o in overrides):
            where = f"{path} (--set {key})" if overrides else str(path)
        else:
            where = f"{path}:{line}"
        raise ConfigError(f"{where}: {key or 'config'}: {message}") from None
    return config, data
