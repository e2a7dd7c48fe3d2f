"""Stack of independent 2-D electron micrographs with contamination blobs.

Each section ``z`` is its own micrograph: a smoothly shaded background (carbon /
ice thickness, value noise), small faint particles (distractors), and sparse dark
**contamination** blobs — unions of one to three overlapping discs — which form the
binary truth (about 3 % of the pixels by default).  Blur and noise act within a
section only.  Everything is hashed from ``(seed, section, y, x)``, so a section or a
tile is computed on its own and the bytes do not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from volseg.synth import _hash as H  # noqa: N812
from volseg.synth._common import (
    IGNORE_ID,
    Phantom,
    PhantomParameterError,
    annotation_box,
    assemble_phantom,
    blurred_box,
    check_chunks,
    check_nonneg,
    check_shape,
    to_uint8,
)
from volseg.synth._shapes import grid_cells, local_grid, sqnorm

CLASS_NAMES: tuple[str, ...] = ("background", "contamination")

_S_BLOB, _S_PART, _S_SHADE, _S_NOISE = range(301, 305)

_I_BACKGROUND = 0.62
_I_BLOB = 0.18
_I_PARTICLE = 0.45


@dataclass(frozen=True)
class Em2dParams:
    """Parameters of :func:`em2d` (lengths in pixels).

    Attributes
    ----------
    seed
        Master seed.
    blob_spacing, blob_probability
        Grid spacing of blob slots and the probability that a slot holds a blob.
    blob_radius
        Range of the main disc radius (up to two satellite discs of 0.4–0.8 of it).
    particle_spacing, particle_probability, particle_radius
        Small faint particles (not contamination).
    shading_scale, shading
        Lattice spacing and amplitude of the smooth background shading.
    noise
        Std of the additive Gaussian noise (fraction of full range).
    blur
        In-section Gaussian σ (pixels).
    """

    seed: int = 0
    blob_spacing: int = 48
    blob_probability: float = 0.3
    blob_radius: tuple[float, float] = (4.0, 14.0)
    particle_spacing: int = 16
    particle_probability: float = 0.3
    particle_radius: tuple[float, float] = (1.5, 3.0)
    shading_scale: int = 96
    shading: float = 0.10
    noise: float = 0.10
    blur: float = 1.0

    def validate(self) -> Em2dParams:
        """Check ranges; return ``self``."""
        for name in ("blob_probability", "particle_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise PhantomParameterError(f"{name} must be in [0, 1], got {v}")
        for name in ("noise", "blur", "shading"):
            check_nonneg(name, getattr(self, name))
        if 3.0 * self.blob_radius[1] > self.blob_spacing:
            raise PhantomParameterError("blob_radius is too large for blob_spacing")
        return self


def _blobs(p: Em2dParams, cells: npt.NDArray[np.int64]) -> list[tuple[Any, Any] | None]:
    """Blob of each slot ``(section, cy, cx)``: (disc centres ``(k, 2)``, radii ``(k,)``) or None.

    The main disc (radius skewed towards small values) sits in the central 60 % of
    its slot; 0–2 satellite discs of 0.4–0.8 of its radius overlap its rim.
    """
    u = H.cell_uniform(H.stream_key(p.seed, _S_BLOB), cells, 10)
    g = float(p.blob_spacing)
    out: list[tuple[Any, Any] | None] = []
    for c, v in zip(cells, u, strict=True):
        if v[0] >= p.blob_probability:
            out.append(None)
            continue
        r0 = p.blob_radius[0] + (p.blob_radius[1] - p.blob_radius[0]) * v[1] ** 1.5
        centre = (c[1:] + 0.2 + 0.6 * v[2:4]) * g
        centres, radii = [centre], [r0]
        for j in range(int(v[4] * 3.0)):
            d = v[5 + 2 * j : 7 + 2 * j] * 2.0 - 1.0
            d = d / max(float(np.hypot(d[0], d[1])), 1e-9)
            centres.append(centre + d * r0 * 0.9)
            radii.append(r0 * (0.4 + 0.4 * v[9]))
        out.append((np.array(centres), np.array(radii)))
    return out


def em2d_box(
    p: Em2dParams, start: Sequence[int], shape: Sequence[int], *, want_clean: bool = True
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None]:
    """Contamination mask and clean intensities on a global box ``(sections, y, x)``."""
    lo = np.asarray(start, dtype=np.int64)
    hi = lo + np.asarray(shape, dtype=np.int64)
    shp = tuple(int(s) for s in shape)
    mask = np.zeros(shp, np.uint8)
    clean: npt.NDArray[np.float32] | None = None
    if want_clean:
        clean = _shading(p, lo, hi)
        pc = grid_cells(lo, hi, (1, p.particle_spacing, p.particle_spacing), 0)
        pc = pc[(pc[:, 0] >= lo[0]) & (pc[:, 0] < hi[0])]
        u = H.cell_uniform(H.stream_key(p.seed, _S_PART), pc, 4)
        for c, v in zip(pc, u, strict=True):
            if v[0] >= p.particle_probability:
                continue
            r = p.particle_radius[0] + (p.particle_radius[1] - p.particle_radius[0]) * v[3]
            centre = (c[1:] + v[1:3]) * float(p.particle_spacing)
            got = local_grid(lo[1:], hi[1:], centre, r + 1.0)
            if got is not None:
                sl, rel = got
                sec = clean[int(c[0] - lo[0])]
                sec[sl][sqnorm(rel) <= r * r] = _I_PARTICLE

    cells = grid_cells(lo, hi, (1, p.blob_spacing, p.blob_spacing), 1)
    cells = cells[(cells[:, 0] >= lo[0]) & (cells[:, 0] < hi[0])]
    for c, blob in zip(cells, _blobs(p, cells), strict=True):
        if blob is None:
            continue
        centres, radii = blob
        z = int(c[0] - lo[0])
        for cc, r in zip(centres, radii, strict=True):
            got = local_grid(lo[1:], hi[1:], cc, r + 1.0)
            if got is None:
                continue
            sl, rel = got
            inside = sqnorm(rel) <= r * r
            mask[z][sl][inside] = 1
    if clean is not None:
        clean[mask == 1] = _I_BLOB
    return mask, clean


def _shading(p: Em2dParams, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> Any:
    """Smooth value noise (bilinear, smoothstep-weighted lattice values) per section."""
    s = p.shading_scale
    ys = np.arange(lo[1], hi[1], dtype=np.int64)
    xs = np.arange(lo[2], hi[2], dtype=np.int64)
    iy, ix = ys // s, xs // s
    fy = (ys - iy * s).astype(np.float32) / np.float32(s)
    fx = (xs - ix * s).astype(np.float32) / np.float32(s)
    wy = fy * fy * (np.float32(3.0) - np.float32(2.0) * fy)
    wx = fx * fx * (np.float32(3.0) - np.float32(2.0) * fx)
    key = H.stream_key(p.seed, _S_SHADE)
    z = np.arange(lo[0], hi[0], dtype=np.int64)[:, None, None]

    def lattice(dy: int, dx: int) -> Any:
        return H.unit32(H.hash3(key, z, (iy + dy)[None, :, None], (ix + dx)[None, None, :]))

    wy3, wx3 = wy[None, :, None], wx[None, None, :]
    one = np.float32(1.0)
    top = lattice(0, 0) * (one - wx3) + lattice(0, 1) * wx3
    bottom = lattice(1, 0) * (one - wx3) + lattice(1, 1) * wx3
    val = top * (one - wy3) + bottom * wy3
    out = np.float32(_I_BACKGROUND) + np.float32(2.0 * p.shading) * (val - np.float32(0.5))
    return out.astype(np.float32)


def _truth_block(p: Em2dParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    return em2d_box(p, start, shape, want_clean=False)[0]


def _clean_block(p: Em2dParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    return em2d_box(p, start, shape, want_clean=True)[1]


def _image_block(p: Em2dParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    v = blurred_box(partial(_clean_block, p), start, shape, (0.0, p.blur, p.blur))
    if p.noise > 0:
        v = v + np.float32(p.noise) * H.gauss_box(H.stream_key(p.seed, _S_NOISE), start, shape)
    return to_uint8(v)


def _annotation_block(
    p: Em2dParams, slices: tuple[int, ...], start: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> Any:
    return annotation_box(partial(_truth_block, p), slices, IGNORE_ID, start, shape)


def em2d(
    shape: Sequence[int],
    *,
    seed: int = 0,
    chunks: Sequence[int] | None = (1, 512, 512),
    annotated_slices: int = 0,
    noise: float = 0.10,
    blur: float = 1.0,
    pixel_size: float = 1.0,
    **params: Any,
) -> Phantom:
    """Stack of independent 2-D micrographs with a binary contamination truth.

    Parameters
    ----------
    shape
        ``(n_sections, y, x)``.
    seed
        Master seed; the same seed gives the same bytes whatever ``chunks``.
    chunks
        Dask chunk size ``(sections, y, x)``.
    annotated_slices
        Number of evenly spaced sections labelled in ``annotation`` (0: none).
    noise
        Std of the additive Gaussian noise (fraction of full range).
    blur
        In-section Gaussian σ in pixels (no blur across sections).
    pixel_size
        Pixel size in nm, also used as the nominal section spacing in ``voxel_size``.
    **params
        Further :class:`Em2dParams` fields (``blob_probability``, ...).

    Returns
    -------
    Phantom
        ``uint8`` image, ``uint8`` truth (0 background, 1 contamination).
    """
    shp = check_shape(shape)
    try:
        p = Em2dParams(seed=int(seed), noise=float(noise), blur=float(blur), **params)
    except TypeError as exc:
        raise PhantomParameterError(f"unknown em2d parameter: {exc}") from None
    p.validate()
    check_nonneg("pixel_size", pixel_size)
    ch = check_chunks(chunks, shp, (1, 512, 512))
    return assemble_phantom(
        "em2d", p, shp, ch, annotated_slices=annotated_slices, image_block=_image_block,
        truth_block=_truth_block, annotation_block=_annotation_block, image_dtype=np.uint8,
        voxel_size=pixel_size, class_names=CLASS_NAMES, ignore_id=IGNORE_ID,
    )
