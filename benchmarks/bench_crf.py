"""Benchmark the blockwise dense CRF: voxels/s per core and peak RSS at two volume sizes.

Each case runs in a fresh subprocess (so its peak RSS is its own) on a synthetic
volume with noisy unaries (:func:`volseg.crf.testing.noisy_phantom`): the
blockwise CRF (``crf_labels``, default halo, blocks from the memory budget) on
dask's multiprocessing scheduler with ``--workers`` processes (pydensecrf2 holds
the GIL, so threads would serialise the kernel), with the Gaussian term alone and
with the bilateral term, plus the single-call kernel on the whole volume for
reference (one process, no halo overhead). Figures:

* ``voxels_per_s``: output voxels / wall-clock seconds;
* ``voxels_per_core_s``: output voxels / CPU seconds (user + system) of the process
  and its worker processes, i.e. throughput per fully used core, robust to other
  load on the machine;
* ``peak_rss_mib``: peak resident set size of the driver process (inputs and the
  assembled output); ``worker_peak_rss_mib``: the largest worker's peak (one block
  at a time per worker).

Usage::

    .venv/bin/python benchmarks/bench_crf.py [--sizes 64x128x128 96x256x256]
        [--classes 5] [--workers 2] [--memory-budget-mib 1024]

Writes ``benchmarks/results/bench_crf.json`` and prints a table.
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
VOXEL = (10.0, 5.0, 5.0)


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def _worker_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_case(shape: tuple[int, int, int], n_classes: int, mode: str, workers: int,
             budget_mib: int) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    import dask
    import dask.array as da
    import numpy as np

    from volseg.crf import CRFConfig, crf_halo, crf_labels, dense_crf
    from volseg.crf.testing import noisy_phantom

    truth, q, image = noisy_phantom(shape, n_classes, seed=1)
    config = CRFConfig() if mode != "gaussian" else CRFConfig(bilateral_weight=0)
    rss_inputs = _peak_rss_mib()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    if mode == "whole":
        out = dense_crf(q, image, config, voxel_size=VOXEL)
        blocks, block = 1, list(shape)
    else:
        lazy = crf_labels(da.from_array(q), da.from_array(image), voxel_size=VOXEL,
                          config=config, memory_budget=budget_mib * 2**20)
        with dask.config.set(scheduler="processes", num_workers=workers):
            out = lazy.compute()
        blocks = int(np.prod(lazy.numblocks))
        block = [int(c[0]) for c in lazy.chunks]
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    n = int(np.prod(shape))
    return {
        "shape": list(shape), "voxels": n, "classes": n_classes, "mode": mode,
        "workers": 1 if mode == "whole" else workers,
        "scheduler": "none (one call)" if mode == "whole" else "processes",
        "halo": list(crf_halo(config, voxel_size=VOXEL)), "blocks": blocks, "block": block,
        "memory_budget_mib": budget_mib,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "voxels_per_s": round(n / wall), "voxels_per_core_s": round(n / max(cpu, 1e-9)),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "worker_peak_rss_mib": round(_worker_peak_rss_mib(), 1),
        "inputs_rss_mib": round(rss_inputs, 1),
        "accuracy_before": round(float(np.mean(np.argmax(q, 0) == truth)), 4),
        "accuracy_after": round(float(np.mean(out == truth)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every case in a subprocess, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["64x128x128", "96x256x256"])
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--memory-budget-mib", type=int, default=1024)
    parser.add_argument("--modes", nargs="+", default=["gaussian", "bilateral", "whole"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        shape_s, mode = args.case.split(":")
        shape = tuple(int(s) for s in shape_s.split("x"))
        print(json.dumps(run_case(shape, args.classes, mode, args.workers,  # type: ignore[arg-type]
                                  args.memory_budget_mib)))
        return 0
    rows = []
    for size in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--case", f"{size}:{mode}",
                   "--classes", str(args.classes), "--workers", str(args.workers),
                   "--memory-budget-mib", str(args.memory_budget_mib)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{size:>12} {mode:>9}: {row['voxels_per_s'] / 1e3:8.0f} kvox/s wall, "
                  f"{row['voxels_per_core_s'] / 1e3:8.0f} kvox/s per core, peak RSS "
                  f"{row['peak_rss_mib']:6.0f} MiB (worker {row['worker_peak_rss_mib']:5.0f} MiB), "
                  f"{row['blocks']} blocks of "
                  f"{'x'.join(map(str, row['block']))} halo {row['halo']}, accuracy "
                  f"{row['accuracy_before']:.3f} -> {row['accuracy_after']:.3f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "crf", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "voxel_size_nm": list(VOXEL), "results": rows,
    }
    out = RESULTS / "bench_crf.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
