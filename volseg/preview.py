"""Orthogonal-slice previews: image with prediction (and truth) overlaid, as PNGs.

Compute only: functions take numpy slices and return RGB arrays or write a figure to a
given path; reading the volumes is the caller's job (see ``volseg.stages.preview``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from volseg.colors import class_rgb_float

PLANES = ("xy", "xz", "yz")


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


def save_panels(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    title: str,
    aspect: float = 1.0,
) -> None:
    """Write RGB panels side by side into one PNG.

    Parameters
    ----------
    path
        Output PNG.
    panels
        ``(caption, rgb)`` pairs, drawn left to right.
    title
        Figure title.
    aspect
        Pixel aspect ratio (row spacing / column spacing) for anisotropic planes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = panels[0][1].shape[:2]
    scale = 4.0 / max(height * aspect, width)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(len(panels) * width * scale + 0.5, height * aspect * scale + 0.8),
        squeeze=False,
    )
    for ax, (caption, rgb) in zip(axes[0], panels, strict=True):
        ax.imshow(rgb, aspect=aspect, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plane_slices(shape: Sequence[int], position: Sequence[int]) -> dict[str, tuple[object, ...]]:
    """Return the index tuples of the three orthogonal planes through ``position`` (z, y, x)."""
    z, y, x = (int(p) for p in position)
    for axis, (p, n) in enumerate(zip((z, y, x), shape, strict=True)):
        if not 0 <= p < n:
            raise ValueError(f"position {tuple(position)} outside {tuple(shape)} on axis {axis}")
    return {"xy": (z, slice(None), slice(None)), "xz": (slice(None), y, slice(None)),
            "yz": (slice(None), slice(None), x)}
