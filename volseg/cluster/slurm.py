"""Dask workers in SLURM jobs (``dask_jobqueue.SLURMCluster``), started so that they fail fast.

What this adds to ``dask_jobqueue``:

* **the job script up front** — :func:`job_script` is the exact script every job runs
  (``volseg run WORKFLOW --check`` prints it) and :func:`check_submission` hands it to
  ``sbatch --test-only`` before anything starts, so a job SLURM refuses (memory more
  than a node has, GPUs on a partition without them, an unknown partition) is one
  line naming the cluster key and SLURM's own reason;
* **a watcher while the workers start** (:func:`wait_for_workers`): the jobs' ``squeue``
  state (and ``scontrol``/``sacct`` once they end) is polled and reported; a job that
  ``sbatch`` refuses, one that ends before its worker connects (a failing prologue, a
  wrong ``python``) or one pending for a reason that never clears ends the run with
  one line; so do workers that are not connected within ``startup_timeout``;
* **a keeper during the run** (:class:`JobKeeper`): a job that ends (``scancel``, node
  failure, walltime, ``worker_lifetime``) is replaced so the run keeps its job count,
  and the blocks the lost worker held or was computing are named in the log (they are
  recomputed by the remaining workers).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from volseg.cluster.config import SlurmCluster, parse_bytes
from volseg.errors import ConfigError

#: Placeholder of the scheduler address in a job script printed before a scheduler runs.
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"

#: SLURM's error text -> the ``cluster`` key to fix (first match wins).
_REASON_KEYS: tuple[tuple[str, str], ...] = (
    (r"memory|mem-per|RealMemory", "memory"),
    (r"gres|gpu", "gpus_per_job"),
    (r"partition", "queue"),
    (r"account|association", "account"),
    (r"qos", "job_extra_directives"),
    (r"time limit|walltime|TimeLimit", "walltime"),
    (r"cpus|processors|cores|CPU count", "cores"),
    (r"constraint|feature", "job_extra_directives"),
)

#: Pending reasons that never clear by waiting (the job cannot run as submitted).
_HOPELESS = {
    "PartitionTimeLimit": "walltime", "PartitionNodeLimit": "cores",
    "BadConstraints": "job_extra_directives", "InvalidAccount": "account",
    "InvalidQOS": "job_extra_directives", "AccountNotAllowed": "account",
    "QOSNotAllowed": "job_extra_directives",
    "ReqNodeNotAvail, UnavailableNodes:": "queue", "PartitionDown": "queue",
    "PartitionInactive": "queue", "JobHeldAdmin": "queue", "AssocMaxJobsLimit": "account",
}

_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
          "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}


def _log(message: str) -> None:
    print(f"volseg: {message}", file=sys.stderr, flush=True)


def _key_of(reason: str) -> str:
    for pattern, key in _REASON_KEYS:
        if re.search(pattern, reason, re.IGNORECASE):
            return key
    return "type"


def _reason(text: str) -> str:
    """SLURM's own reason from ``sbatch``'s stderr: its ``error:`` lines, joined."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [re.sub(r"^(sbatch|squeue|srun): error: ", "", line) for line in lines
              if "error:" in line]
    errors = [e for e in errors if not e.startswith("Batch job submission failed")] or errors
    return "; ".join(errors or lines[-1:]) or "no reason given"


def refused(reason: str, *, what: str = "SLURM refuses the worker job") -> ConfigError:
    """The one-line error for a job SLURM will not run, naming the ``cluster`` key to fix."""
    return ConfigError(f"cluster.{_key_of(reason)}: {what}: {reason} "
                       f"(check the job script with `volseg run WORKFLOW --check`)")


def _sbatch() -> str:
    from shutil import which

    path = which("sbatch")
    if path is None:
        raise ConfigError("cluster.type: slurm needs SLURM's `sbatch` on PATH; run volseg "
                          "on a login node of the cluster, or choose another cluster.type")
    return path


def job_options(config: SlurmCluster, *, log_directory: str | Path) -> dict[str, Any]:
    """Return the ``SLURMCluster`` / ``SLURMJob`` keywords of ``config``."""
    extra = list(config.job_extra_directives)
    if config.gpus_per_job:
        extra.append(f"--gres=gpu:{config.gpus_per_job}")
    worker_args = ["--no-dashboard"]
    if config.worker_lifetime is not None:
        worker_args += ["--lifetime", config.worker_lifetime]
        if config.worker_lifetime_stagger is not None:
            worker_args += ["--lifetime-stagger", config.worker_lifetime_stagger]
    return {
        "queue": config.queue, "account": config.account, "cores": config.cores,
        "processes": config.processes,
        "memory": config.worker_memory or config.memory, "job_mem": config.job_memory,
        "walltime": config.walltime, "job_extra_directives": extra,
        "job_script_prologue": list(config.job_script_prologue),
        "log_directory": str(log_directory), "python": config.python or sys.executable,
        "worker_extra_args": worker_args, "local_directory": config.local_directory,
        "interface": config.interface, "job_name": config.job_name,
        "job_directives_skip": [], "death_timeout": config.death_timeout,
    }


