"""Checking OME-Zarr groups the way other tools will read them.

:func:`validate` runs the two independent checks volseg's tests apply to every
output: the ``ome-zarr-models`` schema (NGFF 0.4 and 0.5; the model it matches is
returned) and ``ome_zarr``'s reader (the library napari-ome-zarr uses), which must
find the multiscale data.
"""

from __future__ import annotations

from dataclasses import dataclass

import zarr

from volseg.errors import InputError
from volseg.io.location import PathLike, as_path, zarr_store
from volseg.io.omezarr import group_version


@dataclass(frozen=True)
class Validation:
    """What :func:`validate` found.

    Attributes
    ----------
    model
        The ``ome-zarr-models`` class the group validated as (``Image``, ``ImageLabel``,
        ``Labels``).
    version
        NGFF version.
    levels
        Number of resolution levels of the first node with data that ``ome_zarr``'s
        reader found (for a ``labels`` group: its first label image).
    """

    model: str
    version: str
    levels: int


def validate(path: PathLike) -> Validation:
    """Validate the OME-Zarr group at ``path`` with ome-zarr-models and ome_zarr's reader.

    Raises
    ------
    InputError
        Naming the group and what the validator or the reader objected to.
    """
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models import open_ome_zarr

    path = as_path(path)
    version = group_version(path)
    if version is None:
        raise InputError(f"{path} is not a Zarr group")
    try:
        group = zarr.open_group(zarr_store(path, read_only=True), mode="r")
        model = open_ome_zarr(group, version=version)
    except Exception as exc:  # the validator raises many kinds; one line says which group
        first = str(exc).strip().splitlines()
        raise InputError(f"{path} is not valid OME-Zarr {version}: "
                         f"{first[0] if first else type(exc).__name__}") from None
    location = parse_url(str(path), fmt=FormatV04() if version == "0.4" else FormatV05())
    nodes = list(Reader(location)()) if location is not None else []
    levels = next((len(node.data) for node in nodes if node.data), 0)
    if not levels:
        raise InputError(f"{path}: the ome_zarr reader finds no image data")
    return Validation(type(model).__name__, version, levels)
