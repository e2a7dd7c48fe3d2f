"""``volseg run workflows/demo.yaml`` (shrunk) on two SLURM jobs equals the threaded run.

The phantom and the model are made once (``--stages synth train``, threaded); a copy of
that run directory then finishes once on the threaded scheduler and once on a live
SLURM with two single-core jobs (``volseg run`` as a user runs it).  Every product —
probabilities, labels, CRF, instances and their table, metrics — must be identical, and
the block work must have run inside the SLURM jobs (the workers' ``SLURM_JOB_ID``s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from volseg.io import open_volume

pytestmark = pytest.mark.usefixtures("slurm")

ROOT = Path(__file__).resolve().parents[2]
SHRINK = (
    "synth.shape=[16, 128, 128]", "train.epochs=1", "train.steps_per_epoch=2",
    "train.batch_size=2", "train.threads=1", "train.early_stopping=null",
    "train.max_minutes=null", "train.model.params={context: 5, widths: [8, 16], num_res_units: 0}",
    "predict.block_size=[16, 64, 64]", "crf.block_size=[16, 64, 64]",
    "instances.block_size=[16, 64, 64]",
)
SLURM = ("cluster={type: slurm, cores: 1, memory: 3GiB, jobs: 2, walltime: '00:20:00', "
         "interface: lo, dashboard_address: null, job_name: volseg-test, startup_timeout: 120}")
VOLUMES = ("prediction.ome.zarr", "prediction.ome.zarr/labels/semantic", "crf.ome.zarr",
           "instances.ome.zarr")


def volseg_run(out: Path, *overrides: str, stages: tuple[str, ...] = ()) -> tuple[str, float]:
    """Run ``volseg run workflows/demo.yaml`` shrunk into ``out``; return stderr and seconds."""
    command = [sys.executable, "-m", "volseg", "run", str(ROOT / "workflows" / "demo.yaml"),
               "--set", f"output_dir={out}", *(a for o in (*SHRINK, *overrides)
                                              for a in ("--set", o))]
    if stages:
        command += ["--stages", *stages]
    t0 = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr, seconds


def _metrics(out: Path) -> Any:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if k not in ("volseg", "provenance", "seconds", "created", "finished",
                                 "inputs")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads((out / "report" / "metrics.json").read_text()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, float, float]:
    root = tmp_path_factory.mktemp("slurm-demo")
    threads, slurm = root / "threads", root / "slurm"
    volseg_run(threads, stages=("synth", "train"))
    shutil.copytree(threads, slurm)
    _, t_threads = volseg_run(threads)
    log, t_slurm = volseg_run(slurm, SLURM)
    connected = re.search(r"worker\(s\) connected in ([\d.]+) s", log)
    print(f"\nshrunk demo (predict..preview): threads {t_threads:.1f} s, SLURM (2 jobs x 1 "
          f"core) {t_slurm:.1f} s, workers connected "
          f"{connected.group(1) if connected else '?'} s after the start of the cluster; "
          f"load {os.getloadavg()[0]:.2f}")
    return threads, slurm, log, t_threads, t_slurm


def test_the_block_work_ran_inside_two_slurm_jobs(
        runs: tuple[Path, Path, str, float, float]) -> None:
    _, slurm, log, _, _ = runs
    connected = re.search(r"2 SLURM worker\(s\) connected in ([\d.]+) s .*; jobs (\d+), (\d+);",
                          log)
    assert connected, log[-3000:]
    jobs = {connected.group(2), connected.group(3)}
    counts = re.search(r"tasks executed in SLURM jobs \(workers connected now\): (.*)", log)
    assert counts, log[-3000:]
    executed = dict(re.findall(r"job (\d+): (\d+)", counts.group(1)))
    assert set(executed) == jobs and all(int(n) > 0 for n in executed.values())
    # the jobs' logs are where the workflow keeps them
    logs = {p.name for p in (slurm / ".volseg" / "slurm").iterdir()}
    assert {f"volseg-test-{j}.err" for j in jobs} <= logs


def test_every_product_equals_the_threaded_run(
        runs: tuple[Path, Path, str, float, float]) -> None:
    threads, slurm, _, _, _ = runs
    for name in VOLUMES:
        a, _ = open_volume(threads / name)
        b, _ = open_volume(slurm / name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert np.array_equal(np.asarray(a), np.asarray(b)), name
    assert (threads / "instances.csv").read_text() == (slurm / "instances.csv").read_text()
    assert _metrics(threads) == _metrics(slurm)
