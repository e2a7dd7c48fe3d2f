"""OME-NGFF metadata: reading it (multiscales, labels, class names) and building it.

Shared by the writer (:mod:`volseg.io.omezarr`) and the readers.  NGFF 0.4 keeps its
keys in the Zarr v2 group attributes; 0.5 keeps them under the ``ome`` attribute of a
Zarr v3 group: :func:`group_attrs` flattens that, :func:`write_ome` puts keys in the
right place.  Space axes are in nanometres; numbers are stored rounded to 12
significant digits (:func:`clean_number`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from volseg.colors import hex_colour, label_table
from volseg.errors import ConfigError, InputError
from volseg.io.location import Location, as_path, normalize, relative, zarr_store
from volseg.io.location import PathLike as _PathLike
from volseg.ngff import DEFAULT_NGFF, NGFF_VERSIONS, Ngff

NGFF_VERSION = "0.4"
"""Assumed version of a 0.4-style group whose metadata does not say."""
UNIT = "nanometer"

_UNIT_TO_NM = {
    "angstrom": 0.1, "picometer": 1e-3, "nanometer": 1.0, "micrometer": 1e3,
    "micron": 1e3, "millimeter": 1e6, "centimeter": 1e7, "meter": 1e9,
}

VoxelSize = tuple[float, float, float]
PathLike = _PathLike


def check_ngff(version: str) -> Ngff:
    """Return ``version`` if volseg writes it, else raise :class:`ConfigError`."""
    for known in NGFF_VERSIONS:
        if version == known:
            return known
    raise ConfigError(f"NGFF version {version!r} is not supported; choose one of "
                      f"{', '.join(NGFF_VERSIONS)}")


def clean_number(value: float) -> float:
    """Return ``value`` rounded to 12 significant digits (drops binary float noise).

    >>> clean_number(14.0 * 0.1)
    1.4
    """
    return float(f"{float(value):.12g}")


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Level:
    """One level of a multiscale image as described by its metadata."""

    path: str
    shape: tuple[int, ...]
    scale: tuple[float, ...]
    translation: tuple[float, ...] | None


@dataclass(frozen=True)
class Multiscales:
    """The parsed ``multiscales`` metadata of an OME-Zarr image or label group.

    Attributes
    ----------
    axes
        Axis names, e.g. ``("z", "y", "x")``.
    units
        Unit of each axis (``None`` when not given).
    levels
        The levels, finest first, with scales and translations converted to
        nanometres for space axes that state a unit.
    kind
        ``"labels"`` for a group with ``image-label`` metadata, else ``"image"``.
    version
        The NGFF version string.
    attrs
        All group attributes (OME metadata flattened for 0.5 groups).
    """

    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    levels: tuple[Level, ...]
    kind: Literal["image", "labels"]
    version: str
    attrs: dict[str, Any]

    @property
    def voxel_size(self) -> VoxelSize | None:
        """Voxel size ``(z, y, x)`` in nm of level 0 (``None`` if no axis has a unit)."""
        return self.level_voxel_size(0)

    def level_voxel_size(self, level: int) -> VoxelSize | None:
        """Voxel size ``(z, y, x)`` in nm of ``level`` (``None`` if no space unit)."""
        if all(self.units[i] is None for i, a in enumerate(self.axes) if a in "zyx"):
            return None
        scale = dict(zip(self.axes, self.levels[level].scale, strict=True))
        y, x = scale.get("y", 1.0), scale.get("x", 1.0)
        return (float(scale.get("z", y)), float(y), float(x))

    @property
    def origin(self) -> VoxelSize | None:
        """Position ``(z, y, x)`` of the first voxel's centre of level 0 (``None``: 0)."""
        return self.level_origin(0)

    def level_origin(self, level: int) -> VoxelSize | None:
        """Position ``(z, y, x)`` of the first voxel's centre of ``level`` (``None``: 0)."""
        trans = self.levels[level].translation
        if trans is None:
            return None
        shift = dict(zip(self.axes, trans, strict=True))
        out = (float(shift.get("z", 0.0)), float(shift.get("y", 0.0)),
               float(shift.get("x", 0.0)))
        return None if not any(out) else out


