"""Benchmark blockwise prediction against MONAI's in-memory sliding window.

Same model (a MONAI ``UNet`` built from volseg's default ``unet3d`` architecture,
random weights), same patch geometry (patch, overlap, Gaussian blending with
``sigma_scale`` 0.125, batch size) and the same volume, generated blockwise into
``benchmarks/scratch/bench_predict/``:

(a) raw forward throughput: voxels/s of batches of random patches through the net;
(b) volseg end to end: ``volseg predict`` OME-Zarr -> OME-Zarr labels + uint8
    probabilities (with pyramids) in a fresh process: voxels / wall time of the
    whole command (start-up and I/O included);
(c) MONAI in memory: the volume loaded into RAM, normalised, then
    ``monai.inferers.sliding_window_inference`` plus softmax -> uint8 and argmax,
    in a fresh process; throughput of the inference step (and of the whole run);
(d) peak RSS of the processes of (b) and (c) (psutil sampling of the process tree,
    and the kernel's ``ru_maxrss``).

Targets on a CPU: (b) >= 0.9 (c) and peak RSS (b) <= 1/4 peak RSS (c).  With a GPU:
(b) >= 0.8 (a) / redundancy and (b) >= (c), where redundancy = evaluated patch
voxels / volume voxels.

The default network is the ``unet3d`` architecture at widths 8-16-32-64 (two
residual units per level, batch norm, 7 classes as in the FIB-SEM connectomics
example) rather than volseg's default 16-32-64-128: on a 2-core CPU the latter takes
about 2.5x longer per patch and the three measurements would not fit in 10 minutes.
Pass ``--widths 16 32 64 128`` for the default widths.

Both (b) and (c) run with the same batch size, 2 by default, the faster one for
both on the benchmark machine: (b) 40.4 s at batch 2 vs 45.1 s at batch 4, (c)'s
inference step 22.8 s vs 28.8 s.  ``--batch-size 4`` gives the other figure,
written to ``bench_predict_batch4.json``.  (b) also reports its
compute phase alone (``volseg predict``'s "computed in" line: the blocks, without
start-up imports and pyramid), for comparison with (c), which excludes imports,
model loading and read-outs.

Usage::

    .venv/bin/python benchmarks/bench_predict.py [--shape 256 512 512] [--patch 64 64 64]
        [--overlap 0.25] [--batch-size 2] [--classes 7] [--widths 8 16 32 64]
        [--device cpu] [--skip-monai]

Writes ``benchmarks/results/bench_predict.json`` and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SCRATCH, machine, run_measured, write_result

WORK = SCRATCH / "bench_predict"
MIB = 2**20


# ------------------------------------------------------------------------ set-up
def make_inputs(shape: tuple[int, int, int], patch: tuple[int, int, int], classes: int,
                widths: tuple[int, ...], seed: int = 0) -> tuple[Path, Path]:
    """Write the volume (blockwise, smooth noise) and a random-weight model file."""
    import dask.array as da
    import numpy as np
    import torch

    from volseg.io.omezarr import write_image
    from volseg.models import ModelSpec, Normalization, build_model, save_model

    WORK.mkdir(parents=True, exist_ok=True)
    image = WORK / f"image_{'x'.join(map(str, shape))}.ome.zarr"
    if not (image / "0" / ".zarray").exists():
        rng = da.random.default_rng(seed)
        noise = rng.normal(128.0, 40.0, size=shape, chunks=(64, 256, 256))
        volume = da.clip(noise, 0, 255).astype(np.uint8)
        write_image(volume, image, voxel_size=(8.0, 8.0, 8.0), chunks=(64, 64, 64),
                    overwrite=True, pyramid=False)
    spec = ModelSpec(
        architecture="unet3d",
        params={"widths": list(widths), "num_res_units": 2, "norm": "batch"},
        classes=tuple(f"class{i}" for i in range(classes)), patch_size=patch,
        normalization=Normalization(mode="meanstd", mean=128.0, std=40.0))
    torch.manual_seed(seed)
    model = WORK / f"model_{'-'.join(map(str, widths))}_{classes}.safetensors"
    save_model(build_model(spec).eval(), spec, model, overwrite=True)
    return image, model


# --------------------------------------------------------------- child processes
def child_forward(model: str, batch: int, repeats: int) -> dict[str, Any]:
    """(a) voxels/s of batches of random patches through the network."""
    import torch

    from volseg.models import load_model

    net, spec = load_model(model)
    x = torch.randn(batch, spec.in_channels, *spec.patch_size)
    with torch.inference_mode():
        net(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
        dt = time.perf_counter() - t0
    voxels = batch * repeats * math.prod(spec.patch_size)
    return {"seconds": dt, "patch_voxels": voxels, "voxels_per_s": voxels / dt,
            "torch_threads": torch.get_num_threads()}


def child_monai(model: str, image: str, overlap: float, batch: int) -> dict[str, Any]:
    """(c) MONAI's sliding window on the whole volume in memory, plus read-outs."""
    import numpy as np
    import torch
    import zarr
    from monai.inferers import sliding_window_inference

    from volseg.models import load_model

    t0 = time.perf_counter()
    net, spec = load_model(model)
    raw = np.asarray(zarr.open_array(str(Path(image) / "0"), mode="r")[...])
    x = torch.from_numpy(spec.normalization.apply(raw))[None, None]
    del raw
    t1 = time.perf_counter()
    with torch.inference_mode():
        logits = sliding_window_inference(x, spec.patch_size, batch, net, overlap=overlap,
                                          mode="gaussian", sigma_scale=0.125)
        assert isinstance(logits, torch.Tensor)
        t2 = time.perf_counter()
        probs = torch.softmax(logits[0], dim=0)
        probs_u8 = torch.round(probs * 255).to(torch.uint8)
        labels = torch.argmax(logits[0], dim=0).to(torch.uint8)
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "inference_s": t2 - t1, "readout_s": t3 - t2,
            "total_s": t3 - t0, "voxels": int(labels.numel()),
            "labels_checksum": int(labels.sum()), "probs_checksum": int(probs_u8.sum())}


