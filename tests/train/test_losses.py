"""Losses on hand-worked tiny inputs, exact ignore handling, class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from volseg.train.config import CETerm, DiceTerm, WeightedCETerm
from volseg.train.losses import (
    balanced_weights,
    bce_dice,
    build_loss,
    cross_entropy,
    dice,
    focal,
    tversky,
)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

IGN = 255
LN3 = math.log(3.0)


def _tiny(extreme: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three voxels, two classes (N=1, C=2, X=3).

    voxel 0: logits (0, 0)     -> p = (1/2, 1/2), target 0
    voxel 1: logits (ln 3, 0)  -> p = (3/4, 1/4), target 1
    voxel 2: logits (extreme, -extreme), target ignore
    """
    logits = torch.tensor([[[0.0, LN3, extreme], [0.0, 0.0, -extreme]]], requires_grad=True)
    target = torch.tensor([[0, 1, IGN]])
    return logits, target


def test_cross_entropy_hand_worked() -> None:
    logits, target = _tiny()
    # -log(1/2) = ln 2 (voxel 0), -log(1/4) = ln 4 (voxel 1); mean = (ln 2 + ln 4) / 2
    expected = (math.log(2) + math.log(4)) / 2
    assert float(cross_entropy(logits, target, ignore_id=IGN)) == pytest.approx(expected, 1e-6)
    # weights (1, 3): (1 * ln 2 + 3 * ln 4) / (1 + 3) = 7 ln 2 / 4
    w = torch.tensor([1.0, 3.0])
    got = cross_entropy(logits, target, ignore_id=IGN, class_weights=w)
    assert float(got) == pytest.approx(7 * math.log(2) / 4, 1e-6)


def test_cross_entropy_matches_torch() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = IGN
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=IGN)
    got = cross_entropy(logits, target, ignore_id=IGN, class_weights=w)
    torch.testing.assert_close(got, ref)


def test_focal_hand_worked() -> None:
    logits, target = _tiny()
    # gamma 2: voxel 0: (1 - 1/2)^2 ln 2 = ln 2 / 4; voxel 1: (1 - 1/4)^2 ln 4 = 9/16 ln 4
    expected = (math.log(2) / 4 + 9 / 16 * math.log(4)) / 2
    assert float(focal(logits, target, ignore_id=IGN, gamma=2.0)) == pytest.approx(expected, 1e-6)
    # gamma 0 is the cross-entropy
    assert float(focal(logits, target, ignore_id=IGN, gamma=0.0)) == pytest.approx(
        float(cross_entropy(logits, target, ignore_id=IGN)), 1e-7)


def test_dice_hand_worked() -> None:
    logits, target = _tiny()
    # p = (1/2, 1/2) for voxel 0 (target 0), (3/4, 1/4) for voxel 1 (target 1):
    # class 0: I = 1/2 * 1 + 3/4 * 0 = 1/2, sum p = 5/4, sum y = 1 -> D0 = 1 / (9/4) = 4/9
    # class 1: I = 1/2 * 0 + 1/4 * 1 = 1/4, sum p = 3/4, sum y = 1 -> D1 = (1/2) / (7/4) = 2/7
    expected = 1 - (4 / 9 + 2 / 7) / 2
    assert float(dice(logits, target, ignore_id=IGN)) == pytest.approx(expected, abs=1e-5)


def test_tversky_hand_worked() -> None:
    logits, target = _tiny()
    # class 0: TP = 1/2, FP = 3/4 (voxel 1), FN = 1/2 (voxel 0: 1 - 1/2)
    #   TI0 = 0.5 / (0.5 + 0.3 * 0.75 + 0.7 * 0.5) = 0.5 / 1.075
    # class 1: TP = 1/4, FP = 1/2 (voxel 0), FN = 3/4 (voxel 1: 1 - 1/4)
    #   TI1 = 0.25 / (0.25 + 0.3 * 0.5 + 0.7 * 0.75) = 0.25 / 0.925
    expected = 1 - (0.5 / 1.075 + 0.25 / 0.925) / 2
    got = tversky(logits, target, ignore_id=IGN, alpha=0.3, beta=0.7)
    assert float(got) == pytest.approx(expected, abs=1e-5)
    # alpha = beta = 1/2 is the Dice loss
    half = tversky(logits, target, ignore_id=IGN, alpha=0.5, beta=0.5)
    # (equal up to the smoothing terms: Dice (2I + s) / (P + T + s), Tversky (2I + 2s) / ...)
    assert float(half) == pytest.approx(float(dice(logits, target, ignore_id=IGN)), abs=1e-4)


