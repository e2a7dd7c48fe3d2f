"""bioimage.io model packages out: the ``rdf.yaml`` (spec 0.5) of a volseg model.

:func:`package_geometry` says how a :class:`~volseg.models.spec.ModelSpec` network
is fed (axes, minimum and step sizes, halo); :func:`describe` writes the description
as plain data; :func:`save_package` validates it with ``bioimageio.spec`` and zips the
package.  :func:`build_network` is the ``pytorch_state_dict`` architecture callable
(only for packages exported with ``--state-dict``).

Axes
----
``3d``
    ``batch, channel, z, y, x`` in and out; each spatial size ``min + n * step`` with
    ``step`` the network's down-sampling and ``min`` the smallest multiple of it
    larger than twice the halo.  The output halo is an eighth of volseg's patch (the
    half-overlap of volseg's default ``overlap=0.25``): what a tiling consumer should
    crop so that tiles meet where volseg's patches blend.
``2.5d``
    ``batch, channel, y, x``: the ``k`` input channels are ``k`` consecutive z sections
    (named ``z-1, z+0, z+1`` for ``k = 3``) of one image channel, centred on the output
    section; in-plane as ``3d``.  The z spacing is stated in the input's description.
``centre_voxel``
    ``batch, channel, z, y, x``; a valid network: any input of at least ``R`` voxels,
    outputs ``R - 1`` smaller on every axis (``size.offset = 1 - R``), no halo.

Normalisation
-------------
volseg's statistics are fixed numbers of the training image, so both modes are
written as ``fixed_zero_mean_unit_variance``: ``meanstd`` with its mean and std,
``percentile`` with ``mean = low`` and ``std = high - low`` (the same arithmetic,
``(x - low) / (high - low)``; the percentiles are named in the input's description).
bioimage.io's ``scale_range`` would instead take the percentiles of each image it is
given, which is not what the network was trained with.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volseg.errors import ConfigError, InputError
from volseg.models.registry import UNetParams, build_model, get_architecture
from volseg.models.spec import ModelSpec

HALO_FRACTION = 0.125
"""Output halo as a fraction of volseg's patch (half of the default overlap 0.25)."""
FORMAT_VERSION = "0.5.12"


@dataclass(frozen=True)
class PackageGeometry:
    """How the exported network is fed.

    Attributes
    ----------
    axes
        Spatial axis ids (``("z", "y", "x")`` or ``("y", "x")``).
    minimum, step, halo
        Per spatial axis: smallest input size, size step, output halo.
    offset
        Output size minus input size per axis (``1 - R`` for centre-voxel networks).
    channels
        Input channel names.
    test_input
        ``(z, y, x)`` size of the test input volume (``k`` sections for 2.5-D).
    """

    axes: tuple[str, ...]
    minimum: tuple[int, ...]
    step: tuple[int, ...]
    halo: tuple[int, ...]
    offset: int
    channels: tuple[str, ...]
    test_input: tuple[int, int, int]


def _divisor(spec: ModelSpec, ndim: int) -> tuple[int, ...] | None:
    params = get_architecture(spec.architecture).parse_params(spec.params)
    return params.divisor(ndim) if isinstance(params, UNetParams) else None


