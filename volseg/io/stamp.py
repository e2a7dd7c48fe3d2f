"""Stamping the end time of a workflow stage into the output groups it wrote."""

from __future__ import annotations

import zarr

from volseg.io.location import Location, zarr_store


def _groups(workdir: Location) -> list[Location]:
    """OME-Zarr groups of a workflow directory and their label images."""
    tops: list[Location] = sorted((p for p in workdir.glob("*.ome.zarr") if p.is_dir()),
                                  key=str)
    labels: list[Location] = []
    for top in tops:
        found: list[Location] = list((top / "labels").glob("*"))
        labels += sorted((p for p in found if p.is_dir()), key=str)
    return tops + labels


def stamp_finished(workdir: Location, *, stage: str, started: str, finished: str
                   ) -> list[Location]:
    """Record ``finished`` in the ``volseg`` attributes of the groups a stage run wrote.

    A group belongs to the run when its ``volseg`` attributes name the ``stage`` and
    carry the run's ``started`` time (set by the runner in the provenance record).

    Parameters
    ----------
    workdir
        The workflow's output directory (a folder or a URL).
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
            group = zarr.open_group(zarr_store(path), mode="r+")
        except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError):
            continue
        record = group.attrs.get("volseg")
        if isinstance(record, dict) and record.get("stage") == stage \
                and record.get("started") == started:
            group.attrs["volseg"] = {**record, "finished": finished}
            stamped.append(path)
    return stamped
