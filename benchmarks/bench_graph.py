"""Benchmark building and preparing the prediction graph of a full-size volume.

Nothing is computed: the input is a lazy array of zeros of the FIB-SEM stack's shape
(1065 × 1536 × 2048 by default), the network a 1 × 1 × 1 convolution, and the
outputs empty Zarr arrays (labels and 7-channel uint8 probabilities, as
``volseg predict`` writes them).  Measured, in seconds:

* ``predict_logits``: the overlap-add graph of the logits;
* ``joint_writes``: the write tasks of both outputs (one per block);
* ``plan_in_order``: materialising the graph and ranking its tasks for the local
  raster-order scheduler.

All three must stay linear in the number of blocks; handing Dask one collection per
block had made the preparation quadratic (356 s at 4,224 blocks).

Usage::

    .venv/bin/python benchmarks/bench_graph.py [--shape 1065 1536 2048] [--block 96 96 96]

Writes ``benchmarks/results/bench_graph.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_result


def main() -> int:
    """Build the graph, print and record the timings."""
    import dask.array as da
    import numpy as np
    import torch
    import zarr

    from volseg.inference.api import (
        Network,
        logits_to_labels,
        logits_to_probabilities,
        predict_logits,
    )
    from volseg.inference.options import PredictOptions
    from volseg.inference.pipeline import joint_writes, quantize
    from volseg.inference.stream import plan_in_order

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, default=[1065, 1536, 2048])
    p.add_argument("--block", nargs=3, type=int, default=[96, 96, 96])
    p.add_argument("--patch", nargs=3, type=int, default=[64, 64, 64])
    p.add_argument("--classes", type=int, default=7)
    args = p.parse_args()
    shape, block = tuple(args.shape), tuple(args.block)
    x = da.zeros(shape, chunks=block, dtype=np.float32)
    net = torch.nn.Conv3d(1, args.classes, 1)
    t0 = time.perf_counter()
    logits = predict_logits(
        x,
        net,
        PredictOptions(patch_size=tuple(args.patch), device="cpu", block_size=block),
        network=Network(out_channels=args.classes),
    )
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = zarr.open_group(str(Path(tmp) / "out.zarr"), mode="w", zarr_format=2)
        labels = root.create_array("labels", shape=shape, chunks=block, dtype=np.uint8)
        probs = root.create_array(
            "probs", shape=(args.classes, *shape), chunks=(args.classes, *block), dtype=np.uint8
        )
        pairs = [
            (logits_to_labels(logits), labels),
            (quantize(logits_to_probabilities(logits), "uint8"), probs),
        ]
        writes = joint_writes(pairs)
        t2 = time.perf_counter()
        plan = plan_in_order(writes.graph, writes.keys, writes.indices)
        t3 = time.perf_counter()
    figures = {
        "blocks": writes.total,
        "tasks": len(plan.tasks),
        "predict_logits_s": t1 - t0,
        "joint_writes_s": t2 - t1,
        "plan_in_order_s": t3 - t2,
    }
    print(
        f"{shape} in blocks of {block}: {writes.total} blocks, {len(plan.tasks)} tasks; "
        f"predict_logits {t1 - t0:.2f} s, joint_writes {t2 - t1:.2f} s, "
        f"plan_in_order {t3 - t2:.2f} s"
    )
    path = write_result(
        "bench_graph",
        {
            "config": {
                "shape": shape,
                "block": block,
                "patch": args.patch,
                "classes": args.classes,
            },
            "figures": figures,
            "machine": machine(),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
