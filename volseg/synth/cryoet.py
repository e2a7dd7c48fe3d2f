"""Cryo-electron-tomogram phantom: membranes at low SNR with missing-wedge-like blur.

Content (lengths in voxels, 1.4 nm by default)
----------------------------------------------
* **Vesicles** — spherical lipid bilayers (radius ``vesicle_radius``, thickness
  ``membrane_thickness``), at most one per cube of a grid of side ``vesicle_spacing``;
  a vesicle overlapping a neighbour's is dropped unless its hashed priority is higher.
* **Sheets** — curved membrane patches: spherical caps of large curvature radius.
* **Particles** — small dense blobs (ribosome-like distractors; not membrane).

The truth is the binary membrane mask.  The image is
:math:`I = G_\\sigma * (-\\rho + n_1 \\varepsilon_1) + n_2 \\varepsilon_2` with
:math:`\\rho` the density (1 on membranes), :math:`\\varepsilon_{1,2}` white Gaussian
noise hashed from global coordinates and :math:`G_\\sigma` an anisotropic Gaussian,
wider along z (the beam axis), a cheap stand-in for the missing-wedge elongation.
Dense matter is dark, as in raw tomograms.
"""

from __future__ import annotations

import itertools
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
)
from volseg.synth._shapes import grid_cells, local_grid, sqnorm

CLASS_NAMES: tuple[str, ...] = ("background", "membrane")

_S_VES, _S_SHEET, _S_PART, _S_NOISE1, _S_NOISE2 = range(201, 206)


