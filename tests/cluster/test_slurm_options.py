"""The SLURM options real sites need: validated like every key; the exact job script."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from volseg.cli import main
from volseg.cluster import SlurmCluster
from volseg.errors import ConfigError
from volseg.workflow.schema import load_workflow

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _cluster(tmp_path: Path, text: str) -> object:
    path = tmp_path / "wf.yaml"
    path.write_text(f"name: x\ncluster: {{type: slurm, {text}}}\n")
    return load_workflow(path).config.cluster  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "message"), [
    ("memory: 8GiB, worker_memory: 9GiB", r"cluster.slurm: worker_memory \(9GiB\) is more than"),
    ("memory: lots", r"cluster\.memory: .*'lots' is not a size"),
    ("walltime: '2 hours'", r"cluster\.walltime: .*not a SLURM time limit"),
    ("walltime: '01:00:00', worker_lifetime: 1h", r"worker_lifetime \(1h\) \+ stagger is not"),
    ("worker_lifetime_stagger: 5m", r"worker_lifetime_stagger needs worker_lifetime"),
    ("worker_lifetime: soon", r"cluster\.worker_lifetime: .*not a duration"),
    ("job_extra_directives: ['#SBATCH --exclusive']", r"without '#SBATCH'"),
    ("cores: 6, processes: 4", r"cores \(6\) is not a multiple of processes"),
    ("adaptive: {minimum: 5, maximum: 2}", r"minimum \(5\) is more than maximum"),
    ("startup_timeout: 0", r"cluster\.startup_timeout"),
    ("interfce: ib0", r"cluster\.interfce"),
])
def test_bad_slurm_settings_are_one_line_naming_the_key(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _cluster(tmp_path, text)
    assert "\n" not in str(info.value)


def test_site_options_are_accepted(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, (
        "interface: ib0, job_script_prologue: ['module load cuda/12'], log_directory: logs, "
        "memory: 64GiB, worker_memory: 56GiB, python: /opt/env/bin/python, walltime: '04:00:00',"
        " worker_lifetime: 3h, worker_lifetime_stagger: 10m, account: proj, gpus_per_job: 2,"
        " job_extra_directives: ['--constraint=a100'], startup_timeout: 900"))
    assert isinstance(cluster, SlurmCluster) and cluster.worker_memory == "56GiB"
    assert cluster.job_memory == "65536M"


def test_check_prints_the_job_script_of_fibsem_yaml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("dask_jobqueue", reason="the cluster extra (dask-jobqueue) is absent")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(WORKFLOWS / "fibsem.yaml"), "--check"]) == 0
    out = capsys.readouterr().out
    script = out[out.index("#!/usr/bin/env bash"):]
    logs = tmp_path / "runs" / "fibsem" / ".volseg" / "slurm"
    lines = script.splitlines()
    for line in ["#SBATCH -J volseg-worker", "#SBATCH -p gpu", "#SBATCH -n 1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=49152M", "#SBATCH -t 04:00:00",
                 "#SBATCH --gres=gpu:1", f"#SBATCH -e {logs}/volseg-worker-%J.err",
                 f"#SBATCH -o {logs}/volseg-worker-%J.out"]:
        assert line in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://")
    assert "--nthreads 8 --memory-limit 48.00GiB" in worker and "--no-dashboard" in worker
    assert not logs.exists() and not (tmp_path / "runs").exists()  # --check writes nothing


def test_check_shows_the_site_options_in_the_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("dask_jobqueue", reason="the cluster extra (dask-jobqueue) is absent")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(WORKFLOWS / "fibsem.yaml"), "--check", "--set",
                 "cluster={type: slurm, interface: lo, account: proj, memory: 16GiB, "
                 "worker_memory: 12GiB, python: /opt/env/bin/python, log_directory: logs, "
                 "job_script_prologue: ['module load cuda/12'], worker_lifetime: 50m, "
                 "worker_lifetime_stagger: 5m, walltime: '01:00:00', jobs: 2}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "#SBATCH -A proj" in lines and "#SBATCH --mem=16384M" in lines
    assert f"#SBATCH -e {tmp_path / 'logs'}/volseg-worker-%J.err" in lines
    prologue = lines.index("module load cuda/12")
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert prologue < lines.index(worker) and worker.startswith("/opt/env/bin/python -m ")
    for part in ["--memory-limit 12.00GiB", "--lifetime 50m", "--lifetime-stagger 5m",
                 "--interface lo"]:
        assert part in worker


def test_without_sbatch_or_with_a_missing_interface_the_run_stops_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dask_jobqueue", reason="the cluster extra (dask-jobqueue) is absent")
    from volseg.cluster import dask_client

    with pytest.raises(ConfigError, match=r"cluster\.interface: this machine has no network "
                       r"interface 'nosuch0' \(it has .*lo"), \
            dask_client(SlurmCluster(interface="nosuch0"), log_root=tmp_path):
        pass
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    with pytest.raises(ConfigError, match=r"cluster\.type: slurm needs SLURM's `sbatch` on "
                       r"PATH"), dask_client(SlurmCluster(), log_root=tmp_path):
        pass
