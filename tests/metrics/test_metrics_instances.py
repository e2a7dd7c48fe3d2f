"""Instance metrics: VOI / adapted Rand equal scikit-image; object matching by hand."""

from __future__ import annotations

import math
from typing import Any

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.metrics import adapted_rand_error, variation_of_information
from skimage.metrics import contingency_table as sk_table

from volseg.errors import InputError
from volseg.metrics import (
    IOU_THRESHOLDS,
    contingency_table,
    evaluate,
    evaluate_instances,
    instance_metrics,
    match_objects,
    object_overlaps,
)
from volseg.metrics.contingency import ContingencyTable, combine_contingency, contingency_block

TOL = 1e-9


def _table(truth: np.ndarray, pred: np.ndarray) -> ContingencyTable:
    return contingency_block(truth, pred)


# ---------------------------------------------------------------- hand-worked VOI / ARAND


def test_pure_merge_hand_worked() -> None:
    # truth has two objects of 2 voxels, the prediction merges them into one.
    truth = np.array([1, 1, 2, 2])
    pred = np.array([7, 7, 7, 7])
    r = instance_metrics(_table(truth, pred))
    # H(P|T) = 0 (each truth object lies in one predicted segment)
    # H(T|P) = -sum n_ij/N log2(n_ij/b_j) = -2 * (2/4) log2(2/4) = 1 bit
    assert r["voi_split"] == 0.0
    assert r["voi_merge"] == pytest.approx(1.0, abs=TOL)
    # pairs (ordered, distinct voxels): S_TP = 2^2 + 2^2 - 4 = 4, S_T = 4, S_P = 4^2 - 4 = 12
    # precision = 4/12 = 1/3 (a merge hurts precision), recall = 4/4 = 1
    # error = 1 - 2*4/(4+12) = 1/2
    assert r["adapted_rand_precision"] == pytest.approx(1 / 3, abs=TOL)
    assert r["adapted_rand_recall"] == 1.0
    assert r["adapted_rand_error"] == pytest.approx(0.5, abs=TOL)
    # CREMI = sqrt((0 + 1) * 1/2)
    assert r["cremi_score"] == pytest.approx(math.sqrt(0.5), abs=TOL)
    # skimage: same error, precision/recall swapped (scikit-image issue #6485)
    are, p_sk, r_sk = adapted_rand_error(truth, pred)
    assert are == pytest.approx(0.5, abs=TOL) and p_sk == 1.0 and r_sk == pytest.approx(1 / 3)
    split, merge = variation_of_information(truth, pred, ignore_labels=(0,))
    assert (split, merge) == pytest.approx((0.0, 1.0), abs=TOL)


def test_pure_split_hand_worked() -> None:
    # one truth object of 4 voxels predicted as two halves
    truth = np.array([[0, 3, 3, 3, 3]])
    pred = np.array([[5, 1, 1, 2, 2]])
    r = instance_metrics(_table(truth, pred))  # truth background (first voxel) ignored
    # H(P|T) = -2 * (2/4) log2(2/4) = 1 bit; H(T|P) = 0
    assert r["voi_split"] == pytest.approx(1.0, abs=TOL) and r["voi_merge"] == 0.0
    # S_TP = 4 + 4 - 4 = 4, S_T = 16 - 4 = 12, S_P = 4 + 4 - 4 = 4
    # precision = 1, recall = 1/3, error = 1 - 8/16 = 1/2
    assert r["adapted_rand_precision"] == 1.0
    assert r["adapted_rand_recall"] == pytest.approx(1 / 3, abs=TOL)
    assert r["adapted_rand_error"] == pytest.approx(0.5, abs=TOL)
    assert r["evaluated_voxels"] == 4


