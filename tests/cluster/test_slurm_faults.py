"""Faults on a live SLURM: a worker job ``scancel``ed mid-predict; the driver SIGKILLed.

``volseg run`` (a real process) predicts with a random-weight 3-D UNet on two
single-core SLURM jobs.  One job is cancelled while blocks are being written: the run
completes on the remaining job and the replacement the keeper submits, the output
equals an undisturbed threaded run, and the log names the blocks that were recomputed.
Then the driver itself is killed mid-predict: its jobs end by themselves
(``death_timeout``) and a second ``volseg run`` resumes from the block markers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from volseg.io import open_volume
from volseg.io.omezarr import write_image
from volseg.io.store import MARKER_DIR
from volseg.models import ModelSpec, build_model, save_model

pytestmark = pytest.mark.usefixtures("slurm")

LABELS = Path("labels") / "semantic" / "0"
SHAPE = (48, 128, 128)
BLOCK = [8, 32, 32]
JOB = "volseg-test"


def _inputs(root: Path) -> None:
    """A random image and a random-weight 3-D UNet as the products of a run directory."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    write_image(rng.integers(0, 256, size=SHAPE, dtype=np.uint8), root / "image.ome.zarr",
                voxel_size=(5.0, 5.0, 5.0), chunks=(16, 32, 32))
    spec = ModelSpec(architecture="unet3d", params={"widths": [8, 16], "num_res_units": 0},
                     classes=("a", "b", "c"), patch_size=(8, 16, 16))
    torch.manual_seed(0)
    save_model(build_model(spec).eval(), spec, root / "model.safetensors")


def _workflow(tmp_path: Path, out: Path, **cluster: object) -> Path:
    settings = {"type": "slurm", "cores": 1, "memory": "3GiB", "jobs": 2,
                "walltime": "00:20:00", "interface": "lo", "dashboard_address": None,
                "job_name": JOB, "startup_timeout": 120, **cluster}
    text = ", ".join(f"{k}: {json.dumps(v)}" for k, v in settings.items())
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: faults
        output_dir: {out}
        cluster: {{{text}}}
        predict: {{block_size: {BLOCK}, batch_size: 2}}
        """))
    return path


def _markers(array_dir: Path) -> int:
    try:
        return len(os.listdir(array_dir / MARKER_DIR))
    except FileNotFoundError:
        return 0


def _read(path: Path) -> np.ndarray:
    array, _ = open_volume(path)
    return np.asarray(array)


def _jobs() -> list[str]:
    text = subprocess.run(["squeue", "-h", "-n", JOB, "-t", "RUNNING", "-o", "%i"],
                          capture_output=True, text=True, timeout=20).stdout
    return text.split()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The undisturbed prediction (threaded scheduler) and its number of blocks."""
    from volseg.inference.options import PredictOptions
    from volseg.inference.pipeline import run_predict

    ref = tmp_path_factory.mktemp("reference")
    _inputs(ref)
    report = run_predict(ref / "model.safetensors", ref / "image.ome.zarr",
                         ref / "prediction.ome.zarr",
                         PredictOptions(block_size=tuple(BLOCK), batch_size=2))
    return ref / "prediction.ome.zarr", report.total_blocks


def _command(workflow: Path) -> list[str]:
    return [sys.executable, "-m", "volseg", "run", str(workflow)]


