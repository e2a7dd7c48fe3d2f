"""Benchmark the dense CRF at scale: ``volseg crf`` end to end, voxels per core-second, shares.

Default (``--scale``, the figure of issue #23): a ``--shape`` volume (default
128 × 512 × 512) of noisy 7-class uint8 probabilities and an image
(:func:`volseg.crf.testing.noisy_phantom`, generated in z slabs), written as OME-Zarr
0.5, then the whole ``volseg crf`` command in a fresh process with the CRF section of
``workflows/fibsem.yaml`` (5 iterations, Gaussian 10 nm + bilateral 20 nm, its
compatibility matrix, its memory budget per block, 5 nm voxels: the halos it implies)
on ``--workers`` processes.  Figures:

* ``voxels_per_core_s``: output voxels / CPU seconds (user + system) of the command
  and its worker processes (robust to other load), and ``voxels_per_s`` (wall);
* the shares of that CPU time: a profile of one block of the run's own block size
  (core + halo, in a fresh process, part by part: unaries from the uint8
  probabilities, features, the two permutohedral lattices, pydensecrf2's mean-field
  inference, argmax) scaled to every block's extended voxels gives the kernel's parts
  on the core voxels, the same parts on the halo voxels (``halo_redundancy``), and
  the rest of the command (``io_and_other``: start-up, reading and decoding the
  inputs, ``map_overlap``'s halo assembly, writing the labels and their pyramid,
  process hand-over);
* peak RSS of the command's process tree.

``--kernel-cases`` adds the earlier single-call cases (``--sizes``, ``--modes``):
the blockwise CRF on dask's process scheduler and the whole-volume kernel, in fresh
subprocesses.

Usage::

    .venv/bin/python benchmarks/bench_crf.py [--shape 128 512 512] [--workers 2]
        [--memory-budget-mib N (default: fibsem.yaml's)] [--kernel-cases]

Writes ``benchmarks/results/bench_crf.json`` and prints the figures.
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


# ----------------------------------------------------------------- at scale (#23)
ROOT = Path(__file__).resolve().parents[1]
WORK = Path(__file__).resolve().parent / "scratch" / "bench_crf"
FIBSEM = ROOT / "workflows" / "fibsem.yaml"
SCALE_VOXEL = (5.0, 5.0, 5.0)  # fibsem.yaml's phantom: 5 nm isotropic


def fibsem_crf() -> dict[str, Any]:
    """The ``crf`` section of ``workflows/fibsem.yaml`` (the kernel and the block budget)."""
    import yaml

    section = dict(yaml.safe_load(FIBSEM.read_text())["crf"])
    keep = ("iterations", "gaussian_sigma_nm", "gaussian_weight", "bilateral_sigma_nm",
            "bilateral_intensity", "bilateral_weight", "compatibility", "memory_budget_mib")
    return {k: section[k] for k in keep if k in section}


def make_scale_inputs(shape: tuple[int, int, int], n_classes: int,
                      slab: int = 16) -> tuple[Path, Path]:
    """Probabilities (c, z, y, x uint8) and image as OME-Zarr 0.5, generated in z slabs."""
    import dask.array as da
    import numpy as np

    from volseg.crf.testing import noisy_phantom
    from volseg.io.omezarr import image_state, write_image

    WORK.mkdir(parents=True, exist_ok=True)
    tag = "x".join(map(str, shape))
    probs = WORK / f"probabilities_{tag}_{n_classes}.ome.zarr"
    image = WORK / f"image_{tag}.ome.zarr"
    if image_state(probs) == "complete" and image_state(image) == "complete":
        return probs, image
    q = np.empty((n_classes, *shape), dtype=np.uint8)
    img = np.empty(shape, dtype=np.uint8)
    for z in range(0, shape[0], slab):
        n = min(slab, shape[0] - z)
        _, q[:, z:z + n], img[z:z + n] = noisy_phantom((n, *shape[1:]), n_classes, seed=z)
    write_image(da.from_array(q, chunks=(n_classes, 64, 256, 256)), probs,
                voxel_size=SCALE_VOXEL, axes=("c", "z", "y", "x"), overwrite=True,
                pyramid=False)
    write_image(da.from_array(img, chunks=(64, 256, 256)), image, voxel_size=SCALE_VOXEL,
                overwrite=True, pyramid=False)
    return probs, image


def block_plan(shape: tuple[int, int, int], config: dict[str, Any], n_classes: int
               ) -> dict[str, Any]:
    """The blocks ``volseg crf`` makes: core size, halo, core and extended voxels."""
    import dask.array as da
    import numpy as np

    from volseg.crf import CRFConfig, crf_halo, crf_labels

    kernel = CRFConfig(**{k: v for k, v in config.items() if k != "memory_budget_mib"})
    lazy = crf_labels(da.zeros((n_classes, *shape), dtype=np.uint8),
                      da.zeros(shape, dtype=np.uint8), voxel_size=SCALE_VOXEL,
                      config=kernel, memory_budget=int(config["memory_budget_mib"]) * 2**20)
    halo = crf_halo(kernel, voxel_size=SCALE_VOXEL)
    halo = tuple(min(h, s - 1) if s > 1 else 0 for h, s in zip(halo, shape, strict=True))
    extended = []
    for idx in np.ndindex(*lazy.numblocks):
        ext = []
        for a in range(3):
            n, size = len(lazy.chunks[a]), lazy.chunks[a][idx[a]]
            ext.append(size + (halo[a] if idx[a] > 0 else 0)
                       + (halo[a] if idx[a] < n - 1 else 0))
        extended.append(ext)
    largest = max(extended, key=lambda e: int(np.prod(e)))
    total_ext = sum(int(np.prod(e)) for e in extended)
    return {"core": [int(c[0]) for c in lazy.chunks], "grid": list(lazy.numblocks),
            "blocks": len(extended), "halo": list(halo), "largest_extended": largest,
            "extended_voxels": total_ext, "voxels": int(np.prod(shape)),
            "halo_redundancy": total_ext / int(np.prod(shape))}


def profile_block(shape: tuple[int, int, int], n_classes: int, config: dict[str, Any]
                  ) -> dict[str, Any]:
    """CPU seconds of each part of ``dense_crf`` on one block of ``shape`` (this process)."""
    import numpy as np
    import pydensecrf.densecrf as dcrf

    from volseg.crf import CRFConfig
    from volseg.crf.kernel import _coordinate_features, compatibility_matrix, unary_energy
    from volseg.crf.testing import noisy_phantom

    c = CRFConfig(**{k: v for k, v in config.items() if k != "memory_budget_mib"})
    _, q, image = noisy_phantom(shape, n_classes, seed=3)
    n = int(np.prod(shape))
    parts: dict[str, float] = {}
    clock = time.thread_time()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.thread_time()
        parts[name] = parts.get(name, 0.0) + now - clock
        clock = now

    unary = unary_energy(q).reshape(n_classes, -1)
    tick("unaries")
    mu = compatibility_matrix(c.compatibility, n_classes)
    crf = dcrf.DenseCRF(n, n_classes)
    crf.setUnaryEnergy(unary)
    del unary
    tick("unaries")
    feats = _coordinate_features(shape, (0, 0, 0), SCALE_VOXEL, c.gaussian_sigma_nm)
    tick("features")
    crf.addPairwiseEnergy(feats, compat=np.ascontiguousarray(c.gaussian_weight * mu))
    tick("lattice_gaussian")
    del feats
    feats = np.empty((4, n), dtype=np.float32)
    feats[:3] = _coordinate_features(shape, (0, 0, 0), SCALE_VOXEL, c.bilateral_sigma_nm)
    feats[3] = (image.astype(np.float32) / np.float32(c.bilateral_intensity)).ravel()
    tick("features")
    crf.addPairwiseEnergy(feats, compat=np.ascontiguousarray(c.bilateral_weight * mu))
    tick("lattice_bilateral")
    del feats
    marginals = np.asarray(crf.inference(int(c.iterations)), dtype=np.float32)
    tick("inference")
    np.argmax(marginals.reshape(n_classes, *shape), axis=0).astype(np.uint8)
    tick("argmax")
    return {"shape": list(shape), "voxels": n, "cpu_s": parts,
            "ns_per_voxel": {k: v / n * 1e9 for k, v in parts.items()},
            "inference_ns_per_voxel_iteration": parts["inference"] / n
            / max(1, c.iterations) * 1e9,
            "peak_rss_mib": _peak_rss_mib()}


def run_scale(args: argparse.Namespace) -> dict[str, Any]:
    """``volseg crf`` end to end at scale, its block plan and the per-part profile."""
    import json as _json

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load_average, machine, run_measured

    shape = tuple(args.shape)
    config = fibsem_crf()
    if args.memory_budget_mib:
        config["memory_budget_mib"] = args.memory_budget_mib
    t0 = time.perf_counter()
    probs, image = make_scale_inputs(shape, args.classes)  # type: ignore[arg-type]
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s")
    plan = block_plan(shape, config, args.classes)  # type: ignore[arg-type]
    print(f"{plan['blocks']} blocks of {plan['core']} (grid {plan['grid']}), halo "
          f"{plan['halo']}: halo redundancy {plan['halo_redundancy']:.2f}")
    compat = WORK / "compatibility.yaml"
    compat.write_text(_json.dumps({"compatibility": config["compatibility"]}) + "\n")
    out = WORK / "crf.ome.zarr"
    cmd = [sys.executable, "-m", "volseg", "crf", "--probabilities", str(probs), "--image",
           str(image), "--output", str(out), "--overwrite", "--processes", str(args.workers),
           "--compat", str(compat), "--voxel-size", *map(str, SCALE_VOXEL),
           "--memory-budget", str(config["memory_budget_mib"])]
    for key, flag in (("iterations", "--iterations"), ("gaussian_sigma_nm", "--gaussian-sigma"),
                      ("gaussian_weight", "--gaussian-weight"),
                      ("bilateral_sigma_nm", "--bilateral-sigma"),
                      ("bilateral_intensity", "--bilateral-intensity"),
                      ("bilateral_weight", "--bilateral-weight")):
        if key in config:
            cmd += [flag, str(config[key])]
    runs = []
    for _ in range(max(1, args.rounds)):
        load = load_average()
        cpu0 = _cpu_seconds()
        res = run_measured(cmd)
        cpu = _cpu_seconds() - cpu0
        if res.returncode != 0:
            raise RuntimeError(f"volseg crf failed:\n{res.stderr[-3000:]}")
        runs.append({"wall_s": res.seconds, "cpu_s": cpu, "peak_rss_bytes": res.peak_rss_bytes,
                     "load_average_before": load, "stdout": res.stdout.strip(),
                     "voxels_per_s": plan["voxels"] / res.seconds,
                     "voxels_per_core_s": plan["voxels"] / cpu})
        print(f"volseg crf: {res.seconds:.1f} s wall, {cpu:.1f} CPU s -> "
              f"{plan['voxels'] / cpu / 1e6:.3f} M voxels per core-second, peak RSS "
              f"{res.peak_rss_bytes / 2**20:.0f} MiB, load {load}")
    best = min(runs, key=lambda r: r["cpu_s"])
    load = load_average()
    done = subprocess.run(
        [sys.executable, __file__, "--profile-block", "x".join(map(str, plan["largest_extended"])),
         "--classes", str(args.classes), "--memory-budget-mib",
         str(config["memory_budget_mib"])], capture_output=True, text=True, check=True)
    prof = json.loads(done.stdout.strip().splitlines()[-1])
    prof["load_average_before"] = load
    per_voxel = {k: v * 1e-9 for k, v in prof["ns_per_voxel"].items()}
    kernel = sum(per_voxel.values())
    voxels, ext = plan["voxels"], plan["extended_voxels"]
    parts = {f"{k}_core": v * voxels for k, v in per_voxel.items()}
    parts["halo_redundancy"] = kernel * (ext - voxels)
    parts["io_and_other"] = best["cpu_s"] - kernel * ext
    shares = {k: v / best["cpu_s"] for k, v in parts.items()}
    print("shares of the CPU time: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    print(f"kernel alone on the core voxels: {1 / kernel / 1e6:.3f} M voxels per core-second; "
          f"pydensecrf2 inference {prof['inference_ns_per_voxel_iteration']:.0f} ns per voxel "
          f"and iteration ({args.classes} classes, two kernels)")
    return {"config": {"shape": list(shape), "classes": args.classes, "workers": args.workers,
                       "voxel_size_nm": list(SCALE_VOXEL), "crf": config,
                       "rounds": args.rounds, "command": " ".join(
                           Path(c).name if c.startswith(str(ROOT)) else c for c in cmd[1:])},
            "blocks": plan, "runs": runs, "best": best, "block_profile": prof,
            "parts_cpu_s": parts, "shares": shares,
            "voxels_per_core_s": best["voxels_per_core_s"],
            "voxels_per_s": best["voxels_per_s"],
            "kernel_voxels_per_core_s": 1 / kernel,
            "target_voxels_per_core_s": 1e6, "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the figures and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[128, 512, 512])
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--rounds", type=int, default=1, help="runs of the command (best "
                                                              "counts)")
    parser.add_argument("--memory-budget-mib", type=int, default=None,
                        help="per block (default: fibsem.yaml's; kernel cases: 1024)")
    parser.add_argument("--kernel-cases", action="store_true",
                        help="also the single-call cases of --sizes and --modes")
    parser.add_argument("--sizes", nargs="+", default=["64x128x128", "96x256x256"])
    parser.add_argument("--modes", nargs="+", default=["gaussian", "bilateral", "whole"])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--profile-block", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_block:
        shape = tuple(int(s) for s in args.profile_block.split("x"))
        config = fibsem_crf()
        print(json.dumps(profile_block(shape, args.classes, config)))  # type: ignore[arg-type]
        return 0
    if args.case:
        shape_s, mode = args.case.split(":")
        shape = tuple(int(s) for s in shape_s.split("x"))
        print(json.dumps(run_case(shape, args.classes, mode, args.workers,  # type: ignore[arg-type]
                                  args.memory_budget_mib or 1024)))
        return 0
    record: dict[str, Any] = {
        "benchmark": "crf", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": os.getloadavg()}
    record["scale"] = run_scale(args)
    if args.kernel_cases:
        rows = []
        for size in args.sizes:
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--case", f"{size}:{mode}",
                       "--classes", str(args.classes), "--workers", str(args.workers),
                       "--memory-budget-mib", str(args.memory_budget_mib or 1024)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{size:>12} {mode:>9}: {row['voxels_per_s'] / 1e3:8.0f} kvox/s wall, "
                      f"{row['voxels_per_core_s'] / 1e3:8.0f} kvox/s per core, "
                      f"{row['blocks']} blocks of {'x'.join(map(str, row['block']))} halo "
                      f"{row['halo']}", flush=True)
        record["kernel_cases"] = {"voxel_size_nm": list(VOXEL), "results": rows,
                                  "machine": {"platform": platform.platform(),
                                              "cpu_count": os.cpu_count()}}
    record["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_crf.json"
    text = json.dumps(record, indent=2, default=str) + "\n"
    out.write_text(text.replace(str(ROOT) + "/", ""))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
