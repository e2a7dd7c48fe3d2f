"""``volseg bench gpu``: throughput per GPU (forward, volseg end to end, MONAI)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NAME = "bench"
HELP = "measure throughput per GPU: raw forward vs volseg end to end vs MONAI sliding window"
ORDER = 90


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``bench``'s options."""
    parser.add_argument("what", choices=["gpu"], help="the benchmark to run")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 512),
                        metavar=("Z", "Y", "X"), help="volume size (default 512^3)")
    parser.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128),
                        metavar=("Z", "Y", "X"), help="3D UNet patch (default 128^3)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                        help="auto needs a GPU; cpu runs a smoke test of the benchmark")
    parser.add_argument("--widths", type=int, nargs="+", default=(32, 64, 128, 256),
                        help="UNet channels per level")
    parser.add_argument("--output", type=Path, default=Path("bench_gpu.json"),
                        help="where the JSON goes (default ./bench_gpu.json)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the figures and write the JSON."""
    from volseg.bench.gpu import GpuBenchConfig, run_gpu_bench

    config = GpuBenchConfig(
        shape=tuple(args.shape), patch=tuple(args.patch), overlap=args.overlap,
        batch_size=args.batch_size, precision=args.precision, device=args.device,
        widths=tuple(args.widths),
    )
    result = run_gpu_bench(config)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    a, b, c = (result[k]["voxels_per_second"] for k in ("a_forward", "b_volseg", "c_monai"))
    busy = result["b_volseg"]["gpu_busy_fraction"]
    print(f"device            {result['device'].get('gpu') or result['device']['device']}")
    print(f"(a) forward       {a / 1e6:10.2f} M voxels/s (patch voxels)")
    print(f"(b) volseg        {b / 1e6:10.2f} M voxels/s (volume voxels, OME-Zarr to OME-Zarr)")
    print(f"(c) MONAI         {c / 1e6:10.2f} M voxels/s (in memory)")
    print(f"redundancy        {result['redundancy']:.2f} patch voxels per voxel")
    print(f"(b) / ((a)/red.)  {result['b_over_a_per_redundancy']:.2f}   (b)/(c) "
          f"{result['b_over_c']:.2f}   GPU busy "
          f"{'n/a' if busy is None else f'{busy:.0%}'}")
    print(f"2048x1536x1065    {result['full_size_seconds_extrapolated']:.0f} s at (b) "
          "(extrapolated)")
    print(f"wrote {args.output}")
    return 0
