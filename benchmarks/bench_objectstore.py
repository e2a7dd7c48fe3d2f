"""Benchmark volumes on object storage: convert and predict MB/s, local disk vs S3 on loopback.

Starts moto's S3 server on 127.0.0.1 (``volseg.io.servers``; request log kept),
writes an EM-like ``uint8`` ``.npy`` volume and a small 3-D UNet model file into
``benchmarks/scratch/`` (git-ignored), then, each round, alternating which goes
first:

* ``volseg convert`` input.npy → a local ``.ome.zarr`` and → ``s3://bench/…``;
* ``volseg predict`` local image → local prediction, and bucket image → bucket
  prediction (labels + uint8 probabilities, pyramids).

Each command runs in a fresh process (``python -m volseg``), so start-up is included
as a user sees it.  Reported per run: wall seconds, MB/s of level-0 input voxels
(MiB of the input array per second), the same from the seconds volseg itself reports
(``work_mib_per_s``: without the interpreter's start-up), the load average before
the run and, for the
S3 runs, the requests the server answered (by method) and requests per stored
object written (shards in NGFF 0.5, chunks in 0.4; markers and metadata counted as
requests, not as objects).  The fastest run of each case counts; the host is shared,
so the load average is recorded beside every figure.  Results go to
``benchmarks/results/bench_objectstore.json``.

Usage::

    python benchmarks/bench_objectstore.py                 # 64 × 512 × 512 (16 MiB)
    python benchmarks/bench_objectstore.py --shape 32 256 256 --rounds 1   # quick
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, load_average, machine, run_measured, write_result

BUCKET = "bench"
REQUEST = re.compile(r'"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/')


def make_input(path: Path, shape: tuple[int, int, int], seed: int = 0) -> None:
    """Write an EM-like volume (smooth structure plus noise) as ``.npy``."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    base = 40.0 * np.sin(y / 37.0) * np.cos(x / 53.0) * np.cos(z / 71.0)
    noise = rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    np.save(path, np.clip(128 + base + noise, 0, 255).astype(np.uint8))


def make_model(path: Path) -> None:
    """A small random-weight 3-D UNet model file (3 classes, patch 16 × 64 × 64)."""
    import torch

    from volseg.models import ModelSpec, Normalization, build_model, save_model

    spec = ModelSpec(architecture="unet3d", params={"widths": [8, 16], "num_res_units": 0},
                     classes=("bg", "membrane", "mito"), patch_size=(16, 64, 64),
                     normalization=Normalization(mode="meanstd", mean=128.0, std=40.0))
    torch.manual_seed(0)
    save_model(build_model(spec).eval(), spec, path)


def requests_since(log: Path, offset: int) -> tuple[Counter[str], int]:
    """Requests logged after byte ``offset`` of the server log, by method; new offset."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
        end = f.tell()
    return Counter(m.group(1) for m in REQUEST.finditer(text)), end


def stored_objects(fs: Any, prefix: str) -> int:
    """Chunk/shard objects under ``prefix`` (not metadata, not completion markers)."""
    keys = fs.find(prefix)
    return sum(1 for k in keys if not k.endswith((".zarray", ".zattrs", ".zgroup", "zarr.json"))
               and "/.volseg_done/" not in k)


def local_objects(path: Path) -> int:
    """Chunk/shard files under ``path`` (as :func:`stored_objects`)."""
    return sum(1 for p in path.rglob("*") if p.is_file() and ".volseg_done" not in p.parts
               and p.name not in (".zarray", ".zattrs", ".zgroup", "zarr.json"))


def reported_seconds(stdout: str) -> float | None:
    """The seconds volseg reports for the work itself: convert's ``... in X s (... MiB/s)``,
    predict's ``..., X s in all``."""
    match = re.search(r"([\d.]+) s in all", stdout) or re.search(
        r"in ([\d.]+) s \([\d.]+ MiB/s\)", stdout)
    return float(match.group(1)) if match else None


def run_case(name: str, argv: list[str], nbytes: int, *, log: Path, fs: Any,
             output: str) -> dict[str, Any]:
    """Run one volseg command in a fresh process; measure it (and its S3 requests)."""
    load = load_average()
    _, offset = requests_since(log, 0)
    run = run_measured([sys.executable, "-m", "volseg", *argv])
    if run.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{run.stdout}\n{run.stderr}")
    result: dict[str, Any] = {
        "case": name, "load_average_before": load, "wall_seconds": round(run.seconds, 2),
        "mib_per_s": round(nbytes / 2**20 / run.seconds, 2),
        "peak_rss_gib": round(run.peak_rss_bytes / 2**30, 3),
    }
    work = reported_seconds(run.stdout)  # volseg's own figure: no interpreter start-up
    if work is not None:
        result.update({"work_seconds": work, "work_mib_per_s": round(nbytes / 2**20 / work, 2)})
    if output.startswith("s3://"):
        counts, _ = requests_since(log, offset)
        objects = stored_objects(fs, output.removeprefix("s3://"))
        result.update({"requests": dict(counts), "requests_total": sum(counts.values()),
                       "objects_written": objects,
                       "requests_per_object": round(sum(counts.values()) / max(objects, 1), 2)})
    else:
        result["objects_written"] = local_objects(Path(output))
    extra = (f", {result['requests_total']} requests, {result['requests_per_object']} per "
             f"object" if "requests_total" in result else "")
    print(f"  {name}: {result['wall_seconds']} s, {result['mib_per_s']} MiB/s "
          f"({result.get('work_mib_per_s')} MiB/s without start-up), "
          f"{result['objects_written']} objects{extra}, load {load}", flush=True)
    return result