@dataclass(frozen=True)
class CryoetParams:
    """Parameters of :func:`cryoet` (lengths in voxels).

    Attributes
    ----------
    seed
        Master seed.
    vesicle_spacing
        Grid spacing of vesicle slots (at most one vesicle per cube).
    vesicle_probability
        Probability that a slot holds a vesicle.
    vesicle_radius
        Range of vesicle radii (to the membrane midline).
    membrane_thickness
        Range of membrane thicknesses.
    sheet_spacing, sheet_probability
        Grid spacing and occupancy of curved membrane sheets.
    sheet_curvature_radius, sheet_half_width
        Ranges of the sheets' curvature radius and cap base radius.
    particle_spacing, particle_probability, particle_radius
        Grid, occupancy and radius range of dense particles (distractors).
    noise
        Std of the white noise added *before* the blur (relative to membrane density 1).
    noise_after
        Std of the white noise added after the blur.
    blur
        Gaussian σ ``(z, y, x)`` in voxels; larger along z (missing-wedge-like).
    """

    seed: int = 0
    vesicle_spacing: int = 64
    vesicle_probability: float = 0.7
    vesicle_radius: tuple[float, float] = (10.0, 26.0)
    membrane_thickness: tuple[float, float] = (3.0, 4.5)
    sheet_spacing: int = 160
    sheet_probability: float = 0.6
    sheet_curvature_radius: tuple[float, float] = (120.0, 400.0)
    sheet_half_width: tuple[float, float] = (40.0, 90.0)
    particle_spacing: int = 20
    particle_probability: float = 0.25
    particle_radius: tuple[float, float] = (2.0, 5.0)
    noise: float = 3.0
    noise_after: float = 0.4
    blur: tuple[float, float, float] = (2.5, 1.0, 1.0)

    def validate(self) -> CryoetParams:
        """Check ranges; return ``self``."""
        for name in ("vesicle_probability", "sheet_probability", "particle_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise PhantomParameterError(f"{name} must be in [0, 1], got {v}")
        check_nonneg("noise", self.noise)
        check_nonneg("noise_after", self.noise_after)
        if len(self.blur) != 3:
            raise PhantomParameterError(f"blur must be three sigmas (z, y, x), got {self.blur}")
        for s in self.blur:
            check_nonneg("blur", s)
        # overlaps are resolved between neighbouring slots only, so vesicles two slots
        # apart (centres >= one spacing apart) must never touch
        if 2 * (self.vesicle_radius[1] + 0.5 * self.membrane_thickness[1]) + 3 > (
            self.vesicle_spacing
        ):
            raise PhantomParameterError("vesicle_radius is too large for vesicle_spacing")
        if self.sheet_half_width[1] >= self.sheet_curvature_radius[0]:
            raise PhantomParameterError("sheet_half_width must be below the curvature radius")
        return self


# ------------------------------------------------------------------ objects


def _vesicles(p: CryoetParams, cells: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Vesicle of each slot (vectorised): presence, centre, radius, thickness, priority."""
    g = float(p.vesicle_spacing)
    u = H.cell_uniform(H.stream_key(p.seed, _S_VES), cells, 7)
    radius = p.vesicle_radius[0] + (p.vesicle_radius[1] - p.vesicle_radius[0]) * u[..., 4]
    thick = p.membrane_thickness[0] + (
        p.membrane_thickness[1] - p.membrane_thickness[0]
    ) * u[..., 5]
    return {
        "present": u[..., 0] < p.vesicle_probability,
        "centre": (cells + u[..., 1:4]) * g,
        "radius": radius,
        "thickness": thick,
        "priority": u[..., 6],
    }


_NEIGHBOURS = np.array(
    [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)], dtype=np.int64
)


def _kept_vesicles(p: CryoetParams, cells: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Vesicles that survive overlap resolution with their 26 neighbouring slots."""
    v = _vesicles(p, cells)
    nb = _vesicles(p, cells[:, None, :] + _NEIGHBOURS)  # (m, 26)
    dist = np.linalg.norm(v["centre"][:, None, :] - nb["centre"], axis=-1)
    reach = v["radius"] + 0.5 * v["thickness"]
    nreach = nb["radius"] + 0.5 * nb["thickness"]
    overlap = nb["present"] & (dist < reach[:, None] + nreach + 3.0)
    beaten = np.any(overlap & (nb["priority"] > v["priority"][:, None]), axis=1)
    keep = v["present"] & ~beaten
    return {k: a[keep] for k, a in v.items()}


def _sheets(p: CryoetParams, cells: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Spherical-cap membranes (vectorised over slots)."""
    u = H.cell_uniform(H.stream_key(p.seed, _S_SHEET), cells, 10)
    present = u[:, 0] < p.sheet_probability
    anchor = (cells + u[:, 1:4]) * float(p.sheet_spacing)
    n = u[:, 4:7] * 2.0 - 1.0
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
    rc = p.sheet_curvature_radius[0] + (
        p.sheet_curvature_radius[1] - p.sheet_curvature_radius[0]
    ) * u[:, 7]
    w = p.sheet_half_width[0] + (p.sheet_half_width[1] - p.sheet_half_width[0]) * u[:, 8]
    t = p.membrane_thickness[0] + (p.membrane_thickness[1] - p.membrane_thickness[0]) * u[:, 9]
    keep = present
    return {
        "anchor": anchor[keep],
        "centre": (anchor - n * rc[:, None])[keep],
        "normal": n[keep],
        "rc": rc[keep],
        "h0": np.sqrt(rc**2 - w**2)[keep],  # cap: (x - c)·n >= h0
        "reach": (np.sqrt(w**2 + (rc - np.sqrt(rc**2 - w**2)) ** 2) + t + 1.0)[keep],
        "thickness": t[keep],
    }


def _particles(p: CryoetParams, cells: npt.NDArray[np.int64]) -> dict[str, Any]:
    u = H.cell_uniform(H.stream_key(p.seed, _S_PART), cells, 6)
    keep = u[:, 0] < p.particle_probability
    r = p.particle_radius[0] + (p.particle_radius[1] - p.particle_radius[0]) * u[:, 4]
    return {
        "centre": ((cells + u[:, 1:4]) * float(p.particle_spacing))[keep],
        "radius": r[keep],
        "density": (0.5 + 0.4 * u[:, 5])[keep],
    }


# --------------------------------------------------------------------- box


def cryoet_box(
    p: CryoetParams, start: Sequence[int], shape: Sequence[int]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Membrane mask and density of the cryo-ET phantom on a global box.

    Returns
    -------
    mask, density
        ``uint8`` membrane mask (0/1) and ``float32`` density (1 on membranes,
        0.5–0.9 in particles, 0 elsewhere).
    """
    lo = np.asarray(start, dtype=np.int64)
    hi = lo + np.asarray(shape, dtype=np.int64)
    shp = tuple(int(s) for s in shape)
    mask = np.zeros(shp, np.uint8)
    density = np.zeros(shp, np.float32)

    parts = _particles(p, grid_cells(lo, hi, p.particle_spacing, 1))
    for c, r, d in zip(parts["centre"], parts["radius"], parts["density"], strict=True):
        got = local_grid(lo, hi, c, r + 1.0)
        if got is not None:
            sl, rel = got
            density[sl][sqnorm(rel) <= r * r] = d

    margin = 1
    ves = _kept_vesicles(p, grid_cells(lo, hi, p.vesicle_spacing, margin))
    for c, r, t in zip(ves["centre"], ves["radius"], ves["thickness"], strict=True):
        got = local_grid(lo, hi, c, r + t)
        if got is None:
            continue
        sl, rel = got
        dist = np.sqrt(sqnorm(rel))
        shell = np.abs(dist - r) <= 0.5 * t
        mask[sl][shell] = 1

    sheet_margin = 1 + int(np.ceil(
        (np.hypot(p.sheet_half_width[1], p.sheet_half_width[1] ** 2 / p.sheet_curvature_radius[0])
         + p.membrane_thickness[1]) / p.sheet_spacing
    ))
    sh = _sheets(p, grid_cells(lo, hi, p.sheet_spacing, sheet_margin))
    for i in range(len(sh["rc"])):
        got = local_grid(lo, hi, sh["anchor"][i], sh["reach"][i])
        if got is None:
            continue
        sl, rel_a = got
        c = sh["centre"][i]
        off = sh["anchor"][i] - c  # rel to centre = rel_a + off
        rel = [rel_a[k] + off[k] for k in range(3)]
        dist = np.sqrt(sqnorm(rel))
        n = sh["normal"][i]
        height = rel[0] * n[0] + rel[1] * n[1] + rel[2] * n[2]
        shell = (np.abs(dist - sh["rc"][i]) <= 0.5 * sh["thickness"][i]) & (height >= sh["h0"][i])
        mask[sl][shell] = 1

    density[mask == 1] = 1.0
    return mask, density


def _truth_block(p: CryoetParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    return cryoet_box(p, start, shape)[0]


def _clean_block(p: CryoetParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    v = -cryoet_box(p, start, shape)[1]
    if p.noise > 0:
        v += np.float32(p.noise) * H.gauss_box(H.stream_key(p.seed, _S_NOISE1), start, shape)
    return v


def _image_block(p: CryoetParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    v = blurred_box(partial(_clean_block, p), start, shape, p.blur)
    if p.noise_after > 0:
        v += np.float32(p.noise_after) * H.gauss_box(H.stream_key(p.seed, _S_NOISE2), start, shape)
    return v.astype(np.float32)


def _annotation_block(
    p: CryoetParams, slices: tuple[int, ...], start: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> Any:
    return annotation_box(partial(_truth_block, p), slices, IGNORE_ID, start, shape)


def cryoet(
    shape: Sequence[int],
    *,
    seed: int = 0,
    chunks: Sequence[int] | None = (64, 128, 128),
    annotated_slices: int = 0,
    noise: float = 3.0,
    blur: Sequence[float] = (2.5, 1.0, 1.0),
    voxel_size: float = 1.4,
    **params: Any,
) -> Phantom:
    """Cryo-ET-like tomogram phantom with a binary membrane truth.

    Parameters
    ----------
    shape
        ``(z, y, x)`` size in voxels.
    seed
        Master seed; the same seed gives the same bytes whatever ``chunks``.
    chunks
        Dask chunk size ``(z, y, x)``.
    annotated_slices
        Number of evenly spaced z-slices labelled in ``annotation`` (0: none).
    noise
        Std of the white noise added before the blur, relative to membrane density
        1.  The default (3.0, plus 0.4 after the blur) leaves a per-voxel
        membrane contrast-to-noise ratio of about 1, as in raw tomograms.
    blur
        Gaussian σ ``(z, y, x)`` in voxels, elongated along z.
    voxel_size
        Isotropic voxel size in nm (1.4 nm = 14 Å).
    **params
        Further :class:`CryoetParams` fields.

    Returns
    -------
    Phantom
        ``float32`` image (dense matter dark), ``uint8`` truth (0 background,
        1 membrane).
    """
    shp = check_shape(shape)
    try:
        p = CryoetParams(
            seed=int(seed), noise=float(noise),
            blur=tuple(float(b) for b in blur),  # type: ignore[arg-type]
            **params,
        )
    except TypeError as exc:
        raise PhantomParameterError(f"unknown cryoet parameter: {exc}") from None
    p.validate()
    check_nonneg("voxel_size", voxel_size)
    ch = check_chunks(chunks, shp, (64, 128, 128))
    return assemble_phantom(
        "cryoet", p, shp, ch, annotated_slices=annotated_slices, image_block=_image_block,
        truth_block=_truth_block, annotation_block=_annotation_block, image_dtype=np.float32,
        voxel_size=voxel_size, class_names=CLASS_NAMES, ignore_id=IGNORE_ID,
    )
