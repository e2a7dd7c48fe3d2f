"""Strict YAML configs: safe loading, ``--set`` overrides, errors naming file, line and key.

Shared by workflow files (:mod:`volseg.workflow.schema`) and training configs
(:mod:`volseg.train.config`).  YAML is data only: a safe loader (no tags, no code),
then a frozen pydantic model that forbids unknown keys.  The loader (:func:`load_text`)
is stricter than ``yaml.safe_load``:

* a key given twice in one mapping is an error naming both lines (``safe_load`` keeps
  the last silently);
* aliases are limited: at most :data:`MAX_ALIASES` uses, and the document they expand
  to at most :data:`MAX_VALUES` values, counted without expanding it — so an alias
  bomb ("billion laughs", a 1 KB file expanding to gigabytes) is a one-line error in
  bounded time and memory;
* a file that is not UTF-8 text (a binary file, another encoding) or not a regular
  file (a FIFO, a device: never opened, so never waited on) is a one-line error.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from volseg.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)

MAX_ALIASES = 100
"""Most alias uses (``*name``) a config may have."""
MAX_VALUES = 100_000
"""Most values (scalars, lists and mappings, aliases expanded) a config may hold."""


class _DuplicateKeyError(Exception):
    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _TooManyAliasesError(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys and counts alias uses."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _TooManyAliasesError()
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first is not None:
                raise _DuplicateKeyError(str(key), first, line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _count(value: Any, limit: int) -> int:
    """Count the values of ``value`` with shared parts (aliases) counted each time used."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = limit + 1  # a cycle (a recursive alias) counts as too many
        items = list(node.items()) if isinstance(node, dict) else [(None, v) for v in node]
        total = 1
        for key, item in items:
            total += size(item) + (0 if key is None else 1)
            if total > limit:
                break
        sizes[id(node)] = min(total, limit + 1)
        return sizes[id(node)]

    return size(value)


def load_text(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse YAML ``text`` (from ``source``, for messages) strictly; return data and tree.

    Raises
    ------
    ConfigError
        For invalid YAML, a duplicate key (naming both lines), too many aliases or a
        document that expands to too many values.
    """
    try:
        loader = _StrictLoader(text)
        try:
            tree = loader.get_single_node()
            data = loader.construct_document(tree) if tree is not None else None
        finally:
            loader.dispose()
    except _DuplicateKeyError as dup:
        raise ConfigError(f"{source}:{dup.second}: key {dup.key!r} is given twice (also on "
                          f"line {dup.first}); keep one of them") from None
    except _TooManyAliasesError:
        raise ConfigError(f"{source}: more than {MAX_ALIASES} YAML aliases (*name); write the "
                          f"values out instead") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix the syntax") from None
    if _count(data, MAX_VALUES) > MAX_VALUES:
        raise ConfigError(f"{source}: the YAML expands to more than {MAX_VALUES:,} values "
                          f"(aliases repeating aliases?); write a smaller config")
    return data, tree


def read_text_file(path: str | Path, *, what: str = "config") -> str:
    """Read a UTF-8 text file, refusing non-regular files and other encodings.

    Raises
    ------
    ConfigError
        If ``path`` is missing, not a regular file, or not UTF-8 text.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found; check the path") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {what} cannot be read ({exc.strerror}); check the path"
                          ) from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO or device?)"
        raise ConfigError(f"{path}: the {what} is {kind}; give a YAML file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: {what} cannot be read ({exc.strerror}); check the "
                          f"permissions") from None
    if b"\0" in raw:
        raise ConfigError(f"{path}: the {what} is a binary file, not YAML text; give a YAML "
                          f"file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the {what} is not UTF-8 text (byte {exc.start}); save it "
                          f"as UTF-8") from None


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
        parsed = load_text(value, "--set")[0] if value.strip() else None
    except ConfigError as exc:
        why = str(exc).split(": ", 1)[-1]
        raise ConfigError(f"--set {text!r}: {why}") from None
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
    text = read_text_file(path, what=what)
    data, tree = load_text(text, str(path))
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
        given = [o.split("=", 1)[0].strip() for o in overrides]
        if line is None or any(g == key or g.startswith(f"{key}.") for g in given):
            where = f"{path} (--set {key})" if overrides else str(path)
        else:
            where = f"{path}:{line}"
        raise ConfigError(f"{where}: {key or 'config'}: {message}") from None
    return config, data