def test_voi_three_way_hand_worked() -> None:
    # truth: A = 4 voxels, B = 2 voxels; prediction: X = 3 of A, Y = 1 of A + 2 of B
    truth = np.array([1, 1, 1, 1, 2, 2])
    pred = np.array([4, 4, 4, 5, 5, 5])
    r = instance_metrics(_table(truth, pred))
    # H(P|T) = -(1/6)[3 log2(3/4) + 1 log2(1/4) + 2 log2(2/2)]
    split = -(3 * math.log2(3 / 4) + math.log2(1 / 4)) / 6
    # H(T|P) = -(1/6)[3 log2(3/3) + 1 log2(1/3) + 2 log2(2/3)]
    merge = -(math.log2(1 / 3) + 2 * math.log2(2 / 3)) / 6
    assert r["voi_split"] == pytest.approx(split, abs=TOL)  # 0.5409...
    assert r["voi_merge"] == pytest.approx(merge, abs=TOL)  # 0.4591...
    # S_TP = 9+1+4-6 = 8, S_T = 16+4-6 = 14, S_P = 9+9-6 = 12
    assert r["adapted_rand_precision"] == pytest.approx(8 / 12, abs=TOL)
    assert r["adapted_rand_recall"] == pytest.approx(8 / 14, abs=TOL)
    assert r["adapted_rand_error"] == pytest.approx(1 - 16 / 26, abs=TOL)
    assert list(variation_of_information(truth, pred, ignore_labels=(0,))) == pytest.approx(
        [split, merge], abs=TOL
    )


# ---------------------------------------------------------------- against scikit-image


