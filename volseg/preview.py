"""Orthogonal-slice previews: image with prediction (and truth) overlaid, as PNGs.

Compute only: functions take numpy slices and return RGB arrays or write a figure to a
given path; reading the volumes is the caller's job (see ``volseg.stages.preview``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np

from volseg.colors import IGNORE_NAME, class_rgb_float

PLANES = ("xy", "xz", "yz")

#: A volume with fewer sections than this is previewed as a stack of 2-D sections
#: (xy panels of a few sections) rather than as xy / xz / yz planes, whose xz and yz
#: panels would be strips a few pixels high.
MIN_DEPTH_FOR_PLANES = 16


def class_colour(label: int) -> np.ndarray:
    """Return the RGB colour (in [0, 1]) of ``label``: the table of :mod:`volseg.colors`,
    which the OME-Zarr label metadata uses too."""
    return np.asarray(class_rgb_float(label))


def to_grey(image: np.ndarray, *, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Scale an image slice to [0, 1] by its ``low``–``high`` percentiles."""
    data = np.asarray(image, dtype=np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros_like(data)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        return np.zeros_like(data)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0)


def overlay(
    image: np.ndarray,
    labels: np.ndarray | None,
    *,
    alpha: float = 0.45,
    hidden: Sequence[int] = (0,),
    ignore_id: int | None = 255,
) -> np.ndarray:
    """Blend label colours over a grey image slice.

    Parameters
    ----------
    image
        2-D image slice (any dtype).
    labels
        2-D label slice of the same shape, or ``None`` for the image alone.
    alpha
        Opacity of the label colours.
    hidden
        Label values left uncoloured (e.g. background).
    ignore_id
        Label value meaning "not annotated"; left uncoloured.

    Returns
    -------
    numpy.ndarray
        ``(Y, X, 3)`` float RGB in [0, 1].
    """
    grey = to_grey(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if labels is None:
        return rgb
    if labels.shape != grey.shape:
        raise ValueError(f"labels shape {labels.shape} differs from image shape {grey.shape}")
    skip = set(hidden) | ({ignore_id} if ignore_id is not None else set())
    for value in np.unique(labels):
        if int(value) in skip:
            continue
        mask = labels == value
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * class_colour(int(value))
    return rgb


LegendEntry = tuple[str, tuple[float, float, float]]
Panel = tuple[str, np.ndarray]


def legend_entries(
    class_names: Sequence[str] | None,
    ids: Sequence[int],
    *,
    hidden: Sequence[int] = (0,),
    ignore_id: int | None = 255,
) -> tuple[list[LegendEntry], str | None]:
    """Return the legend of the coloured classes and a note naming the uncoloured ones.

    Parameters
    ----------
    class_names
        Names in id order (``None``: ``class <id>``).
    ids
        The class ids to list (e.g. every id of the classes, or those present).
    hidden, ignore_id
        As for :func:`overlay`: ids left uncoloured (named in the note instead).

    Returns
    -------
    entries, note
        ``(name, rgb)`` per coloured id, in id order, with the colours of
        :mod:`volseg.colors` (those of the label images' metadata); the note says which
        ids are not coloured, or ``None``.
    """
    def name(i: int) -> str:
        if class_names is not None and 0 <= i < len(class_names):
            return f"{i} {class_names[i]}"
        return IGNORE_NAME if i == ignore_id else f"class {i}"

    skip = set(hidden) | ({ignore_id} if ignore_id is not None else set())
    entries = [(name(i), class_rgb_float(i)) for i in sorted(set(ids)) if i not in skip]
    plain = [name(i) for i in sorted(set(hidden)) if class_names is None or i < len(class_names)]
    if ignore_id is not None:
        plain.append(f"{ignore_id} {IGNORE_NAME}")
    note = ("not coloured: " + ", ".join(plain)) if plain else None
    return entries, note


def save_panels(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray]] | Sequence[Sequence[tuple[str, np.ndarray]]],
    *,
    title: str,
    aspect: float = 1.0,
    legend: Sequence[LegendEntry] = (),
    note: str | None = None,
) -> None:
    """Write RGB panels into one PNG: a row of panels, or rows of them, and a legend.

    Parameters
    ----------
    path
        Output PNG.
    panels
        ``(caption, rgb)`` pairs drawn left to right, or a list of such rows (e.g. one
        row per section of a 2-D stack), drawn top to bottom.
    title
        Figure title.
    aspect
        Pixel aspect ratio (row spacing / column spacing) for anisotropic planes.
    legend
        ``(name, rgb)`` colour patches drawn under the panels (:func:`legend_entries`).
    note
        A line under the legend (e.g. which ids are not coloured).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows: list[list[Panel]]
    if panels and isinstance(panels[0][0], str):
        rows = [list(cast(Sequence[Panel], panels))]
    else:
        rows = [list(r) for r in cast(Sequence[Sequence[Panel]], panels)]
    height, width = rows[0][0][1].shape[:2]
    scale = 4.0 / max(height * aspect, width)
    ncols = max(len(r) for r in rows)
    legend_rows = -(-len(legend) // 4) if legend else 0
    bottom = 0.35 * legend_rows + (0.3 if note else 0.0)
    fig, axes = plt.subplots(
        len(rows), ncols,
        figsize=(ncols * width * scale + 0.5,
                 len(rows) * (height * aspect * scale + 0.4) + 0.4 + bottom),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(row):
                caption, rgb = row[c]
                ax.imshow(rgb, aspect=aspect, interpolation="nearest")
                ax.set_title(caption, fontsize=9)
    fig.suptitle(title, fontsize=10)
    inches = fig.get_figheight()  # the bands below are placed in inches from the bottom
    fig.tight_layout(rect=(0.0, bottom / inches, 1.0, 1.0 - 0.3 / inches))
    if legend:
        handles = [Patch(facecolor=rgb, edgecolor="none", label=name) for name, rgb in legend]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(legend), 4),
                   fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, (0.25 if note else 0.0) / inches))
    if note:
        fig.text(0.5, 0.06 / inches, note, ha="center", va="bottom", fontsize=7, color="0.3")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stack_sections(depth: int, count: int = 4) -> list[int]:
    """Return up to ``count`` evenly spaced sections of a stack of ``depth`` (first, last)."""
    if depth <= count:
        return list(range(depth))
    return sorted({int(v) for v in np.linspace(0, depth - 1, count).round()})


def plane_slices(shape: Sequence[int], position: Sequence[int]) -> dict[str, tuple[object, ...]]:
    """Return the index tuples of the three orthogonal planes through ``position`` (z, y, x)."""
    z, y, x = (int(p) for p in position)
    for axis, (p, n) in enumerate(zip((z, y, x), shape, strict=True)):
        if not 0 <= p < n:
            raise ValueError(f"position {tuple(position)} outside {tuple(shape)} on axis {axis}")
    return {"xy": (z, slice(None), slice(None)), "xz": (slice(None), y, slice(None)),
            "yz": (slice(None), slice(None), x)}