def output_checksums(output: Path) -> dict[str, int]:
    """Sums of the labels and uint8 probabilities volseg wrote (compared with MONAI's)."""
    import numpy as np
    import zarr

    labels = zarr.open_array(str(output / "labels" / "semantic" / "0"), mode="r")
    probs = zarr.open_array(str(output / "0"), mode="r")
    return {
        "labels_checksum": int(labels[...].sum(dtype=np.int64)),
        "probs_checksum": sum(int(probs[c].sum(dtype=np.int64))
                              for c in range(probs.shape[0])),
    }


# ------------------------------------------------------------------------ driver
def _child(argv: list[str]) -> dict[str, Any]:
    res = run_measured([sys.executable, __file__, *argv])
    if res.returncode != 0:
        raise RuntimeError(f"child {argv[0]} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s"] = res.seconds
    out["peak_rss_bytes"] = res.peak_rss_bytes
    return out


def main() -> int:
    """Run the benchmark; print the figures and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, default=[256, 512, 512])
    p.add_argument("--patch", nargs=3, type=int, default=[64, 64, 64])
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--widths", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--device", default="cpu")
    p.add_argument("--block", nargs=3, type=int)
    p.add_argument("--repeats", type=int, default=4, help="forward batches timed in (a)")
    p.add_argument("--skip-monai", action="store_true")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "forward":
            result = child_forward(rest[0], int(rest[1]), int(rest[2]))
        else:
            result = child_monai(rest[0], rest[1], float(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return 0

    from volseg.geometry import PatchGrid

    shape, patch = tuple(args.shape), tuple(args.patch)
    voxels = math.prod(shape)
    grid = PatchGrid.create(shape, patch, args.overlap)
    redundancy = len(grid) * math.prod(patch) / voxels
    print(f"volume {shape} ({voxels / 1e6:.1f} Mvoxels), patch {patch}, overlap "
          f"{args.overlap}: {len(grid)} patches, redundancy {redundancy:.2f}")
    t0 = time.perf_counter()
    image, model = make_inputs(shape, patch, args.classes, tuple(args.widths))
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s: {image.name}, {model.name}")

    fwd = _child(["--child", "forward", str(model), str(args.batch_size), str(args.repeats)])
    print(f"(a) forward: {fwd['voxels_per_s'] / 1e6:.3f} Mvoxels/s of patches "
          f"(batch {args.batch_size}, {fwd['torch_threads']} torch threads)")

    out = WORK / "prediction.ome.zarr"
    cmd = [sys.executable, "-m", "volseg", "predict", "--model", str(model), "--input",
           str(image), "--output", str(out), "--probabilities", "uint8",
           "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
           "--device", args.device, "--overwrite"]
    if args.block:
        cmd += ["--block", *map(str, args.block)]
    run_b = run_measured(cmd)
    if run_b.returncode != 0:
        raise RuntimeError(f"volseg predict failed:\n{run_b.stderr[-3000:]}")
    b = {"wall_s": run_b.seconds, "peak_rss_bytes": run_b.peak_rss_bytes,
         "voxels_per_s": voxels / run_b.seconds, "stdout": run_b.stdout.strip()}
    computed = re.search(r"computed in ([0-9.]+) s", run_b.stdout)
    if computed:
        b["compute_s"] = float(computed.group(1))
        b["compute_voxels_per_s"] = voxels / b["compute_s"]
    b.update(output_checksums(out))
    print(f"(b) volseg end to end: {run_b.seconds:.1f} s, {b['voxels_per_s'] / 1e6:.3f} "
          f"Mvoxels/s, peak RSS {run_b.peak_rss_bytes / MIB:.0f} MiB")

    c: dict[str, Any] | None = None
    if not args.skip_monai:
        c = _child(["--child", "monai", str(model), str(image), str(args.overlap),
                    str(args.batch_size)])
        c["voxels_per_s"] = voxels / c["inference_s"]
        c["voxels_per_s_whole_run"] = voxels / c["wall_s"]
        print(f"(c) MONAI in memory: inference {c['inference_s']:.1f} s "
              f"({c['voxels_per_s'] / 1e6:.3f} Mvoxels/s), whole run {c['wall_s']:.1f} s, "
              f"peak RSS {c['peak_rss_bytes'] / MIB:.0f} MiB")

    figures: dict[str, Any] = {
        "redundancy": redundancy,
        "b_over_a_times_redundancy": b["voxels_per_s"] * redundancy / fwd["voxels_per_s"],
    }
    if c is not None:
        figures["b_over_c_throughput"] = b["voxels_per_s"] / c["voxels_per_s"]
        if "compute_voxels_per_s" in b:
            figures["b_compute_over_c_throughput"] = (
                b["compute_voxels_per_s"] / c["voxels_per_s"])
        figures["b_over_c_peak_rss"] = b["peak_rss_bytes"] / c["peak_rss_bytes"]
        figures["b_over_c_whole_run"] = c["wall_s"] / b["wall_s"]
        figures["labels_checksum_difference"] = b["labels_checksum"] - c["labels_checksum"]
        figures["probs_checksum_difference"] = b["probs_checksum"] - c["probs_checksum"]
        print(f"(d) peak RSS: volseg {b['peak_rss_bytes'] / MIB:.0f} MiB vs MONAI "
              f"{c['peak_rss_bytes'] / MIB:.0f} MiB -> ratio "
              f"{figures['b_over_c_peak_rss']:.2f} (target <= 0.25)")
        print(f"throughput (b)/(c) = {figures['b_over_c_throughput']:.2f} (target >= 0.9); "
              f"whole runs (c)/(b) wall = {figures['b_over_c_whole_run']:.2f}")
        if "b_compute_over_c_throughput" in figures:
            print(f"compute phase of (b) / (c) = "
                  f"{figures['b_compute_over_c_throughput']:.2f}")
        print(f"label / probability checksums volseg - MONAI: "
              f"{figures['labels_checksum_difference']} / "
              f"{figures['probs_checksum_difference']}")
    print(f"(b) / ((a) / redundancy) = {figures['b_over_a_times_redundancy']:.2f}")
    name = "bench_predict" if args.batch_size == 2 else f"bench_predict_batch{args.batch_size}"
    path = write_result(name, {
        "config": {"shape": shape, "patch": patch, "overlap": args.overlap,
                   "batch_size": args.batch_size, "classes": args.classes,
                   "widths": args.widths, "device": args.device, "block": args.block,
                   "patches": len(grid)},
        "a_forward": fwd, "b_volseg": b, "c_monai": c, "figures": figures,
        "machine": machine(),
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