ENV = {**os.environ, "PYTHONWARNINGS": "ignore",
       # Dask's wait before it gives a lost worker's job up (15 s) shortened for the test
       "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "2s"}


def test_a_worker_job_cancelled_mid_predict_costs_only_its_blocks(
        tmp_path: Path, reference: tuple[Path, int]) -> None:
    reference_path, total = reference
    out = tmp_path / "run"
    _inputs(out)
    labels = out / "prediction.ome.zarr" / LABELS
    proc = subprocess.Popen(_command(_workflow(tmp_path, out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    t0, cancelled, done_at_cancel = time.monotonic(), "", 0
    while time.monotonic() - t0 < 300 and proc.poll() is None:
        done = _markers(labels)
        jobs = _jobs()
        if total // 24 <= done < total // 2 and len(jobs) == 2:
            cancelled, done_at_cancel = jobs[0], done
            subprocess.run(["scancel", cancelled], check=True, timeout=20)
            break
        time.sleep(0.05)
    assert cancelled, f"no job could be cancelled mid-predict: {proc.communicate()[1][-3000:]}"
    _, log = proc.communicate(timeout=600)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, log[-4000:]
    print(f"\njob {cancelled} cancelled with {done_at_cancel}/{total} blocks written; run "
          f"finished in {seconds:.1f} s; load {os.getloadavg()[0]:.2f}")
    lost = re.search(rf"SLURM job {cancelled} \(worker [^)]*\) left; blocks recomputed "
                     r"elsewhere: ([^;]*?) \(assigned to it: ", log)
    assert lost, log[-4000:]
    print(next(line for line in log.splitlines() if f"SLURM job {cancelled} (" in line))
    # a replacement job is submitted; on a fast machine the surviving job may finish the
    # lost blocks before it is (the output checks below hold either way)
    replacement = re.search(r"replacement SLURM job (\d+) submitted", log)
    assert replacement is None or replacement.group(1) != cancelled, log[-4000:]
    print(replacement and replacement.group(0), re.findall(r"tasks executed in SLURM jobs.*", log))
    blocks = re.findall(r"\((\d+), (\d+), (\d+)\)", lost.group(1))
    grid = [s // b for s, b in zip(SHAPE, BLOCK, strict=True)]
    assert all(all(int(i) < n for i, n in zip(b, grid, strict=True)) for b in blocks)
    assert _markers(labels) >= total
    assert np.array_equal(_read(out / "prediction.ome.zarr" / "labels" / "semantic"),
                          _read(reference_path / "labels" / "semantic"))
    assert np.array_equal(_read(out / "prediction.ome.zarr"), _read(reference_path))
    summary = json.loads((out / ".volseg" / "stages" / "predict.json").read_text())
    assert summary["summary"]["computed_blocks"] == total


def test_a_killed_driver_leaves_no_jobs_and_the_rerun_resumes(
        tmp_path: Path, reference: tuple[Path, int]) -> None:
    reference_path, total = reference
    out = tmp_path / "run"
    _inputs(out)
    labels = out / "prediction.ome.zarr" / LABELS
    workflow = _workflow(tmp_path, out, death_timeout=5)
    proc = subprocess.Popen(_command(workflow), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if _markers(labels) >= total // 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
    jobs = _jobs()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    marked_at_kill = _markers(labels) - 1  # less the claim key
    assert 0 < marked_at_kill < total and jobs
    # the orphaned workers find no scheduler and end their jobs (death_timeout: 5 s)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60 and set(jobs) & set(_jobs()):
        time.sleep(0.5)
    assert not set(jobs) & set(_jobs()), f"jobs {jobs} still run after the driver died"
    orphans = time.monotonic() - t0

    rerun = subprocess.run(_command(workflow), capture_output=True, text=True, timeout=600,
                           env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    summary = json.loads((out / ".volseg" / "stages" / "predict.json").read_text())
    computed = summary["summary"]["computed_blocks"]
    print(f"\ndriver killed with {marked_at_kill}/{total} blocks written; its jobs ended "
          f"{orphans:.1f} s later; the rerun computed {computed} blocks")
    assert computed <= total - marked_at_kill + 2  # blocks torn at the kill, at most
    assert np.array_equal(_read(out / "prediction.ome.zarr" / "labels" / "semantic"),
                          _read(reference_path / "labels" / "semantic"))
    assert np.array_equal(_read(out / "prediction.ome.zarr"), _read(reference_path))
