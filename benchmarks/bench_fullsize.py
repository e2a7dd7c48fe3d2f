"""Full-size benchmark: the ``fibsem`` workflow's synth → predict → labels path.

Generates the 2048 × 1536 × 1065 (x × y × z) FIB-SEM phantom blockwise into OME-Zarr
(with local threads), then runs the workflow's ``predict`` stage with a tiny
centre-voxel CNN (random weights: this measures the pipeline, not accuracy) on a
``distributed`` LocalCluster of worker processes, and reports wall time, voxels/s and
the peak RSS of every worker process.

Usage::

    python benchmarks/bench_fullsize.py                       # full size, 2 workers
    python benchmarks/bench_fullsize.py --shape 256 512 512   # a quicker run

Writes ``benchmarks/results/bench_fullsize[_ZxYxX].json``. Scratch data goes to
``benchmarks/scratch/fullsize`` (git-ignored) and is deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SCRATCH, machine, write_result

ROOT = Path(__file__).resolve().parents[1]
FULL = (1065, 1536, 2048)


class ProcessPeaks:
    """Sample the RSS of a process tree and keep each process's peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval
        self.peaks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    name = " ".join(proc.cmdline()[1:4])[:80]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if rss > self.peaks.get(proc.pid, ("", 0))[1]:
                    self.peaks[proc.pid] = (name, rss)
            time.sleep(self._interval)

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()


def tiny_model(path: Path) -> dict[str, object]:
    """Save a tiny random-weight centre-voxel CNN (7 classes) and return its spec."""
    import torch

    from volseg.models import ModelSpec, build_model, save_model

    spec = ModelSpec(
        architecture="centre_voxel",
        params={"receptive_field": 5, "width": 4, "head_width": 8, "norm": "none"},
        classes=("cytoplasm", "cell membrane", "mitochondrion", "mitochondrial membrane",
                 "synapse", "vesicle", "undefined"),
        patch_size=(32, 64, 64), voxel_size=(5.0, 5.0, 5.0),
    )
    torch.manual_seed(0)
    save_model(build_model(spec).eval(), spec, path, overwrite=True)
    return spec.model_dump(mode="json")


Peaks = dict[int, tuple[str, int]]


def run_stage(workdir: Path, stage: str, overrides: list[str]) -> tuple[float, Peaks]:
    """Run one stage of workflows/fibsem.yaml in a subprocess; return wall s and RSS peaks."""
    argv = [sys.executable, "-m", "volseg", "run", str(ROOT / "workflows" / "fibsem.yaml"),
            "--stages", stage, "--set", f"output_dir={workdir}"]
    for item in overrides:
        argv += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT)
    with ProcessPeaks(proc.pid) as peaks:
        code = proc.wait()
    if code != 0:
        raise SystemExit(f"stage {stage} failed with exit status {code}")
    return time.perf_counter() - start, peaks.peaks


def main() -> None:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=FULL, metavar=("Z", "Y", "X"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB")
    parser.add_argument("--block", type=int, nargs=3, default=(64, 256, 256))
    parser.add_argument("--keep", action="store_true", help="keep the scratch data")
    args = parser.parse_args()

    shape = tuple(args.shape)
    workdir = SCRATCH / "fullsize"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    spec = tiny_model(workdir / "model.safetensors")
    cluster = (f"cluster={{type: local, n_workers: {args.workers}, threads_per_worker: 1, "
               f"memory_limit: {args.memory_limit}, dashboard_address: null}}")
    # the phantom is preparation, not the measured path: local threads wrote it at
    # 1.67 M voxels/s at full size, worker processes at 0.68 M voxels/s (128x512x512)
    synth_s, _ = run_stage(workdir, "synth", [f"synth.shape={list(shape)}",
                                              "cluster={type: threads}"])
    predict_overrides = [cluster, "predict.probabilities=none",
                         f"predict.block_size={list(args.block)}", "predict.batch_size=1"]
    predict_s, peaks = run_stage(workdir, "predict", predict_overrides)
    marker = json.loads((workdir / ".volseg" / "stages" / "predict.json").read_text())
    voxels = shape[0] * shape[1] * shape[2]
    workers = {pid: rss for pid, (name, rss) in peaks.items()
               if "multiprocessing" in name and "resource_tracker" not in name}
    worker_peak = max(workers.values(), default=0)
    driver_peak = max((rss for pid, (name, rss) in peaks.items() if pid not in workers),
                      default=0)
    result = {
        "benchmark": "bench_fullsize",
        "shape_zyx": list(shape),
        "voxels": voxels,
        "model": spec,
        "workers": args.workers,
        "memory_limit": args.memory_limit,
        "block_zyx": list(args.block),
        "synth_seconds": round(synth_s, 1),
        "predict_seconds": round(predict_s, 1),
        "predict_stage_seconds": marker["seconds"],
        "predict_voxels_per_second": round(voxels / marker["seconds"]),
        "peak_rss_per_worker_bytes": sorted(workers.values(), reverse=True),
        "peak_rss_worker_max_gib": round(worker_peak / 2**30, 3),
        "peak_rss_driver_gib": round(driver_peak / 2**30, 3),
        "target_worker_gib": 4.0,
        "machine": machine(),
    }
    name = "bench_fullsize" if shape == FULL else "bench_fullsize_" + "x".join(map(str, shape))
    path = write_result(name, result)
    print(f"shape {shape}: synth {synth_s:.0f} s, predict {marker['seconds']:.0f} s "
          f"({voxels / marker['seconds'] / 1e6:.2f} M voxels/s), peak RSS per worker "
          f"{worker_peak / 2**30:.2f} GiB (target <= 4), driver {driver_peak / 2**30:.2f} GiB")
    print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
