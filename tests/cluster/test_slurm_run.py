"""Work inside real SLURM jobs: Dask workers in two jobs of a live single-node SLURM."""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
import pytest

from volseg.cluster import SlurmCluster, dask_client

pytestmark = pytest.mark.usefixtures("slurm")

BASE = {"cores": 1, "memory": "1GiB", "walltime": "00:10:00", "interface": "lo",
        "dashboard_address": None, "job_name": "volseg-test", "startup_timeout": 60}


def test_blocks_are_computed_inside_two_slurm_jobs(tmp_path: Path) -> None:
    config = SlurmCluster(**BASE, jobs=2, job_script_prologue=["export VOLSEG_PROLOGUE=ran"])
    values = np.arange(64 * 48, dtype=np.float64).reshape(64, 48)
    with dask_client(config, log_root=tmp_path) as client:
        jobs = client.run(os.getenv, "SLURM_JOB_ID")
        assert len(jobs) == 2 and all(jobs.values()) and len(set(jobs.values())) == 2
        assert all(address.startswith("tcp://127.0.0.1:") for address in jobs)
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        listening = {c.laddr.ip for c in psutil.Process().net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}  # scheduler and its HTTP server: loopback only
        prologue = client.run(os.getenv, "VOLSEG_PROLOGUE")
        assert set(prologue.values()) == {"ran"}
        array = da.from_array(values, chunks=(16, 16))
        assert np.array_equal(client.compute(array * 2 + 1).result(), values * 2 + 1)
        ran_in = set(client.gather(client.map(os.getenv, ["SLURM_JOB_ID"] * 8,
                                              pure=False)))
        assert ran_in <= set(jobs.values())
    logs = sorted(p.name for p in (tmp_path / "slurm").iterdir())
    assert any(name.endswith(".err") for name in logs), logs


def test_a_worker_past_its_lifetime_retires_and_a_new_job_takes_over(tmp_path: Path) -> None:
    import time

    import dask

    config = SlurmCluster(**BASE, jobs=1, worker_lifetime="8s", worker_lifetime_stagger="1s")
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), \
            dask_client(config, log_root=tmp_path) as client:
        first = set(client.run(os.getenv, "SLURM_JOB_ID").values())
        seen = set(first)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and seen == first:
            # work keeps flowing while the worker retires and its replacement starts
            assert client.submit(sum, [1, 2, 3], pure=False).result(timeout=60) == 6
            seen |= {v for v in client.run(os.getenv, "SLURM_JOB_ID").values() if v}
            time.sleep(0.5)
        assert seen - first, f"no new job replaced job {first} after its worker_lifetime"


def test_an_adaptive_cluster_starts_with_its_minimum_and_grows_with_the_work(
        tmp_path: Path) -> None:
    import time

    config = SlurmCluster(**BASE, adaptive={"minimum": 1, "maximum": 2})
    with dask_client(config, log_root=tmp_path) as client:
        assert len(client.run(os.getenv, "SLURM_JOB_ID")) == 1  # waited for the minimum
        # about 40 s of 1-second tasks: Dask's adaptive target asks for the second job
        futures = client.map(time.sleep, [1.0] * 40, pure=False)
        jobs: set[str] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(jobs) < 2:
            jobs |= {v for v in client.run(os.getenv, "SLURM_JOB_ID").values() if v}
            time.sleep(0.5)
        client.cancel(futures)
        assert len(jobs) == 2, f"the adaptive cluster did not grow beyond job(s) {jobs}"
