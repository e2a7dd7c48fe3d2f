"""Benchmark blockwise prediction against MONAI's in-memory sliding window.

Same model (a MONAI ``UNet`` built from volseg's default ``unet3d`` architecture,
random weights), same patch geometry (patch, overlap, Gaussian blending with
``sigma_scale`` 0.125, batch size) and the same volume, generated blockwise into
``benchmarks/scratch/bench_predict/``:

(a) raw forward throughput, as ``volseg predict`` runs the network: the network the
    block tasks get (batch norms folded, convolution + PReLU fused, channels-last),
    volseg's ``Predictor`` (numpy in and out), one torch thread per pass and one pass
    per core at a time; measured in every round, in a fresh process;
(b) volseg end to end: ``volseg predict`` OME-Zarr -> OME-Zarr labels + uint8
    probabilities in a fresh process.  Its headline figure is the *whole command*
    (interpreter start-up, imports, argument parsing, loading the network, the
    blocks, the pyramids: what the user times); the command's own summary gives the
    block phase (building the graph, reading the input chunks, inference, blending,
    softmax/argmax/quantisation, writing both outputs with their level 1), the
    network load and the pyramids above level 1, which the JSON splits into parts
    and shares (start-up = wall time - the run's own time; forward passes
    estimated from (a) and the redundancy);
(c) MONAI in memory: the volume loaded into RAM, normalised, then
    ``monai.inferers.sliding_window_inference`` plus softmax -> uint8 and argmax,
    in a fresh process; throughput of the inference step alone (and of the whole
    run).  (c') is the same with the network converted to channels-last, as volseg
    runs model files on the CPU, to show how much of (b)/(c) that layout explains;
(d) peak RSS of the processes of (b) and (c) (psutil sampling of the process tree,
    and the kernel's ``ru_maxrss``);
(e) with ``--onnx``: onnxruntime (CPU) against torch for the same network, instead
    of (b)-(d): forward throughput of batches of patches with 1 and 2 intra-op threads
    (torch channels-last, as volseg runs model files on the CPU; onnxruntime on the
    network exported by ``torch.onnx``, as ``--backend onnx`` loads it), alternating
    ``--rounds`` times, and ``volseg predict --backend torch`` against ``--backend
    onnx`` end to end (block phase) on the same volume.  Ratios are onnxruntime /
    torch (> 1: onnxruntime faster).  Writes ``bench_predict_onnx.json``.
(f) output formats: (b) runs once per ``--formats`` entry each round (default NGFF
    0.5, zarr v3 with one shard per block and 64³ inner chunks, then NGFF 0.4, zarr v2
    with 64³-ish chunks, and NGFF 0.4 with one chunk per block, the layout before
    shards), reporting the block-phase and with-pyramid throughput, the ratios
    0.5 / 0.4 (target: 0.5 costs at most 10 %) and the number of files each writes.
    Chunks are the divisors of the block nearest 64.  The first format is the one
    compared with MONAI.

The host's speed drifts by 20-30 % over minutes, so (b) and (c) run alternately
``--rounds`` times (default 2) and the fastest run of each is compared (all runs,
with the load average before each, are in the JSON).

Targets on a CPU (issue #23): the whole command (b) >= 1.2 (c) and >= 1.2 (c'),
and peak RSS (b) <= 1/4 peak RSS (c).  With a GPU: (b) >= 0.8 (a) / redundancy and
(b) >= (c), where redundancy = evaluated patch voxels / volume voxels.  Every run
(a), (b) per format, (c) and (c') happens in each round, the order reversed every
other round; the fastest run of each kind counts.

The default network is the ``unet3d`` architecture at widths 8-16-32-64 (two
residual units per level, batch norm, 7 classes as in the FIB-SEM connectomics
example) rather than volseg's default 16-32-64-128: on a 2-core CPU the latter takes
about 2.5x longer per patch and the measurements would not fit in 10 minutes.
Pass ``--widths 16 32 64 128`` for the default widths.

Both (b) and (c) run with the same batch size, 2 by default; ``--batch-size 4``
writes ``bench_predict_batch4.json``.

Usage::

    .venv/bin/python benchmarks/bench_predict.py [--shape 256 512 512] [--patch 64 64 64]
        [--overlap 0.25] [--batch-size 2] [--classes 7] [--widths 8 16 32 64]
        [--device cpu] [--rounds 2] [--skip-monai] [--onnx]

Writes ``benchmarks/results/bench_predict.json`` and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SCRATCH, file_count, load_average, machine, run_measured, write_result

WORK = SCRATCH / "bench_predict"
MIB = 2**20


# ------------------------------------------------------------------------ set-up
def make_inputs(shape: tuple[int, int, int], patch: tuple[int, int, int], classes: int,
                widths: tuple[int, ...], seed: int = 0) -> tuple[Path, Path]:
    """Write the volume (blockwise, smooth noise) and a random-weight model file."""
    import dask.array as da
    import numpy as np
    import torch

    from volseg.io.omezarr import image_state, write_image
    from volseg.models import ModelSpec, Normalization, build_model, save_model

    WORK.mkdir(parents=True, exist_ok=True)
    image = WORK / f"image_{'x'.join(map(str, shape))}.ome.zarr"
    if image_state(image) != "complete":
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
    """(a) voxels/s of batches of random patches, run the way ``volseg predict`` runs them.

    The network as the block tasks get it (:func:`volseg.inference.cache.get_model`:
    batch norms folded, channels-last on the CPU) behind volseg's
    :class:`~volseg.inference.predictor.Predictor` (numpy in and out), one torch
    thread per pass and one pass per core at a time, as the block scheduler runs them.
    """
    import threading

    import numpy as np
    import torch

    from volseg.inference.api import model_ref
    from volseg.inference.cache import get_model
    from volseg.inference.predictor import Predictor, resolve_device
    from volseg.models import read_spec

    spec = read_spec(model)
    cached = get_model(model_ref(model, spec.kind), resolve_device("cpu"))
    predictor = Predictor(cached, kind=spec.kind, cpu_threads=1)
    workers = os.cpu_count() or 1
    x = np.random.default_rng(0).normal(size=(batch, spec.in_channels, *spec.patch_size)
                                        ).astype(np.float32)
    predictor(x)  # warm-up
    start = threading.Barrier(workers + 1)

    def work() -> None:
        predictor(x)  # each thread's own warm-up
        start.wait()
        for _ in range(repeats):
            predictor(x)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    voxels = workers * batch * repeats * math.prod(spec.patch_size)
    return {"seconds": dt, "patch_voxels": voxels, "voxels_per_s": voxels / dt,
            "torch_threads_per_pass": torch.get_num_threads(), "concurrent_passes": workers,
            "layout": str(cached.memory_format)}


def child_forward_backend(model: str, batch: int, repeats: int, backend: str,
                          threads: int) -> dict[str, Any]:
    """(e) voxels/s of batches of patches through torch (channels-last) or onnxruntime."""
    import torch

    from volseg.inference.cache import channels_last_format
    from volseg.models import load_model

    torch.set_num_threads(threads)
    net, spec = load_model(model, backend=backend)
    layout = channels_last_format(net)
    if backend == "torch":
        net = net.to(memory_format=layout)  # type: ignore[call-overload]
    x = torch.randn(batch, spec.in_channels, *spec.patch_size)
    if backend == "torch":
        x = x.contiguous(memory_format=layout)
    with torch.inference_mode():
        net(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            net(x)
        dt = time.perf_counter() - t0
    voxels = batch * repeats * math.prod(spec.patch_size)
    return {"backend": backend, "threads": threads, "seconds": dt, "patch_voxels": voxels,
            "voxels_per_s": voxels / dt}


def run_onnx_comparison(image: Path, model: Path, args: argparse.Namespace,
                        voxels: int) -> dict[str, Any]:
    """(e) onnxruntime against torch: forward passes and ``volseg predict`` end to end."""
    forward: dict[str, list[dict[str, Any]]] = {}
    predict: dict[str, list[dict[str, Any]]] = {"torch": [], "onnx": []}
    for _ in range(max(1, args.rounds)):
        for threads in (1, 2):
            for backend in ("torch", "onnx"):
                r = _child(["--child", "forward_backend", str(model), str(args.batch_size),
                            str(args.repeats), backend, str(threads)])
                forward.setdefault(f"{backend}_{threads}", []).append(r)
                print(f"(e) forward {backend}, {threads} thread(s): "
                      f"{r['voxels_per_s'] / 1e6:.3f} Mvoxels/s")
        for backend in ("torch", "onnx"):
            b = run_volseg(image, model, args, voxels, backend=backend)
            predict[backend].append(b)
    best = {k: max(r["voxels_per_s"] for r in v) for k, v in forward.items()}
    b_torch = _fastest(predict["torch"], "block_s")
    b_onnx = _fastest(predict["onnx"], "block_s")
    figures = {
        "forward_onnx_over_torch_1_thread": best["onnx_1"] / best["torch_1"],
        "forward_onnx_over_torch_2_threads": best["onnx_2"] / best["torch_2"],
        "predict_onnx_over_torch_blocks": b_torch["block_s"] / b_onnx["block_s"],
        "predict_labels_checksum_difference": b_onnx["labels_checksum"]
        - b_torch["labels_checksum"],
        "predict_probs_checksum_difference": b_onnx["probs_checksum"]
        - b_torch["probs_checksum"],
        "predict_onnx_network_load_s": b_onnx["model_s"],
    }
    print(f"onnxruntime / torch: forward {figures['forward_onnx_over_torch_1_thread']:.2f} "
          f"(1 thread), {figures['forward_onnx_over_torch_2_threads']:.2f} (2 threads); "
          f"volseg predict blocks {figures['predict_onnx_over_torch_blocks']:.2f} "
          f"(> 1: onnxruntime faster); network load with onnx "
          f"{b_onnx['model_s']:.1f} s (export in memory)")
    return {"forward": forward, "predict": predict, "best_forward": best,
            "figures": figures}


def child_monai(model: str, image: str, overlap: float, batch: int,
                channels_last: bool = False) -> dict[str, Any]:
    """(c) MONAI's sliding window on the whole volume in memory, plus read-outs."""
    import numpy as np
    import torch
    import zarr
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import UNet
    from safetensors.torch import load_file

    from volseg.models import read_spec

    t0 = time.perf_counter()
    spec = read_spec(model)  # MONAI's own UNet with the model file's weights
    p = spec.params
    net = UNet(spatial_dims=3, in_channels=spec.in_channels, out_channels=spec.out_channels,
               channels=p["widths"], strides=p.get("strides") or (2,) * (len(p["widths"]) - 1),
               num_res_units=p["num_res_units"], norm=p["norm"].upper(),
               dropout=p.get("dropout", 0.0))
    net.load_state_dict(load_file(model), strict=True)
    net.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
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


