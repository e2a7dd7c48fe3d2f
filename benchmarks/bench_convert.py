"""Benchmark ``volseg convert`` on a multi-GiB input: throughput, peak memory, files.

Generates a ``uint8`` ``.npy`` volume (default 4 GiB, 1024 × 2048 × 2048) slab by slab
into ``benchmarks/scratch/`` (git-ignored), runs ``python -m volseg convert`` on it in
a subprocess (default chunks 64³, full pyramid) once per NGFF version each round —
0.5 (zarr v3, 64³ chunks in shards of about 16 MiB) and 0.4 (zarr v2, 64³ chunk
files), alternating which goes first — measures wall time, the peak resident memory
of the converting process tree and the number of files written, spot-checks the
output against the input, writes ``benchmarks/results/bench_convert.json`` and
deletes the scratch files.  The fastest run of each version counts (the host is
shared: the load average before each run is recorded).  Target: 0.5 costs at most
10 % of the 0.4 throughput.

It then times the level-0 writer alone (:func:`volseg.io.store.store_blocks` of a
slab already in memory, no pyramid) for NGFF 0.4 with volseg's direct Zarr v2 chunk
writer, NGFF 0.4 through zarr-python, NGFF 0.5 with volseg's direct shard writer and
NGFF 0.5 through zarr-python: the measured reason the direct writers
(``volseg.io.store.DIRECT_V2``, ``DIRECT_SHARDS``) are kept.

Usage::

    python benchmarks/bench_convert.py            # 4 GiB
    python benchmarks/bench_convert.py --gib 0.5  # quicker
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    SCRATCH,
    disk_usage,
    file_count,
    load_average,
    machine,
    run_measured,
    write_result,
)

TARGET_RSS = int(1.5 * 2**30)


def make_input(path: Path, gib: float, *, slab: int = 8, seed: int = 0) -> tuple[int, ...]:
    """Write an EM-like ``uint8`` volume of about ``gib`` GiB as ``.npy``, slab by slab.

    Smooth structure plus noise, so that it compresses like real EM (not like pure
    noise, not like zeros).  Only one slab is in memory at a time.
    """
    yx = 2048
    depth = max(slab, round(gib * 2**30 / (yx * yx) / slab) * slab)
    shape = (depth, yx, yx)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(yx, dtype=np.float32), np.arange(yx, dtype=np.float32),
                         indexing="ij")
    base = 40.0 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
    for z0 in range(0, depth, slab):
        z = np.arange(z0, min(z0 + slab, depth), dtype=np.float32)[:, None, None]
        noise = rng.normal(0.0, 12.0, size=(len(z), yx, yx)).astype(np.float32)
        out[z0:z0 + len(z)] = np.clip(128 + base * np.cos(z / 71.0) + noise, 0, 255)
        out.flush()
    del out
    return shape


def spot_check(source: Path, output: Path, samples: int = 8, seed: int = 1) -> bool:
    """Compare random 32³ regions of the converted level 0 with the input."""
    import zarr

    data = np.load(source, mmap_mode="r")
    level0 = zarr.open_array(str(output / "0"), mode="r")
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        start = [int(rng.integers(0, n - 32)) for n in data.shape]
        region = tuple(slice(s, s + 32) for s in start)
        if not np.array_equal(np.asarray(level0[region]), data[region]):
            return False
    return True


def convert_once(source: Path, output: Path, ngff: str) -> dict[str, Any]:
    """One ``volseg convert --ngff NGFF`` run in a fresh process, measured."""
    load = load_average()
    run = run_measured([sys.executable, "-m", "volseg", "convert", str(source), str(output),
                        "--voxel-size", "8", "8", "8", "--overwrite", "--ngff", ngff])
    if run.returncode != 0:
        raise RuntimeError(f"volseg convert failed:\n{run.stdout}\n{run.stderr}")
    nbytes = int(np.prod(np.load(source, mmap_mode="r").shape))
    result: dict[str, Any] = {
        "ngff": ngff, "load_average_before": load,
        "wall_seconds": round(run.seconds, 2),
        "throughput_mib_per_s": round(nbytes / 2**20 / run.seconds, 1),
        "peak_rss_bytes": run.peak_rss_bytes, "peak_rss_gib": round(run.peak_rss_bytes / 2**30, 3),
        "output_bytes_on_disk": disk_usage(output), "files": file_count(output),
        "files_level0": file_count(output / "0"),
        "output_matches_input": spot_check(source, output),
        "volseg_summary": run.stdout.strip().splitlines(),
    }
    print(f"  NGFF {ngff}: {result['wall_seconds']} s, {result['throughput_mib_per_s']} MiB/s, "
          f"peak RSS {result['peak_rss_gib']} GiB, {result['files']} files "
          f"({result['files_level0']} at level 0), load {load}", flush=True)
    shutil.rmtree(output, ignore_errors=True)
    return result


def writer_only(depth: int = 64, rounds: int = 3) -> dict[str, Any]:
    """Seconds to write one in-memory slab (64 × 1024 × 2048 uint8) at level 0 only."""
    import tempfile

    import dask.array as da

    from volseg.io import omezarr, store

    SCRATCH.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (depth, 1024, 2048)
    yy, xx = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    base = (40 * np.sin(yy / 37.0) * np.cos(xx / 53.0)).astype(np.float32)
    slab = np.clip(128 + base + rng.normal(0, 12, shape).astype(np.float32), 0, 255).astype(
        np.uint8)
    variants = {"0.4 direct v2 writer": ("0.4", True), "0.4 through zarr": ("0.4", False),
                "0.5 direct shard writer": ("0.5", True),
                "0.5 sharded through zarr": ("0.5", False)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(rounds):
        names = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        for name in names:
            ngff, direct = variants[name]
            with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
                layout = omezarr.image_layout(shape, "zyx", 1, ngff=ngff)
                target = omezarr.create_image(
                    Path(tmp) / "w.ome.zarr", shape=shape, dtype=np.uint8, chunks=layout.chunks,
                    shards=layout.shards, voxel_size=None, ngff=ngff)
                array = da.from_array(slab, chunks=layout.blocks)
                store.DIRECT_V2 = store.DIRECT_SHARDS = direct
                try:
                    t0 = time.perf_counter()
                    store.store_blocks(array, target, description=name)
                    times[name].append(time.perf_counter() - t0)
                finally:
                    store.DIRECT_V2 = store.DIRECT_SHARDS = True
    mib = slab.nbytes / 2**20
    out: dict[str, Any] = {"slab_shape": list(shape), "rounds": rounds,
                              "seconds": times,
                              "best_mib_per_s": {k: round(mib / min(v), 1)
                                                 for k, v in times.items()}}
    for name, rate in out["best_mib_per_s"].items():
        print(f"  writer only, {name}: {rate} MiB/s (best of {rounds})")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="input size in GiB (default 4)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of 0.5 and 0.4 conversions (default 2)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch input (and reuse one of the same size)")
    parser.add_argument("--generate-only", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate_only:  # run in a child so the measuring parent stays small
        make_input(Path(args.generate_only), args.gib)
        return 0

    SCRATCH.mkdir(parents=True, exist_ok=True)
    source, output = SCRATCH / "bench_input.npy", SCRATCH / "bench_output.ome.zarr"
    free = shutil.disk_usage(SCRATCH).free
    if free < 2.5 * args.gib * 2**30:
        print(f"not enough disk space in {SCRATCH}: {free / 2**30:.1f} GiB free", file=sys.stderr)
        return 1
    runs: dict[str, list[dict[str, Any]]] = {"0.5": [], "0.4": []}
    try:
        if args.keep and source.exists() and abs(source.stat().st_size - args.gib * 2**30) < (
                64 * 2**20):
            print(f"reusing {source} (--keep)", flush=True)
        else:
            print(f"generating {args.gib:g} GiB input in {SCRATCH} ...", flush=True)
            subprocess.run([sys.executable, __file__, "--gib", str(args.gib),
                            "--generate-only", str(source)], check=True)
        shape = tuple(np.load(source, mmap_mode="r").shape)
        nbytes = int(np.prod(shape))
        print(f"converting {shape} uint8 ...", flush=True)
        for round_ in range(max(1, args.rounds)):
            for ngff in (["0.5", "0.4"] if round_ % 2 == 0 else ["0.4", "0.5"]):
                runs[ngff].append(convert_once(source, output, ngff))
        writer = writer_only()
    finally:
        if not args.keep:
            source.unlink(missing_ok=True)
        shutil.rmtree(output, ignore_errors=True)
    best = {k: max(v, key=lambda r: float(r["throughput_mib_per_s"]))
            for k, v in runs.items()}
    b05, b04 = best["0.5"], best["0.4"]
    ratio = float(b05["throughput_mib_per_s"]) / float(b04["throughput_mib_per_s"])
    result = {
        "benchmark": "bench_convert",
        "command": "volseg convert bench_input.npy bench_output.ome.zarr --voxel-size 8 8 8 "
                   "--ngff {0.5,0.4}",
        "input_shape": list(shape), "input_dtype": "uint8", "input_bytes": nbytes,
        "target_peak_rss_gib": TARGET_RSS / 2**30,
        "best": best, "runs": runs,
        "ngff05_over_04_throughput": round(ratio, 3),
        "files_05_over_04": round(int(b05["files"]) / int(b04["files"]), 4),
        "rss_within_target": all(int(r["peak_rss_bytes"]) < TARGET_RSS
                                 for v in runs.values() for r in v),
        "output_matches_input": all(bool(r["output_matches_input"])
                                    for v in runs.values() for r in v),
        "writer_only": writer,
        "machine": machine(),
    }
    path = write_result("bench_convert", result)
    print(f"input          {shape} uint8, {nbytes / 2**30:.2f} GiB")
    for ngff, r in best.items():
        print(f"NGFF {ngff}       {r['wall_seconds']} s, {r['throughput_mib_per_s']} MiB/s of "
              f"input (with the pyramid), peak RSS {r['peak_rss_gib']} GiB, {r['files']} files, "
              f"{int(r['output_bytes_on_disk']) / 2**30:.2f} GiB on disk")
    print(f"0.5 / 0.4      throughput {ratio:.3f} (target >= 0.9), files "
          f"{result['files_05_over_04']}")
    print(f"peak RSS       {'within' if result['rss_within_target'] else 'OVER'} 1.5 GiB; "
          f"outputs match the input: {result['output_matches_input']}")
    print(f"saved          {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
