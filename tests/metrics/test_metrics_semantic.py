"""Semantic metrics: blockwise counts equal scikit-learn on the flattened voxels."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    jaccard_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)

from volseg.errors import InputError
from volseg.metrics import evaluate_semantic, semantic_counts
from volseg.metrics.confusion import quantise_probabilities, semantic_block
from volseg.metrics.semantic import average_precision, cohen_kappa, per_class_scores
from volseg.metrics.semantic import precision_recall_curve as hist_pr_curve

TOL = 1e-9
IGNORE = 255


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOL


def test_hand_worked_confusion_and_scores() -> None:
    truth = np.array([0, 0, 1, 1, 2, 2], dtype=np.uint8)
    pred = np.array([0, 1, 1, 1, 2, 0], dtype=np.uint8)
    r = evaluate_semantic(pred, truth, n_classes=3, class_names=["a", "b", "c"])
    # rows truth, columns prediction
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    pc = r["per_class"]
    # a: TP 1, column sum 2, row sum 2 -> P = R = F1 = 1/2, IoU = 1/(2+2-1) = 1/3
    assert pc["a"]["precision"] == 0.5 and pc["a"]["recall"] == 0.5
    assert pc["a"]["f1"] == 0.5 and pc["a"]["iou"] == pytest.approx(1 / 3, abs=TOL)
    # b: TP 2, column sum 3, row sum 2 -> P = 2/3, R = 1, F1 = 4/5, IoU = 2/3
    assert pc["b"]["precision"] == pytest.approx(2 / 3, abs=TOL)
    assert pc["b"]["recall"] == 1.0
    assert pc["b"]["f1"] == pytest.approx(0.8, abs=TOL)
    assert pc["b"]["dice"] == pytest.approx(0.8, abs=TOL)
    assert pc["b"]["iou"] == pytest.approx(2 / 3, abs=TOL)
    # c: TP 1, column sum 1, row sum 2 -> P = 1, R = 1/2, F1 = 2/3, IoU = 1/2
    assert pc["c"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "iou": 0.5, "dice": 2 / 3, "support": 2},
        abs=TOL,
    )
    assert r["accuracy"] == pytest.approx(4 / 6, abs=TOL)
    # p_o = 4/6; p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3; kappa = (2/3 - 1/3) / (2/3) = 1/2
    assert r["cohen_kappa"] == pytest.approx(0.5, abs=TOL)
    # macro F1 = (1/2 + 4/5 + 2/3) / 3; supports are equal so weighted == macro
    assert r["macro"]["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3, abs=TOL)
    assert r["weighted"]["f1"] == pytest.approx(r["macro"]["f1"], abs=TOL)


def _random_case(
    seed: int, shape: tuple[int, ...], n_classes: int, *, sparse: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, shape).astype(np.uint8)
    # a prediction that is right ~60 % of the time and never predicts the last class
    pred = np.where(rng.random(shape) < 0.6, truth, rng.integers(0, n_classes - 1, shape))
    pred = np.minimum(pred, n_classes - 2).astype(np.uint8)
    if sparse:
        truth[rng.random(shape) < 0.7] = IGNORE
    logits = rng.normal(size=(n_classes, *shape)) + 2.0 * (
        np.arange(n_classes).reshape(-1, *[1] * len(shape)) == truth[None]
    )
    prob = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    return truth, pred, prob


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
@pytest.mark.parametrize(
    ("shape", "chunks", "sparse"),
    [
        ((13, 17, 19), (5, 6, 7), False),
        ((9, 31, 23), (4, 10, 9), True),
        ((1, 40, 37), (1, 13, 11), True),
    ],
)
def test_equal_to_sklearn(
    shape: tuple[int, ...], chunks: tuple[int, ...], sparse: bool, zero_division: float
) -> None:
    n_classes = 5
    truth, pred, prob = _random_case(sum(shape), shape, n_classes, sparse=sparse)
    q = quantise_probabilities(prob)
    r = evaluate_semantic(
        da.from_array(pred, chunks=chunks),
        da.from_array(truth, chunks=chunks),
        n_classes=n_classes,
        ignore_label=IGNORE if sparse else None,
        probabilities=da.from_array(q, chunks=(2, *chunks)),  # channel chunks differ too
        zero_division=zero_division,
    )
    keep = truth != IGNORE if sparse else np.ones(shape, bool)
    y_true, y_pred = truth[keep], pred[keep]
    labels = list(range(n_classes))
    np.testing.assert_array_equal(
        r["confusion_matrix"], confusion_matrix(y_true, y_pred, labels=labels)
    )
    assert r["ignored_voxels"] == int((~keep).sum())
    p, rc, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=zero_division
    )
    # jaccard_score accepts only 0 / 1; here no class has TP + FP + FN = 0, so any value works
    jzd = 0.0 if math.isnan(zero_division) else zero_division
    iou = jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=jzd)
    names = r["class_names"]
    for i, name in enumerate(names):
        got = r["per_class"][name]
        assert _close(got["precision"], p[i]) and _close(got["recall"], rc[i])
        assert _close(got["f1"], f[i]) and _close(got["dice"], f[i])
        assert _close(got["iou"], iou[i]) and got["support"] == s[i]
    for avg in ("macro", "weighted"):
        p, rc, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=avg, zero_division=zero_division
        )
        j = jaccard_score(y_true, y_pred, labels=labels, average=avg, zero_division=jzd)
        got = r[avg]
        assert _close(got["precision"], p) and _close(got["recall"], rc)
        assert _close(got["f1"], f) and _close(got["dice"], f) and _close(got["iou"], j)
    assert _close(r["accuracy"], accuracy_score(y_true, y_pred))
    assert _close(r["cohen_kappa"], cohen_kappa_score(y_true, y_pred, labels=labels))
    for i, name in enumerate(names):
        y = y_true == i
        ap = average_precision_score(y, q[i][keep]) if y.any() else 0.0
        assert _close(r["average_precision"][name], ap), name


def test_last_class_never_predicted_gets_zero_division_value() -> None:
    # sklearn: precision of a never-predicted class is `zero_division`
    truth = np.array([0, 1, 2, 2], dtype=np.uint8)
    pred = np.array([0, 1, 1, 0], dtype=np.uint8)
    for zd in (0.0, 1.0):
        r = evaluate_semantic(pred, truth, n_classes=3, zero_division=zd)
        assert r["per_class"]["class_2"]["precision"] == zd
        assert r["per_class"]["class_2"]["recall"] == 0.0  # defined: 0 / 2
    # a class absent from truth and prediction: every score is zero_division
    scores = per_class_scores(np.array([[3, 0], [0, 0]]), zero_division=1.0)
    assert scores["f1"][1] == 1.0 and scores["iou"][1] == 1.0 and scores["support"][1] == 0


def test_average_precision_hand_worked() -> None:
    # scores (quantised) 230 pos, 204 neg, 179 pos, 26 neg: thresholds in decreasing order
    # give (P, R) = (1, 1/2), (1/2, 1/2), (2/3, 1), (1/2, 1)
    # AP = sum (R_n - R_{n-1}) P_n = 1/2 * 1 + 0 + 1/2 * 2/3 + 0 = 5/6
    hist = np.zeros((256, 2), dtype=np.int64)
    hist[230, 1] = hist[204, 0] = hist[179, 1] = hist[26, 0] = 1
    assert average_precision(hist) == pytest.approx(5 / 6, abs=TOL)
    y = np.array([1, 0, 1, 0])
    q = np.array([230, 204, 179, 26])
    assert average_precision(hist) == pytest.approx(average_precision_score(y, q), abs=TOL)
    p, r, t = hist_pr_curve(hist)
    sp, sr, st = precision_recall_curve(y, q)
    np.testing.assert_allclose(p, sp, atol=TOL)
    np.testing.assert_allclose(r, sr, atol=TOL)
    np.testing.assert_array_equal(t, st)
    # ties: two voxels share a score, one positive -> one threshold with P = 1/2
    hist2 = np.zeros((256, 2), dtype=np.int64)
    hist2[100] = [1, 1]
    assert average_precision(hist2) == pytest.approx(0.5, abs=TOL)
    # no positive: sklearn returns 0 (and warns)
    hist3 = np.zeros((256, 2), dtype=np.int64)
    hist3[5, 0] = 3
    with pytest.warns(UserWarning):
        expected = average_precision_score(np.zeros(3), np.full(3, 5))
    assert average_precision(hist3) == expected == 0.0


def test_pr_curves_equal_sklearn_with_float_probabilities() -> None:
    truth, pred, prob = _random_case(7, (6, 21, 25), 4, sparse=True)
    chunks = (4, 8, 9)
    r = evaluate_semantic(
        da.from_array(pred, chunks=chunks),
        da.from_array(truth, chunks=chunks),
        n_classes=4,
        ignore_label=IGNORE,
        probabilities=da.from_array(prob.astype(np.float32), chunks=(1, *chunks)),
        class_names=["w", "x", "y", "z"],
    )
    keep = truth != IGNORE
    q = np.rint(np.clip(prob.astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8)
    for i, name in enumerate(["w", "x", "y", "z"]):
        sp, sr, st = precision_recall_curve(truth[keep] == i, q[i][keep])
        curve = r["pr_curves"][name]
        np.testing.assert_allclose(curve["precision"], sp, atol=TOL)
        np.testing.assert_allclose(curve["recall"], sr, atol=TOL)
        np.testing.assert_allclose(np.asarray(curve["thresholds"]) * 255, st, atol=1e-6)
        assert _close(
            r["average_precision"][name], average_precision_score(truth[keep] == i, q[i][keep])
        )


def test_chunking_invariance_of_counts() -> None:
    truth, pred, prob = _random_case(3, (11, 14, 15), 6, sparse=True)
    q = quantise_probabilities(prob)
    whole = semantic_block(truth, pred, q, n_classes=6, ignore_label=IGNORE)
    for chunks in [(11, 14, 15), (1, 1, 15), (4, 5, 6), (10, 13, 14)]:
        c = semantic_counts(
            da.from_array(pred, chunks=chunks),
            da.from_array(truth, chunks=chunks),
            n_classes=6,
            ignore_label=IGNORE,
            probabilities=da.from_array(q, chunks=(3, 7, 7, 7)),
        ).compute()
        np.testing.assert_array_equal(c.confusion, whole.confusion)
        assert c.histograms is not None and whole.histograms is not None
        np.testing.assert_array_equal(c.histograms, whole.histograms)
        assert c.confusion.dtype == np.int64 and c.ignored == whole.ignored


def test_number_of_classes_inferred_for_uint8() -> None:
    truth = np.array([[0, 3, 3, IGNORE]], dtype=np.uint8)
    pred = np.array([[0, 3, 1, 2]], dtype=np.uint8)
    r = evaluate_semantic(pred, truth, n_classes=None, ignore_label=IGNORE)
    assert r["n_classes"] == 4 and r["ignored_voxels"] == 1
    assert r["confusion_matrix"][3] == [0, 1, 0, 1]


def test_kappa_undefined_is_nan_like_sklearn() -> None:
    cm = np.array([[5, 0], [0, 0]])  # one class only: p_e = 1
    y = np.zeros(5, dtype=int)
    with pytest.warns(UserWarning):
        expected = cohen_kappa_score(y, y, labels=[0, 1])
    assert math.isnan(cohen_kappa(cm)) and math.isnan(expected)


def test_errors() -> None:
    truth = np.zeros((4, 5, 6), dtype=np.uint8)
    with pytest.raises(InputError, match="shape"):
        evaluate_semantic(np.zeros((4, 5, 7), np.uint8), truth, n_classes=2)
    with pytest.raises(InputError, match="class id 9"):
        evaluate_semantic(np.full((4, 5, 6), 9, np.uint8), truth, n_classes=2)
    bad_truth = truth.copy()
    bad_truth[0, 0, 0] = IGNORE
    with pytest.raises(InputError, match="ignore"):
        evaluate_semantic(truth, bad_truth, n_classes=2)
    with pytest.raises(InputError, match="channels"):
        evaluate_semantic(truth, truth, n_classes=2, probabilities=np.zeros((3, 4, 5, 6)))
    with pytest.raises(InputError, match="integer"):
        evaluate_semantic(truth.astype(np.float32), truth, n_classes=2)
    with pytest.raises(InputError, match="class names"):
        evaluate_semantic(truth, truth, n_classes=2, class_names=["a", "b", "c"])