def run_volseg(image: Path, model: Path, args: argparse.Namespace,
               voxels: int, ngff: str = "0.5", backend: str = "auto") -> dict[str, Any]:
    """(b) one ``volseg predict`` run in a fresh process; its phases from its summary."""
    from volseg.inference.api import default_block_size

    version, _, variant = ngff.partition("-")
    out = WORK / f"prediction-{ngff}.ome.zarr"
    cmd = [sys.executable, "-m", "volseg", "predict", "--model", str(model), "--input",
           str(image), "--output", str(out), "--probabilities", "uint8",
           "--overlap", str(args.overlap), "--batch-size", str(args.batch_size),
           "--device", args.device, "--overwrite", "--ngff", version, "--backend", backend]
    block = args.block or default_block_size(args.shape, args.patch, "3d", args.overlap)
    if args.block:
        cmd += ["--block", *map(str, args.block)]
    if variant == "blockchunks":  # the 0.4 layout before shards: one chunk per block
        cmd += ["--chunks", *map(str, block)]
    load = load_average()
    run = run_measured(cmd)
    if run.returncode != 0:
        raise RuntimeError(f"volseg predict failed:\n{run.stderr[-3000:]}")
    text = run.stdout
    phases = {
        "block_s": r"computed in ([0-9.]+) s", "model_s": r"network loaded in ([0-9.]+) s",
        "pyramid_s": r"pyramids in ([0-9.]+) s", "run_s": r"([0-9.]+) s in all",
    }
    b: dict[str, Any] = {"ngff": ngff, "command_s": run.seconds,
                         "peak_rss_bytes": run.peak_rss_bytes, "stdout": text.strip(),
                         "load_average_before": load, "files": file_count(out),
                         "files_level0": file_count(out / "0")
                         + file_count(out / "labels" / "semantic" / "0")}
    for key, pattern in phases.items():
        found = re.search(pattern, text)
        if found is None:
            raise RuntimeError(f"no {key!r} in the output of volseg predict:\n{text}")
        b[key] = float(found.group(1))
    b["voxels_per_s"] = voxels / b["block_s"]
    b["voxels_per_s_with_pyramids"] = voxels / (b["block_s"] + b["pyramid_s"])
    b["voxels_per_s_command"] = voxels / run.seconds
    b.update(output_checksums(out))
    print(f"(b) volseg ({backend}, NGFF {ngff}): blocks {b['block_s']:.1f} s "
          f"({b['voxels_per_s'] / 1e6:.3f} "
          f"Mvoxels/s), + pyramids {b['pyramid_s']:.1f} s, network {b['model_s']:.1f} s, "
          f"whole command {run.seconds:.1f} s, peak RSS {run.peak_rss_bytes / MIB:.0f} MiB, "
          f"{b['files']} files ({b['files_level0']} at level 0), load {load}")
    return b


