"""Benchmark dense centre-voxel evaluation against classifying each voxel's own patch.

A centre-voxel CNN (volseg's ``centre_voxel`` architecture: valid 3³ convolutions,
receptive field R) decides one voxel from an R³ cube.  Patch by patch, every voxel
costs a whole forward pass over its cube; densely (``predict_logits(...,
kind="centre_voxel")``: one pass per block plus a halo of R - 1) every voxel costs
about one output position per layer.  On the same volume this prints

* dense throughput (voxels/s, the whole volume, blockwise with Dask);
* patch-by-patch throughput, measured on a random sample of voxels (batched
  cubes through the unmodified network) and extrapolated to the volume;
* the speed-up, and the largest difference between the two on the sample (they
  agree to float32 rounding, border voxels included: both pad the volume by
  reflection).

A second case does the same for a network with max-pooling and a strided
convolution, evaluated densely after filter rarefaction
(:func:`volseg.inference.densify`).

Usage::

    .venv/bin/python benchmarks/bench_centre_voxel.py [--shape 48 192 192] [--r 32]
        [--width 32] [--sample 256] [--block 96 96 96]

Writes ``benchmarks/results/bench_centre_voxel.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SCRATCH, machine, write_result


def _patchwise(net: Any, volume: np.ndarray, r: int, positions: np.ndarray,
               batch: int) -> tuple[np.ndarray, float]:
    """Classify each sampled voxel from its own cube; return outputs and seconds."""
    import torch

    before, after = r // 2, r - 1 - r // 2
    padded = np.pad(volume, [(before, after)] * 3, mode="reflect")
    outs = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(positions), batch):
            cubes = np.stack([padded[z:z + r, y:y + r, x:x + r]
                              for z, y, x in positions[first:first + batch]])
            out = net(torch.from_numpy(cubes[:, None]))
            outs.append(out[:, :, 0, 0, 0].numpy())
    return np.concatenate(outs), time.perf_counter() - t0


def _case(name: str, net: Any, volume: np.ndarray, r: int, sample: int, batch: int,
          block: tuple[int, int, int], seed: int) -> dict[str, Any]:
    import torch

    from volseg.inference import Network, PredictOptions, predict_logits

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    dense = predict_logits(
        volume,
        net,
        PredictOptions(patch_size=block, block_size=block, device="cpu", cpu_threads=None),
        network=Network(kind="centre_voxel", receptive_field=r),
    ).compute()  # the threads torch has, as patchwise
    dense_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    pos = np.stack([rng.integers(0, n, sample) for n in volume.shape], axis=1)
    pos[:8] = (
        np.array(np.meshgrid(*[[0, n - 1] for n in volume.shape], indexing="ij")).reshape(3, -1).T
    )  # the corners
    ref, patch_s = _patchwise(net, volume, r, pos, batch)
    got = dense[:, pos[:, 0], pos[:, 1], pos[:, 2]].T
    voxels = volume.size
    dense_vps = voxels / dense_s
    patch_vps = sample / patch_s
    result = {
        "case": name,
        "receptive_field": r,
        "shape": list(volume.shape),
        "dense_s": dense_s,
        "dense_voxels_per_s": dense_vps,
        "patchwise_sample": sample,
        "patchwise_s": patch_s,
        "patchwise_voxels_per_s": patch_vps,
        "patchwise_extrapolated_s": voxels / patch_vps,
        "speedup": dense_vps / patch_vps,
        "max_abs_difference": float(np.abs(got - ref).max()),
    }
    print(
        f"[{name}] R={r}: dense {dense_s:.1f} s ({dense_vps:,.0f} voxels/s); patch by "
        f"patch {patch_vps:,.1f} voxels/s (sample of {sample}, whole volume "
        f"~{voxels / patch_vps / 3600:.1f} h) -> speed-up {dense_vps / patch_vps:,.0f}x; "
        f"max |dense - patchwise| = {result['max_abs_difference']:.2e}"
    )
    return result


def pooled_net(width: int, classes: int) -> Any:
    """conv3 - maxpool2 - conv3 stride 2 - conv3 - conv2 - 1x1 head (R = 20)."""
    import torch
    from torch import nn

    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv3d(1, width, 3),
        nn.ReLU(),
        nn.MaxPool3d(2),
        nn.Conv3d(width, width, 3, stride=2),
        nn.ReLU(),
        nn.Conv3d(width, width, 3),
        nn.ReLU(),
        nn.Conv3d(width, width, 2),
        nn.ReLU(),
        nn.Conv3d(width, classes, 1),
    ).eval()


def main() -> int:
    """Run both cases, print the figures and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, default=[48, 192, 192])
    p.add_argument("--r", type=int, default=32, help="receptive field of the plain net")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--sample", type=int, default=256, help="voxels classified one by one")
    p.add_argument("--batch", type=int, default=64, help="cubes per patch-wise forward")
    p.add_argument(
        "--block",
        nargs=3,
        type=int,
        default=[96, 96, 96],
        help="blocks = dense tiles (one forward pass each)",
    )
    args = p.parse_args()

    import torch

    from volseg.inference import receptive_field
    from volseg.models import ModelSpec, build_model

    shape = tuple(args.shape)
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype(np.float32)
    print(
        f"volume {shape} ({math.prod(shape) / 1e6:.1f} Mvoxels), {torch.get_num_threads()} "
        f"torch threads"
    )
    spec = ModelSpec(
        architecture="centre_voxel",
        params={"receptive_field": args.r, "width": args.width},
        classes=tuple(f"c{i}" for i in range(args.classes)),
        patch_size=(32, 32, 32),
    )
    torch.manual_seed(0)
    net = build_model(spec).eval()
    block = (int(args.block[0]), int(args.block[1]), int(args.block[2]))
    cases = [_case("plain", net, volume, args.r, args.sample, args.batch, block, 1)]
    pooled = pooled_net(args.width, args.classes)
    cases.append(
        _case(
            "pooled+strided (densified)",
            pooled,
            volume,
            receptive_field(pooled),
            args.sample,
            args.batch,
            block,
            2,
        )
    )
    SCRATCH.mkdir(parents=True, exist_ok=True)
    path = write_result(
        "bench_centre_voxel",
        {
            "config": {
                "shape": shape,
                "width": args.width,
                "classes": args.classes,
                "sample": args.sample,
                "batch": args.batch,
                "block": args.block,
                "receptive_field": args.r,
            },
            "cases": cases,
            "machine": machine(),
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