def package_geometry(spec: ModelSpec) -> PackageGeometry:
    """Return the axes, sizes and halo of a model's package (see the module notes)."""
    kind = spec.kind
    if kind == "centre_voxel":
        r = int(spec.receptive_field or 1)
        return PackageGeometry(("z", "y", "x"), (r, r, r), (1, 1, 1), (0, 0, 0), 1 - r,
                               _channel_names(spec), spec.input_size)
    patch = spec.patch_size[1:] if kind == "2.5d" else spec.patch_size
    axes = ("y", "x") if kind == "2.5d" else ("z", "y", "x")
    divisor = _divisor(spec, len(axes))
    minimum, step, halo = [], [], []
    for i, p in enumerate(patch):
        h = int(p * HALO_FRACTION)
        if divisor is None:  # an architecture without a known down-sampling: fixed size
            minimum.append(int(p))
            step.append(0)
            halo.append(h if p - 2 * h >= 1 else 0)
            continue
        d = int(divisor[i])
        m = d * (2 * h // d + 1)
        minimum.append(min(m, int(p)) if p - 2 * h >= 1 else int(p))
        step.append(d)
        halo.append(h if minimum[-1] - 2 * h >= 1 else 0)
    return PackageGeometry(axes, tuple(minimum), tuple(step), tuple(halo), 0,
                           _channel_names(spec), spec.input_size)


def _channel_names(spec: ModelSpec) -> tuple[str, ...]:
    if spec.kind != "2.5d":
        return tuple(f"channel{c}" if spec.in_channels > 1 else "em"
                     for c in range(spec.in_channels))
    k = int(spec.context or 1)
    sections = [f"z{j - k // 2:+d}" for j in range(k)]
    if spec.in_channels == 1:
        return tuple(sections)
    return tuple(f"c{c} {s}" for c in range(spec.in_channels) for s in sections)


def _space_axis(aid: str, size: Any, scale: float | None, *, halo: int = 0,
                description: str = "") -> dict[str, Any]:
    axis: dict[str, Any] = {"type": "space", "id": aid, "size": size}
    if scale is not None:
        axis.update(unit="nanometer", scale=float(scale))
    if halo:
        axis["halo"] = int(halo)
    if description:
        axis["description"] = description[:128]
    return axis


def _normalization(spec: ModelSpec) -> tuple[list[dict[str, Any]], str]:
    norm = spec.normalization
    if norm.mode == "meanstd":
        assert norm.mean is not None and norm.std is not None
        return ([{"id": "fixed_zero_mean_unit_variance",
                  "kwargs": {"mean": norm.mean, "std": norm.std}}],
                f"raw intensities; normalised (x - {norm.mean:.6g}) / {norm.std:.6g}")
    if norm.mode == "percentile":
        assert norm.low is not None and norm.high is not None
        return ([{"id": "fixed_zero_mean_unit_variance",
                  "kwargs": {"mean": norm.low, "std": norm.high - norm.low}}],
                f"raw intensities; the training image's {norm.low_percentile:g}-"
                f"{norm.high_percentile:g} % percentiles ({norm.low:.6g}, {norm.high:.6g}) "
                "map to 0-1")
    return [], "raw intensities, fed unchanged (no normalisation)"


def describe(
    spec: ModelSpec,
    *,
    name: str,
    description: str,
    weights: Mapping[str, str],
    test_input: str,
    test_output: str,
    documentation: str,
    covers: Sequence[str] = (),
    authors: Sequence[Mapping[str, str]] = (),
    license: str | None = None,
    cite: Sequence[Mapping[str, str]] = (),
    opset: int | None = None,
    tags: Sequence[str] = (),
    volseg_config: Mapping[str, Any] | None = None,
    attachments: Sequence[str] = (),
) -> dict[str, Any]:
    """Return the bioimage.io description (the ``rdf.yaml`` content) of a volseg model.

    Parameters
    ----------
    spec
        The model's spec.
    name, description
        The package's name and short description.
    weights
        File names (relative to the package) per format: ``"torchscript"``,
        ``"onnx"`` and, only when asked for, ``"pytorch_state_dict"``.
    test_input, test_output, documentation, covers, attachments
        File names of the test tensors, the README, cover images, extra files.
    authors, license, cite
        ``[{"name": ..., "affiliation": ...}]``, an SPDX id, ``[{"text": ..., "doi"|"url": ...}]``.
    opset
        ONNX opset of the ONNX weights.
    tags
        Extra tags.
    volseg_config
        ``config.volseg``: what volseg reads back (kind, context, patch size, spec).
    """
    geo = package_geometry(spec)
    kind = spec.kind
    vz, vy, vx = spec.voxel_size or (None, None, None)
    scales = {"z": vz, "y": vy, "x": vx}
    pre, norm_text = _normalization(spec)
    in_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": list(geo.channels),
         "description": (f"{spec.context} consecutive z sections"
                         + (f" ({vz:g} nm apart)" if vz else "")
                         + ", centred on the output section" if kind == "2.5d"
                         else "image channels")[:128]},
    ]
    out_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": list(spec.classes)},
    ]
    for i, aid in enumerate(geo.axes):
        size: dict[str, Any] | int
        size = ({"min": geo.minimum[i], "step": geo.step[i]} if geo.step[i]
                else geo.minimum[i])
        in_axes.append(_space_axis(aid, size, scales[aid]))
        ref = {"tensor_id": "input", "axis_id": aid, "offset": geo.offset}
        out_axes.append(_space_axis(aid, ref, scales[aid], halo=geo.halo[i]))
    post = ([{"id": "softmax", "kwargs": {"axis": "channel"}}] if len(spec.classes) > 1
            else [{"id": "sigmoid"}])
    entries: dict[str, Any] = {}
    first = "pytorch_state_dict" if "pytorch_state_dict" in weights else "torchscript"
    version = torch.__version__.split("+")[0]
    for fmt, source in weights.items():
        entry: dict[str, Any] = {"source": source}
        if fmt != first:
            entry["parent"] = first
        if fmt == "torchscript":
            entry["pytorch_version"] = version
            entry["comment"] = "traced with torch.jit.trace by volseg"
        elif fmt == "onnx":
            entry["opset_version"] = int(opset or 18)
            entry["comment"] = "exported with torch.onnx.export (dynamo) by volseg"
        elif fmt == "pytorch_state_dict":
            entry["pytorch_version"] = version
            entry["architecture"] = {
                "callable": "build_network", "import_from": "volseg.models.rdf",
                "kwargs": {"spec": spec.to_json()},
            }
        else:
            raise ConfigError(f"unknown weights format {fmt!r}")
        entries[fmt] = entry
    content: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": name,
        "description": description[:1024],
        "authors": [dict(a) for a in authors],
        "cite": [dict(c) for c in cite],
        "documentation": {"source": documentation},
        "covers": [{"source": c} for c in covers],
        "tags": sorted({"volseg", "electron-microscopy", "semantic-segmentation",
                        "2d" if kind == "2.5d" else "3d", *tags}),
        "inputs": [{
            "id": "input", "axes": in_axes, "test_tensor": {"source": test_input},
            "description": norm_text[:128], "preprocessing": pre,
            "data": {"type": "float32"},
        }],
        "outputs": [{
            "id": "output", "axes": out_axes, "test_tensor": {"source": test_output},
            "description": ("class probabilities (softmax over channels)"
                            if len(spec.classes) > 1 else "foreground probability (sigmoid)"),
            "postprocessing": post, "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": entries,
        "config": {
            "volseg": dict(volseg_config or {}),
            "bioimageio": {
                "architecture_type": spec.architecture[:32],
                "modality": "electron microscopy",
                "task": "semantic segmentation",
                "target_structure": list(spec.classes),
                "model_parameter_count": sum(int(p.numel())
                                             for p in build_model(spec).parameters()),
            },
        },
    }
    if license:
        content["license"] = license
    if attachments:
        content["attachments"] = [{"source": a} for a in attachments]
    return content


def save_package(content: Mapping[str, Any], folder: Path, output: Path) -> Path:
    """Validate ``content`` (files relative to ``folder``) and write the package zip.

    Raises
    ------
    ConfigError
        One line naming the first invalid field (e.g. an unknown licence id).
    """
    from bioimageio.spec import (
        InvalidDescr,
        ValidationContext,
        build_description,
        save_bioimageio_package,
    )

    context = ValidationContext(root=folder, file_name="rdf.yaml", perform_io_checks=True)
    descr = build_description(dict(content), context=context)
    if isinstance(descr, InvalidDescr):
        reason = (descr.get_reason() or "invalid description").splitlines()[0]
        raise ConfigError(f"the bioimage.io description of {output} is invalid: {reason}")
    tmp = output.with_name(f".{output.name}.partial")
    try:
        save_bioimageio_package(descr, output_path=tmp, weights_priority_order=None)
    except ValueError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{output}: bioimage.io refused the package: "
                          f"{first[-1] if first else exc}") from None
    os.replace(tmp, output)
    return output