def _jobqueue() -> Any:
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError("cluster.type: slurm needs dask-jobqueue: "
                          "`pip install volseg[cluster]`") from None
    return dask_jobqueue


def job_script(config: SlurmCluster, *, log_directory: str | Path,
               scheduler: str = SCHEDULER_PLACEHOLDER) -> str:
    """Return the script each SLURM job runs (``SLURMCluster.job_script()``).

    Built by dask-jobqueue's own job class, without starting a scheduler; the
    scheduler's address (known once it runs) is ``scheduler``.
    """
    jobqueue = _jobqueue()
    options = job_options(config, log_directory=log_directory)
    # the job class creates the log folder: remove what it made (this is only a look)
    missing = Path(log_directory)
    while not missing.parent.exists():
        missing = missing.parent
    existed = missing.exists()
    try:
        job = jobqueue.slurm.SLURMJob(scheduler, name="dummy-name", **options)
    finally:
        if not existed and missing.is_dir():
            for folder in [Path(log_directory), *Path(log_directory).parents]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
                if folder == missing:
                    break
    return str(job.job_script())


def _largest_nodes(queue: str | None) -> tuple[int, int, str] | None:
    """(memory MB, CPUs, gres) of the largest nodes of ``queue`` (default partition: None)."""
    command = ["sinfo", "-h", "-N", "-o", "%P|%m|%c|%G"]
    rows = []
    for line in _run(command).splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        partition, default = parts[0].rstrip("*"), parts[0].endswith("*")
        if (queue is None and default) or partition == queue:
            try:
                rows.append((int(parts[1].rstrip("+")), int(parts[2].rstrip("+")), parts[3]))
            except ValueError:
                continue
    if not rows:
        return None
    gres = ",".join(sorted({r[2] for r in rows if r[2] not in ("(null)", "")})) or "none"
    return max(r[0] for r in rows), max(r[1] for r in rows), gres


