"""Segmentation losses with exact "ignore" handling.

Every loss takes logits ``(N, C, *spatial)`` and integer targets ``(N, *spatial)``
whose value ``ignore_id`` marks voxels that are not annotated.  Those voxels take part
in no sum and no denominator: the result equals the loss computed on the annotated
voxels alone.  A batch without any annotated voxel gives exactly 0 (with a gradient of
zeros, never NaN).

=============== ======================================================================
name            definition (sums over annotated voxels i, classes c)
=============== ======================================================================
``ce``          ``sum_i w_{t_i} (-log p_{i,t_i}) / sum_i w_{t_i}`` (w = 1 unless given)
``weighted_ce`` the same with class weights (``"auto"``: inverse frequency, capped)
``focal``       ``sum_i w_{t_i} (1 - p_{i,t_i})^gamma (-log p_{i,t_i}) / sum_i w_{t_i}``
``dice``        ``1 - mean_c (2 sum_i p_ic y_ic + s) / (sum_i p_ic + sum_i y_ic + s)``,
                softmax ``p``, pooled over the batch (MONAI ``DiceLoss``, ``batch=True``)
``bce_dice``    per-class sigmoid BCE on one-hot targets (mean over annotated voxels and
                classes) plus the Dice above on sigmoid probabilities
``tversky``     ``1 - mean_c (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)`` (MONAI)
=============== ======================================================================

with ``s = 1e-5``.  Dice and Tversky use MONAI's losses on probabilities and one-hot
targets multiplied by the annotation mask, which removes ignored voxels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

SMOOTH = 1e-5


def _mask_and_target(
    logits: torch.Tensor, target: torch.Tensor, ignore_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the annotation mask ``(N, 1, *spatial)`` and targets with ignore set to 0."""
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match"
        )
    valid = target != ignore_id
    n_classes = logits.shape[1]
    if bool(((target < 0) | (target >= n_classes))[valid].any()):
        raise ValueError(f"target has ids outside 0..{n_classes - 1} besides {ignore_id}")
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    return valid.unsqueeze(1), safe


def _zero(logits: torch.Tensor) -> torch.Tensor:
    return logits.sum() * 0.0


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_id: int = 255,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Weighted) cross-entropy, the weighted mean over annotated voxels.

    Parameters
    ----------
    logits
        ``(N, C, *spatial)``.
    target
        ``(N, *spatial)`` class ids, ``ignore_id`` where not annotated.
    ignore_id
        The "not annotated" id.
    class_weights
        ``(C,)`` weights ``w``; the mean is ``sum_i w_{t_i} l_i / sum_i w_{t_i}``
        (as in :func:`torch.nn.functional.cross_entropy`).

    Returns
    -------
    torch.Tensor
        A scalar; 0 when nothing is annotated.
    """
    return focal(logits, target, ignore_id=ignore_id, class_weights=class_weights, gamma=0.0)


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_id: int = 255,
    gamma: float = 2.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss ``w_t (1 - p_t)^gamma (-log p_t)``, weighted mean over annotated voxels.

    Notes
    -----
    Lin et al., "Focal loss for dense object detection", ICCV 2017.  ``gamma = 0`` is
    the cross-entropy.
    """
    mask, safe = _mask_and_target(logits, target, ignore_id)
    valid = mask.squeeze(1)
    if not bool(valid.any()):
        return _zero(logits)
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -logp_t
    if gamma:
        loss = loss * (1.0 - logp_t.exp()).clamp(min=0.0) ** gamma
    w = torch.ones_like(loss) if class_weights is None else class_weights.to(loss)[safe]
    w = w * valid
    denom = w.sum()
    if float(denom) == 0.0:
        return _zero(logits)
    return (loss * w).sum() / denom


def dice(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_id: int = 255, sigmoid: bool = False
) -> torch.Tensor:
    """Soft Dice loss over annotated voxels, pooled over the batch, mean over classes.

    Uses :class:`monai.losses.DiceLoss` (``batch=True``, ``smooth_nr = smooth_dr =
    1e-5``) on ``p * m`` and ``y * m`` where ``m`` is the annotation mask.
    """
    from monai.losses import DiceLoss

    mask, safe = _mask_and_target(logits, target, ignore_id)
    if not bool(mask.any()):
        return _zero(logits)
    prob = torch.sigmoid(logits.float()) if sigmoid else torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).to(prob)
    fn = DiceLoss(include_background=True, batch=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH)
    return fn(prob * mask, onehot * mask)


def tversky(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_id: int = 255,
    alpha: float = 0.3,
    beta: float = 0.7,
) -> torch.Tensor:
    """Tversky loss (MONAI ``TverskyLoss``, ``batch=True``) over annotated voxels.

    Notes
    -----
    ``TI_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)`` with soft counts
    ``TP = sum p y``, ``FP = sum p (1 - y)``, ``FN = sum (1 - p) y``; the loss is
    ``1 - mean_c TI_c``.  Salehi et al., "Tversky loss function for image
    segmentation using 3D FCDN", 2017.  ``alpha = beta = 0.5`` is the Dice loss.
    """
    from monai.losses import TverskyLoss

    mask, safe = _mask_and_target(logits, target, ignore_id)
    if not bool(mask.any()):
        return _zero(logits)
    prob = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).to(prob)
    fn = TverskyLoss(alpha=alpha, beta=beta, batch=True, smooth_nr=SMOOTH, smooth_dr=SMOOTH)
    return fn(prob * mask, onehot * mask)