def group_attrs(path: PathLike) -> dict[str, Any]:
    """Return the attributes of the Zarr group at ``path`` (0.5 ``ome`` key flattened)."""
    group = zarr.open_group(zarr_store(as_path(path), read_only=True), mode="r")
    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, Mapping):
        attrs = {**attrs, **ome}
    return attrs


def group_version(path: PathLike) -> Ngff | None:
    """Return the NGFF version a volseg writer uses for the group at ``path`` (or None).

    Zarr format 3 groups are 0.5, format 2 groups 0.4; ``None`` when there is no group.
    """
    try:
        group = zarr.open_group(zarr_store(as_path(path), read_only=True), mode="r")
    except (OSError, zarr.errors.GroupNotFoundError, ValueError, TypeError):
        return None
    return "0.5" if group.metadata.zarr_format == 3 else "0.4"


def _to_nm(value: float, unit: str | None) -> float:
    return clean_number(value * _UNIT_TO_NM.get(unit, 1.0)) if unit else value


def read_multiscales(path: PathLike) -> Multiscales:
    """Parse the first ``multiscales`` entry of the OME-Zarr group at ``path``.

    Raises
    ------
    InputError
        If the group has no (or malformed) multiscales metadata.
    """
    path = as_path(path)
    attrs = group_attrs(path)
    entries = attrs.get("multiscales")
    if not entries:
        raise InputError(f"{path} is a Zarr group without OME-Zarr 'multiscales' metadata; "
                         f"pass one of its arrays as the input instead")
    try:
        ms = entries[0]
        axes_meta = [a if isinstance(a, Mapping) else {"name": a} for a in ms["axes"]]
        axes = tuple(str(a["name"]) for a in axes_meta)
        units = tuple(a.get("unit") for a in axes_meta)
        global_scale = _transform(ms.get("coordinateTransformations"), "scale", len(axes))
        global_shift = _transform(ms.get("coordinateTransformations"), "translation", len(axes))
        group = zarr.open_group(zarr_store(path, read_only=True), mode="r")
        levels = []
        for ds in ms["datasets"]:
            arr = group[ds["path"]]
            if not isinstance(arr, zarr.Array):
                raise ValueError(f"dataset {ds['path']!r} is not an array")
            transforms = ds.get("coordinateTransformations")
            scale = _transform(transforms, "scale", len(axes)) or (1.0,) * len(axes)
            trans = _transform(transforms, "translation", len(axes))
            gscale = global_scale or (1.0,) * len(axes)
            scale_nm = tuple(_to_nm(s * g, u) for s, g, u in zip(scale, gscale, units,
                                                                 strict=True))
            if global_shift is not None:  # global transforms apply after the dataset's
                trans = tuple(t * g + s for t, g, s in zip(
                    trans or (0.0,) * len(axes), gscale, global_shift, strict=True))
            trans_nm = None if trans is None else tuple(
                _to_nm(t, u) for t, u in zip(trans, units, strict=True))
            levels.append(Level(str(ds["path"]), tuple(arr.shape), scale_nm, trans_nm))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError(f"{path} has malformed OME-Zarr multiscales metadata ({exc}); "
                         f"rewrite it with `volseg convert`") from None
    kind: Literal["image", "labels"] = "labels" if "image-label" in attrs else "image"
    version = str(ms.get("version") or attrs.get("version") or NGFF_VERSION)
    return Multiscales(axes, units, tuple(levels), kind, version, attrs)


def _transform(transforms: Any, kind: str, ndim: int) -> tuple[float, ...] | None:
    for t in transforms or ():
        if t.get("type") == kind and kind in t:
            values = tuple(float(v) for v in t[kind])
            if len(values) != ndim:
                raise ValueError(f"{kind} has {len(values)} values for {ndim} axes")
            return values
    return None


