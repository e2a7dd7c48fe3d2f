"""Build the Dask client a workflow runs on, from its ``cluster`` section.

Five kinds, chosen by ``type``:

``threads`` (default)
    No cluster: Dask's threaded scheduler in this process. Fastest for one machine
    when the work releases the GIL (numpy, torch, zarr codecs).
``local``
    A ``distributed.LocalCluster`` of worker processes (``n_workers``,
    ``threads_per_worker``, ``memory_limit``); the dashboard address is printed.
``gpu``
    One worker per GPU via ``dask_cuda.LocalCUDACluster``; a clear error when
    dask-cuda or a GPU is missing.
``slurm``
    ``dask_jobqueue.SLURMCluster`` (queue, cores, memory, walltime, GPUs per job,
    a fixed number of jobs or adaptive scaling).
``address``
    Connect to a running scheduler.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from volseg.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client


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
    """Adaptive job counts for SLURM."""

    minimum: int = Field(0, ge=0)
    maximum: int = Field(4, ge=1)


class SlurmCluster(_Cluster):
    """A ``dask_jobqueue.SLURMCluster``: one or more SLURM jobs, each a Dask worker."""

    type: Literal["slurm"] = "slurm"
    queue: str | None = None
    account: str | None = None
    cores: int = Field(8, ge=1)
    processes: int = Field(1, ge=1, description="worker processes per job")
    memory: str = "32GiB"
    walltime: str = "02:00:00"
    gpus_per_job: int = Field(0, ge=0)
    jobs: int = Field(1, ge=0)
    adaptive: AdaptiveScaling | None = None
    job_extra_directives: list[str] = []
    local_directory: str | None = None


class AddressCluster(_Cluster):
    """An existing scheduler, e.g. ``tcp://10.0.0.5:8786``."""

    type: Literal["address"] = "address"
    address: str


ClusterConfig = Annotated[
    ThreadsCluster | LocalProcessCluster | GpuCluster | SlurmCluster | AddressCluster,
    Field(discriminator="type"),
]


def _announce(client: Client | None) -> None:
    link = getattr(client, "dashboard_link", None)
    print(f"volseg: Dask dashboard at {link}", file=sys.stderr)


def _gpu_cluster(config: GpuCluster) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ConfigError(
            "cluster.type=gpu needs dask-cuda: `pip install dask-cuda` on the GPU machine, "
            "or use cluster.type=local"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("cluster.type=gpu but torch sees no CUDA GPU; use cluster.type=local")
    visible = None if config.devices is None else ",".join(map(str, config.devices))
    return LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=visible, threads_per_worker=config.threads_per_worker,
        memory_limit=config.memory_limit, dashboard_address=config.dashboard_address,
    )


def _slurm_cluster(config: SlurmCluster) -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError(
            "cluster.type=slurm needs dask-jobqueue: `pip install volseg[cluster]`"
        ) from None
    extra = list(config.job_extra_directives)
    if config.gpus_per_job:
        extra.append(f"--gres=gpu:{config.gpus_per_job}")
    if config.account:
        extra.append(f"--account={config.account}")
    cluster = SLURMCluster(
        queue=config.queue, cores=config.cores, processes=config.processes,
        memory=config.memory, walltime=config.walltime, job_extra_directives=extra,
        local_directory=config.local_directory,
    )
    if config.adaptive is not None:
        cluster.adapt(minimum_jobs=config.adaptive.minimum, maximum_jobs=config.adaptive.maximum)
    else:
        cluster.scale(jobs=config.jobs)
    return cluster


@contextmanager
def dask_client(config: Any) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``config`` (``None`` for the threaded scheduler).

    The cluster (if this function started one) is closed on exit.
    """
    if isinstance(config, ThreadsCluster):
        import dask

        options: dict[str, Any] = {"scheduler": "threads"}
        if config.num_workers is not None:
            options["num_workers"] = config.num_workers
        with dask.config.set(options):
            yield None
        return

    from distributed import Client, LocalCluster

    cluster: Any = None
    if isinstance(config, LocalProcessCluster):
        cluster = LocalCluster(
            n_workers=config.n_workers, threads_per_worker=config.threads_per_worker,
            memory_limit=config.memory_limit, processes=config.processes,
            dashboard_address=config.dashboard_address,
        )
    elif isinstance(config, GpuCluster):
        cluster = _gpu_cluster(config)
    elif isinstance(config, SlurmCluster):
        cluster = _slurm_cluster(config)
    elif not isinstance(config, AddressCluster):  # pragma: no cover - schema prevents it
        raise ConfigError(f"cluster: unknown type {config!r}")
    try:
        client = Client(config.address) if cluster is None else Client(cluster)
    except OSError as exc:
        raise ConfigError(f"cluster.address: cannot reach the scheduler ({exc})") from None
    try:
        _announce(client)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