def test_bce_dice_hand_worked() -> None:
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    target = torch.tensor([[0, 1, IGN]])
    # sigmoid(0) = 1/2 everywhere: BCE = ln 2 per element.
    # Dice on p = 1/2: class 0: I = 1/2, sum p = 1, sum y = 1 -> D = 1/2; class 1 the same.
    expected = math.log(2) + (1 - 0.5)
    assert float(bce_dice(logits, target, ignore_id=IGN)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lg, t: cross_entropy(lg, t, ignore_id=IGN),
        lambda lg, t: cross_entropy(lg, t, ignore_id=IGN, class_weights=torch.tensor([1.0, 5.0])),
        lambda lg, t: focal(lg, t, ignore_id=IGN),
        lambda lg, t: dice(lg, t, ignore_id=IGN),
        lambda lg, t: bce_dice(lg, t, ignore_id=IGN),
        lambda lg, t: tversky(lg, t, ignore_id=IGN),
    ],
    ids=["ce", "weighted_ce", "focal", "dice", "bce_dice", "tversky"],
)
def test_ignored_voxels_do_not_count(fn) -> None:  # type: ignore[no-untyped-def]
    a_logits, target = _tiny(extreme=0.0)
    b_logits, _ = _tiny(extreme=50.0)  # wildly different prediction on the ignored voxel
    a, b = fn(a_logits, target), fn(b_logits, target)
    assert float(a) == pytest.approx(float(b), abs=1e-6)
    b.backward()
    assert b_logits.grad is not None
    assert torch.all(b_logits.grad[..., 2] == 0)  # no gradient reaches the ignored voxel
    # equal to the loss on the annotated voxels alone
    alone = fn(a_logits[..., :2].detach(), target[..., :2])
    assert float(alone) == pytest.approx(float(a), abs=1e-6)
    # an all-ignore batch: exactly zero, finite zero gradient
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    loss = fn(logits, torch.full((2, 4, 4), IGN))
    assert float(loss) == 0.0
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


def test_targets_outside_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        cross_entropy(torch.zeros(1, 2, 3), torch.tensor([[0, 2, IGN]]), ignore_id=IGN)


def test_balanced_weights_with_cap() -> None:
    # shares 0.9 / 0.1: inverse 10/9 and 10 (ratio 9 < cap); mean 1 -> 0.2 / 1.8
    np.testing.assert_allclose(balanced_weights([90, 10], cap=10), [0.2, 1.8], rtol=1e-6)
    # shares 0.99 / 0.01: inverse ratio 99 capped at 10: (1, 10) / 5.5
    np.testing.assert_allclose(balanced_weights([99, 1], cap=10), [1 / 5.5, 10 / 5.5],
                               rtol=1e-6)
    # an absent class gets the largest weight
    w = balanced_weights([50, 50, 0], cap=10)
    assert w[2] == w.max()


def test_build_loss_weighted_sum() -> None:
    logits, target = _tiny()
    terms = [CETerm(name="ce", weight=0.5), DiceTerm(name="dice", weight=2.0)]
    loss = build_loss(terms, n_classes=2, ignore_id=IGN)
    expected = 0.5 * float(cross_entropy(logits, target, ignore_id=IGN)) + 2.0 * float(
        dice(logits, target, ignore_id=IGN))
    assert float(loss(logits, target)) == pytest.approx(expected, abs=1e-6)
    # "auto" class weights come from the frequencies: 90 / 10 -> (0.2, 1.8)
    wce = build_loss([WeightedCETerm(name="weighted_ce")], n_classes=2, ignore_id=IGN,
                     class_frequencies=[90, 10])
    manual = cross_entropy(logits, target, ignore_id=IGN, class_weights=torch.tensor([0.2, 1.8]))
    assert float(wce(logits, target)) == pytest.approx(float(manual), abs=1e-6)