def _blobs(shape: tuple[int, ...], seed: int, *, cell_volume: int = 60) -> np.ndarray:
    """Instance-like labels: Voronoi cells of random seeds, a quarter of them background 0."""
    rng = np.random.default_rng(seed)
    n_seeds = max(2, int(np.prod(shape)) // cell_volume)
    seeds = np.zeros(shape, dtype=np.uint32)
    flat = rng.choice(seeds.size, n_seeds, replace=False)
    seeds.flat[flat] = np.arange(1, n_seeds + 1)
    idx = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    labels = seeds[tuple(idx)]
    labels[np.isin(labels, rng.choice(n_seeds, n_seeds // 4) + 1)] = 0
    return labels


def _perturb(labels: np.ndarray, seed: int) -> np.ndarray:
    """A 'prediction': shifted boundaries, some merges, relabelled ids, noise."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, 1, axis=-1).astype(np.uint64)
    ids = np.unique(pred)
    mapping = rng.permutation(ids.size).astype(np.uint64) * 3 + 1
    mapping[rng.random(ids.size) < 0.2] = 2  # merge ~20 % of segments into one
    mapping[0] = 0
    pred = mapping[np.searchsorted(ids, pred)]
    noise = rng.random(labels.shape) < 0.02
    pred[noise] = rng.integers(0, 50, int(noise.sum()))
    return pred


CASES = [
    ((16, 23, 29), (5, 7, 8)),
    ((1, 61, 47), (1, 20, 13)),
    ((10, 10, 10), (3, 4, 9)),
]


@pytest.mark.parametrize(("shape", "chunks"), CASES)
@pytest.mark.parametrize("ignore", [(0,), (), (0, 3)])
def test_equal_to_skimage(
    shape: tuple[int, ...], chunks: tuple[int, ...], ignore: tuple[int, ...]
) -> None:
    truth = _blobs(shape, seed=sum(shape))
    pred = _perturb(truth, seed=1)
    r = evaluate_instances(
        da.from_array(pred, chunks=chunks),
        da.from_array(truth, chunks=chunks),
        ignore_labels=ignore,
    )
    split, merge = variation_of_information(truth, pred, ignore_labels=ignore)
    are, p_sk, r_sk = adapted_rand_error(truth, pred, ignore_labels=ignore)
    assert r["voi_split"] == pytest.approx(split, abs=TOL)
    assert r["voi_merge"] == pytest.approx(merge, abs=TOL)
    assert r["adapted_rand_error"] == pytest.approx(are, abs=TOL)
    # the right way round: precision divides by predicted pairs (skimage #6485)
    assert r["adapted_rand_precision"] == pytest.approx(r_sk, abs=TOL)
    assert r["adapted_rand_recall"] == pytest.approx(p_sk, abs=TOL)
    assert r["cremi_score"] == pytest.approx(math.sqrt((split + merge) * are), abs=TOL)
    assert split > 0.05 and merge > 0.05 and are > 0.05  # a non-trivial case


def test_contingency_table_exact_for_any_chunking() -> None:
    truth = _blobs((12, 19, 21), seed=4)
    pred = _perturb(truth, seed=5)
    expected = sk_table(truth, pred.astype(np.int64), sparse_type="array").tocoo()
    for chunks in [(12, 19, 21), (5, 5, 5), (1, 19, 1), (11, 18, 20)]:
        tab = contingency_table(
            da.from_array(pred, chunks=chunks), da.from_array(truth, chunks=chunks)
        ).compute()
        assert tab.counts.dtype == np.int64 and tab.truth.dtype == np.uint64
        got = {
            (int(t), int(p)): int(c)
            for t, p, c in zip(tab.truth, tab.prediction, tab.counts, strict=True)
        }
        want = {
            (int(t), int(p)): int(c)
            for t, p, c in zip(expected.row, expected.col, expected.data, strict=True)
            if c
        }
        assert got == want
        assert tab.n_voxels == truth.size


def test_large_ids_beyond_32_bits() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (6, 7, 8)).astype(np.uint64) + np.uint64(2**40)
    truth[0] = 0
    pred = rng.integers(0, 3, (6, 7, 8)).astype(np.uint64) * np.uint64(2**33)
    r = evaluate_instances(da.from_array(pred, chunks=4), da.from_array(truth, chunks=3))
    # remap to small ids for skimage (which builds a dense-indexed sparse matrix)
    t_small = np.unique(truth, return_inverse=True)[1].reshape(truth.shape)
    p_small = np.unique(pred, return_inverse=True)[1].reshape(pred.shape)
    split, merge = variation_of_information(t_small, p_small, ignore_labels=(0,))
    are, _, _ = adapted_rand_error(t_small, p_small)
    assert (r["voi_split"], r["voi_merge"]) == pytest.approx((split, merge), abs=TOL)
    assert r["adapted_rand_error"] == pytest.approx(are, abs=TOL)
    parts = [contingency_block(truth[:3], pred[:3]), contingency_block(truth[3:], pred[3:])]
    merged = combine_contingency(parts)
    assert merged.n_voxels == truth.size and merged.truth.max() > 2**40


# ---------------------------------------------------------------- object matching


def test_matching_hand_worked() -> None:
    truth = np.array([1, 1, 1, 1, 2, 2, 0, 0, 0, 0])
    pred = np.array([8, 8, 8, 0, 9, 0, 9, 0, 7, 7])
    # truth 1 (4 voxels) vs pred 8 (3 voxels): overlap 3, IoU = 3 / (4 + 3 - 3) = 3/4
    # truth 2 (2 voxels) vs pred 9 (2 voxels): overlap 1, IoU = 1 / (2 + 2 - 1) = 1/3
    # pred 7 lies on background: a false positive
    r = instance_metrics(_table(truth, pred))
    m50 = r["matching"][0]
    assert m50["threshold"] == 0.5
    # at 0.5: TP = 1 (1<->8), FP = 2 (9, 7), FN = 1 (2)
    assert (m50["tp"], m50["fp"], m50["fn"]) == (1, 2, 1)
    assert m50["precision"] == pytest.approx(1 / 3) and m50["recall"] == 0.5
    # F1 = 2 TP / (2 TP + FP + FN) = 2/5; accuracy = TP / (TP + FP + FN) = 1/4
    assert r["f1_iou50"] == pytest.approx(0.4, abs=TOL)
    assert m50["accuracy"] == pytest.approx(0.25, abs=TOL)
    assert r["mean_matched_iou"] == pytest.approx(0.75, abs=TOL)
    # the 3/4 match survives thresholds 0.50 .. 0.75 (6 of 10): AP = 6 * (1/4) / 10 = 0.15
    assert r["ap"] == pytest.approx(0.15, abs=TOL)
    assert [m["tp"] for m in r["matching"]] == [1] * 6 + [0] * 4
    assert r["n_true_objects"] == 2 and r["n_pred_objects"] == 3


def test_matching_tie_at_half_is_one_to_one() -> None:
    # truth object 1 of two voxels is split into two predicted voxels: both IoU = 1/2
    truth = np.array([1, 1, 0])
    pred = np.array([4, 5, 0])
    ov = object_overlaps(_table(truth, pred))
    np.testing.assert_allclose(np.sort(ov.iou), [0.5, 0.5])
    (m,) = match_objects(ov, thresholds=[0.5])
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)  # not 2 TP: matching is one-to-one
    assert m.mean_matched_iou == 0.5


def test_matching_unlabelled_truth_voxels_are_removed() -> None:
    # truth id 99 = unlabelled: the predicted object's voxels there do not count
    truth = np.array([1, 1, 99, 99, 0])
    pred = np.array([3, 3, 3, 3, 0])
    with_ignore = instance_metrics(_table(truth, pred), ignore_labels=(0, 99))
    assert with_ignore["mean_matched_iou"] == 1.0  # IoU 2/2 after removing 99
    without = instance_metrics(_table(truth, pred), ignore_labels=(0,))
    # 99 is then an object too: truth 1 vs pred 3 IoU = 2/4 = 0.5, truth 99 IoU 2/4
    assert without["n_true_objects"] == 2 and without["matching"][0]["tp"] == 1


def _dense_reference(truth: np.ndarray, pred: np.ndarray, thr: float) -> tuple[int, float]:
    """StarDist-style matching on a dense IoU matrix: (TP, sum of matched IoU)."""
    t_ids = np.unique(truth[truth > 0])
    p_ids = np.unique(pred[pred > 0])
    if t_ids.size == 0 or p_ids.size == 0:
        return 0, 0.0
    iou = np.zeros((t_ids.size, p_ids.size))
    for a, ti in enumerate(t_ids):
        tm = truth == ti
        for b, pj in enumerate(p_ids):
            pm = pred == pj
            inter = np.count_nonzero(tm & pm)
            if inter:
                iou[a, b] = inter / np.count_nonzero(tm | pm)
    ok = iou >= thr
    n = min(iou.shape)
    rows, cols = linear_sum_assignment(-ok.astype(float) - ok * iou / (2 * n))
    good = ok[rows, cols]
    return int(good.sum()), float(iou[rows, cols][good].sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_equals_dense_reference(seed: int) -> None:
    truth = _blobs((6, 24, 26), seed=seed, cell_volume=150)
    rng = np.random.default_rng(seed)
    pred = np.roll(truth, rng.integers(0, 2, 3), axis=(0, 1, 2)).astype(np.uint32) * 2
    pred[rng.random(truth.shape) < 0.05] = 0
    r = evaluate_instances(da.from_array(pred, chunks=(4, 9, 10)), da.from_array(truth, chunks=7))
    for m in r["matching"]:
        tp, sum_iou = _dense_reference(truth, pred, m["threshold"])
        assert m["tp"] == tp, m["threshold"]
        assert m["mean_matched_iou"] == pytest.approx(sum_iou / tp if tp else 0.0, abs=TOL)
    assert 0 < r["f1_iou50"] < 1 and r["ap"] < r["f1_iou50"]
    assert [m["threshold"] for m in r["matching"]] == list(IOU_THRESHOLDS)


def test_perfect_and_empty() -> None:
    truth = _blobs((5, 12, 13), seed=9)
    r = evaluate_instances(truth * 3, truth)  # relabelled ids are still perfect
    assert r["voi_split"] == 0.0 and r["voi_merge"] == 0.0
    assert r["adapted_rand_error"] == pytest.approx(0.0, abs=TOL)
    assert r["cremi_score"] == pytest.approx(0.0, abs=1e-6)
    assert r["f1_iou50"] == 1.0 and r["ap"] == 1.0 and r["mean_matched_iou"] == 1.0
    empty = evaluate_instances(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8))
    assert math.isnan(empty["voi_split"]) and math.isnan(empty["adapted_rand_error"])
    assert empty["f1_iou50"] == 0.0 and empty["n_true_objects"] == 0


def test_errors() -> None:
    a = np.zeros((3, 4, 5), np.uint16)
    with pytest.raises(InputError, match="shape"):
        evaluate_instances(a, np.zeros((3, 4, 6), np.uint16))
    with pytest.raises(InputError, match="integer"):
        evaluate_instances(a.astype(np.float32), a)
    with pytest.raises(InputError, match="negative"):
        evaluate_instances(a.astype(np.int32) - 1, a)


class _CountingVolume:
    """An array-like that counts how often a region of it is read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = 0

    def __getitem__(self, key: Any) -> np.ndarray:
        out = self.data[key]
        if out.size:  # dask reads an empty slice once for its metadata
            self.reads += 1
        return out


def test_semantic_and_instances_read_each_block_once() -> None:
    rng = np.random.default_rng(2)
    truth = _CountingVolume(_blobs((10, 21, 22), seed=2))
    pred = _CountingVolume(rng.integers(0, 30, (10, 21, 22)).astype(np.uint32))
    t = da.from_array(truth, chunks=(4, 8, 9), lock=False)
    p = da.from_array(pred, chunks=(4, 8, 9), lock=False)
    result = evaluate(
        semantic={
            "prediction": (p % 3).astype(np.uint8),
            "truth": (t % 3).astype(np.uint8),
            "n_classes": 3,
        },
        instances={"prediction": p, "truth": t},
    )
    assert truth.reads == pred.reads == t.npartitions == 27
    assert set(result) == {"semantic", "instances"}