def bce_dice(logits: torch.Tensor, target: torch.Tensor, *, ignore_id: int = 255) -> torch.Tensor:
    """Per-class sigmoid BCE on one-hot targets plus sigmoid Dice, over annotated voxels.

    The BCE term is the mean over annotated voxels and classes of
    ``-(y log s(z) + (1 - y) log(1 - s(z)))``.
    """
    mask, safe = _mask_and_target(logits, target, ignore_id)
    if not bool(mask.any()):
        return _zero(logits)
    onehot = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).to(logits.dtype).float()
    per = F.binary_cross_entropy_with_logits(logits.float(), onehot, reduction="none")
    m = mask.to(per)
    bce = (per * m).sum() / (m.sum() * logits.shape[1])
    return bce + dice(logits, target, ignore_id=ignore_id, sigmoid=True)


def balanced_weights(frequencies: Sequence[float] | np.ndarray, *, cap: float = 10.0) -> np.ndarray:
    """Inverse-frequency class weights, normalised to mean 1 over present classes, capped.

    Parameters
    ----------
    frequencies
        Annotated voxel count (or share) of each class.
    cap
        Largest ratio between two weights: ``w_c <= cap * min(w)``.  Absent classes
        get the largest weight.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float32 weights.

    Examples
    --------
    Shares 0.9 / 0.1: inverse 1.11 / 10, ratio 9 < 10 so uncapped; normalised to mean 1
    they are 0.2 / 1.8.

    >>> balanced_weights([0.9, 0.1]).round(3).tolist()
    [0.2, 1.8]
    """
    f = np.asarray(frequencies, dtype=np.float64)
    total = f.sum()
    if total <= 0:
        return np.ones(len(f), np.float32)
    share = f / total
    present = share > 0
    inv = np.zeros_like(share)
    inv[present] = 1.0 / share[present]
    lo = inv[present].min()
    inv = np.minimum(inv, cap * lo)
    inv[~present] = inv[present].max()
    inv = inv / inv[present].mean()
    return inv.astype(np.float32)


class CompositeLoss(nn.Module):
    """A weighted sum of loss terms, each ``f(logits, target) -> scalar``.

    Parameters
    ----------
    terms
        ``(name, weight, function)`` triples.

    Notes
    -----
    This is the default *objective* of :func:`volseg.train.loop.fit`; another
    objective (e.g. a pre-training loss on another head) is any callable with the
    same signature.
    """

    def __init__(self, terms: Sequence[tuple[str, float, Any]]) -> None:
        super().__init__()
        self.terms = list(terms)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return ``sum_k weight_k * term_k(logits, target)``."""
        total = _zero(logits)
        for _, weight, fn in self.terms:
            if weight:
                total = total + weight * fn(logits, target)
        return total


def build_loss(
    terms: Sequence[Any],
    *,
    n_classes: int,
    ignore_id: int,
    class_frequencies: Sequence[float] | np.ndarray | None = None,
    weight_cap: float = 10.0,
) -> CompositeLoss:
    """Build the loss of a training config's ``loss`` list.

    Parameters
    ----------
    terms
        :mod:`volseg.train.config` loss terms (``name``, ``weight``, options).
    n_classes, ignore_id
        Output channels and the "not annotated" id.
    class_frequencies
        Annotated voxels per class in the training region (for ``"auto"`` weights).
    weight_cap
        Cap of ``"auto"`` weights (see :func:`balanced_weights`).
    """
    from functools import partial

    def weights_of(term: Any) -> torch.Tensor | None:
        cw = getattr(term, "class_weights", None)
        if cw is None:
            return None
        if cw == "auto":
            freq = class_frequencies if class_frequencies is not None else np.ones(n_classes)
            return torch.as_tensor(balanced_weights(freq, cap=weight_cap))
        return torch.as_tensor(np.asarray(cw, dtype=np.float32))

    out: list[tuple[str, float, Any]] = []
    for term in terms:
        name = term.name
        if name in ("ce", "weighted_ce"):
            fn: Any = partial(cross_entropy, ignore_id=ignore_id, class_weights=weights_of(term))
        elif name == "focal":
            fn = partial(focal, ignore_id=ignore_id, gamma=term.gamma,
                         class_weights=weights_of(term))
        elif name == "dice":
            fn = partial(dice, ignore_id=ignore_id)
        elif name == "bce_dice":
            fn = partial(bce_dice, ignore_id=ignore_id)
        elif name == "tversky":
            fn = partial(tversky, ignore_id=ignore_id, alpha=term.alpha, beta=term.beta)
        else:  # pragma: no cover - the config schema admits only the names above
            raise ValueError(f"unknown loss {name!r}")
        out.append((name, float(term.weight), fn))
    return CompositeLoss(out)
