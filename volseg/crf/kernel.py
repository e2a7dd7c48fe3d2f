"""Fully connected CRF with Gaussian edge potentials on one numpy block.

The block is described by its *global* position (``origin``) so that the
pairwise features of a voxel are the same whichever block it is computed in;
this is what makes the blockwise CRF of :mod:`volseg.crf.blockwise` agree with a
whole-volume run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from volseg.crf.options import CRFConfig
from volseg.errors import ConfigError, InputError

__all__ = [
    "MIN_PROBABILITY",
    "compatibility_matrix",
    "dense_crf",
    "to_probabilities",
    "unary_energy",
]

#: Probabilities are clipped to at least this value before ``-log p`` (uint8 0 → 1e-6).
MIN_PROBABILITY = 1e-6

Compatibility = float | Sequence[Sequence[float]] | npt.NDArray[np.floating[Any]]


def to_probabilities(block: npt.NDArray[Any], *, axis: int = 0) -> npt.NDArray[np.float32]:
    """Turn a stored probability block into normalised float32 probabilities.

    Parameters
    ----------
    block
        Class probabilities with the classes along ``axis``: ``uint8`` quantised
        (``p = q / 255``) or floating point.
    axis
        The class axis.

    Returns
    -------
    numpy.ndarray
        float32 probabilities, clipped to at least :data:`MIN_PROBABILITY` and
        renormalised to sum to one along ``axis``.

    Notes
    -----
    Quantisation to ``uint8`` maps small probabilities to 0, whose ``-log`` is
    infinite; clipping to :math:`10^{-6}` caps a unary at
    :math:`-\\log 10^{-6} \\approx 13.8`, i.e. "very unlikely" rather than "impossible".
    """
    if block.dtype == np.uint8:
        p = block.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(block.dtype, np.floating):
        p = block.astype(np.float32, copy=True)
    else:
        raise InputError(
            f"probabilities must be uint8 (quantised) or floating point, got {block.dtype}"
        )
    np.nan_to_num(p, copy=False, nan=MIN_PROBABILITY)
    np.clip(p, MIN_PROBABILITY, 1.0, out=p)
    p /= p.sum(axis=axis, keepdims=True)
    return p


#: ``-log max(q / 255, MIN_PROBABILITY)`` for every uint8 ``q`` (the unaries of quantised
#: probabilities, looked up instead of computed).
_UINT8_UNARY = -np.log(np.maximum(np.arange(256, dtype=np.float64) / 255.0,
                                  MIN_PROBABILITY)).astype(np.float32)


def unary_energy(probabilities: npt.NDArray[Any], *, axis: int = 0) -> npt.NDArray[np.float32]:
    r"""Return the unary energies ``-log p`` of a probability block (float32, C order).

    Parameters
    ----------
    probabilities
        Classes along ``axis``: ``uint8`` quantised (``q / 255``) or floating point.

    Returns
    -------
    numpy.ndarray
        Floating-point input: ``-log`` of :func:`to_probabilities`.  ``uint8`` input:
        ``-log max(q / 255, 1e-6)`` by table look-up (one byte in, four out, no
        float copy of the probabilities), without the renormalisation.

    Notes
    -----
    Renormalising divides a voxel's probabilities by their sum :math:`s_i`, i.e. adds
    :math:`\log s_i` to all of the voxel's unaries.  The mean-field marginals
    :math:`Q_i(l) \propto \exp(-U_i(l) - \sum_{l'} \mu(l, l') \ldots)` are
    normalised over the labels of each voxel, so a per-voxel constant cancels: both
    unaries give the same marginals (to float rounding) and labels.
    """
    if probabilities.dtype == np.uint8:
        if axis != 0:
            probabilities = np.moveaxis(probabilities, axis, 0)
        return np.ascontiguousarray(_UINT8_UNARY[probabilities])
    return np.ascontiguousarray(-np.log(to_probabilities(probabilities, axis=axis)))


def compatibility_matrix(compatibility: Compatibility, n_classes: int) -> npt.NDArray[np.float32]:
    """Return the label-compatibility (cost) matrix :math:`\\mu` used by :func:`dense_crf`.

    Parameters
    ----------
    compatibility
        A Potts weight ``w`` (the cost of two *different* labels,
        :math:`\\mu = w (1 - I)`) or a full ``C × C`` matrix of costs
        :math:`\\mu(l, l')` of label ``l`` at one voxel next to ``l'`` at a similar
        voxel (e.g. a high cost for cell membrane touching mitochondrion). The
        matrix is symmetrised.
    n_classes
        Number of classes ``C``.

    Raises
    ------
    ConfigError
        If the matrix is not ``C × C`` or not finite.
    """
    if isinstance(compatibility, (int, float, np.number)):
        weight = float(compatibility)
        if not np.isfinite(weight):
            raise ConfigError(f"compatibility weight must be finite, got {weight}")
        mu = weight * (1.0 - np.eye(n_classes))
    else:
        mu = np.asarray(compatibility, dtype=np.float64)
        if mu.shape != (n_classes, n_classes):
            raise ConfigError(
                f"compatibility matrix must be {n_classes} x {n_classes} (one row and column "
                f"per class), got shape {mu.shape}"
            )
        if not np.all(np.isfinite(mu)):
            raise ConfigError("compatibility matrix must contain only finite numbers")
        mu = 0.5 * (mu + mu.T)
    return np.ascontiguousarray(mu, dtype=np.float32)


def _coordinate_features(
    shape: tuple[int, int, int],
    origin: Sequence[int],
    spacing_nm: Sequence[float],
    sigma_nm: float,
) -> npt.NDArray[np.float32]:
    """Return ``(3, N)`` features ``(origin + index) * spacing / sigma`` (C order)."""
    axes = [
        ((int(o) + np.arange(n, dtype=np.float64)) * float(s) / float(sigma_nm)).astype(np.float32)
        for n, o, s in zip(shape, origin, spacing_nm, strict=True)
    ]
    feats = np.empty((3, *shape), dtype=np.float32)
    feats[0] = axes[0][:, None, None]
    feats[1] = axes[1][None, :, None]
    feats[2] = axes[2][None, None, :]
    return feats.reshape(3, -1)


def dense_crf(
    probabilities: npt.NDArray[Any],
    image: npt.NDArray[Any] | None = None,
    config: CRFConfig | None = None,
    *,
    voxel_size: Sequence[float],
    origin: Sequence[int] = (0, 0, 0),
    return_probabilities: bool = False,
) -> npt.NDArray[Any]:
    """Refine class probabilities of one block with a fully connected CRF.

    Parameters
    ----------
    probabilities
        ``(C, Z, Y, X)`` class probabilities, ``uint8`` quantised (``q / 255``) or
        float; clipped to ≥ 1e-6 (see :func:`unary_energy`).
        A single channel is a foreground probability ``p`` (a sigmoid model): the
        classes are then background ``1 - p`` (0) and foreground ``p`` (1).
    image
        ``(Z, Y, X)`` intensities for the bilateral term (needed when
        ``config.bilateral_weight > 0``).
    config
        The kernel parameters (:class:`CRFConfig`, default: its defaults): widths θγ
        (nm) and weight w⁽²⁾ of the smoothness kernel, spatial width θα (nm),
        intensity width θβ (image units) and weight w⁽¹⁾ of the appearance kernel (a
        weight 0 disables its kernel), the Potts weight or ``C × C`` cost matrix μ
        (see :func:`compatibility_matrix`) shared by both kernels, and the
        mean-field iterations.
    voxel_size
        Voxel size in nm, ``(z, y, x)``.
    origin
        Global index of the block's first voxel ``(z, y, x)``: features use global
        coordinates so that overlapping blocks see identical features.
    return_probabilities
        Return the ``(C, Z, Y, X)`` float32 marginals instead of the labels.

    Returns
    -------
    numpy.ndarray
        ``(Z, Y, X)`` uint8 labels (argmax of the CRF marginals), or the marginals.

    Notes
    -----
    The Gibbs energy of a labelling :math:`x` is (Krähenbühl & Koltun 2011)

    .. math::

        E(x) = \\sum_i -\\log p_i(x_i) + \\sum_{i<j} \\mu(x_i, x_j)\\, k(f_i, f_j),

        k = w^{(1)} \\exp\\Big(-\\sum_a \\frac{(p_{ia}-p_{ja})^2}{2\\theta_\\alpha^2}
                                  - \\frac{(I_i-I_j)^2}{2\\theta_\\beta^2}\\Big)
          + w^{(2)} \\exp\\Big(-\\sum_a \\frac{(p_{ia}-p_{ja})^2}{2\\theta_\\gamma^2}\\Big),

    with :math:`p_{ia} = (\\text{origin}_a + \\text{index}_a)\\,s_a` the *global*
    position in nm of voxel ``i`` along axis ``a`` (voxel size :math:`s_a`, so an
    anisotropic stack gets per-axis widths :math:`\\theta/s_a` in voxels). The
    features handed to pydensecrf2 are :math:`p/\\theta_\\gamma` and
    :math:`(p/\\theta_\\alpha, I/\\theta_\\beta)`; the kernel weight multiplies the
    compatibility matrix (pydensecrf2 applies ``μ · (k ⋆ Q)`` per kernel) and
    kernels are symmetrically normalised (``NORMALIZE_SYMMETRIC``, a per-voxel
    normalisation that depends only on the voxel's neighbourhood, so it is
    blockwise consistent given a halo). Inference is mean field with the
    permutohedral lattice (Adams et al. 2010) for the Gaussian filtering.

    A Potts weight ``w`` is the matrix :math:`w(1 - I)`; pydensecrf2's own Potts
    compatibility (``-w I``) differs from it by a per-voxel constant, which
    cancels in the normalisation, so both give the same marginals.

    References
    ----------
    P. Krähenbühl and V. Koltun, "Efficient inference in fully connected CRFs with
    Gaussian edge potentials", NIPS 2011.
    """
    import pydensecrf.densecrf as dcrf

    c = config or CRFConfig()
    iterations, compatibility = c.iterations, c.compatibility
    gaussian_sigma_nm, gaussian_weight = c.gaussian_sigma_nm, c.gaussian_weight
    bilateral_sigma_nm, bilateral_weight = c.bilateral_sigma_nm, c.bilateral_weight
    bilateral_intensity = c.bilateral_intensity
    if probabilities.ndim != 4:
        raise InputError(
            f"probabilities must be (C, Z, Y, X), got an array of shape {probabilities.shape}"
        )
    if probabilities.shape[0] == 1:
        fg = probabilities[0]
        bg = 255 - fg if fg.dtype == np.uint8 else 1.0 - fg
        probabilities = np.stack([bg, fg])
    n_classes = int(probabilities.shape[0])
    sz, sy, sx = (int(s) for s in probabilities.shape[1:])
    shape = (sz, sy, sx)
    if len(voxel_size) != 3 or len(origin) != 3:
        raise ConfigError("voxel_size and origin need three values (z, y, x)")
    if iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {iterations}")
    if n_classes > 255:
        raise InputError(f"at most 255 classes fit uint8 labels, got {n_classes}")
    n_voxels = int(np.prod(shape))
    if n_voxels == 0:
        return np.zeros(shape, dtype=np.uint8)

    unary = unary_energy(probabilities).reshape(n_classes, -1)
    mu = compatibility_matrix(compatibility, n_classes)

    crf = dcrf.DenseCRF(n_voxels, n_classes)
    crf.setUnaryEnergy(unary)
    if gaussian_weight > 0:
        if gaussian_sigma_nm <= 0:
            raise ConfigError(f"gaussian_sigma_nm must be > 0, got {gaussian_sigma_nm}")
        feats = _coordinate_features(shape, origin, voxel_size, gaussian_sigma_nm)
        crf.addPairwiseEnergy(feats, compat=np.ascontiguousarray(gaussian_weight * mu))
        del feats
    if bilateral_weight > 0:
        if image is None:
            raise InputError("the bilateral term needs the image (bilateral_weight > 0)")
        if tuple(image.shape) != shape:
            raise InputError(
                f"image block shape {tuple(image.shape)} does not match probabilities {shape}"
            )
        if bilateral_sigma_nm <= 0 or bilateral_intensity <= 0:
            raise ConfigError("bilateral_sigma_nm and bilateral_intensity must be > 0")
        feats = np.empty((4, n_voxels), dtype=np.float32)
        feats[:3] = _coordinate_features(shape, origin, voxel_size, bilateral_sigma_nm)
        feats[3] = (image.astype(np.float32) / np.float32(bilateral_intensity)).ravel()
        crf.addPairwiseEnergy(feats, compat=np.ascontiguousarray(bilateral_weight * mu))
        del feats
    q = np.asarray(crf.inference(int(iterations)), dtype=np.float32)
    q = q.reshape(n_classes, *shape)
    if return_probabilities:
        return q
    return np.argmax(q, axis=0).astype(np.uint8)
