"""Helpers for benchmarks: run a command measuring peak memory, describe the machine, save JSON."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SCRATCH = Path(__file__).resolve().parent / "scratch"


@dataclass(frozen=True)
class Measured:
    """Outcome of :func:`run_measured`.

    Attributes
    ----------
    returncode
        Exit status of the command.
    seconds
        Wall time.
    peak_rss_bytes
        Largest resident set of the process tree (the command plus its children),
        sampled every ``interval`` seconds, or the kernel's ``ru_maxrss`` of the
        largest waited-for child if that is larger.
    stdout, stderr
        The command's output.
    """

    returncode: int
    seconds: float
    peak_rss_bytes: int
    stdout: str
    stderr: str


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_measured(argv: Sequence[str], *, interval: float = 0.05,
                 cwd: Path | None = None) -> Measured:
    """Run ``argv``; return its status, wall time, output and peak RSS (incl. children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    popen = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=cwd)
    proc = psutil.Process(popen.pid)
    peak = 0
    out_parts: list[str] = []
    err_parts: list[str] = []
    while popen.poll() is None:
        try:
            peak = max(peak, _tree_rss(proc))
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    out, err = popen.communicate()
    out_parts.append(out)
    err_parts.append(err)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    kernel_peak = after * 1024 if after > before else 0  # ru_maxrss is in KiB on Linux
    return Measured(popen.returncode, seconds, max(peak, kernel_peak), "".join(out_parts),
                    "".join(err_parts))


def machine() -> dict[str, Any]:
    """Describe the machine and the software versions."""
    from volseg.provenance import git_revision, hardware, package_versions

    info = hardware()
    info["load_average"] = os.getloadavg()
    info["versions"] = package_versions()
    info["git_revision"] = git_revision()
    return info


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``benchmarks/results/<name>.json`` and return the path.

    Machine-absolute paths to the checkout are written relative to it.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    text = json.dumps(data, indent=2, default=str)
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    path.write_text(text + "\n")
    return path


def disk_usage(path: Path) -> int:
    """Total size in bytes of the files under ``path``."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def file_count(path: Path) -> int:
    """Number of files under ``path`` (what a cluster file system has to hold)."""
    return sum(1 for p in path.rglob("*") if p.is_file())


def load_average() -> float:
    """The 1-minute load average (other jobs on the host change the timings)."""
    return round(os.getloadavg()[0], 2)