def main() -> None:
    """Run the benchmark and write ``benchmarks/results/bench_objectstore.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs=3, type=int, default=[64, 512, 512])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ngff", nargs="+", default=["0.5", "0.4"], choices=["0.4", "0.5"],
                        help="NGFF versions: 0.5 writes shards, 0.4 one object per chunk")
    parser.add_argument("--block", nargs=3, type=int, default=[32, 128, 128],
                        help="predict block size (z y x)")
    args = parser.parse_args()

    import s3fs

    from volseg.io.servers import s3_environment, s3_server

    shape = tuple(args.shape)
    nbytes = int(np.prod(shape))
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        root = Path(tmp)
        log = root / "s3.log"
        log.touch()
        source, model = root / "input.npy", root / "model.safetensors"
        make_input(source, shape)  # type: ignore[arg-type]
        make_model(model)
        runs: dict[str, list[dict[str, Any]]] = {}
        with s3_server(log=log) as endpoint, s3_environment(endpoint):
            fs = s3fs.S3FileSystem()
            fs.mkdir(BUCKET)
            bucket = f"s3://{BUCKET}"
            cases: dict[str, tuple[list[str], str]] = {}
            for ngff in args.ngff:
                common = ["--ngff", ngff, "--overwrite"]
                predict = ["--model", str(model), "--block", *map(str, args.block),
                           "--device", "cpu", "--probabilities", "uint8", "--overwrite",
                           "--ngff", ngff]
                local_image, s3_image = (root / f"image{ngff}.ome.zarr",
                                         f"{bucket}/image{ngff}.ome.zarr")
                local_pred, s3_pred = (root / f"pred{ngff}.ome.zarr",
                                       f"{bucket}/pred{ngff}.ome.zarr")
                cases.update({
                    f"convert local {ngff}": (["convert", str(source), str(local_image),
                                               *common], str(local_image)),
                    f"convert s3 {ngff}": (["convert", str(source), s3_image, *common],
                                           s3_image),
                    f"predict local {ngff}": (["predict", "--input", str(local_image),
                                               "--output", str(local_pred), *predict],
                                              str(local_pred)),
                    f"predict s3 {ngff}": (["predict", "--input", s3_image, "--output",
                                            s3_pred, *predict], s3_pred),
                })
            steps = [(step, ngff) for ngff in args.ngff for step in ("convert", "predict")]
            for round_ in range(args.rounds):
                print(f"round {round_ + 1} of {args.rounds}", flush=True)
                for step, ngff in steps:
                    names = [f"{step} local {ngff}", f"{step} s3 {ngff}"]
                    for name in names if round_ % 2 == 0 else names[::-1]:
                        argv, output = cases[name]
                        if output.startswith("s3://") and fs.exists(output):
                            fs.rm(output.removeprefix("s3://"), recursive=True)
                        runs.setdefault(name, []).append(
                            run_case(name, argv, nbytes, log=log, fs=fs, output=output))
        best = {name: min(rs, key=lambda r: r["wall_seconds"]) for name, rs in runs.items()}
        ratios = {f"{step} {ngff}": round(best[f"{step} s3 {ngff}"]["mib_per_s"]
                                          / best[f"{step} local {ngff}"]["mib_per_s"], 3)
                  for step, ngff in steps}
        work = {f"{step} {ngff}": round(best[f"{step} s3 {ngff}"].get("work_mib_per_s", 0)
                                        / max(best[f"{step} local {ngff}"].get(
                                            "work_mib_per_s", 0), 1e-9), 3)
                for step, ngff in steps}
    data = {
        "benchmark": "bench_objectstore",
        "command": "python benchmarks/bench_objectstore.py " + " ".join(sys.argv[1:]),
        "shape": list(shape), "input_mib": round(nbytes / 2**20, 2), "ngff": args.ngff,
        "predict_block": args.block, "s3": "moto server on 127.0.0.1 (loopback)",
        "best": best, "s3_over_local_throughput": ratios,
        "s3_over_local_throughput_without_startup": work, "runs": runs, "machine": machine(),
    }
    path = write_result("bench_objectstore", data)
    print(f"S3/local throughput: {ratios}; wrote {path}")


if __name__ == "__main__":
    main()