def is_ome_zarr(path: PathLike) -> bool:
    """Return whether ``path`` is a Zarr group with multiscales or labels metadata."""
    try:
        attrs = group_attrs(path)
    except (OSError, zarr.errors.GroupNotFoundError, ValueError, TypeError):
        return False
    return "multiscales" in attrs or "labels" in attrs


def label_names(image_path: PathLike) -> list[str]:
    """Return the names of the label images listed in ``image_path/labels``."""
    try:
        return [str(n) for n in _as_list(group_attrs(as_path(image_path) / "labels").get("labels"))]
    except (OSError, zarr.errors.GroupNotFoundError, ValueError, TypeError):
        return []


def class_names(path: PathLike) -> list[str] | None:
    """Return the class names of an OME-Zarr image or label group (``None``: unknown).

    Looked up in ``volseg.class_names``, the ``image-label`` ``properties`` and the
    ``omero`` channel labels, in that order.
    """
    attrs = group_attrs(path)
    volseg = attrs.get("volseg")
    if isinstance(volseg, Mapping) and isinstance(volseg.get("class_names"), list):
        return [str(n) for n in volseg["class_names"]]
    label = attrs.get("image-label")
    if isinstance(label, Mapping) and isinstance(label.get("properties"), list):
        props = {int(p["label-value"]): p for p in label["properties"]
                 if isinstance(p, Mapping) and "label-value" in p and "class" in p
                 and not p.get("ignore")}
        if props and sorted(props) == list(range(len(props))):
            return [str(props[i]["class"]) for i in range(len(props))]
    omero = attrs.get("omero")
    if isinstance(omero, Mapping) and isinstance(omero.get("channels"), list):
        names = [c.get("label") for c in omero["channels"] if isinstance(c, Mapping)]
        if names and all(isinstance(n, str) for n in names):
            return [str(n) for n in names]
    return None


def carry_classes(probabilities: PathLike, source: Mapping[str, Any], n_classes: int,
                  record: dict[str, Any]) -> list[str] | None:
    """Carry the class names and ignore id of class probabilities into a label record.

    For a label image made from ``probabilities`` (the dense CRF, post-processing):
    ``class_names`` and ``ignore_id`` of the probabilities' ``volseg`` attributes
    (``source``) go into ``record`` where it does not set them, and the class names
    (from the record, else :func:`class_names` of ``probabilities``) are returned when
    there is one per class (``None``: unknown).
    """
    volseg = source.get("volseg")
    if isinstance(volseg, Mapping):
        for key in ("class_names", "ignore_id"):
            if key in volseg and key not in record:
                record[key] = volseg[key]
    names = record.get("class_names")
    if not isinstance(names, list):
        try:
            names = class_names(probabilities)
        except Exception:  # a plain array or a file without group metadata
            names = None
    if not names or len(names) != n_classes:
        return None
    record.setdefault("class_names", [str(n) for n in names])
    return [str(n) for n in names]


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _axes_metadata(axes: Sequence[str], unit: str | None) -> list[dict[str, str]]:
    out = []
    for name in axes:
        if name == "c":
            out.append({"name": "c", "type": "channel"})
        elif name == "t":
            out.append({"name": "t", "type": "time"})
        else:
            entry = {"name": name, "type": "space"}
            if unit:
                entry["unit"] = unit
            out.append(entry)
    return out


def _dataset_metadata(path: str, scale: Sequence[float], base: Sequence[float],
                      origin: Sequence[float]) -> dict[str, Any]:
    transforms: list[dict[str, Any]] = [
        {"type": "scale", "scale": [clean_number(s) for s in scale]}]
    shift = [o + (s - b) / 2 for s, b, o in zip(scale, base, origin, strict=True)]
    if any(shift):
        transforms.append({"type": "translation",
                           "translation": [clean_number(t) for t in shift]})
    return {"path": path, "coordinateTransformations": transforms}


