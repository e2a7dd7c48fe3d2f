"""Stamping the end time of a workflow stage into the output groups it wrote."""

from __future__ import annotations

from pathlib import Path

import zarr


def _groups(workdir: Path) -> list[Path]:
    """OME-Zarr groups of a workflow directory and their label images."""
    tops = sorted(p for p in workdir.glob("*.ome.zarr") if p.is_dir())
    labels = [p for top in tops for p in sorted((top / "labels").glob("*")) if p.is_dir()]
    return tops + labels


def stamp_finished(workdir: Path, *, stage: str, started: str, finished: str) -> list[Path]:
    """Record ``finished`` in the ``volseg`` attributes of the groups a stage run wrote.

    A group belongs to the run when its ``volseg`` attributes name the ``stage`` and
    carry the run's ``started`` time (set by the runner in the provenance record).

    Parameters
    ----------
    workdir
        The workflow's output directory.
    stage
        Name of the stage that just finished.
    started, finished
        ISO 8601 times of the stage run.

    Returns
    -------
    list of Path
        The groups that were stamped.
    """
    stamped = []
    for path in _groups(workdir):
        try:
            group = zarr.open_group(str(path), mode="r+")
        except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError):
            continue
        record = group.attrs.get("volseg")
        if isinstance(record, dict) and record.get("stage") == stage \
                and record.get("started") == started:
            group.attrs["volseg"] = {**record, "finished": finished}
            stamped.append(path)
    return stamped
