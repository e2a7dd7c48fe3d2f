"""``volseg info PATH``: what a volume or OME-Zarr group holds and how it was made."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from volseg.cli import _common

NAME = "info"
HELP = "show shape, dtype, chunks, voxel size, pyramid, labels and provenance of a volume"
ORDER = 21

_VERSIONS = ("volseg", "numpy", "dask", "zarr", "ome-zarr", "torch", "monai")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``info``'s arguments."""
    parser.add_argument("path", help="OME-Zarr group or any volume volseg reads")
    _common.add_dataset(parser)
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the description; return the exit status."""
    from volseg.io.describe import describe  # heavy: import when used

    info = describe(args.path, dataset=args.dataset)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def format_info(info: Mapping[str, Any]) -> str:
    """Return the description as indented text."""
    if "shape" not in info:  # a group holding label images only
        lines = [f"{info['path']}  ({info.get('format')}, {info.get('kind')})"]
        for label in info.get("labels") or ():
            lines += _label_lines(label)
        return "\n".join(lines + _provenance_lines(info.get("provenance")))
    lines = [
        f"{info['path']}  ({info.get('format')}, {info.get('kind')})",
        f"  axes        {', '.join(info['axes'])}",
        f"  shape       {_common.format_shape(info['shape'])}  {info['dtype']}  "
        f"({_common.format_bytes(info['nbytes'])})",
        f"  chunks      {_common.format_shape(info['chunks'])}"
        + (f" in shards of {_common.format_shape(info['shards'])}" if info.get("shards")
           else ""),
        f"  voxel size  {_common.format_voxel(info.get('voxel_size'))}",
    ]
    if info.get("origin"):
        lines.append(f"  origin      {' × '.join(f'{v:g}' for v in info['origin'])} nm")
    if info.get("compressor"):
        lines.append(f"  compressor  {info['compressor']}")
    if info.get("state"):
        lines.append(f"  state       {info['state']}  (OME-NGFF {info.get('ngff_version')})")
    for level in info.get("levels") or ():
        scale = " × ".join(f"{s:g}" for s in level["scale"])
        lines.append(f"  level {level['path']:<5} {_common.format_shape(level['shape'])}"
                     f"  scale {scale}")
    if info.get("class_names"):
        lines.append("  classes     " + ", ".join(
            f"{i}: {n}" for i, n in enumerate(info["class_names"])))
    lines += _frequency_lines(info.get("class_frequencies"))
    for label in info.get("labels") or ():
        lines += _label_lines(label)
    lines += _provenance_lines(info.get("provenance"))
    return "\n".join(lines)


def _label_lines(label: Mapping[str, Any]) -> list[str]:
    if "error" in label:
        return [f"  labels/{label['name']}: unreadable ({label['error']})"]
    lines = [f"  labels/{label['name']}  {_common.format_shape(label['shape'])} "
             f"{label['dtype']}, {label['levels']} level(s), {label['state']}"]
    return lines + _frequency_lines(label.get("class_frequencies"), "    ")


def _frequency_lines(freqs: Mapping[str, int] | None, indent: str = "  ") -> list[str]:
    if not freqs:
        return []
    total = sum(freqs.values()) or 1
    parts = [f"{k}: {v} ({100 * v / total:.2f} %)"
             for k, v in sorted(freqs.items(), key=lambda kv: int(kv[0]))]
    lines = [f"{indent}class frequencies  " + ", ".join(parts)]
    from volseg.checks import ignore_id_foreground

    warning = ignore_id_foreground(freqs, name="these labels")
    return lines + ([f"{indent}warning: {warning}"] if warning else [])


def _provenance_lines(record: Any) -> list[str]:
    if not isinstance(record, Mapping) or not any(
            k in record for k in ("command", "created", "git_revision")):
        return []
    versions = record.get("versions") or {}
    summary = ", ".join(f"{k} {versions[k]}" for k in _VERSIONS
                        if k in versions and versions[k] != "not installed")
    return [
        "  provenance",
        f"    command   {record.get('command')}",
        f"    created   {record.get('created')}",
        f"    git       {record.get('git_revision')}",
        f"    versions  {summary}",
    ]
