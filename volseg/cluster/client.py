"""``dask_client``: the Dask client a workflow runs on, built from its ``cluster`` section."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from volseg.cluster.config import (
    AddressCluster,
    GpuCluster,
    LocalProcessCluster,
    SlurmCluster,
    ThreadsCluster,
)
from volseg.errors import ConfigError


def _announce(client: Any) -> None:
    link = getattr(client, "dashboard_link", None)
    if link:
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


def _check_interface(config: SlurmCluster) -> None:
    if config.interface is None:
        return
    import psutil

    have = sorted(psutil.net_if_addrs())
    if config.interface not in have:
        raise ConfigError(f"cluster.interface: this machine has no network interface "
                          f"{config.interface!r} (it has {', '.join(have)}); the scheduler "
                          f"runs here and listens on it")


@contextmanager
def _slurm_client(config: SlurmCluster, log_root: Path | None) -> Iterator[Any]:
    from distributed import Client

    from volseg.cluster import slurm

    _check_interface(config)
    logs = slurm.log_directory_for(config, None if log_root is None else log_root / "slurm")
    slurm.check_submission(slurm.job_script(config, log_directory=logs), config)
    t0 = time.monotonic()
    with ExitStack() as stack:
        cluster, book = slurm.start_cluster(config, log_directory=logs)
        stack.callback(slurm.forget, book)
        stack.callback(cluster.close)
        client = stack.enter_context(Client(cluster))
        if config.dashboard_address is not None:
            _announce(client)
        waited = slurm.wait_for_workers(cluster, book, config, log_directory=logs)
        if config.minimum_workers:
            print(f"volseg: {config.minimum_workers} SLURM worker(s) connected in "
                  f"{time.monotonic() - t0:.1f} s (waited {waited:.1f} s for the jobs); "
                  f"jobs {', '.join(sorted(book.jobs))}; logs in {logs}", file=sys.stderr)
        with slurm.JobKeeper(cluster, client, book):
            yield client
            slurm.report_tasks(client)


@contextmanager
def dask_client(config: Any, *, log_root: Path | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``config`` (``None`` for the threaded scheduler).

    The cluster (if this function started one) is closed on exit.  ``log_root``: where
    a SLURM cluster's job logs go by default (``<log_root>/slurm``; the runner passes
    ``<output_dir>/.volseg``).
    """
    if isinstance(config, ThreadsCluster):
        import dask

        options: dict[str, Any] = {"scheduler": "threads"}
        if config.num_workers is not None:
            options["num_workers"] = config.num_workers
        with dask.config.set(options):
            yield None
        return
    if isinstance(config, SlurmCluster):
        with _slurm_client(config, log_root) as client:
            yield client
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
