"""FIB-SEM-like neuropil phantom with seven classes, generated blockwise.

Geometry (all in voxels, 5 nm isotropic by default)
---------------------------------------------------
* **Cells** — a Voronoi tessellation of seed points, one per cube of a coarse grid of
  side ``cell_size`` (jittered inside its cube, hashed from the seed and the cube
  index).  A voxel belongs to the cell of its nearest seed; a voxel whose distance to
  the bisector plane of its nearest and second-nearest seeds,
  :math:`\\delta = (d_2^2 - d_1^2) / (2 \\lVert p_2 - p_1 \\rVert)`, is below half the
  membrane width is **cell membrane**.  Only seeds of the 5 × 5 × 5 cubes around a
  voxel's cube are candidates, so any block is computed from a few hundred seeds.
  A fraction of cells are **undefined** (unassignable profiles, granular texture),
  and so are extracellular pockets along some of the edges where three cells meet.
* **Synapses** — some pairs of neighbouring cells carry a post-synaptic density: a
  dark disc on their shared face, centred on the midpoint of the two seeds, thin on
  the pre-synaptic side and thick on the post-synaptic side.
* **Vesicles** — a cluster of small spheres (45–60 nm, dark 2-voxel shell, lighter
  lumen) in the pre-synaptic cell behind each synapse; the whole sphere is labelled.
* **Mitochondria** — rotated ellipsoids well inside cells: a dark **mitochondrial
  membrane** rim (4 voxels) around a dark matrix with lighter cristae stripes.

Image = Gaussian blur (``blur`` σ, voxels) of the clean class intensities plus
Gaussian noise (``noise``, in units of the full intensity range), quantised to
``uint8``.  Every random quantity is hashed from the seed and global integer
coordinates (see :mod:`volseg.synth._hash`), so the volume is identical whatever
its chunking.
"""

from __future__ import annotations

import functools
import itertools
import math
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

CLASS_NAMES: tuple[str, ...] = (
    "cytoplasm",
    "cell membrane",
    "mitochondrion",
    "mitochondrial membrane",
    "synapse",
    "vesicle",
    "undefined",
)
CYTOPLASM, MEMBRANE, MITO, MITO_MEMBRANE, SYNAPSE, VESICLE, UNDEFINED = range(7)

# Stream tags (any distinct integers).
_S_SEED, _S_CELL, _S_SYN, _S_VES, _S_MITO, _S_TEX, _S_NOISE, _S_ECS = range(101, 109)

# Clean intensities (0 = black, 1 = white).
_I_CYTO = 0.74
_I_MEMBRANE = 0.24
_I_SYNAPSE = 0.08
_I_MITO_RIM = 0.14
_I_MITO_MATRIX = 0.36
_I_CRISTA = 0.56
_I_VES_SHELL = 0.22
_I_VES_LUMEN = 0.66
_I_UNDEF_LO, _I_UNDEF_HI = 0.36, 0.66

_OFFSETS2 = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=np.int64)
_OFFSETS1 = np.array(list(itertools.product(range(-1, 2), repeat=3)), dtype=np.int64)
# Half of the 26-neighbourhood: each unordered pair of neighbouring cubes once.
_FORWARD = np.array([o for o in _OFFSETS1.tolist() if tuple(o) > (0, 0, 0)], dtype=np.int64)