def run_monai(image: Path, model: Path, args: argparse.Namespace, voxels: int,
              channels_last: bool) -> dict[str, Any]:
    """(c) or (c') in a fresh process."""
    load = load_average()
    c = _child(["--child", "monai", str(model), str(image), str(args.overlap),
                str(args.batch_size), str(int(channels_last))])
    c["load_average_before"] = load
    c["voxels_per_s"] = voxels / c["inference_s"]
    c["voxels_per_s_whole_run"] = voxels / c["wall_s"]
    label = "(c')" if channels_last else "(c)"
    print(f"{label} MONAI in memory{' (channels-last)' if channels_last else ''}: inference "
          f"{c['inference_s']:.1f} s ({c['voxels_per_s'] / 1e6:.3f} Mvoxels/s), whole run "
          f"{c['wall_s']:.1f} s, peak RSS {c['peak_rss_bytes'] / MIB:.0f} MiB")
    return c


def _forward_run(argv: list[str]) -> dict[str, Any]:
    """(a) in a fresh process, with the load average before it."""
    load = load_average()
    fwd = _child(argv)
    fwd["load_average_before"] = load
    print(f"(a) forward as volseg runs it: {fwd['voxels_per_s'] / 1e6:.3f} Mvoxels/s of "
          f"patches ({fwd['concurrent_passes']} passes at a time, "
          f"{fwd['torch_threads_per_pass']} torch thread each, {fwd['layout']}), load {load}")
    return fwd