def _explain(config: SlurmCluster, reason: str) -> ConfigError:
    """Name the key when SLURM's reason is generic ("Requested node configuration...")."""
    nodes = _largest_nodes(config.queue)
    if nodes is not None and "node configuration" in reason:
        memory, cpus, gres = nodes
        partition = config.queue or "the default partition"
        asked = -(-parse_bytes(config.memory) // 2**20)
        if asked > memory:
            return refused(f"{reason}: --mem={asked}M but the largest node of {partition} "
                           f"has {memory} MB (RealMemory)")
        if config.cores > cpus:
            return refused(f"{reason}: --cpus-per-task={config.cores} but the largest node "
                           f"of {partition} has {cpus} CPUs")
        if config.gpus_per_job and "gpu" not in gres:
            return refused(f"{reason}: --gres=gpu:{config.gpus_per_job} but the nodes of "
                           f"{partition} have no GPUs (gres: {gres})")
    return refused(reason)


def check_submission(script: str, config: SlurmCluster | None = None) -> None:
    """Hand ``script`` to ``sbatch --test-only``; raise the one-line error if SLURM refuses it.

    ``config`` (the script's cluster section) lets a generic refusal name its key.
    """
    sbatch = _sbatch()
    try:
        done = subprocess.run([sbatch, "--test-only"], input=script, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError("cluster.type: `sbatch --test-only` did not answer within 60 s; "
                          "is slurmctld reachable (`sinfo`)?") from None
    if done.returncode != 0:
        reason = _reason(done.stderr or done.stdout)
        raise refused(reason) if config is None else _explain(config, reason)


@dataclass
class JobBook:
    """What the cluster's jobs did: ids and names as submitted, and ``sbatch``'s refusals."""

    jobs: dict[str, str] = field(default_factory=dict)  # job id -> worker (job) name
    refusals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submitted(self, job_id: str, name: str) -> None:
        with self.lock:
            self.jobs[job_id] = name

    def refused(self, reason: str) -> None:
        with self.lock:
            self.refusals.append(reason)


_BOOKS: dict[int, JobBook] = {}


def forget(book: JobBook) -> None:
    """Drop ``book`` from the registry the job class writes to (its cluster is closed)."""
    _BOOKS.pop(id(book), None)


def _job_class(book_id: int) -> Any:
    """A ``SLURMJob`` that records its job id, or ``sbatch``'s refusal, in a :class:`JobBook`."""
    jobqueue = _jobqueue()

    base: Any = jobqueue.slurm.SLURMJob

    class TrackedSLURMJob(base):  # type: ignore[misc]
        async def start(self) -> None:
            book = _BOOKS.get(book_id) or JobBook()
            try:
                await super().start()
            except RuntimeError as exc:
                book.refused(_reason(str(exc).split("stderr:", 1)[-1]))
                raise
            book.submitted(str(self.job_id), str(self.name))

    return TrackedSLURMJob


def http_address(config: SlurmCluster) -> str:
    """Where the scheduler's HTTP server (dashboard, health) listens.

    Dask binds ``:8787`` to every interface, and keeps that server (for its health
    and metrics routes) even with the dashboard off; with an ``interface`` or a
    ``scheduler_host`` it binds to that address only (``interface: lo``: 127.0.0.1).
    With ``dashboard_address: null`` the port is any free one.
    """
    address = config.dashboard_address or ":0"
    host = config.scheduler_host
    if host is None and config.interface is not None:
        from distributed.utils import get_ip_interface

        host = get_ip_interface(config.interface)
    if address.startswith(":") and host:
        address = f"{host}{address}"
    return address


def start_cluster(config: SlurmCluster, *, log_directory: str | Path) -> tuple[Any, JobBook]:
    """Start a ``SLURMCluster`` for ``config`` and ask for its jobs; return it and its book."""
    jobqueue = _jobqueue()
    book = JobBook()
    _BOOKS[id(book)] = book
    options = job_options(config, log_directory=log_directory)
    scheduler: dict[str, Any] = {"dashboard_address": http_address(config)}
    if config.scheduler_host is not None:
        scheduler["host"] = config.scheduler_host
    elif config.interface is not None:
        scheduler["interface"] = config.interface
    if config.dashboard_address is None:
        scheduler["dashboard"] = False
    cluster = jobqueue.SLURMCluster(job_cls=_job_class(id(book)), scheduler_options=scheduler,
                                    **options)
    if config.adaptive is not None:
        cluster.adapt(minimum_jobs=config.adaptive.minimum,
                      maximum_jobs=config.adaptive.maximum)
    else:
        cluster.scale(jobs=config.jobs)
    return cluster, book


@dataclass(frozen=True)
class JobState:
    """One job as ``squeue`` / ``scontrol`` / ``sacct`` report it."""

    job_id: str
    state: str
    reason: str = ""
    exit_code: str = ""
    stderr: str = ""

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        return f"{self.job_id} {self.state}{reason}"


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The state of each job (``squeue --states=all``; ``scontrol``/``sacct`` for ended jobs).

    A job SLURM no longer knows at all is ``UNKNOWN``.
    """
    ids = sorted(set(job_ids), key=lambda j: (len(j), j))
    if not ids:
        return {}
    out: dict[str, JobState] = {}
    text = _run(["squeue", "-h", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%r"])
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[0] in ids:
            out[parts[0]] = JobState(parts[0], parts[1], parts[2])
    for job_id in ids:
        state = out.get(job_id)
        if state is not None and state.state not in _ENDED:
            continue
        out[job_id] = _ended(job_id, state)
    return out


def _ended(job_id: str, seen: JobState | None) -> JobState:
    text = _run(["scontrol", "show", "job", "-o", job_id])
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    if fields.get("JobState"):
        return JobState(job_id, fields["JobState"], fields.get("Reason", ""),
                        fields.get("ExitCode", ""), fields.get("StdErr", ""))
    text = _run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode,Reason"])
    parts = (text.splitlines() or [""])[0].split("|")
    if len(parts) == 3 and parts[0]:
        return JobState(job_id, parts[0].split()[0], parts[2], parts[1])
    return seen or JobState(job_id, "UNKNOWN")


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f.read()[-8192:].splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if re.search(r"error|not found|no such|denied|"
                                                   r"cannot|failed|killed", line, re.I)]
    return (errors or lines or [""])[-1]


def _connected(worker_names: Iterable[str], job_name: str) -> bool:
    return any(w == job_name or w.startswith(job_name + "-") for w in worker_names)


def _worker_names(cluster: Any) -> list[str]:
    info = getattr(cluster, "scheduler_info", None) or {}
    return [str(w.get("name")) for w in dict(info.get("workers", {})).values()]


def wait_for_workers(cluster: Any, book: JobBook, config: SlurmCluster, *,
                     log_directory: str | Path, report_every: float = 10.0,
                     poll: float = 0.5, clock: Callable[[], float] = time.monotonic) -> float:
    """Wait until ``config.minimum_workers`` workers are connected; return the seconds waited.

    Raises
    ------
    ConfigError
        One line naming the cluster key and SLURM's reason: ``sbatch`` refused a job, a
        job ended before its worker connected, a job is pending for a reason that will
        not clear, or ``startup_timeout`` passed.
    """
    need = config.minimum_workers
    start = clock()
    last_report = start
    if need == 0:
        return 0.0
    while True:
        names = _worker_names(cluster)
        if len(names) >= need:
            return clock() - start
        with book.lock:
            refusals, jobs = list(book.refusals), dict(book.jobs)
        if refusals:
            raise refused(refusals[0])
        states = job_states(jobs)
        waiting = {j: s for j, s in states.items() if not _connected(names, jobs[j])}
        for job_id, state in waiting.items():
            if state.state in _ENDED or state.state == "UNKNOWN":
                logs = state.stderr.replace("%J", job_id).replace("%j", job_id) or str(
                    Path(log_directory) / f"{config.job_name}-{job_id}.err")
                line = _last_line(logs)
                key = "python" if config.python and config.python in line else \
                    "job_script_prologue"
                exit_code = f", exit code {state.exit_code}" if state.exit_code else ""
                raise ConfigError(
                    f"cluster.{key}: SLURM job {job_id} ended ({state.state}{exit_code}) "
                    f"before its worker connected: {line or state.reason or 'no reason given'}"
                    f" (job log: {logs})")
            if state.state == "PENDING":
                for reason, key in _HOPELESS.items():
                    if state.reason.startswith(reason.rstrip(":")):
                        raise ConfigError(
                            f"cluster.{key}: SLURM job {job_id} cannot start: pending with "
                            f"reason {state.reason} (see `scontrol show job {job_id}`)")
        now = clock()
        if now - start > config.startup_timeout:
            shown = ", ".join(str(s) for s in states.values()) or "none submitted"
            raise ConfigError(
                f"cluster.startup_timeout: {len(names)} of {need} workers connected after "
                f"{config.startup_timeout:g} s; jobs {shown}; raise startup_timeout if the "
                f"queue is long, or see the job logs in {log_directory}")
        if now - last_report >= report_every:
            shown = ", ".join(str(s) for s in states.values()) or "submitting"
            _log(f"waiting for SLURM workers: {len(names)} of {need} connected after "
                 f"{now - start:.0f} s (of startup_timeout {config.startup_timeout:g} s); "
                 f"jobs {shown}")
            last_report = now
        time.sleep(poll)


def worker_report(dask_worker: Any) -> dict[str, Any]:
    """On a worker (``client.run``): its SLURM job id and how many tasks it has executed."""
    return {"job": os.environ.get("SLURM_JOB_ID"),
            "executed": int(dask_worker.state.executed_count)}


def report_tasks(client: Any) -> dict[str, int]:
    """Log and return the tasks executed per SLURM job by the workers still connected."""
    try:
        reports = client.run(worker_report)
    except Exception as exc:  # a closing cluster: say so, never fail the run for it
        _log(f"SLURM workers' task counts unavailable ({exc})")
        return {}
    per_job: dict[str, int] = {}
    for report in reports.values():
        job = str(report["job"])
        per_job[job] = per_job.get(job, 0) + int(report["executed"])
    shown = ", ".join(f"job {j}: {n}" for j, n in sorted(per_job.items()))
    _log(f"tasks executed in SLURM jobs (workers connected now): {shown or 'none'}")
    return per_job


def _block(key: Any) -> str | None:
    if isinstance(key, tuple) and key and str(key[0]).startswith("volseg-write-"):
        return "(" + ", ".join(str(i) for i in key[1:]) + ")"
    return None


class JobKeeper:
    """Keep a running SLURM cluster at its job count and log what a lost worker costs.

    Every ``interval`` seconds it asks the cluster for its current job count again
    (``SLURMCluster.scale``), which resubmits a job whose worker left (``scancel``,
    node failure, walltime, ``worker_lifetime``) once Dask has given up on it; the
    scheduler's ``remove-worker`` events name the blocks (write tasks) the worker was
    computing or held, which the other workers recompute.
    """

    def __init__(self, cluster: Any, client: Any, book: JobBook, *,
                 interval: float = 2.0) -> None:
        self.cluster, self.client, self.book, self.interval = cluster, client, book, interval
        self.recomputed: list[str] = []
        self._names: dict[str, str] = {}
        self._known: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="volseg-slurm-keeper",
                                        daemon=True)

    def __enter__(self) -> JobKeeper:
        self._remember()
        self.client.subscribe_topic("all", self._event)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):  # the client may be closing already
            self.client.unsubscribe_topic("all")

    def _remember(self) -> None:
        info = getattr(self.cluster, "scheduler_info", None) or {}
        for address, worker in dict(info.get("workers", {})).items():
            self._names[str(address)] = str(worker.get("name"))

    def _job_of(self, worker_name: str) -> str:
        with self.book.lock:
            for job_id, name in reversed(self.book.jobs.items()):  # the latest job of a name
                if worker_name == name or worker_name.startswith(name + "-"):
                    return job_id
        return "?"

    def _event(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        address = str(msg.get("worker"))
        name = self._names.get(address, address)
        running = list(msg.get("processing-tasks", ()))
        finished = list(msg.get("lost-computed-tasks", ()))
        if msg.get("expected") and not running and not finished:
            return  # retired gracefully (scaled down, worker_lifetime): nothing lost
        running_blocks = sorted({b for b in map(_block, running) if b is not None})
        written_blocks = sorted({b for b in map(_block, finished) if b is not None})
        both = sorted({*running_blocks, *written_blocks})
        self.recomputed.extend(both)
        other = len(running) + len(finished) - len(running_blocks) - len(written_blocks)
        _log(f"SLURM job {self._job_of(name)} (worker {name}) left; blocks recomputed "
             f"elsewhere: {', '.join(both) or 'none'} (assigned to it: "
             f"{', '.join(running_blocks) or 'none'}; written, result lost: "
             f"{', '.join(written_blocks) or 'none'}; +{other} upstream tasks); "
             f"a replacement job is requested")
        # Dask gives the job up after distributed.deploy.lost-worker-timeout: ask right then
        import dask
        from dask.utils import parse_timedelta

        delay = float(parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")))
        timer = threading.Timer(delay + 0.5, self._request)
        timer.daemon = True
        timer.start()

    def _request(self) -> None:
        with contextlib.suppress(Exception):  # a closing cluster
            self.cluster.loop.add_callback(self._rescale)

    def _rescale(self) -> None:
        """On the cluster's event loop: ask for the jobs the cluster has (resubmits lost ones)."""
        self.cluster.scale(jobs=len(self.cluster.worker_spec))

    def _new_jobs(self) -> None:
        with self.book.lock:
            jobs = dict(self.book.jobs)
        for job_id, name in jobs.items():
            if job_id not in self._known:
                self._known.add(job_id)
                _log(f"replacement SLURM job {job_id} submitted (worker {name})")

    def _loop(self) -> None:
        with self.book.lock:
            self._known = set(self.book.jobs)
        while not self._stop.wait(self.interval):
            self._new_jobs()
            try:
                self._remember()
                self.cluster.loop.add_callback(self._rescale)
            except Exception as exc:  # keep the keeper alive; the run decides
                _log(f"SLURM keeper: {exc}")
            with self.book.lock:
                refusals = list(self.book.refusals)
                self.book.refusals.clear()
            for reason in refusals:
                _log(f"a replacement SLURM job was refused: {reason}")


def log_directory_for(config: SlurmCluster, default: Path | None) -> Path:
    """The folder of the jobs' logs: ``config.log_directory`` or ``default``, made absolute."""
    if config.log_directory is not None:
        path = Path(os.path.expandvars(os.path.expanduser(config.log_directory)))
    elif default is not None:
        path = default
    else:
        path = Path.cwd() / "slurm-logs"
    return path.resolve()


def describe(config: SlurmCluster, *, log_directory: Path) -> str:
    """Text of ``--check`` for a SLURM cluster: the job script and what a run submits."""
    jobs = (f"{config.jobs} job(s)" if config.adaptive is None else
            f"{config.adaptive.minimum} to {config.adaptive.maximum} jobs (adaptive)")
    memory = parse_bytes(config.worker_memory or config.memory) / 2**30
    return (f"# SLURM: {jobs}, each: {config.cores} cores, {config.processes} worker "
            f"process(es), --mem={config.job_memory} (Dask limit {memory:.3g} GiB), "
            f"{config.gpus_per_job} GPU(s), walltime {config.walltime}; logs in "
            f"{log_directory}\n" + job_script(config, log_directory=log_directory)
            + "\n")


__all__ = [
    "SCHEDULER_PLACEHOLDER", "JobBook", "JobKeeper", "JobState", "check_submission",
    "describe", "forget", "http_address", "job_options", "job_script", "job_states",
    "log_directory_for", "refused", "report_tasks", "start_cluster", "wait_for_workers",
    "worker_report",
]
