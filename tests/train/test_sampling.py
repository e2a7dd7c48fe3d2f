"""Anchor sampling: capped class-balanced probabilities, anchored fraction, windows."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from volseg.train.data import Region
from volseg.train.sampling import AnchorSampler, capped_class_probabilities, window_start


def test_capped_probabilities_hand_worked() -> None:
    # shares 0.90 / 0.09 / 0.01, cap 10: balanced would be 1/3 each, but class 2 may get
    # at most 10 * 0.01 = 0.10; the remaining 0.90 is split equally: 0.45 / 0.45 / 0.10
    np.testing.assert_allclose(capped_class_probabilities([90, 9, 1], cap=10),
                               [0.45, 0.45, 0.10])
    # cap 1: the natural frequencies
    np.testing.assert_allclose(capped_class_probabilities([90, 9, 1], cap=1),
                               [0.90, 0.09, 0.01])
    # no binding cap: balanced
    np.testing.assert_allclose(capped_class_probabilities([5, 3, 2], cap=100), [1 / 3] * 3)
    # only anchor classes 1 and 2 (shares 0.6 / 0.4 among them): balanced 0.5 / 0.5
    np.testing.assert_allclose(capped_class_probabilities([50, 30, 20], classes=[1, 2]),
                               [0, 0.5, 0.5])
    # absent classes get nothing
    np.testing.assert_allclose(capped_class_probabilities([10, 0, 10]), [0.5, 0, 0.5])


@pytest.mark.parametrize("cap", [1.0, 2.0, 5.0, 50.0])
def test_capped_probabilities_respect_cap(cap: float) -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        counts = rng.integers(0, 1000, size=6) * (rng.random(6) < 0.8)
        if counts.sum() == 0:
            continue
        q = capped_class_probabilities(counts, cap=cap)
        f = counts / counts.sum()
        assert q.sum() == pytest.approx(1.0)
        assert np.all(q <= cap * f + 1e-12)
        # as balanced as the cap allows: classes below the cap share the same level
        free = q < cap * f - 1e-12
        if free.sum() > 1:
            assert np.ptp(q[free]) < 1e-9


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Class 0 background, class 1 ~ 4 %, class 2: 20 voxels (~0.06 %), some ignore."""
    rng = np.random.default_rng(0)
    lab = np.zeros(shape, np.uint8)
    lab[rng.random(shape) < 0.04] = 1
    flat = rng.choice(lab.size, size=20, replace=False)
    lab.flat[flat] = 2
    lab[:, :, :4] = 255
    return lab


@pytest.mark.parametrize("in_memory", [True, False])
def test_sampler_statistics(in_memory: bool) -> None:
    shape = (8, 48, 40)
    lab = _labels(shape)
    labels = da.from_array(lab, chunks=(4, 16, 20))
    image = da.zeros(shape, dtype=np.uint8, chunks=(4, 16, 20))
    region = Region(image, labels, (0, 8), lut=None, ignore_id=255, in_memory=in_memory)
    table = region.block_table(3)
    assert table.counts.sum(axis=0).tolist() == [
        int((lab == c).sum()) for c in range(3)
    ]
    p, cap = 0.8, 10.0
    sampler = AnchorSampler([table], lambda r, b: region.load_block(b), anchor_probability=p,
                            anchor_classes=[1, 2], max_oversampling=cap,
                            rng=np.random.default_rng(1))
    n = 4000
    draws = [sampler.sample() for _ in range(n)]
    for d in draws[:500]:
        assert lab[d.position] == d.cls  # the anchor really is a voxel of its class
    anchored = np.array([d.anchored for d in draws])
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(anchored.mean() - p) < 4 * sigma
    # anchored draws follow q; the rare class is capped at cap * its share of class 1+2
    q = sampler.class_probabilities
    f12 = np.array([0, (lab == 1).sum(), (lab == 2).sum()], float)
    f12 /= f12.sum()
    assert q[0] == 0 and q[2] == pytest.approx(min(cap * f12[2], 0.5))
    cls_anchored = np.array([d.cls for d in draws if d.anchored])
    m = len(cls_anchored)
    for c in (1, 2):
        share = np.mean(cls_anchored == c)
        assert abs(share - q[c]) < 4 * np.sqrt(q[c] * (1 - q[c]) / m) + 1e-9
    # un-anchored draws are uniform over annotated voxels: class shares = frequencies
    cls_free = np.array([d.cls for d in draws if not d.anchored])
    f_all = np.array([(lab == c).sum() for c in range(3)], float)
    f_all /= f_all.sum()
    share0 = np.mean(cls_free == 0)
    assert abs(share0 - f_all[0]) < 4 * np.sqrt(f_all[0] * (1 - f_all[0]) / len(cls_free))


def test_sampler_is_repeatable() -> None:
    lab = _labels((4, 32, 32))
    region = Region(da.zeros(lab.shape, chunks=16), da.from_array(lab, chunks=16), (0, 4),
                    lut=None, ignore_id=255, in_memory=True)
    table = region.block_table(3)

    def run(seed: int) -> list[tuple[int, int, int]]:
        s = AnchorSampler([table], lambda r, b: region.load_block(b), anchor_probability=0.8,
                          anchor_classes=[1, 2], max_oversampling=10,
                          rng=np.random.default_rng(seed))
        return [s.sample().position for _ in range(50)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_window_start_contains_anchor_and_stays_inside() -> None:
    rng = np.random.default_rng(0)
    for _ in range(2000):
        extent = int(rng.integers(1, 80))
        size = int(rng.integers(1, 40))
        anchor = int(rng.integers(extent))
        s = window_start(anchor, size, extent, rng)
        assert s <= anchor < s + size
        if size <= extent:
            assert s >= 0 and s + size <= extent
        else:
            assert s <= 0 and s + size >= extent
