"""Benchmark ``volseg convert`` on a multi-GiB input: throughput and peak memory.

Generates a ``uint8`` ``.npy`` volume (default 4 GiB, 1024 × 2048 × 2048) slab by slab
into ``benchmarks/scratch/`` (git-ignored), runs ``python -m volseg convert`` on it in
a subprocess (default chunks 64³, full pyramid), measures wall time and the peak
resident memory of the converting process tree, spot-checks the output against the
input, writes ``benchmarks/results/bench_convert.json`` and deletes the scratch files.

Usage::

    python benchmarks/bench_convert.py            # 4 GiB
    python benchmarks/bench_convert.py --gib 0.5  # quicker
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, disk_usage, machine, run_measured, write_result

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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="input size in GiB (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
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
    try:
        print(f"generating {args.gib:g} GiB input in {SCRATCH} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--gib", str(args.gib), "--generate-only",
                        str(source)], check=True)
        shape = tuple(np.load(source, mmap_mode="r").shape)
        nbytes = int(np.prod(shape))
        print(f"converting {shape} uint8 ...", flush=True)
        run = run_measured([sys.executable, "-m", "volseg", "convert", str(source), str(output),
                            "--voxel-size", "8", "8", "8", "--overwrite"])
        if run.returncode != 0:
            print(run.stdout, run.stderr, file=sys.stderr)
            return run.returncode
        result = {
            "benchmark": "bench_convert",
            "command": "volseg convert bench_input.npy bench_output.ome.zarr --voxel-size 8 8 8",
            "input_shape": list(shape), "input_dtype": "uint8", "input_bytes": nbytes,
            "output_bytes_on_disk": disk_usage(output),
            "wall_seconds": round(run.seconds, 2),
            "throughput_mib_per_s": round(nbytes / 2**20 / run.seconds, 1),
            "peak_rss_bytes": run.peak_rss_bytes,
            "peak_rss_gib": round(run.peak_rss_bytes / 2**30, 3),
            "target_peak_rss_gib": TARGET_RSS / 2**30,
            "rss_within_target": run.peak_rss_bytes < TARGET_RSS,
            "output_matches_input": spot_check(source, output),
            "volseg_summary": run.stdout.strip().splitlines(),
            "machine": machine(),
        }
    finally:
        if not args.keep:
            source.unlink(missing_ok=True)
            shutil.rmtree(output, ignore_errors=True)
    path = write_result("bench_convert", result)
    print(f"input          {shape} uint8, {nbytes / 2**30:.2f} GiB")
    print(f"wall time      {result['wall_seconds']} s (includes the pyramid)")
    print(f"throughput     {result['throughput_mib_per_s']} MiB/s of input")
    print(f"peak RSS       {result['peak_rss_gib']} GiB (target < 1.5 GiB: "
          f"{'ok' if result['rss_within_target'] else 'EXCEEDED'})")
    print(f"output         {result['output_bytes_on_disk'] / 2**30:.2f} GiB on disk, "
          f"matches input: {result['output_matches_input']}")
    print(f"saved          {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
