"""How an output was made: recorded in the attributes of every output group."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

_PACKAGES = (
    "volseg", "numpy", "dask", "distributed", "zarr", "ome-zarr", "torch", "monai",
    "mrcfile", "pydensecrf2", "connected-components-3d", "scikit-image",
)


def package_versions() -> dict[str, str]:
    """Return the installed versions of volseg's main dependencies."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(path: Path | None = None) -> str | None:
    """Return the git revision of the volseg checkout (``None`` outside a checkout)."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=where, capture_output=True, text=True, timeout=5,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def hardware() -> dict[str, Any]:
    """Describe the machine: CPU, cores, memory and GPUs (if torch is loaded and sees any)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        import psutil

        info["memory_bytes"] = int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    torch = sys.modules.get("torch")  # only where already imported: import costs seconds
    if torch is not None and torch.cuda.is_available():
        info["gpus"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
        info["cuda"] = torch.version.cuda
    return info


def now() -> str:
    """Return the current UTC time in ISO 8601."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def provenance(
    *, command: str | None = None, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the provenance record stored under the ``volseg`` attribute of outputs.

    Parameters
    ----------
    command
        The command line or stage that made the output.
    config
        The (validated) configuration used, as plain data.
    """
    record: dict[str, Any] = {
        "command": command,
        "config": config,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "hardware": hardware(),
        "created": now(),
    }
    return record
