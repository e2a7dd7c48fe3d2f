"""Option helpers shared by the sub-commands (not itself a sub-command)."""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Sequence
from typing import Any

from volseg.options import Options
from volseg.provenance import provenance


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """Add ``--overwrite`` (replace existing outputs instead of refusing/resuming)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (default: refuse, or resume a "
                             "partially written one)")


def add_dataset(parser: argparse.ArgumentParser) -> None:
    """Add ``--dataset`` (the array inside an HDF5 file, Zarr group or N5 container)."""
    parser.add_argument("--dataset", metavar="NAME",
                        help="dataset inside an HDF5 file, Zarr group or N5 container")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the parsed options as plain data (internal keys dropped)."""
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and k not in ("debug", "command")}


def command_line(name: str, positional: Sequence[str], args: argparse.Namespace) -> str:
    """Return the command line of a provenance record: as given, when ``main`` parsed it.

    Otherwise (``args`` built by other code) an equivalent one is rebuilt from the
    values, ``positional`` naming the attributes of ``args`` that are positional
    arguments; empty lists are left out.
    """
    given = getattr(args, "_argv", None)
    if given is not None:
        return shlex.join(["volseg", *map(str, given)])
    values = options(args)
    parts = ["volseg", name, *(str(values[k]) for k in positional if values.get(k) is not None)]
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False or key in positional or value == []:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts += [flag, *map(str, value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def output_attrs(name: str, positional: Sequence[str], args: argparse.Namespace,
                 validated: Options | None = None) -> dict[str, Any]:
    """Return group attributes recording how the command made its output.

    ``positional`` names the attributes of ``args`` that are positional arguments;
    ``validated``, the command's options object, completes the recorded config with
    the defaults of the flags not given.
    """
    config = {**(validated.to_dict() if validated is not None else {}), **options(args)}
    config = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
              for k, v in config.items()}  # JSON has no nan
    return {"volseg": provenance(command=command_line(name, positional, args),
                                 config=config)}


def json_text(data: Any) -> str:
    """Return ``data`` as indented JSON, non-finite numbers as ``null`` (JSON has no NaN)."""
    import json

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(data), indent=2, allow_nan=False, default=str)


def format_bytes(n: float) -> str:
    """Return ``n`` bytes in a human unit (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def format_voxel(voxel_size: Sequence[float] | None) -> str:
    """Return ``5 × 5 × 5 nm`` or ``unknown``."""
    if voxel_size is None:
        return "unknown"
    return " × ".join(f"{v:g}" for v in voxel_size) + " nm"


def format_shape(shape: Sequence[int]) -> str:
    """Return ``165 × 768 × 1024``."""
    return " × ".join(str(int(n)) for n in shape)
