"""Command-line flags generated from an operation's options object.

Every field of an :class:`volseg.options.Options` model becomes one flag (or a
positional argument) with the field's type, choices, description and default, so the
command line, the workflow stage and the library cannot drift apart:

* ``bool`` fields: ``--name`` when the default is false, ``--no-name`` when it is true;
* ``Literal`` fields: ``choices``;
* ``int`` / ``float`` / ``str`` (or ``None``-able) fields: one value;
* ``tuple[T, T, T]`` fields: three values (``Z Y X``); ``list[T]``: one or more.

A flag not given on the command line is left out, and the model's default applies.
The values are validated by the model (:func:`parse_options`): a bad value is a
:class:`volseg.errors.ConfigError` naming the flag, one line, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from volseg.errors import ConfigError
from volseg.options import Options

_O = TypeVar("_O", bound=Options)

#: Metavars of three-value flags, and of one number or word.
ZYX = ("Z", "Y", "X")
_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "TEXT"}


def _strip_none(annotation: Any) -> Any:
    """``T | None`` -> ``T`` and ``Annotated[T, ...]`` -> ``T`` (other unions as they are)."""
    if get_origin(annotation) is Annotated:
        return _strip_none(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip_none(args[0])
    return annotation


def _scalar(kind: Any) -> Callable[[str], Any] | None:
    if kind is int:
        return _integer
    if kind is float:
        return _number
    if kind is str:
        return str
    return None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _default_text(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value = field.get_default(call_default_factory=True)
    if value is None:
        return ""
    if isinstance(value, bool):
        return ""
    if isinstance(value, float) and math.isnan(value):
        return " (default nan)"
    if isinstance(value, (tuple, list)):
        return f" (default {' '.join(map(str, value))})"
    return f" (default {value:g})" if isinstance(value, float) else f" (default {value})"


def argument_spec(name: str, field: FieldInfo) -> dict[str, Any]:
    """Return the ``add_argument`` keywords of one field (without its option strings).

    Raises
    ------
    TypeError
        For a field type that has no flag form (give it a custom flag, or exclude it).
    """
    annotation = _strip_none(field.annotation)
    help_text = (field.description or name.replace("_", " ")) + _default_text(field)
    spec: dict[str, Any] = {"dest": name, "help": help_text, "default": argparse.SUPPRESS}
    origin = get_origin(annotation)
    if annotation is bool:
        default = bool(field.get_default(call_default_factory=True))
        spec["action"] = "store_false" if default else "store_true"
        if default:
            spec["help"] = "turn off: " + help_text
        return spec
    if origin is Literal:
        choices = get_args(annotation)
        spec["choices"] = choices
        spec["type"] = _scalar(type(choices[0]))
        return spec
    scalar = _scalar(annotation)
    if scalar is not None:
        spec.update(type=scalar, metavar=_METAVARS[annotation])
        return spec
    if origin is tuple:
        items = get_args(annotation)
        kind = _scalar(items[0]) if items and len(set(items)) == 1 else None
        if kind is not None and Ellipsis not in items:
            spec.update(type=kind, nargs=len(items))
            if len(items) == 3:
                spec["metavar"] = ZYX
            return spec
    if origin is list:
        (item,) = get_args(annotation)
        kind = _scalar(item)
        if kind is not None:
            spec.update(type=kind, nargs="+")
            return spec
    raise TypeError(f"option {name} of type {field.annotation} has no generated flag")


def flag_names(model: type[Options], name: str,
               flags: Mapping[str, Sequence[str]] | None = None) -> tuple[str, ...]:
    """Return the option strings of field ``name`` (``--no-x`` for a bool true by default)."""
    if flags and name in flags:
        return tuple(flags[name])
    field = model.model_fields[name]
    dashed = name.replace("_", "-")
    if _strip_none(field.annotation) is bool and field.get_default(call_default_factory=True):
        return (f"--no-{dashed}",)
    return (f"--{dashed}",)


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[Options],
    *,
    flags: Mapping[str, Sequence[str]] | None = None,
    positional: Sequence[str] = (),
    exclude: Sequence[str] = (),
    metavars: Mapping[str, str | tuple[str, ...]] | None = None,
    types_: Mapping[str, Callable[[str], Any]] | None = None,
) -> None:
    """Add one flag per field of ``model`` to ``parser``.

    Parameters
    ----------
    parser
        The sub-command's parser (or an argument group).
    model
        The options class.
    flags
        Option strings of fields whose flag is not ``--field-name`` (e.g. a short
        historical name: ``{"patch_size": ("--patch", "--patch-size")}``).
    positional
        Fields given as positional arguments (in this order).
    exclude
        Fields without a flag (set by the command itself).
    metavars, types_
        Metavar or argparse ``type`` of particular fields.
    """
    for name in positional:
        spec = argument_spec(name, model.model_fields[name])
        spec.pop("dest")
        spec.pop("default")
        parser.add_argument(name, **spec)
    for name, field in model.model_fields.items():
        if name in exclude or name in positional:
            continue
        spec = argument_spec(name, field) if not (types_ and name in types_) else {
            "dest": name, "default": argparse.SUPPRESS,
            "help": (field.description or name) + _default_text(field), "type": types_[name]}
        if metavars and name in metavars:
            spec["metavar"] = metavars[name]
        if field.is_required() and "action" not in spec:
            spec["required"] = True
        parser.add_argument(*flag_names(model, name, flags), **spec)


def parse_options(
    model: type[_O],
    args: argparse.Namespace,
    *,
    flags: Mapping[str, Sequence[str]] | None = None,
    **fixed: Any,
) -> _O:
    """Validate the flags given in ``args`` (plus ``fixed`` values) into ``model``.

    Raises
    ------
    ConfigError
        One line naming the flag whose value is invalid and why.
    """
    given = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    given.update(fixed)
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        where = (flag_names(model, name, flags)[0] if name in model.model_fields
                 else ".".join(str(p) for p in first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {message}") from None
