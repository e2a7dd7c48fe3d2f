"""Checksums of what ``volseg run workflows/demo.yaml`` produced, for before/after checks.

Usage::

    volseg run workflows/demo.yaml --set output_dir=/tmp/demo
    python benchmarks/demo_checksums.py /tmp/demo [--out NAME]

Hashes the decoded contents (dtype, shape, bytes) of every array of every Zarr group,
the model's tensors (not its metadata, which records wall times), the object table,
the training curve's numbers (``training/metrics.csv`` without its seconds column) and
``report/metrics.json`` without ``meta`` (paths, versions and times).  Two runs of the
same code on the same machine give the same lines; the JSON goes to
``benchmarks/results/<NAME>.json`` when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import zarr


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def array_sums(root: Path) -> dict[str, str]:
    """``{relative array path: sha}`` of every Zarr array below ``root``."""
    out = {}
    for meta in sorted([*root.rglob(".zarray"), *root.rglob("zarr.json")]):
        path = meta.parent
        try:
            arr = zarr.open_array(str(path), mode="r")
        except Exception:  # a group's zarr.json
            continue
        data = np.asarray(arr[...])
        out[str(path.relative_to(root))] = _sha(
            f"{data.dtype}{data.shape}".encode() + np.ascontiguousarray(data).tobytes())
    return out


def model_sum(path: Path) -> str:
    """sha of the tensors of a safetensors file (names, dtypes, shapes, bytes)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}{t.dtype}{t.shape}".encode())
        h.update(np.ascontiguousarray(t).tobytes())
    return h.hexdigest()[:16]


def curve_sum(path: Path) -> str:
    """sha of ``metrics.csv`` without the columns that hold seconds."""
    rows = list(csv.DictReader(path.read_text().splitlines()))
    buf = io.StringIO()
    for row in rows:
        buf.write(json.dumps({k: v for k, v in row.items() if "second" not in k
                              and k != "time"}, sort_keys=True))
    return _sha(buf.getvalue().encode())


def checksums(root: Path) -> dict[str, str]:
    """All checksums of a demo output directory."""
    sums = array_sums(root)
    if (root / "model.safetensors").exists():
        sums["model.safetensors (tensors)"] = model_sum(root / "model.safetensors")
    if (root / "instances.csv").exists():
        sums["instances.csv"] = _sha((root / "instances.csv").read_bytes())
    if (root / "training" / "metrics.csv").exists():
        sums["training/metrics.csv (no seconds)"] = curve_sum(root / "training" / "metrics.csv")
    if (root / "report" / "metrics.json").exists():
        metrics = json.loads((root / "report" / "metrics.json").read_text())
        metrics.pop("meta", None)
        sums["report/metrics.json (no meta)"] = _sha(
            json.dumps(metrics, sort_keys=True).encode())
    return sums


def main() -> None:
    """Print the checksums of a demo output directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--out", help="also write benchmarks/results/<OUT>.json")
    args = parser.parse_args()
    sums = checksums(args.output_dir)
    for key, value in sums.items():
        print(f"{value}  {key}")
    if args.out:
        results = Path(__file__).resolve().parent / "results"
        (results / f"{args.out}.json").write_text(json.dumps(sums, indent=2) + "\n")
    sys.exit(0 if sums else 1)


if __name__ == "__main__":
    main()
