"""A plain-data description of a volume or OME-Zarr group (for ``volseg info``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zarr

from volseg.io import omezarr
from volseg.io.location import Location, PathLike, as_path, zarr_store
from volseg.io.readers import open_volume


def describe(path: PathLike, *, dataset: str | None = None) -> dict[str, Any]:
    """Return shape, dtype, chunks, voxel size, levels, labels and provenance of ``path``.

    Works on OME-Zarr image and label groups (all levels, label images, stored class
    frequencies, the ``volseg`` provenance record, completeness) and on any input
    :func:`volseg.io.open_volume` reads (shape, dtype, dask chunks, voxel size).

    Raises
    ------
    volseg.errors.InputError
        If ``path`` cannot be read.
    """
    path = as_path(path)
    if dataset is None and _labels_only(path):
        volseg = omezarr.group_attrs(path).get("volseg")
        return {
            "path": str(path), "format": "ome-zarr", "kind": "labels only",
            "provenance": dict(volseg) if isinstance(volseg, Mapping) else None,
            "labels": [_label_info(path / "labels" / name, name)
                       for name in omezarr.label_names(path)],
        }
    array, meta = open_volume(path, dataset=dataset)
    info: dict[str, Any] = {
        "path": str(path), "format": meta.attrs.get("format"), "kind": meta.kind,
        "axes": list(meta.axes), "shape": list(array.shape), "dtype": str(array.dtype),
        "chunks": [int(c[0]) for c in array.chunks], "voxel_size": meta.voxel_size,
        "nbytes": int(array.nbytes),
    }
    if meta.attrs.get("format") != "ome-zarr" or dataset:
        return info
    info.update(_multiscale_info(path))
    info["labels"] = [_label_info(path / "labels" / name, name)
                      for name in omezarr.label_names(path)]
    if meta.kind == "labels":
        volseg = meta.attrs.get("volseg")
        freqs = volseg.get("class_frequencies") if isinstance(volseg, Mapping) else None
        info["class_frequencies"] = dict(freqs) if isinstance(freqs, Mapping) else None
        info["class_names"] = omezarr.class_names(path)
    return info


def _labels_only(path: Location) -> bool:
    """Whether ``path`` is a Zarr group with label images but no image of its own."""
    if not (path / ".zgroup").exists() and not (path / "zarr.json").exists():
        return False
    try:
        attrs = omezarr.group_attrs(path)
    except (FileNotFoundError, ValueError, TypeError, zarr.errors.GroupNotFoundError):
        return False
    return "multiscales" not in attrs and bool(omezarr.label_names(path))


def _multiscale_info(path: Location) -> dict[str, Any]:
    ms = omezarr.read_multiscales(path)
    level0 = zarr.open_array(zarr_store(path / ms.levels[0].path, read_only=True), mode="r")
    volseg = ms.attrs.get("volseg")
    return {
        "chunks": list(level0.chunks),
        "shards": None if level0.shards is None else list(level0.shards),
        "ngff_version": ms.version,
        "origin": None if ms.origin is None else list(ms.origin),
        "levels": [{"path": lv.path, "shape": list(lv.shape), "scale": list(lv.scale),
                    "translation": None if lv.translation is None else list(lv.translation)}
                   for lv in ms.levels],
        "state": omezarr.image_state(path),
        "provenance": dict(volseg) if isinstance(volseg, Mapping) else None,
        "compressor": _compressor(level0),
    }


def _compressor(array: zarr.Array) -> str | None:
    compressors = getattr(array, "compressors", ()) or ()
    return ", ".join(str(getattr(c, "codec_id", c)) for c in compressors) or None


def _label_info(path: Location, name: str) -> dict[str, Any]:
    try:
        ms = omezarr.read_multiscales(path)
        level0 = zarr.open_array(zarr_store(path / ms.levels[0].path, read_only=True), mode="r")
    except Exception as exc:  # a broken label image must not hide the rest
        return {"name": name, "error": str(exc).splitlines()[0] if str(exc) else repr(exc)}
    volseg = ms.attrs.get("volseg")
    freqs = volseg.get("class_frequencies") if isinstance(volseg, Mapping) else None
    return {
        "name": name, "shape": list(level0.shape), "dtype": str(level0.dtype),
        "chunks": list(level0.chunks),
        "shards": None if level0.shards is None else list(level0.shards),
        "levels": len(ms.levels),
        "class_frequencies": dict(freqs) if isinstance(freqs, Mapping) else None,
        "state": omezarr.image_state(path),
    }
