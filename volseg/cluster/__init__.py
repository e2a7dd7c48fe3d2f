"""Build the Dask client a workflow runs on, from its ``cluster`` section.

Five kinds, chosen by ``type`` (:mod:`volseg.cluster.config`):

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
    ``dask_jobqueue.SLURMCluster`` (:mod:`volseg.cluster.slurm`): queue, account,
    cores, memory and the workers' share of it, walltime, GPUs per job, a fixed number
    of jobs or adaptive scaling, the network interface, a job prologue, the log folder,
    the compute nodes' Python, worker lifetimes; the job script is checked with
    ``sbatch --test-only`` and the workers are waited for with a time limit, so a job
    SLURM refuses is one line, never a hang.  See ``docs/cluster.md``.
``address``
    Connect to a running scheduler.
"""

from volseg.cluster.client import dask_client
from volseg.cluster.config import (
    AdaptiveScaling,
    AddressCluster,
    ClusterConfig,
    GpuCluster,
    LocalProcessCluster,
    SlurmCluster,
    ThreadsCluster,
)

__all__ = [
    "AdaptiveScaling", "AddressCluster", "ClusterConfig", "GpuCluster",
    "LocalProcessCluster", "SlurmCluster", "ThreadsCluster", "dask_client",
]
