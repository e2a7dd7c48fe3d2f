"""The ``cluster`` section of a workflow: one frozen, validated model per cluster type."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")


def parse_bytes(text: str) -> int:
    """Return the bytes of a size such as ``"32GiB"`` / ``"500MB"`` (``ValueError`` if bad)."""
    from dask.utils import parse_bytes as dask_parse_bytes

    try:
        value = int(dask_parse_bytes(text))
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"{text!r} is not a size such as '16GiB' or '500MB'") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0 bytes")
    return value


def parse_seconds(text: str) -> float:
    """Return the seconds of a duration such as ``"55m"``, ``"1h"``, ``"90s"``."""
    from dask.utils import parse_timedelta

    try:
        value = float(parse_timedelta(text))
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"{text!r} is not a duration such as '55m', '1h' or '90s'") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than 0 s")
    return value


def walltime_seconds(text: str) -> float:
    """Seconds of a SLURM time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


class _Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ThreadsCluster(_Cluster):
    """The threaded scheduler in this process (no ``distributed`` cluster)."""

    type: Literal["threads"] = "threads"
    num_workers: int | None = Field(None, ge=1, description="threads; default: all cores")


class LocalProcessCluster(_Cluster):
    """A ``distributed.LocalCluster`` of worker processes on this machine."""

    type: Literal["local"] = "local"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "4GiB"
    processes: bool = True
    dashboard_address: str | None = ":8787"


class GpuCluster(_Cluster):
    """One worker per visible GPU (``dask_cuda.LocalCUDACluster``)."""

    type: Literal["gpu"] = "gpu"
    devices: list[int] | None = None
    threads_per_worker: int = Field(4, ge=1, description="decode/IO threads per GPU worker")
    memory_limit: str = "auto"
    dashboard_address: str | None = ":8787"


class AdaptiveScaling(_Cluster):
    """Adaptive job counts for SLURM: between ``minimum`` and ``maximum`` jobs."""

    minimum: int = Field(0, ge=0)
    maximum: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveScaling:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is more than maximum ({self.maximum})")
        return self


class SlurmCluster(_Cluster):
    """A ``dask_jobqueue.SLURMCluster``: SLURM jobs, each running ``processes`` Dask workers.

    The scheduler runs in the ``volseg run`` process; every job runs the job script that
    ``volseg run WORKFLOW --check`` prints.
    """

    type: Literal["slurm"] = "slurm"
    queue: str | None = Field(None, description="partition (sbatch -p); default: the site's")
    account: str | None = Field(None, description="account charged (sbatch -A)")
    cores: int = Field(8, ge=1, description="CPU cores per job (--cpus-per-task)")
    processes: int = Field(1, ge=1, description="Dask worker processes per job")
    memory: str = Field("32GiB", description="memory per job (sbatch --mem)")
    worker_memory: str | None = Field(
        None, description="Dask memory limit of a job's workers together (<= memory; "
        "default: memory); leave headroom so SLURM does not kill a job over its --mem")
    walltime: str = Field("02:00:00", description="time limit per job (sbatch -t)")
    gpus_per_job: int = Field(0, ge=0, description="GPUs per job (--gres=gpu:N)")
    jobs: int = Field(1, ge=0, description="fixed number of jobs (without adaptive)")
    adaptive: AdaptiveScaling | None = None
    interface: str | None = Field(
        None, description="network interface of the scheduler and the workers (e.g. ib0, "
        "eth0; lo on one machine); default: Dask's choice")
    scheduler_host: str | None = Field(
        None, description="address the scheduler listens on and workers connect to "
        "(instead of interface for the scheduler)")
    dashboard_address: str | None = Field(":8787", description="scheduler dashboard; null: off")
    job_script_prologue: list[str] = Field(
        [], description="shell lines run in the job before the worker starts "
        "(module load ..., conda activate ...)")
    log_directory: str | None = Field(
        None, description="folder of the jobs' stdout/stderr files (on the shared file "
        "system); default: <output_dir>/.volseg/slurm")
    python: str | None = Field(
        None, description="Python on the compute nodes; default: this interpreter")
    worker_lifetime: str | None = Field(
        None, description="retire each worker after this long (e.g. '55m'), before the "
        "walltime kills it; adaptive clusters then start a fresh job")
    worker_lifetime_stagger: str | None = Field(
        None, description="random spread of worker_lifetime (e.g. '5m') so that workers "
        "do not all retire at once")
    job_extra_directives: list[str] = Field(
        [], description="more #SBATCH options, e.g. ['--constraint=a100']")
    local_directory: str | None = Field(
        None, description="fast node-local scratch for the workers (e.g. $TMPDIR)")
    job_name: str = Field("volseg-worker", min_length=1, description="SLURM job name")
    startup_timeout: float = Field(
        300.0, gt=0, description="seconds to wait for the workers to connect")
    death_timeout: float = Field(
        60.0, gt=0, description="seconds a worker waits for a lost scheduler before its job "
        "ends (so the jobs of a killed `volseg run` end by themselves)")

    @field_validator("memory", "worker_memory")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_bytes(value)
        return value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not _WALLTIME.match(value):
            raise ValueError(f"{value!r} is not a SLURM time limit such as '04:00:00', "
                             "'90' (minutes) or '1-12:00:00'")
        return value

    @field_validator("worker_lifetime", "worker_lifetime_stagger")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_seconds(value)
        return value

    @field_validator("job_extra_directives")
    @classmethod
    def _directives(cls, value: list[str]) -> list[str]:
        for line in value:
            if not line.startswith("-") or "\n" in line:
                raise ValueError(f"{line!r}: give sbatch options such as '--constraint=a100' "
                                 "(without '#SBATCH')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SlurmCluster:
        if self.worker_memory is not None and (
                parse_bytes(self.worker_memory) > parse_bytes(self.memory)):
            raise ValueError(f"worker_memory ({self.worker_memory}) is more than the job's "
                             f"memory ({self.memory}); SLURM would kill the job first")
        if self.worker_lifetime is not None:
            lifetime = parse_seconds(self.worker_lifetime)
            stagger = parse_seconds(self.worker_lifetime_stagger or "0.001s")
            if lifetime + stagger >= walltime_seconds(self.walltime):
                raise ValueError(
                    f"worker_lifetime ({self.worker_lifetime}) + stagger is not shorter "
                    f"than the walltime ({self.walltime}); retire workers before it")
        elif self.worker_lifetime_stagger is not None:
            raise ValueError("worker_lifetime_stagger needs worker_lifetime")
        if self.cores % self.processes:
            raise ValueError(f"cores ({self.cores}) is not a multiple of processes "
                             f"({self.processes})")
        if self.adaptive is None and self.jobs == 0:
            raise ValueError("jobs is 0 and there is no adaptive section: no worker would run")
        return self

    @property
    def job_memory(self) -> str:
        """The job's ``--mem`` as SLURM writes it (MiB, rounded up)."""
        return f"{-(-parse_bytes(self.memory) // 2**20)}M"

    @property
    def minimum_workers(self) -> int:
        """Workers to wait for before the run starts."""
        jobs = self.jobs if self.adaptive is None else self.adaptive.minimum
        return jobs * self.processes


class AddressCluster(_Cluster):
    """An existing scheduler, e.g. ``tcp://10.0.0.5:8786``."""

    type: Literal["address"] = "address"
    address: str


ClusterConfig = Annotated[
    ThreadsCluster | LocalProcessCluster | GpuCluster | SlurmCluster | AddressCluster,
    Field(discriminator="type"),
]
