"""Workflow stage ``preview``: orthogonal-slice PNGs of image, prediction and truth.

It also prints how to open the products in a viewer, and returns the same in its
summary: a ``napari --plugin napari-ome-zarr ...`` command line listing the image
and every OME-Zarr product of the workflow directory (label images open as labels
layers with their class names and colours, probabilities as one layer per class),
and neuroglancer source lines, ``zarr3://`` for NGFF 0.5 groups and ``zarr2://``
for 0.4, for the products served over HTTP from the workflow directory.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from volseg.errors import OutputExistsError
from volseg.io import omezarr, open_volume
from volseg.io.multiscales import class_names
from volseg.preview import (
    MIN_DEPTH_FOR_PLANES,
    PLANES,
    legend_entries,
    overlay,
    plane_slices,
    save_panels,
    stack_sections,
)
from volseg.workflow.stage import RunContext, StageConfig

NAME = "preview"
ORDER = 80


class Config(StageConfig):
    """Which volumes to show and where to write the PNGs."""

    image: str = "image.ome.zarr"
    prediction: str | None = "crf.ome.zarr"
    truth: str | None = "image.ome.zarr/labels/truth"
    output: str = "preview"
    position: tuple[int, int, int] | None = Field(
        None, description="(z, y, x) the planes pass through; default: the volume centre"
    )
    hidden_labels: list[int] = Field([0], description="label values left uncoloured")
    ignore_id: int | None = Field(255, description="the 'not annotated' id, left uncoloured")
    max_size: int = Field(768, ge=32, description="longest side of a panel in pixels")


def _plane(volume: Any, index: tuple[object, ...], max_size: int) -> np.ndarray:
    plane = np.asarray(volume[index])
    step = max(1, int(np.ceil(max(plane.shape) / max_size)))
    return plane[::step, ::step]


def _open_optional(ctx: RunContext, path: str | None, shape: tuple[int, ...]
                   ) -> tuple[Any, list[str] | None]:
    """The label volume at ``path`` (if it exists and fits ``shape``) and its class names."""
    if path is None or not ctx.path(path).exists():
        return None, None
    volume, _ = open_volume(ctx.path(path))
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if tuple(volume.shape) != shape:
        return None, None
    return volume, class_names(ctx.path(path))


def _group_of(path: str) -> str:
    """Return the OME-Zarr group containing ``path`` (``a.ome.zarr/labels/x`` -> ``a.ome.zarr``)."""
    head, sep, _ = path.partition(".ome.zarr")
    return head + sep if sep else path


NEUROGLANCER_BASE = "http://localhost:8000"
"""Where the neuroglancer lines assume the workflow directory is served (with CORS)."""


def viewer_products(ctx: RunContext, config: Config) -> list[Path]:
    """The groups to open: the image, the prediction's group, then every other product."""
    workdir = ctx.local(ctx.workdir, "preview's output_dir")
    named = [Path(_group_of(str(ctx.path(p)))) for p in (config.image, config.prediction) if p]
    others = sorted(workdir.glob("*.ome.zarr")) if workdir.is_dir() else []
    products: list[Path] = []
    for path in [*named, *others]:
        if path.exists() and omezarr.is_ome_zarr(path) and path not in products:
            products.append(path)
    return products


def neuroglancer_source(path: Path, workdir: Path, base: str = NEUROGLANCER_BASE) -> str:
    """Return the neuroglancer layer source of an OME-Zarr group served from ``workdir``."""
    scheme = "zarr3" if omezarr.group_version(path) == "0.5" else "zarr2"
    try:
        rel = path.resolve().relative_to(workdir.resolve()).as_posix()
    except ValueError:
        rel = path.name
    return f"{scheme}://{base}/{rel}/"


def run(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Write the preview PNGs and print how to open the results.

    A volume of at least :data:`~volseg.preview.MIN_DEPTH_FOR_PLANES` sections gets
    ``xy.png``, ``xz.png`` and ``yz.png`` (planes through ``position``); a thinner one
    (a single micrograph, a stack of them) gets ``xy.png`` alone, one row per section
    (up to four, evenly spaced).  Each has a legend of the class colours.
    """
    out = ctx.local(ctx.path(config.output), "the preview PNGs (preview.output)")
    image, meta = open_volume(ctx.path(config.image))
    if image.ndim == 4:
        image = image[0]
    shape = tuple(int(s) for s in image.shape)
    stack = shape[0] < MIN_DEPTH_FOR_PLANES
    targets = {plane: out / f"{plane}.png" for plane in (("xy",) if stack else PLANES)}
    existing = [p for p in targets.values() if p.exists()]
    if existing and not ctx.overwrite:
        raise OutputExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    prediction, pred_names = _open_optional(ctx, config.prediction, shape)
    truth, truth_names = _open_optional(ctx, config.truth, shape)
    names = pred_names or truth_names
    position = config.position or tuple(s // 2 for s in shape)
    vz, vy, vx = meta.voxel_size or (1.0, 1.0, 1.0)
    aspects = {"xy": vy / vx, "xz": vz / vx, "yz": vz / vy}
    ids = range(len(names)) if names else sorted(
        {int(v) for lab in (prediction, truth) if lab is not None
         for v in np.unique(np.asarray(lab[position[0]]))})
    legend, note = legend_entries(names, list(ids), hidden=config.hidden_labels,
                                  ignore_id=config.ignore_id)

    def row(index: tuple[object, ...], label: str) -> list[tuple[str, np.ndarray]]:
        grey = _plane(image, index, config.max_size)
        panels = [(f"image{label}", overlay(grey, None))]
        for caption, labels in (("prediction", prediction), ("truth", truth)):
            if labels is not None:
                lab = _plane(labels, index, config.max_size)
                panels.append((caption, overlay(grey, lab, hidden=config.hidden_labels,
                                                ignore_id=config.ignore_id)))
        return panels

    if stack:
        sections = stack_sections(shape[0])
        rows = [row((z, slice(None), slice(None)), f", section z={z}") for z in sections]
        save_panels(targets["xy"], rows, title=f"xy sections {sections} of {shape[0]}",
                    aspect=aspects["xy"], legend=legend, note=note)
    else:
        for plane, index in plane_slices(shape, position).items():
            save_panels(targets[plane], row(index, ""),
                        title=f"{plane} plane through (z,y,x)={position}",
                        aspect=aspects[plane], legend=legend, note=note)
    print(f"volseg: previews written to {out}/{{{','.join(targets)}}}.png", file=sys.stderr)
    workdir = ctx.local(ctx.workdir, "preview's output_dir")
    products = viewer_products(ctx, config)
    napari = ["napari", "--plugin", "napari-ome-zarr", *map(str, products)]
    sources = [neuroglancer_source(p, workdir) for p in products]
    print("volseg: open in napari:  " + shlex.join(napari), file=sys.stderr)
    print(f"volseg: or in neuroglancer: serve {ctx.workdir} with CORS on "
          f"{NEUROGLANCER_BASE} (e.g. `npx http-server --cors -p 8000`) and add the layer "
          f"sources:\n  " + "\n  ".join(sources), file=sys.stderr)
    return {"previews": [str(p) for p in targets.values()], "position": list(position),
            "products": [str(p) for p in products], "napari": napari, "neuroglancer": sources}

