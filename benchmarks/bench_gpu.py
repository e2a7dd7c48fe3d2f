"""Throughput per GPU (issue: GPU throughput): the same as ``volseg bench gpu``.

Usage (on a GPU machine)::

    python benchmarks/bench_gpu.py --precision bf16            # 512^3, default 3D UNet
    python benchmarks/bench_gpu.py --shape 1024 1024 1024 --batch-size 8

Writes ``benchmarks/results/bench_gpu_<gpu>_<precision>.json``.  Without a GPU it says
so and exits 2 (``--device cpu`` runs a smoke test of the benchmark itself).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from volseg.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--output" not in args:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        precision = args[args.index("--precision") + 1] if "--precision" in args else "bf16"
        tag = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
        RESULTS.mkdir(exist_ok=True)
        args += ["--output", str(RESULTS / f"bench_gpu_{tag}_{precision}.json")]
    sys.exit(main(["bench", "gpu", *args]))
