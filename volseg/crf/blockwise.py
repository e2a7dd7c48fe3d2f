"""The dense CRF mapped over a Dask array: halo, block size, ``map_overlap``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt

from volseg.checks import require_finite
from volseg.crf.kernel import compatibility_matrix, dense_crf
from volseg.crf.options import CRFConfig
from volseg.errors import ConfigError, InputError

__all__ = [
    "BYTES_PER_VOXEL_BASE",
    "BYTES_PER_VOXEL_BILATERAL",
    "BYTES_PER_VOXEL_PER_CLASS",
    "CRFConfig",
    "block_bytes",
    "choose_block_size",
    "crf_halo",
    "crf_labels",
]

#: Measured peak memory of :func:`~volseg.crf.kernel.dense_crf` per voxel of the
#: *extended* block (core + halo): ``base + per_class * C (+ bilateral)`` bytes.
#: See :func:`block_bytes` for how it was measured.
BYTES_PER_VOXEL_BASE = 64
BYTES_PER_VOXEL_PER_CLASS = 36
BYTES_PER_VOXEL_BILATERAL = 112


def _max_cost(compatibility: float | list[list[float]]) -> float:
    if isinstance(compatibility, list):
        return float(np.max(np.abs(compatibility_matrix(compatibility, len(compatibility)))))
    return abs(float(compatibility))


def crf_halo(config: CRFConfig, *, voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """Return the default halo (voxels per axis) for a blockwise CRF run.

    Parameters
    ----------
    config
        The CRF parameters (``config.halo`` overrides the formula when set).
    voxel_size
        Voxel size in nm ``(z, y, x)``.

    Returns
    -------
    tuple of int
        ``(hz, hy, hx)``.

    Notes
    -----
    For every active kernel ``k`` (Gaussian: θγ, bilateral: its spatial θα) the
    halo along axis ``a`` is

    .. math::

        h_a = \\max_k \\Big\\lceil \\frac{\\theta_k}{s_a}\\, r \\Big\\rceil, \\qquad
        r = 6 + \\tfrac14 \\max(0, g - 4) \\sqrt{T}, \\qquad
        g = \\max|\\mu| \\,(w^{(1)} + w^{(2)}),

    with :math:`s_a` the voxel size, :math:`T` the iterations and :math:`g` the
    total coupling gain. Reasoning:

    * *One iteration.* A voxel's mean-field update reads :math:`Q` through the
      permutohedral-lattice Gaussian (splat onto the enclosing simplex, a
      ``[1 2 1]`` blur along each of the ``d + 1`` lattice directions, slice). Its
      footprint is compact but wider than the ideal Gaussian; cutting it at
      ``5 θ`` still changed ~1e-4 of the labels next to a cut in our tests, at
      ``6 θ`` none (for every ``T`` from 1 to 20), hence :math:`r_0 = 6`
      (≥ the 5 θ of the design notes).
    * *Several iterations.* The softmax Jacobian is bounded by ``1/4`` per unit of
      logit, so a perturbation of :math:`Q` at the cut reaches the next voxel with
      gain at most :math:`g/4`. For :math:`g \\le 4` mean field is contractive and
      a disturbance dies within one kernel footprint whatever ``T`` is. For
      :math:`g > 4` it can be relayed from iteration to iteration, spreading like
      a random walk with step θ, i.e. :math:`\\sqrt{T}\\,\\theta`, weighted by the
      excess gain; the factor ``1/4`` was calibrated on synthetic volumes
      (``g = 6, T = 5`` needs 7 θ, ``g = 10, T = 10`` needs 10 θ for zero
      disagreement next to the cut).
    * *Bilateral term.* Its spatial reach is θα (the intensity feature only
      *removes* neighbours), usually several times θγ, so it sets the halo when
      active — that is the "more with a bilateral term".

    With the defaults (θγ = 10 nm, θα = 20 nm, Potts 1, w = 3 + 2, T = 5) at
    5 nm isotropic: ``g = 5``, ``r = 6.56``, halo ``27`` voxels per axis (14 in z
    for a 10 nm z step); with the Gaussian term alone ``g = 3``, ``r = 6``, halo 12.
    """
    if config.halo is not None:
        return config.halo
    if len(voxel_size) != 3 or any(not (v > 0) for v in voxel_size):
        raise ConfigError(f"voxel_size must be three positive numbers (nm), got {voxel_size}")
    widths = []
    if config.gaussian_weight > 0:
        widths.append(config.gaussian_sigma_nm)
    if config.bilateral_weight > 0:
        widths.append(config.bilateral_sigma_nm)
    if not widths:
        return (0, 0, 0)
    gain = _max_cost(config.compatibility) * (
        config.gaussian_weight + config.bilateral_weight
    )
    r = 6.0 + 0.25 * max(0.0, gain - 4.0) * math.sqrt(config.iterations)
    sigma = max(widths)
    hz, hy, hx = (math.ceil(sigma / float(v) * r) for v in voxel_size)
    return (hz, hy, hx)


def block_bytes(
    shape: Sequence[int], *, n_classes: int, bilateral: bool
) -> int:
    """Estimate the peak memory of one CRF block (extended shape incl. halo), in bytes.

    Parameters
    ----------
    shape
        Extended block shape ``(Z, Y, X)`` (core plus halo on both sides).
    n_classes
        Number of classes ``C``.
    bilateral
        Whether the bilateral kernel is active.

    Notes
    -----
    Measured as the growth of the process's peak RSS (``ru_maxrss``) across one
    :func:`~volseg.crf.kernel.dense_crf` call (5 iterations) on 64³ and 96³ blocks
    with random ``uint8`` probabilities and a random image (the worst case for the
    bilateral lattice, every voxel a new lattice vertex)::

        C = 3, Gaussian only   161 B/voxel      C = 3, + bilateral   267 B/voxel
        C = 7, Gaussian only   299 B/voxel      C = 7, + bilateral   409 B/voxel

    i.e. about ``64 + 36 C`` bytes per voxel, plus ``112`` with the bilateral term:
    the float32 unary, marginals and two scratch matrices (``4 × 4 C``), the
    lattice (``d + 1`` vertex offsets and weights per voxel, blur buffers of
    ``C`` floats per vertex) and the feature matrices. The input block and the
    uint8 output come on top (``C + 2`` bytes per voxel for uint8 inputs).
    """
    n = int(np.prod([int(s) for s in shape]))
    per_voxel = (
        BYTES_PER_VOXEL_BASE
        + BYTES_PER_VOXEL_PER_CLASS * n_classes
        + (BYTES_PER_VOXEL_BILATERAL if bilateral else 0)
    )
    return n * per_voxel


def choose_block_size(
    shape: Sequence[int],
    *,
    halo: Sequence[int],
    n_classes: int,
    bilateral: bool,
    memory_budget: int = 2 * 1024**3,
    multiple_of: int = 16,
) -> tuple[int, int, int]:
    """Choose the core block size ``(z, y, x)`` so one block fits a memory budget.

    Parameters
    ----------
    shape
        Volume shape ``(Z, Y, X)``.
    halo
        Halo per axis (voxels).
    n_classes, bilateral
        As for :func:`block_bytes`.
    memory_budget
        Bytes one block (core + 2 × halo per axis) may use, per worker thread.
    multiple_of
        Round cores down to a multiple of this (chunk-friendly sizes).

    Returns
    -------
    tuple of int
        The largest cube-like core (clipped to the volume) whose extended block
        stays within ``memory_budget`` according to :func:`block_bytes`.

    Raises
    ------
    ConfigError
        If not even a ``multiple_of``-sized core with its halo fits the budget.
    """
    per_voxel = block_bytes((1, 1, 1), n_classes=n_classes, bilateral=bilateral)
    max_voxels = memory_budget // per_voxel
    dims = [int(s) for s in shape]
    halo = [int(h) for h in halo]
    core = [min(d, multiple_of) for d in dims]

    def extended(c: list[int]) -> int:
        return int(np.prod([min(ci + 2 * h, d) for ci, h, d in zip(c, halo, dims, strict=True)]))

    if extended(core) > max_voxels:
        raise ConfigError(
            f"memory budget of {memory_budget / 2**20:.0f} MiB is too small for a CRF "
            f"block with halo {tuple(halo)}; raise the budget or narrow the kernels"
        )
    # grow all axes that still can grow by one step, until the budget is reached
    while True:
        grown = False
        for a in range(3):
            if core[a] >= dims[a]:
                continue
            trial = list(core)
            trial[a] = min(dims[a], core[a] + multiple_of)
            if extended(trial) <= max_voxels:
                core = trial
                grown = True
        if not grown:
            break
    return (core[0], core[1], core[2])


def _crf_block(
    prob: npt.NDArray[Any],
    img: npt.NDArray[Any],
    *,
    starts: tuple[npt.NDArray[np.int64], ...],
    halo: tuple[int, int, int],
    voxel_size: tuple[float, float, float],
    config: CRFConfig,
    block_id: tuple[int, ...] | None = None,
) -> npt.NDArray[np.uint8]:
    assert block_id is not None  # the output block index (z, y, x); axis 0 is dropped
    # map_overlap with boundary="none" extends a block by the halo only towards
    # interior neighbours: the extended block begins `halo` before the core
    # unless the core touches the volume's low edge.
    origin = tuple(
        int(starts[a][block_id[a]]) - (halo[a] if block_id[a] > 0 else 0) for a in range(3)
    )
    # NaN or infinity crashes the permutohedral lattice (a segfault in a worker process)
    require_finite(img, origin, name="the CRF image", action="running the CRF")
    require_finite(prob, origin, name="the class probabilities", action="running the CRF")
    return dense_crf(prob, img, config, voxel_size=voxel_size, origin=origin)


def crf_labels(
    probabilities: da.Array,
    image: da.Array | None,
    *,
    voxel_size: Sequence[float],
    config: CRFConfig | None = None,
    block_size: Sequence[int] | None = None,
    memory_budget: int = 2 * 1024**3,
) -> da.Array:
    """Blockwise dense CRF: lazy ``(Z, Y, X)`` uint8 labels from ``(C, Z, Y, X)`` probabilities.

    Parameters
    ----------
    probabilities
        ``(C, Z, Y, X)`` class probabilities (uint8 quantised ``q/255`` or float);
        one channel is read as a foreground probability (classes 0 and 1).
    image
        ``(Z, Y, X)`` image for the bilateral term (may be ``None`` when the
        bilateral weight is 0).
    voxel_size
        Voxel size in nm ``(z, y, x)``.
    config
        CRF parameters; defaults to :class:`CRFConfig()`.
    block_size
        Core block size ``(z, y, x)``; ``None`` chooses it from ``memory_budget``
        with :func:`choose_block_size`. The output's chunks are the blocks.
    memory_budget
        Bytes per block when ``block_size`` is ``None``.

    Returns
    -------
    dask.array.Array
        ``(Z, Y, X)`` uint8 labels; chunk ``i`` equals the whole-volume CRF on it up
        to the halo truncation (see :func:`crf_halo`).

    Notes
    -----
    Each block is extended by the halo (``map_overlap``, ``boundary="none"``, so no
    padding at the volume's faces: voxels near a face see the same neighbourhood
    as in a whole-volume run), the CRF runs on the extended block with *global*
    coordinates as features, and the halo is trimmed.
    """
    config = config or CRFConfig()
    if probabilities.ndim != 4:
        raise InputError(
            f"probabilities must be (C, Z, Y, X), got {probabilities.ndim} dimensions"
        )
    # one channel = a sigmoid model's foreground probability: labels 0 / 1
    n_classes = max(2, int(probabilities.shape[0]))
    shape = tuple(int(s) for s in probabilities.shape[1:])
    if isinstance(config.compatibility, list) and len(config.compatibility) != n_classes:
        raise ConfigError(
            f"compatibility matrix is {len(config.compatibility)} x "
            f"{len(config.compatibility)} but the probabilities have {n_classes} classes"
        )
    bilateral = config.bilateral_weight > 0
    if bilateral and image is None:
        raise InputError("the bilateral term (bilateral_weight > 0) needs an image")
    if image is not None and tuple(image.shape) != shape:
        raise InputError(
            f"image shape {tuple(image.shape)} does not match probabilities {shape}"
        )
    vs = tuple(float(v) for v in voxel_size)
    if len(vs) != 3:
        raise ConfigError(f"voxel_size needs three values (z, y, x), got {voxel_size}")
    hz, hy, hx = (
        min(h, s - 1) if s > 1 else 0
        for h, s in zip(crf_halo(config, voxel_size=vs), shape, strict=True)
    )
    halo = (hz, hy, hx)
    if block_size is None:
        block_size = choose_block_size(
            shape, halo=halo, n_classes=n_classes, bilateral=bilateral,
            memory_budget=memory_budget,
        )
    core = tuple(min(int(b), s) for b, s in zip(block_size, shape, strict=True))
    if any(c < 1 for c in core):
        raise ConfigError(f"block size must be positive, got {tuple(block_size)}")
    chunks = tuple(_normalise(s, c, h) for s, c, h in zip(shape, core, halo, strict=True))
    probs = probabilities.rechunk(((int(probabilities.shape[0]),), *chunks))
    if image is not None:
        img = image.rechunk(chunks)
    else:
        img = da.zeros(shape, chunks=chunks, dtype=np.uint8)
    starts = tuple(np.concatenate([[0], np.cumsum(c)[:-1]]).astype(np.int64) for c in chunks)
    return da.map_overlap(
        _crf_block,
        probs,
        img,
        depth=[{0: 0, 1: halo[0], 2: halo[1], 3: halo[2]}, dict(enumerate(halo))],
        boundary="none",
        trim=True,
        align_arrays=False,
        allow_rechunk=False,
        drop_axis=0,
        dtype=np.uint8,
        meta=np.empty((0, 0, 0), dtype=np.uint8),
        starts=starts,
        halo=halo,
        voxel_size=vs,
        config=config,
    )


def _normalise(size: int, core: int, halo: int) -> tuple[int, ...]:
    """Chunks of ``core`` along an axis of ``size``; a last chunk thinner than the halo
    is merged into its neighbour (``map_overlap`` needs chunks at least as deep as the halo)."""
    n_full, rest = divmod(size, core)
    chunks = [core] * n_full + ([rest] if rest else [])
    if len(chunks) > 1 and chunks[-1] < halo:
        last = chunks.pop()
        chunks[-1] += last
    if len(chunks) > 1 and min(chunks) < halo:
        raise ConfigError(
            f"block size {core} is thinner than the CRF halo {halo}; use larger blocks"
        )
    return tuple(chunks)