def _fastest(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return min(runs, key=lambda r: r[key])


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
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating runs of (b) and (c); the fastest of each counts")
    p.add_argument("--skip-monai", action="store_true")
    p.add_argument("--formats", nargs="+", default=["0.5", "0.4"],
                   choices=["0.4", "0.5", "0.4-blockchunks"],
                   help="NGFF versions (b) writes, each every round (first: vs MONAI); "
                        "0.4-blockchunks: NGFF 0.4 with one chunk per block (the layout "
                        "volseg wrote before shards)")
    p.add_argument("--onnx", action="store_true",
                   help="(e) only: onnxruntime against torch (bench_predict_onnx.json)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "forward":
            result = child_forward(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "forward_backend":
            result = child_forward_backend(rest[0], int(rest[1]), int(rest[2]), rest[3],
                                           int(rest[4]))
        else:
            result = child_monai(rest[0], rest[1], float(rest[2]), int(rest[3]),
                                 bool(int(rest[4])))
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

    if args.onnx:
        load_before = os.getloadavg()
        e = run_onnx_comparison(image, model, args, voxels)
        path = write_result("bench_predict_onnx", {
            "config": {"shape": shape, "patch": patch, "overlap": args.overlap,
                       "batch_size": args.batch_size, "classes": args.classes,
                       "widths": args.widths, "device": args.device, "block": args.block,
                       "rounds": args.rounds, "repeats": args.repeats},
            **e, "load_average_before": load_before, "machine": machine(),
        })
        print(f"load average before {load_before}, after {os.getloadavg()}; wrote {path}")
        return 0
    forward = ["--child", "forward", str(model), str(args.batch_size), str(args.repeats)]
    by_format: dict[str, list[dict[str, Any]]] = {f: [] for f in args.formats}
    a_runs: list[dict[str, Any]] = []
    c_runs: list[dict[str, Any]] = []
    c_last_runs: list[dict[str, Any]] = []
    for round_ in range(max(1, args.rounds)):
        print(f"-- round {round_ + 1} of {args.rounds}, load {load_average()}")
        steps: list[tuple[str, Any]] = [("a", lambda: _forward_run(forward))]
        steps += [(f"b {ngff}", lambda ngff=ngff: run_volseg(image, model, args, voxels, ngff))
                  for ngff in args.formats]
        if not args.skip_monai:
            steps += [("c", lambda: run_monai(image, model, args, voxels, False)),
                      ("c'", lambda: run_monai(image, model, args, voxels, True))]
        if round_ % 2:  # alternate the order: no kind always runs first or last
            steps = steps[::-1]
        for kind, step in steps:
            result = step()
            if kind == "a":
                a_runs.append(result)
            elif kind == "c":
                c_runs.append(result)
            elif kind == "c'":
                c_last_runs.append(result)
            else:
                by_format[kind[2:]].append(result)
    fwd = max(a_runs, key=lambda r: r["voxels_per_s"])
    b_runs = by_format[args.formats[0]]
    b = _fastest(b_runs, "block_s")
    b_cmd = _fastest(b_runs, "command_s")
    c = _fastest(c_runs, "inference_s") if c_runs else None
    c_last = _fastest(c_last_runs, "inference_s") if c_last_runs else None

    patch_voxels = redundancy * voxels
    figures: dict[str, Any] = {
        "redundancy": redundancy,
        "b_over_a_times_redundancy": b["voxels_per_s"] * redundancy / fwd["voxels_per_s"],
        "formats": {},
        # where the whole command's time goes (its fastest run)
        "command_parts_s": {
            "start_up": b_cmd["command_s"] - b_cmd["run_s"],
            "network": b_cmd["model_s"],
            "forward_estimate": patch_voxels / fwd["voxels_per_s"],
            "blocks_other": b_cmd["block_s"] - patch_voxels / fwd["voxels_per_s"],
            "pyramids": b_cmd["pyramid_s"],
            "other": b_cmd["run_s"] - b_cmd["model_s"] - b_cmd["block_s"]
            - b_cmd["pyramid_s"],
        },
    }
    figures["command_shares"] = {k: v / b_cmd["command_s"]
                                 for k, v in figures["command_parts_s"].items()}
    print("(b) whole command: " + ", ".join(
        f"{k} {v:.1f} s ({figures['command_shares'][k]:.0%})"
        for k, v in figures["command_parts_s"].items()))
    for ngff, runs in by_format.items():
        best = _fastest(runs, "block_s")
        with_pyr = max(runs, key=lambda r: r["voxels_per_s_with_pyramids"])
        command = _fastest(runs, "command_s")
        figures["formats"][ngff] = {
            "block_voxels_per_s": best["voxels_per_s"],
            "with_pyramids_voxels_per_s": with_pyr["voxels_per_s_with_pyramids"],
            "command_voxels_per_s": command["voxels_per_s_command"],
            "files": best["files"], "files_level0": best["files_level0"]}
        print(f"(f) NGFF {ngff}: best blocks {best['voxels_per_s'] / 1e6:.3f} Mvoxels/s, with "
              f"pyramids {with_pyr['voxels_per_s_with_pyramids'] / 1e6:.3f} Mvoxels/s, "
              f"whole command {command['voxels_per_s_command'] / 1e6:.3f} Mvoxels/s, "
              f"{best['files']} files ({best['files_level0']} at level 0)")
    for base in ("0.4", "0.4-blockchunks"):
        if {base, "0.5"} <= set(by_format):
            f04, f05 = figures["formats"][base], figures["formats"]["0.5"]
            key = f"ngff05_over_{base.replace('.', '').replace('-', '_')}"
            figures[f"{key}_blocks"] = f05["block_voxels_per_s"] / f04["block_voxels_per_s"]
            figures[f"{key}_with_pyramids"] = (f05["with_pyramids_voxels_per_s"]
                                               / f04["with_pyramids_voxels_per_s"])
            figures[f"{key}_command"] = (f05["command_voxels_per_s"]
                                         / f04["command_voxels_per_s"])
            figures[f"{key}_files"] = f05["files"] / f04["files"]
            print(f"(f) throughput NGFF 0.5 / {base}: blocks {figures[f'{key}_blocks']:.3f}, "
                  f"with pyramids {figures[f'{key}_with_pyramids']:.3f}, whole command "
                  f"{figures[f'{key}_command']:.3f} (target >= 0.9); files {f05['files']} vs "
                  f"{f04['files']}")
    if c is not None and c_last is not None:
        rss = max(r["peak_rss_bytes"] for r in b_runs) / min(
            r["peak_rss_bytes"] for r in c_runs)
        figures.update({
            "b_command_over_c": b_cmd["voxels_per_s_command"] / c["voxels_per_s"],
            "b_command_over_c_channels_last": b_cmd["voxels_per_s_command"]
            / c_last["voxels_per_s"],
            "b_command_over_c_whole_script": _fastest(c_runs, "wall_s")["wall_s"]
            / b_cmd["command_s"],
            "b_over_c_throughput": b["voxels_per_s"] / c["voxels_per_s"],
            "b_with_pyramids_over_c": b["voxels_per_s_with_pyramids"] / c["voxels_per_s"],
            "b_over_c_channels_last": b["voxels_per_s"] / c_last["voxels_per_s"],
            "b_over_c_peak_rss": rss,
            "a_over_c_forward": fwd["voxels_per_s"] / (patch_voxels / c["inference_s"]),
            "labels_checksum_difference": b["labels_checksum"] - c["labels_checksum"],
            "probs_checksum_difference": b["probs_checksum"] - c["probs_checksum"],
        })
        print(f"(d) peak RSS: volseg {max(r['peak_rss_bytes'] for r in b_runs) / MIB:.0f} MiB"
              f" vs MONAI {min(r['peak_rss_bytes'] for r in c_runs) / MIB:.0f} MiB -> ratio "
              f"{rss:.2f} (target <= 0.25)")
        print(f"whole command / MONAI bare step = {figures['b_command_over_c']:.2f} (target >= "
              f"1.2); / channels-last MONAI step {figures['b_command_over_c_channels_last']:.2f}"
              f" (target >= 1.2); MONAI whole script / whole command (wall) = "
              f"{figures['b_command_over_c_whole_script']:.2f}")
        print(f"block phase / MONAI bare step = {figures['b_over_c_throughput']:.2f}; with "
              f"pyramids {figures['b_with_pyramids_over_c']:.2f}; / channels-last step "
              f"{figures['b_over_c_channels_last']:.2f}")
        print(f"label / probability checksums volseg - MONAI: "
              f"{figures['labels_checksum_difference']} / "
              f"{figures['probs_checksum_difference']}")
    print(f"(b) / ((a) / redundancy) = {figures['b_over_a_times_redundancy']:.2f}")
    name = "bench_predict" if args.batch_size == 2 else f"bench_predict_batch{args.batch_size}"
    path = write_result(name, {
        "config": {"shape": shape, "patch": patch, "overlap": args.overlap,
                   "batch_size": args.batch_size, "classes": args.classes,
                   "widths": args.widths, "device": args.device, "block": args.block,
                   "patches": len(grid), "rounds": args.rounds, "formats": args.formats,
                   "repeats": args.repeats},
        "a_forward": fwd, "b_volseg": b, "b_volseg_command": b_cmd, "c_monai": c,
        "c_monai_channels_last": c_last, "a_runs": a_runs,
        "b_runs": b_runs, "b_runs_by_format": by_format, "c_runs": c_runs,
        "c_channels_last_runs": c_last_runs,
        "figures": figures, "machine": machine(),
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