def multiscales_metadata(
    name: str, axes: Sequence[str], scales: Sequence[Sequence[float]], unit: str | None,
    method: str, ngff: Ngff, origin: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    shift = tuple(origin) if origin is not None else (0.0,) * len(axes)
    entry: dict[str, Any] = {"version": ngff} if ngff == "0.4" else {}
    entry.update({
        "name": name,
        "axes": _axes_metadata(axes, unit),
        "datasets": [_dataset_metadata(str(i), s, scales[0], shift)
                     for i, s in enumerate(scales)],
        "type": method,
        "metadata": {"method": f"volseg.io.pyramid.reduce_{method}", "factor": 2},
    })
    return [entry]


def label_metadata(
    *, classes: Sequence[str] | None = None, ignore_id: int | None = None,
    source: str | None = "../../", ngff: Ngff = DEFAULT_NGFF,
) -> dict[str, Any]:
    """Return the ``image-label`` metadata of a label image.

    Parameters
    ----------
    classes
        Class names in id order: ``colors`` and ``properties`` (``class``) for every
        id, from :func:`volseg.colors.label_table`.  ``None`` (instance ids): neither.
    ignore_id
        The "not annotated" id: transparent, ``class: not annotated``, ``ignore: true``.
    source
        Relative path from the label group to the image it belongs to (``None``:
        not stated).
    ngff
        Format version.
    """
    meta: dict[str, Any] = {"version": ngff} if ngff == "0.4" else {}
    if source is not None:
        meta["source"] = {"image": source}
    if classes is not None:
        table = label_table(list(classes), ignore_id)
        meta["colors"] = [{"label-value": i, "rgba": list(rgba)} for i, _, rgba in table]
        meta["properties"] = [
            {"label-value": i, "class": name, **({"ignore": True} if i == ignore_id else {})}
            for i, name, _ in table]
    return meta


def omero_metadata(names: Sequence[str], dtype: Any) -> dict[str, Any]:
    """Return ``omero`` channel metadata for class probabilities: names, colours, windows."""
    top = 255.0 if np.dtype(dtype) == np.uint8 else 1.0
    window = {"min": 0.0, "max": top, "start": 0.0, "end": top}
    return {"channels": [{"label": str(n), "color": hex_colour(i), "active": True,
                          "coefficient": 1.0, "family": "linear", "inverted": False,
                          "window": dict(window)} for i, n in enumerate(names)],
            "rdefs": {"model": "color"}}


def source_path(label_group: PathLike, image_group: PathLike | None) -> str | None:
    """Return the relative path from ``label_group`` to ``image_group`` (``/``-separated).

    ``None`` when there is no image or the path cannot be made relative.
    """
    if image_group is None:
        return None
    rel = relative(as_path(image_group), as_path(label_group))
    return None if rel is None else rel + "/"


def write_ome(group: zarr.Group, ngff: Ngff, meta: Mapping[str, Any]) -> None:
    """Merge NGFF metadata into the group's attributes (under ``ome`` for 0.5)."""
    if ngff == "0.4":
        group.attrs.update(dict(meta))
        return
    previous = group.attrs.get("ome")
    ome = dict(previous) if isinstance(previous, Mapping) else {}
    ome.update(dict(meta))
    ome["version"] = "0.5"
    group.attrs["ome"] = ome


def image_of(path: PathLike) -> Location | None:
    """Return the image an OME-Zarr label group belongs to (``None``: unknown or absent).

    Follows ``image-label.source.image`` (relative to the group); for an image group
    returns the group itself.
    """
    path = as_path(path)
    try:
        attrs = group_attrs(path)
    except (OSError, zarr.errors.GroupNotFoundError, ValueError, TypeError):
        return None
    label = attrs.get("image-label")
    if not isinstance(label, Mapping):
        return path if "multiscales" in attrs else None
    source = label.get("source")
    rel = source.get("image") if isinstance(source, Mapping) else None
    if not isinstance(rel, str):
        return None
    image = normalize(path / rel)
    return image if is_ome_zarr(image) and "multiscales" in group_attrs(image) else None