@dataclass(frozen=True)
class FibsemParams:
    """Parameters of :func:`fibsem` (lengths in voxels).

    Attributes
    ----------
    seed
        Master seed.
    cell_size
        Side of the coarse grid cube holding one cell seed (mean cell spacing).
    seed_jitter
        Seeds are uniform in the central ``seed_jitter`` fraction of their cube
        (1 = anywhere, smaller = more regular cells).
    membrane_width
        Thickness of cell membranes.
    undefined_fraction
        Probability that a cell is undefined (granular, no organelles).
    ecs_probability
        Probability that an edge where three cells meet carries an extracellular
        pocket (labelled undefined).
    ecs_width
        Range of the pocket half-width (distance to both bisector planes).
    synapse_probability
        Probability that a pair of neighbouring cells carries a synapse.
    synapse_radius
        Range of the synapse disc radius.
    synapse_thickness
        Extent of the density on the pre- and post-synaptic side of the face.
    vesicles_per_synapse
        Range of the number of vesicles in a synapse's cluster.
    vesicle_radius
        Range of vesicle radii (whole sphere labelled; 2-voxel dark shell).
    mitochondria_per_cell
        Range of the number of mitochondria attempted per cell.
    mito_short_axis, mito_long_axis
        Ranges of the ellipsoid semi-axes.
    mito_rim
        Thickness of the mitochondrial membrane.
    noise
        Standard deviation of the additive Gaussian noise (fraction of full range).
    blur
        Gaussian blur σ (voxels), the point-spread function.
    """

    seed: int = 0
    cell_size: int = 72
    seed_jitter: float = 0.7
    membrane_width: float = 5.0
    undefined_fraction: float = 0.12
    ecs_probability: float = 0.5
    ecs_width: tuple[float, float] = (3.0, 7.0)
    synapse_probability: float = 0.5
    synapse_radius: tuple[float, float] = (16.0, 26.0)
    synapse_thickness: tuple[float, float] = (2.0, 7.0)
    vesicles_per_synapse: tuple[int, int] = (30, 50)
    vesicle_radius: tuple[float, float] = (4.5, 6.0)
    mitochondria_per_cell: tuple[int, int] = (2, 4)
    mito_short_axis: tuple[float, float] = (9.0, 13.0)
    mito_long_axis: tuple[float, float] = (15.0, 28.0)
    mito_rim: float = 4.0
    noise: float = 0.08
    blur: float = 1.0

    def validate(self) -> FibsemParams:
        """Check ranges; return ``self``."""
        if self.cell_size < 24:
            raise PhantomParameterError(f"cell_size must be >= 24 voxels, got {self.cell_size}")
        for name in ("undefined_fraction", "synapse_probability", "ecs_probability"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise PhantomParameterError(f"{name} must be in [0, 1], got {v}")
        check_nonneg("noise", self.noise)
        check_nonneg("blur", self.blur)
        if self.membrane_width <= 0 or self.mito_rim <= 0:
            raise PhantomParameterError("membrane_width and mito_rim must be positive")
        if not 0.0 < self.seed_jitter <= 1.0:
            raise PhantomParameterError(f"seed_jitter must be in (0, 1], got {self.seed_jitter}")
        # mitochondria are painted from the cubes next to a block: they must not reach
        # beyond the neighbouring cube (centre <= (jitter/2 - 0.2) cubes outside its own)
        reach = (0.5 * self.seed_jitter - 0.2) * self.cell_size + self.mito_long_axis[1]
        if reach > self.cell_size:
            raise PhantomParameterError("mito_long_axis is too large for cell_size")
        return self


# --------------------------------------------------------------------------- seeds


def _seeds(p: FibsemParams, cells: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Seed point (voxel coordinates) of each grid cube ``cells[..., 3]``."""
    jitter = H.cell_uniform(H.stream_key(p.seed, _S_SEED), cells, 3)
    j = p.seed_jitter
    return (cells + 0.5 * (1.0 - j) + j * jitter) * float(p.cell_size)


def _cell_attrs(
    p: FibsemParams, cells: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """(undefined flag, cytoplasm tone offset) of each cell."""
    u = H.cell_uniform(H.stream_key(p.seed, _S_CELL), cells, 2)
    return u[..., 0] < p.undefined_fraction, (u[..., 1] - 0.5) * 0.10


def _cell_tuple(c: npt.NDArray[np.int64]) -> tuple[int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]))


def _neighbourhood(cell: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]) -> Any:
    return cell[..., None, :] + offsets


# ------------------------------------------------------------------------ synapses


@dataclass
class _Synapses:
    a: npt.NDArray[np.int64]  # (m, 3) cube of cell A
    b: npt.NDArray[np.int64]  # (m, 3) cube of cell B
    present: npt.NDArray[np.bool_]
    pre_is_a: npt.NDArray[np.bool_]
    centre: npt.NDArray[np.float64]  # (m, 3)
    normal: npt.NDArray[np.float64]  # (m, 3) unit, from pre towards post
    radius: npt.NDArray[np.float64]
    key: npt.NDArray[np.uint64]  # symmetric pair hash

    def subset(self, idx: npt.NDArray[np.intp]) -> _Synapses:
        return _Synapses(
            self.a[idx], self.b[idx], self.present[idx], self.pre_is_a[idx], self.centre[idx],
            self.normal[idx], self.radius[idx], self.key[idx],
        )

    @staticmethod
    def concat(parts: Sequence[_Synapses]) -> _Synapses:
        return _Synapses(
            *(np.concatenate([getattr(q, f) for q in parts]) for f in (
                "a", "b", "present", "pre_is_a", "centre", "normal", "radius", "key"))
        )


def _synapses(p: FibsemParams, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> _Synapses:
    """Synapse (or none) on the face between the cells of cubes ``a`` and ``b`` (vectorised).

    A pair has a synapse with probability ``synapse_probability`` (hash of the
    unordered pair) when both cells are defined and the seeds' midpoint lies on their
    shared Voronoi face at least half a synapse radius from its edges.
    """
    k = H.stream_key(p.seed, _S_SYN)
    ha = H.hash3(k, a[:, 0], a[:, 1], a[:, 2])
    hb = H.hash3(k, b[:, 0], b[:, 1], b[:, 2])
    with np.errstate(over="ignore"):
        h = H.mix64(ha + hb)
    u = H.unit(h)
    r = H.unit(H.mix64(h ^ np.uint64(0x5BD1E995)))
    radius = p.synapse_radius[0] + (p.synapse_radius[1] - p.synapse_radius[0]) * r
    pre_is_a = ((h >> np.uint64(5)) & np.uint64(1)).astype(bool) ^ (ha < hb)
    und_a, _ = _cell_attrs(p, a)
    und_b, _ = _cell_attrs(p, b)
    present = (u < p.synapse_probability) & ~und_a & ~und_b
    pa, pb = _seeds(p, a), _seeds(p, b)
    centre = 0.5 * (pa + pb)
    pre = np.where(pre_is_a[:, None], pa, pb)
    post = np.where(pre_is_a[:, None], pb, pa)
    normal = (post - pre) / np.linalg.norm(post - pre, axis=1, keepdims=True)
    idx = np.flatnonzero(present)
    if idx.size:
        cc = np.floor(centre[idx] / p.cell_size).astype(np.int64)
        nb = _neighbourhood(cc, _OFFSETS2)  # (m, 125, 3)
        q = _seeds(p, nb)
        others = ~(np.all(nb == a[idx, None, :], axis=2) | np.all(nb == b[idx, None, :], axis=2))
        pa_i = pa[idx]
        dq = np.sum((centre[idx, None, :] - q) ** 2, axis=2)
        da_ = np.sum((centre[idx] - pa_i) ** 2, axis=1)
        sep = np.linalg.norm(q - pa_i[:, None, :], axis=2)
        margin = (dq - da_[:, None]) / (2.0 * np.maximum(sep, 1e-9))
        margin = np.where(others, margin, np.inf)
        ok = np.min(margin, axis=1) >= 0.5 * radius[idx] + p.membrane_width
        present[idx[~ok]] = False
    return _Synapses(a, b, present, pre_is_a, centre, normal, radius, h)


_SYN_CACHE: dict[tuple[FibsemParams, tuple[int, int, int]], _Synapses] = {}
_SYN_CACHE_MAX = 50_000


def _cells_synapses(p: FibsemParams, cells: Sequence[tuple[int, int, int]]) -> list[_Synapses]:
    """The present synapses between each cube and its 13 forward neighbours.

    Results are memoised per (parameters, cube); the missing cubes are computed in one
    vectorised call.
    """
    found: dict[tuple[int, int, int], _Synapses] = {}
    for c in dict.fromkeys(cells):
        hit = _SYN_CACHE.get((p, c))
        if hit is not None:
            found[c] = hit
    missing = [c for c in dict.fromkeys(cells) if c not in found]
    if missing:
        if len(_SYN_CACHE) + len(missing) > _SYN_CACHE_MAX:
            _SYN_CACHE.clear()  # other threads merely lose cached entries
        arr = np.array(missing, dtype=np.int64)
        a = np.repeat(arr, len(_FORWARD), axis=0)
        b = a + np.tile(_FORWARD, (len(arr), 1))
        s = _synapses(p, a, b)
        owner = np.repeat(np.arange(len(arr)), len(_FORWARD))
        for i, c in enumerate(missing):
            found[c] = s.subset(np.flatnonzero(s.present & (owner == i)))
            _SYN_CACHE[(p, c)] = found[c]
    return [found[c] for c in cells]


# ------------------------------------------------------------------------- objects


def _frames(e3: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Orthonormal frames ``(..., 3, 3)`` with rows ``(e1, e2, e3)`` for directions ``e3``.

    ``e3`` need not be normalised (only its direction is used).
    """
    e3 = e3 / np.maximum(np.linalg.norm(e3, axis=-1, keepdims=True), 1e-12)
    helper = np.zeros_like(e3)
    use_x = np.abs(e3[..., 0]) < 0.9
    helper[..., 0] = use_x
    helper[..., 1] = ~use_x
    e1 = np.cross(e3, helper)
    e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = np.cross(e3, e1)
    return np.stack([e1, e2, e3], axis=-2)


@functools.lru_cache(maxsize=4096)
def _faces(p: FibsemParams, cell: tuple[int, int, int]) -> tuple[Any, Any]:
    """Bisector planes of a cell with its candidate neighbours: (midpoints, unit normals)."""
    c = np.array(cell, dtype=np.int64)
    nb = _neighbourhood(c, _OFFSETS2)
    nb = nb[np.any(nb != c, axis=1)]
    pc = _seeds(p, c[None])[0]
    q = _seeds(p, nb)
    n = q - pc
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return 0.5 * (q + pc), n


@dataclass(frozen=True)
class _Mito:
    centre: npt.NDArray[np.float64]
    frame: npt.NDArray[np.float64]  # rows e1, e2, e3 (e3 = long axis)
    axes: npt.NDArray[np.float64]  # semi-axes along e1, e2, e3
    phase: float
    period: float

    @property
    def reach(self) -> float:
        return float(self.axes.max())


def _greedy(valid: npt.NDArray[np.bool_], conflict: npt.NDArray[np.bool_], n: int) -> list[int]:
    """Accept valid candidates in order, skipping those in conflict with accepted ones."""
    blocked = ~valid
    out: list[int] = []
    for i in range(len(valid)):
        if len(out) >= n:
            break
        if not blocked[i]:
            out.append(i)
            blocked = blocked | conflict[i]
    return out


@functools.lru_cache(maxsize=4096)
def _mitos(p: FibsemParams, cell: tuple[int, int, int]) -> tuple[_Mito, ...]:
    """The mitochondria of one (defined) cell, fitted inside its Voronoi cell.

    Candidates (size, centre, three orientations each) are drawn from the cell's own
    generator; each is shrunk to the largest scale :math:`s \\le 1` that keeps the
    ellipsoid a clearance away from every face (:math:`(c - m_f)\\cdot n_f + s\\,h_f
    \\le -\text{clearance}`, :math:`h_f` the ellipsoid's support function along the
    face normal :math:`n_f`) and kept unless too small or overlapping an earlier one.
    """
    c = np.array(cell, dtype=np.int64)
    und, _ = _cell_attrs(p, c[None])
    if und[0]:
        return ()
    rng = H.cell_rng(H.stream_key(p.seed, _S_MITO), cell)
    n_target = int(rng.integers(p.mitochondria_per_cell[0], p.mitochondria_per_cell[1] + 1))
    if n_target == 0:
        return ()
    t = 8 * n_target
    axes = np.concatenate(
        [rng.uniform(*p.mito_short_axis, (t, 2)), rng.uniform(*p.mito_long_axis, (t, 1))], axis=1
    )
    pc = _seeds(p, c[None])[0]
    centre = pc + rng.uniform(-0.3, 0.3, (t, 3)) * p.cell_size
    phase = rng.uniform(0.0, 1.0, t)
    period = rng.uniform(6.0, 8.0, t)
    frames = _frames(rng.uniform(-1.0, 1.0, (t, 3, 3)))  # (t, orientation, 3, 3)
    mids, normals = _faces(p, cell)
    clearance = 0.5 * p.membrane_width + 2.0
    signed = np.einsum("tfk,fk->tf", centre[:, None, :] - mids[None], normals)  # < 0 inside
    proj = np.einsum("fk,tojk->tofj", normals, frames)
    h = np.sqrt(np.sum((axes[:, None, None, :] * proj) ** 2, axis=-1))  # (t, o, f)
    scale_o = np.min((-clearance - signed[:, None, :]) / h, axis=-1)  # (t, o)
    best = np.argmax(scale_o, axis=1)
    scale = np.minimum(1.0, scale_o[np.arange(t), best])
    axes = axes * scale[:, None]
    valid = np.all(signed < -clearance, axis=1) & (
        axes[:, :2].min(axis=1) >= 0.8 * p.mito_short_axis[0]
    )
    reach = axes.max(axis=1)
    dist = np.linalg.norm(centre[:, None, :] - centre[None, :, :], axis=-1)
    conflict = dist < reach[:, None] + reach[None, :] + 2.0
    return tuple(
        _Mito(centre[i], frames[i, best[i]], axes[i], float(phase[i]), float(period[i]))
        for i in _greedy(valid, conflict, n_target)
    )


@dataclass(frozen=True)
class _Vesicle:
    centre: npt.NDArray[np.float64]
    radius: float


@functools.lru_cache(maxsize=4096)
def _vesicles(
    p: FibsemParams, a: tuple[int, int, int], b: tuple[int, int, int]
) -> tuple[_Vesicle, ...]:
    """Vesicle cluster in the pre-synaptic cell behind the synapse between cubes a and b.

    Candidate centres lie in a slab behind the synaptic face (depth from the face
    skewed towards it, lateral spread up to 1.3 synapse radii); a candidate is kept
    if it is inside the pre-synaptic cell with clearance, clear of its mitochondria
    and of earlier vesicles.
    """
    s = _synapses(p, np.array([a], np.int64), np.array([b], np.int64))
    if not s.present[0]:
        return ()
    pre = a if s.pre_is_a[0] else b
    centre, normal, radius = s.centre[0], s.normal[0], float(s.radius[0])
    rng = np.random.Generator(
        np.random.PCG64(H.stream_key(p.seed, _S_VES, int(s.key[0] >> np.uint64(1))))
    )
    n_target = int(rng.integers(p.vesicles_per_synapse[0], p.vesicles_per_synapse[1] + 1))
    t = 20 * n_target
    rv = rng.uniform(*p.vesicle_radius, t)
    ab = rng.uniform(-1.0, 1.0, (t, 2))
    depth = rng.uniform(0.0, 1.0, t) ** 1.5 * 30.0 + rv + p.synapse_thickness[0] + 1.5
    basis = _frames(normal)
    v = (
        centre
        - depth[:, None] * normal
        + 1.3 * radius * (ab[:, :1] * basis[0] + ab[:, 1:] * basis[1])
    )
    mids, normals = _faces(p, pre)
    margin = -np.einsum("tfk,fk->tf", v[:, None, :] - mids[None], normals).min(axis=1)
    valid = (np.sum(ab**2, axis=1) <= 1.0) & (margin >= rv + 0.5 * p.membrane_width + 1.0)
    for m in _mitos(p, pre):
        valid &= np.linalg.norm(v - m.centre, axis=1) >= m.reach + rv + 1.5
    idx = np.flatnonzero(valid)
    vv, rr = v[idx], rv[idx]
    conflict = np.linalg.norm(vv[:, None] - vv[None], axis=-1) < rr[:, None] + rr[None] + 1.0
    chosen = _greedy(np.ones(len(idx), bool), conflict, n_target)
    return tuple(_Vesicle(vv[i], float(rr[i])) for i in chosen)


# ----------------------------------------------------------------------- box core


def _coords(a: int, b: int) -> npt.NDArray[np.float64]:
    return np.arange(a, b, dtype=np.float64)


def _sqdist_axes(
    lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64], point: npt.NDArray[np.float64]
) -> tuple[Any, Any, Any]:
    """Squared per-axis distances of a box's voxel centres to ``point`` (float32, open grid)."""
    dz = ((_coords(lo[0], hi[0]) - point[0]) ** 2).astype(np.float32)
    dy = ((_coords(lo[1], hi[1]) - point[1]) ** 2).astype(np.float32)
    dx = ((_coords(lo[2], hi[2]) - point[2]) ** 2).astype(np.float32)
    return dz[:, None, None], dy[None, :, None], dx[None, None, :]


def _select(target: np.ndarray, mask: np.ndarray, value: Any, scratch: np.ndarray) -> None:
    """``target[mask] = value`` for int16 ids, as ``target += mask * (value - target)``."""
    np.subtract(value, target, out=scratch)
    scratch *= mask
    target += scratch


def _tile(
    p: FibsemParams,
    tc: npt.NDArray[np.int64],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    want_clean: bool,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None]:
    """Cells, membranes and synapses of the box ``[lo, hi)`` inside grid cube ``tc``."""
    shape = tuple(int(v) for v in hi - lo)
    cells = tc + _OFFSETS2
    pts = _seeds(p, cells)
    far = np.maximum(np.abs(pts - lo), np.abs(pts - (hi - 1)))
    near = np.maximum(0.0, np.maximum(lo - pts, pts - (hi - 1)))
    dmax = np.sum(far**2, axis=1)
    dmin = np.sum(near**2, axis=1)
    # Prune seeds that cannot be among the three nearest of any voxel of the tile.  The
    # margin (squared voxels, far above float32 rounding) guarantees that a pruned seed
    # is strictly farther than the third nearest, so which seeds a tile keeps (it
    # depends on the chunking) can never change a result, not even through a tie.
    bound = np.partition(dmax, 2)[2]
    keep = np.flatnonzero(dmin <= bound + 1.0)
    cells, pts = cells[keep], pts[keep]
    n = len(keep)
    und, tone = _cell_attrs(p, cells)

    d1 = np.full(shape, np.inf, np.float32)
    d2 = np.full(shape, np.inf, np.float32)
    d3 = np.full(shape, np.inf, np.float32)
    i1 = np.zeros(shape, np.int16)
    i2 = np.zeros(shape, np.int16)
    i3 = np.zeros(shape, np.int16)
    # Insert each seed into the three nearest so far, branch-free (masked copies are
    # several times slower): with lt_j = d < d_j (so lt1 => lt2 => lt3), the new
    # d3 = min(d3, max(d2, d)), d2 = min(d2, max(d1, d)), d1 = min(d1, d), and the
    # ids follow the same strict comparisons (updated 3, 2, 1: each uses the old one).
    lt1, lt2, lt3 = (np.empty(shape, bool) for _ in range(3))
    step = np.empty(shape, np.int16)
    for k in range(n):
        dz, dy, dx = _sqdist_axes(lo, hi, pts[k])
        d = (dz + dy) + dx
        np.less(d, d1, out=lt1)
        np.less(d, d2, out=lt2)
        np.less(d, d3, out=lt3)
        kk = np.int16(k)
        _select(i3, lt3, kk, step)  # i3 = k where d < d3 ...
        _select(i3, lt2, i2, step)  # ... and the old i2 where d < d2
        _select(i2, lt2, kk, step)
        _select(i2, lt1, i1, step)
        _select(i1, lt1, kk, step)
        np.minimum(d3, np.maximum(d2, d), out=d3)
        np.minimum(d2, np.maximum(d1, d), out=d2)
        np.minimum(d1, d, out=d1)

    sep = np.sqrt(np.sum((pts[:, None, :] - pts[None, :, :]) ** 2, axis=2)).astype(np.float32)
    two = np.float32(2.0)
    tiny = np.float32(1e-6)
    db = (d2 - d1) / (two * np.maximum(sep[i1, i2], tiny))

    labels = np.where(und[i1], np.uint8(UNDEFINED), np.uint8(CYTOPLASM))
    membrane = db < np.float32(0.5 * p.membrane_width)
    labels[membrane] = MEMBRANE

    # Extracellular space: pockets along a fraction of the edges where three cells
    # meet (distance to both bisectors of the nearest seed below the pocket width).
    ecs = np.zeros(shape, bool)
    if p.ecs_probability > 0:
        cand = db < np.float32(p.ecs_width[1])
        zz, yy, xx = np.nonzero(cand)
        if zz.size:
            hk = H.hash3(H.stream_key(p.seed, _S_ECS), cells[:, 0], cells[:, 1], cells[:, 2])
            a1, a2, a3 = i1[zz, yy, xx], i2[zz, yy, xx], i3[zz, yy, xx]
            with np.errstate(over="ignore"):
                ht = H.mix64(hk[a1] + hk[a2] + hk[a3])  # symmetric in the three cells
            width = p.ecs_width[0] + (p.ecs_width[1] - p.ecs_width[0]) * H.unit(
                H.mix64(ht ^ np.uint64(0x27D4EB2F165667C5))
            )
            d13 = (d3[zz, yy, xx] - d1[zz, yy, xx]) / (two * np.maximum(sep[a1, a3], tiny))
            hit = (
                (H.unit(ht) < p.ecs_probability)
                & (db[zz, yy, xx] < width)
                & (d13 < width)
            )
            ecs[zz[hit], yy[hit], xx[hit]] = True

    # Synapses between pairs of kept seeds (each pair stored with its lower cube).
    local = {_cell_tuple(c): i for i, c in enumerate(cells)}
    found = _cells_synapses(p, [_cell_tuple(c) for c in cells])
    syn_mask = np.zeros(shape, bool)
    if found:
        s = _Synapses.concat(found)
        ib_ = np.array([local.get(_cell_tuple(c), -1) for c in s.b], dtype=np.int64)
        ia_ = np.array([local[_cell_tuple(c)] for c in s.a], dtype=np.int64)
        sel = np.flatnonzero(ib_ >= 0)
        if sel.size:
            ia, ib = ia_[sel], ib_[sel]
            table = np.full((n, n), -1, np.int64)
            table[ia, ib] = sel
            table[ib, ia] = sel
            cand = db < np.float32(p.synapse_thickness[1] + 1.0)
            which = np.where(cand, table[i1, i2], -1)
            zz, yy, xx = np.nonzero(which >= 0)
            if zz.size:
                j = which[zz, yy, xx]
                rel = np.stack([zz + lo[0], yy + lo[1], xx + lo[2]], axis=1) - s.centre[j]
                along = np.sum(rel * s.normal[j], axis=1)
                radial2 = np.sum(rel * rel, axis=1) - along * along
                hit = (
                    (along >= -p.synapse_thickness[0])
                    & (along <= p.synapse_thickness[1])
                    & (radial2 <= s.radius[j] ** 2)
                )
                syn_mask[zz[hit], yy[hit], xx[hit]] = True
    labels[syn_mask] = SYNAPSE
    labels[ecs] = UNDEFINED

    if not want_clean:
        return labels, None
    clean = (np.float32(_I_CYTO) + tone[i1].astype(np.float32)).astype(np.float32)
    clean[membrane] = _I_MEMBRANE
    clean[syn_mask] = _I_SYNAPSE
    ucl = labels == UNDEFINED
    if np.any(ucl):
        z, y, x = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        g = H.unit32(H.hash3(H.stream_key(p.seed, _S_TEX), z // 2, y // 2, x // 2))
        clean[ucl] = (np.float32(_I_UNDEF_LO) + np.float32(_I_UNDEF_HI - _I_UNDEF_LO) * g)[ucl]
    return labels, clean


def _relevant_synapses(
    p: FibsemParams, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64], reach: float
) -> _Synapses | None:
    """Present synapses whose centre lies within ``reach`` of the box ``[lo, hi)``."""
    g = p.cell_size
    # A synapse centre is the midpoint of seeds in neighbouring cubes: it lies less
    # than half a cube outside its lower cube.
    margin = math.ceil((reach + 0.5 * g) / g)
    c_lo = lo // g - margin
    c_hi = (hi - 1) // g + margin
    cubes = itertools.product(*[range(a, b + 1) for a, b in zip(c_lo, c_hi, strict=True)])
    parts = _cells_synapses(p, [(c[0], c[1], c[2]) for c in cubes])
    s = _Synapses.concat(parts)
    out_near = np.maximum(0.0, np.maximum(lo - s.centre, s.centre - (hi - 1)))
    idx = np.flatnonzero(np.sum(out_near**2, axis=1) <= reach**2)
    return s.subset(idx) if idx.size else None


def _local_grid(
    lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64], centre: npt.NDArray[np.float64],
    reach: float,
) -> tuple[tuple[slice, ...], Any] | None:
    """Slices of the box covering the ball (centre, reach) and the relative coordinates."""
    a = np.maximum(np.floor(centre - reach).astype(np.int64), lo)
    b = np.minimum(np.ceil(centre + reach).astype(np.int64) + 1, hi)
    if np.any(b <= a):
        return None
    sl = tuple(slice(int(a[i] - lo[i]), int(b[i] - lo[i])) for i in range(3))
    rel = [
        (np.arange(a[i], b[i], dtype=np.float64) - centre[i]).reshape(
            [-1 if j == i else 1 for j in range(3)]
        )
        for i in range(3)
    ]
    return sl, rel


def _paint_mito(
    m: _Mito, lo: Any, hi: Any, labels: np.ndarray, clean: np.ndarray | None, rim: float
) -> None:
    got = _local_grid(lo, hi, m.centre, m.reach + 1.0)
    if got is None:
        return
    sl, (rz, ry, rx) = got
    q = [m.frame[j, 0] * rz + m.frame[j, 1] * ry + m.frame[j, 2] * rx for j in range(3)]
    f = sum((q[j] / m.axes[j]) ** 2 for j in range(3))
    grad = 2.0 * np.sqrt(sum(q[j] ** 2 / m.axes[j] ** 4 for j in range(3)))
    inside = f <= 1.0
    # first-order distance to the surface, (1 - f) / |grad f|
    dist = np.where(grad > 0, (1.0 - f) / np.maximum(grad, 1e-12), np.inf)
    is_rim = inside & (dist < rim)
    is_matrix = inside & ~is_rim
    lab = labels[sl]
    lab[is_matrix] = MITO
    lab[is_rim] = MITO_MEMBRANE
    if clean is not None:
        t = np.mod(q[2] / m.period + m.phase, 1.0)
        crista = np.abs(2.0 * t - 1.0) < 0.28
        img = clean[sl]
        img[is_matrix] = np.where(crista, _I_CRISTA, _I_MITO_MATRIX)[is_matrix]
        img[is_rim] = _I_MITO_RIM


def _paint_vesicle(
    v: _Vesicle, lo: Any, hi: Any, labels: np.ndarray, clean: np.ndarray | None
) -> None:
    got = _local_grid(lo, hi, v.centre, v.radius + 1.0)
    if got is None:
        return
    sl, (rz, ry, rx) = got
    d2 = (rz * rz + ry * ry) + rx * rx
    inside = d2 <= v.radius**2
    labels[sl][inside] = VESICLE
    if clean is not None:
        shell = inside & (d2 > (v.radius - 2.0) ** 2)
        img = clean[sl]
        img[inside] = _I_VES_LUMEN
        img[shell] = _I_VES_SHELL


def fibsem_box(
    p: FibsemParams, start: Sequence[int], shape: Sequence[int], *, want_clean: bool = True
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32] | None]:
    """Labels and clean intensities of the FIB-SEM phantom on a global box.

    Parameters
    ----------
    p
        Phantom parameters.
    start, shape
        The box in global voxel coordinates (may extend outside any volume).
    want_clean
        Also return the noise-free, unblurred intensities in ``[0, 1]``.

    Returns
    -------
    labels, clean
        ``uint8`` class ids and ``float32`` intensities (``None`` unless requested).
    """
    lo = np.asarray(start, dtype=np.int64)
    hi = lo + np.asarray(shape, dtype=np.int64)
    g = p.cell_size
    labels = np.empty(tuple(int(s) for s in shape), np.uint8)
    clean = np.empty(labels.shape, np.float32) if want_clean else None
    c_lo, c_hi = lo // g, (hi - 1) // g
    for tc in itertools.product(*[range(a, b + 1) for a, b in zip(c_lo, c_hi, strict=True)]):
        tca = np.array(tc, dtype=np.int64)
        tlo = np.maximum(tca * g, lo)
        thi = np.minimum((tca + 1) * g, hi)
        lab, img = _tile(p, tca, tlo, thi, want_clean)
        sl = tuple(slice(int(tlo[i] - lo[i]), int(thi[i] - lo[i])) for i in range(3))
        labels[sl] = lab
        if clean is not None and img is not None:
            clean[sl] = img

    # Mitochondria of the cells whose cubes are within one of the box.
    for cell in itertools.product(
        *[range(a - 1, b + 2) for a, b in zip(c_lo, c_hi, strict=True)]
    ):
        for m in _mitos(p, cell):
            _paint_mito(m, lo, hi, labels, clean, p.mito_rim)

    # Vesicle clusters of the synapses that can reach the box.
    reach = (1.3 * p.synapse_radius[1] + 30.0 + 2 * p.vesicle_radius[1]
             + p.synapse_thickness[0] + 4.0)  # farthest vesicle voxel from its synapse
    syn = _relevant_synapses(p, lo, hi, reach)
    if syn is not None:
        for j in range(len(syn.key)):
            for v in _vesicles(p, _cell_tuple(syn.a[j]), _cell_tuple(syn.b[j])):
                _paint_vesicle(v, lo, hi, labels, clean)
    return labels, clean