def build_network(spec: str) -> nn.Module:
    """Architecture callable of ``pytorch_state_dict`` weights: the untrained network.

    Parameters
    ----------
    spec
        The model spec as JSON (``weights.pytorch_state_dict.architecture.kwargs``).
    """
    return build_model(ModelSpec.from_json(spec))


def check_license(license: str) -> str:
    """Return ``license`` if it is an SPDX licence id (``ConfigError`` naming it otherwise)."""
    from bioimageio.spec.utils import get_spdx_licenses

    known = {entry["licenseId"] for entry in get_spdx_licenses()["licenses"]
             if not entry.get("isDeprecatedLicenseId")}
    if license not in known:
        raise ConfigError(f"licence {license!r} is not an SPDX licence id (e.g. CC-BY-4.0, "
                          "MIT, BSD-3-Clause; see https://spdx.org/licenses)")
    return license


def parse_author(text: str) -> dict[str, str]:
    """``"Name"`` or ``"Name; Affiliation"`` as a bioimage.io author entry."""
    name, _, affiliation = (part.strip() for part in text.partition(";"))
    if not name or "/" in name:
        raise ConfigError(f"author {text!r}: give a name (no '/'), optionally '; affiliation'")
    return {"name": name, **({"affiliation": affiliation} if affiliation else {})}


def parse_cite(text: str, reference: str) -> dict[str, str]:
    """A citation: free text plus a DOI (``10.xxxx/...``) or an http(s) URL."""
    ref = reference.strip()
    if ref.lower().startswith("https://doi.org/"):
        ref = ref[len("https://doi.org/"):]
    if re.match(r"^10\.[0-9]{4}.+$", ref):
        return {"text": text, "doi": ref}
    if ref.startswith(("http://", "https://")):
        return {"text": text, "url": ref}
    raise ConfigError(f"citation {text!r}: {reference!r} is neither a DOI (10.xxxx/...) nor "
                      "an http(s) URL")


def safe_name(text: str) -> str:
    """A bioimage.io name: letters, digits, ``_+- ()`` and spaces, 5-128 characters."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
    out = "".join(c if c in allowed else "-" for c in text).strip()
    out = " ".join(out.split())[:128]
    if len(out) < 5:
        raise ConfigError(f"name {text!r} must have at least 5 letters, digits, spaces or "
                          "'_+-()'")
    return out


def copy_into(folder: Path, source: str | os.PathLike[str], name: str) -> str:
    """Copy ``source`` into the package folder as ``name``; return ``name``."""
    src = Path(source)
    if not src.is_file():
        raise InputError(f"{src} does not exist (needed for the package)")
    shutil.copyfile(src, folder / name)
    return name


__all__ = [
    "FORMAT_VERSION",
    "HALO_FRACTION",
    "PackageGeometry",
    "build_network",
    "check_license",
    "describe",
    "package_geometry",
    "parse_author",
    "parse_cite",
    "safe_name",
    "save_package",
]
