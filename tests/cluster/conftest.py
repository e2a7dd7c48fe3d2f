"""The SLURM tests' fixture: a live single-node SLURM (``tests/cluster/slurm-up.sh``).

Locally the tests skip, with a message, when ``sbatch`` is absent or no controller
answers; with ``VOLSEG_REQUIRE_SLURM=1`` (set by ``.ci/run``, which brings SLURM up
first) they fail instead, so CI cannot skip them silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

UP = "tests/cluster/slurm-up.sh"


def _missing() -> str | None:
    if shutil.which("sbatch") is None:
        return f"SLURM's sbatch is not installed (bring SLURM up with {UP}, as root)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return f"sinfo did not answer in 20 s: no slurmctld running ({UP})"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in states):
        return (f"no SLURM node is up (sinfo: {done.stderr.strip() or states or 'nothing'}); "
                f"start one with {UP}")
    if shutil.which("scancel") is None or shutil.which("squeue") is None:
        return "squeue/scancel missing (install slurm-client)"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed (pip install -e '.[cluster]')"
    return None


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """A live SLURM controller with an idle node; skips (or fails in CI) without one."""
    reason = _missing()
    if reason is not None:
        if os.environ.get("VOLSEG_REQUIRE_SLURM") == "1":
            pytest.fail(f"VOLSEG_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    yield
    # no job of the tests may outlive them
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True).stdout.strip()
    left = subprocess.run(["squeue", "-h", "-u", user, "-n", "volseg-test", "-o", "%i"],
                          capture_output=True, text=True, timeout=20).stdout.split()
    if left:
        subprocess.run(["scancel", *left], timeout=20, check=False)
