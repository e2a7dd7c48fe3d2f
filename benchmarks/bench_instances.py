"""Benchmark blockwise instance labelling: voxels/s per core and peak RSS at two sizes.

Each case runs in a fresh subprocess on a synthetic semantic volume (smooth random
regions of 7 classes, objects of 2 classes labelled with 26-connectivity, 128³
blocks): ``label_instances`` (pass 1 + driver merge) and the relabelled output
computed into memory (pass 2), with the threaded scheduler; the whole-volume
``cc3d.connected_components`` is timed for reference. Figures:

* ``voxels_per_s``: voxels / wall-clock seconds;
* ``voxels_per_core_s``: voxels / CPU seconds of the process (user + system);
* ``peak_rss_mib``: the subprocess's peak resident set size (input included).

Usage::

    .venv/bin/python benchmarks/bench_instances.py [--sizes 128x256x256 256x512x512]
        [--threads 2] [--block 128 128 128]

Writes ``benchmarks/results/bench_instances.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = (2, 5)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def semantic_volume(shape: tuple[int, int, int], *, seed: int = 0) -> Any:
    """Smooth random 7-class regions, built slab by slab to keep memory low."""
    import numpy as np
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape, dtype=np.float32)
    out = np.empty(shape, dtype=np.uint8)
    slab = 32
    for z0 in range(0, shape[0], slab):
        lo, hi = max(0, z0 - 8), min(shape[0], z0 + slab + 8)
        smooth = ndi.gaussian_filter(noise[lo:hi], 2.5)
        part = (smooth * 12).round().clip(-3, 3) + 3
        out[z0:z0 + slab] = part[z0 - lo:z0 - lo + min(slab, shape[0] - z0)].astype(np.uint8)
    return out


def run_case(shape: tuple[int, int, int], mode: str, threads: int,
             block: tuple[int, int, int]) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    import cc3d
    import dask
    import dask.array as da
    import numpy as np

    from volseg.instances import label_instances

    sem = semantic_volume(shape)
    rss_inputs = _peak_rss_mib()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    extra: dict[str, Any] = {}
    if mode == "whole":
        mask = np.where(np.isin(sem, CLASSES), sem.astype(np.uint16) + 1, 0)
        out, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
        extra = {"objects": int(n), "blocks": 1}
    else:
        with dask.config.set(scheduler="threads", num_workers=threads):
            result = label_instances(da.from_array(sem, chunks=block), classes=CLASSES,
                                     connectivity=26, voxel_size=(5.0, 5.0, 5.0))
            t_pass1 = time.perf_counter() - t0
            out = result.labels.compute()
        extra = {"objects": len(result.table), "block_components": result.n_provisional,
                 "blocks": int(np.prod(result.labels.numblocks)),
                 "pass1_and_merge_s": round(t_pass1, 3)}
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    n_vox = int(np.prod(shape))
    return {
        "shape": list(shape), "voxels": n_vox, "mode": mode,
        "threads": 1 if mode == "whole" else threads, "block": list(block),
        "connectivity": 26, "classes": list(CLASSES), **extra,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "voxels_per_s": round(n_vox / wall), "voxels_per_core_s": round(n_vox / max(cpu, 1e-9)),
        "peak_rss_mib": round(_peak_rss_mib(), 1), "inputs_rss_mib": round(rss_inputs, 1),
        "output_dtype": str(out.dtype),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every case in a subprocess, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["128x256x256", "256x512x512"])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--block", nargs=3, type=int, default=[128, 128, 128])
    parser.add_argument("--modes", nargs="+", default=["blockwise", "whole"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    block = (args.block[0], args.block[1], args.block[2])
    if args.case:
        shape_s, mode = args.case.split(":")
        s = [int(v) for v in shape_s.split("x")]
        print(json.dumps(run_case((s[0], s[1], s[2]), mode, args.threads, block)))
        return 0
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--case", f"{size}:{mode}",
                   "--threads", str(args.threads), "--block", *map(str, block)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{size:>12} {mode:>9}: {row['voxels_per_s'] / 1e6:7.2f} Mvox/s wall, "
                  f"{row['voxels_per_core_s'] / 1e6:7.2f} Mvox/s per core, peak RSS "
                  f"{row['peak_rss_mib']:7.0f} MiB, {row['objects']} objects, "
                  f"{row['blocks']} blocks", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "instances",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "results": rows,
    }
    out = RESULTS / "bench_instances.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