# ----------------------------------------------------------------- lazy arrays


def _truth_block(p: FibsemParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    return fibsem_box(p, start, shape, want_clean=False)[0]


def _clean_block(p: FibsemParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    return fibsem_box(p, start, shape, want_clean=True)[1]


def _image_block(p: FibsemParams, start: tuple[int, int, int], shape: tuple[int, int, int]) -> Any:
    sigma = (p.blur, p.blur, p.blur)
    v = blurred_box(partial(_clean_block, p), start, shape, sigma)
    if p.noise > 0:
        v = v + np.float32(p.noise) * H.gauss_box(H.stream_key(p.seed, _S_NOISE), start, shape)
    return to_uint8(v)


def _annotation_block(
    p: FibsemParams, slices: tuple[int, ...], start: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> Any:
    return annotation_box(partial(_truth_block, p), slices, IGNORE_ID, start, shape)


def fibsem(
    shape: Sequence[int],
    *,
    seed: int = 0,
    chunks: Sequence[int] | None = (64, 128, 128),
    annotated_slices: int = 3,
    noise: float = 0.08,
    blur: float = 1.0,
    voxel_size: float = 5.0,
    **params: Any,
) -> Phantom:
    """FIB-SEM-like neuropil phantom with seven classes and sparse annotation.

    Parameters
    ----------
    shape
        ``(z, y, x)`` size in voxels.
    seed
        Master seed; the same seed gives the same bytes whatever ``chunks``.
    chunks
        Dask chunk size ``(z, y, x)`` (capped at ``shape``).
    annotated_slices
        Number ``K`` of evenly spaced z-slices labelled in ``annotation``
        (:math:`z_i = \\lfloor (i + 1/2) Z / K \\rfloor`); ``0`` gives no annotation.
    noise
        Standard deviation of the additive Gaussian noise, as a fraction of the full
        intensity range (0.08 ≈ 20 grey levels).
    blur
        Gaussian blur σ in voxels (point-spread function); ``0`` disables it.
    voxel_size
        Isotropic voxel size in nm (metadata only; geometry is in voxels).
    **params
        Further :class:`FibsemParams` fields (``cell_size``, ``synapse_probability``, ...).

    Returns
    -------
    Phantom
        ``uint8`` image, ``uint8`` truth with ids :data:`CLASS_NAMES`
        (0 cytoplasm, 1 cell membrane, 2 mitochondrion, 3 mitochondrial membrane,
        4 synapse, 5 vesicle, 6 undefined) and the sparse annotation (ignore id 255).

    Notes
    -----
    Each block is computed independently from hashed seed points of nearby grid
    cubes only; the blur uses a halo of :math:`\\lfloor 4\\sigma + 1/2 \\rfloor` voxels
    of the same globally defined clean field, and the noise is hashed from global
    coordinates, so the result does not depend on the chunking.
    """
    shp = check_shape(shape)
    try:
        p = FibsemParams(seed=int(seed), noise=float(noise), blur=float(blur), **params)
    except TypeError as exc:
        raise PhantomParameterError(f"unknown fibsem parameter: {exc}") from None
    p.validate()
    check_nonneg("voxel_size", voxel_size)
    ch = check_chunks(chunks, shp, (64, 128, 128))
    return assemble_phantom(
        "fibsem", p, shp, ch, annotated_slices=annotated_slices, image_block=_image_block,
        truth_block=_truth_block, annotation_block=_annotation_block, image_dtype=np.uint8,
        voxel_size=voxel_size, class_names=CLASS_NAMES, ignore_id=IGNORE_ID,
    )
