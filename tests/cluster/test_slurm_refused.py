"""Jobs SLURM refuses, or workers that never connect: one line, exit 2, in seconds (live SLURM)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from volseg.cluster import SlurmCluster, dask_client
from volseg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("slurm")

#: A small job every test node can run; the tests change one key at a time.
BASE = {"type": "slurm", "cores": 1, "memory": "1GiB", "jobs": 1, "walltime": "00:10:00",
        "interface": "lo", "dashboard_address": None, "job_name": "volseg-test",
        "startup_timeout": 30}


def _workflow(tmp_path: Path, **cluster: object) -> Path:
    settings = ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}"
                         for k, v in {**BASE, **cluster}.items()).replace("None", "null")
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: refused
        output_dir: {tmp_path / "run"}
        cluster: {{{settings}}}
        synth: {{kind: fibsem, shape: [8, 32, 32], seed: 0}}
        """))
    return path


@pytest.mark.parametrize(("setting", "key", "reason"), [
    ({"memory": "4096GiB"}, "cluster.memory", "RealMemory"),
    ({"gpus_per_job": 1}, "cluster.gpus_per_job", "gres"),
    ({"queue": "no-such-partition"}, "cluster.queue", "partition"),
], ids=["memory", "gpus", "queue"])
def test_a_refused_job_ends_the_run_in_seconds_with_one_line(
        tmp_path: Path, setting: dict[str, object], key: str, reason: str) -> None:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "volseg", "run", str(_workflow(tmp_path,
                           **setting))], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.monotonic() - t0
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"volseg: error: {key}: SLURM refuses"), lines[0]
    assert reason.lower() in lines[0].lower() and "Traceback" not in done.stderr
    assert seconds < 60
    # nothing started: no stage ran, no job is left
    assert not (tmp_path / "run" / "image.ome.zarr").exists()


def test_a_job_that_dies_before_its_worker_connects_is_reported(tmp_path: Path) -> None:
    config = SlurmCluster(**{**BASE, "job_script_prologue": ["echo 'no such module' >&2",
                                                             "exit 3"]})
    t0 = time.monotonic()
    message = r"cluster\.job_script_prologue: SLURM job \d+ ended \(FAILED, exit code 3:0\)"
    with pytest.raises(ConfigError, match=message + ".*no such module"), \
            dask_client(config, log_root=tmp_path):
        pass
    assert time.monotonic() - t0 < 60


def test_workers_that_cannot_start_in_time_end_at_the_startup_timeout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess as sp

    cpus = int(sp.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True,
                      timeout=20).stdout.split()[0].rstrip("+"))
    # more single-core jobs than the node has cores: the last stays PENDING (Resources)
    config = SlurmCluster(**{**BASE, "jobs": cpus + 1, "startup_timeout": 6})
    t0 = time.monotonic()
    message = r"cluster\.startup_timeout: \d+ of \d+ workers connected after 6 s; jobs .*PENDING"
    with pytest.raises(ConfigError, match=message), dask_client(config, log_root=tmp_path):
        pass
    assert time.monotonic() - t0 < 40


def test_a_job_pending_for_a_reason_that_never_clears_ends_the_run(tmp_path: Path) -> None:
    partitions = subprocess.run(["sinfo", "-h", "-o", "%P %l"], capture_output=True,
                                text=True, timeout=20).stdout.split("\n")
    if not any(line.split()[:2] == ["short", "1:00"] for line in partitions if line.strip()):
        pytest.skip("no 1-minute partition 'short' (tests/cluster/slurm-up.sh makes one)")
    # sbatch accepts the job (--test-only too); SLURM keeps it PENDING (PartitionTimeLimit)
    config = SlurmCluster(**{**BASE, "queue": "short", "walltime": "00:10:00"})
    t0 = time.monotonic()
    message = r"cluster\.walltime: SLURM job \d+ cannot start: pending with reason " \
              r"PartitionTimeLimit"
    with pytest.raises(ConfigError, match=message), dask_client(config, log_root=tmp_path):
        pass
    assert time.monotonic() - t0 < 60
