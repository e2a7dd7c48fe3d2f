"""Blockwise post-processing against its whole-array twin, step by step and all together."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from volseg.errors import ConfigError, InputError
from volseg.postprocess import (
    PostprocessOptions,
    block_chunks,
    decide,
    postprocess_array,
    postprocess_labels,
)

SHAPE = (17, 45, 38)
BLOCKS = [(5, 16, 13), (6, 11, 9), (17, 45, 38)]
# the hollow box: its cavity spans blocks of every blocking above but the whole volume
SHELL = (slice(2, 15), slice(5, 31), slice(4, 31))
CAVITY = (slice(5, 12), slice(10, 26), slice(9, 26))
# a box open to the y border: its cavity reaches y = 44 and is no hole
OPEN = (slice(2, 15), slice(34, 45), slice(5, 31))
OPEN_CAVITY = (slice(5, 12), slice(37, 45), slice(10, 26))
# 27 voxels in the cavity across block corners (z 10, y 16, x 13 of the 5 x 16 x 13
# blocks: kept by min_size 20), 8 voxels across them (removed)
MEDIUM = (slice(9, 12), slice(14, 17), slice(12, 15))
SMALL = (slice(4, 6), slice(15, 17), slice(33, 35))


def _phantom(seed: int = 0, flips: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """The truth and noisy float32 two-class probabilities (specks of flipped voxels)."""
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[SHELL] = 1
    truth[CAVITY] = 0
    truth[OPEN] = 1
    truth[OPEN_CAVITY] = 0
    truth[MEDIUM] = 1
    truth[SMALL] = 1
    rng = np.random.default_rng(seed)
    p1 = np.where(truth == 1, 0.8, 0.2) + rng.uniform(-0.25, 0.25, SHAPE)
    flip = rng.random(SHAPE) < flips
    p1[flip] = 1.0 - p1[flip]
    p1 = np.clip(p1, 0, 1).astype(np.float32)
    return truth, np.stack([1 - p1, p1])


@pytest.fixture(scope="module")
def probs() -> np.ndarray:
    return _phantom()[1]


def _blockwise(p: np.ndarray, options: PostprocessOptions, in_chunks=(2, 6, 10, 11)):
    with dask.config.set(scheduler="sync"):
        return postprocess_labels(da.from_array(p, chunks=in_chunks), options).compute()


OPTIONS = {
    "argmax": {},
    "median": {"median_size": 3},
    "median_anisotropic": {"median_size": (1, 5, 5)},
    "threshold": {"threshold": 0.35},
    "min_size": {"min_size": 20},
    "min_size_faces": {"min_size": 20, "connectivity": 6},
    "fill_holes": {"fill_holes": True},
    "all": {"median_size": 3, "threshold": 0.45, "min_size": 20, "fill_holes": True},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
@pytest.mark.parametrize("block", BLOCKS)
def test_blockwise_equals_the_whole_array_twin(probs, name, block):
    options = PostprocessOptions(block_size=block, **OPTIONS[name])
    expected = postprocess_array(probs, options)
    got = _blockwise(probs, options)
    assert got.dtype == np.uint8 and got.shape == SHAPE
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", sorted(set(OPTIONS) - {"argmax"}))
def test_each_step_changes_the_argmax(probs, name):
    """So that the equality above is not the argmax twice."""
    plain = np.argmax(probs, 0)
    assert (postprocess_array(probs, PostprocessOptions(**OPTIONS[name])) != plain).sum() > 20


def test_the_twin_is_the_textbook_steps(probs):
    truth, _ = _phantom()
    median = np.stack([ndimage.median_filter(c, size=3, mode="reflect") for c in probs])
    assert np.array_equal(postprocess_array(probs, PostprocessOptions(median_size=3)),
                          np.argmax(median, 0))
    # the median filter removes the specks
    plain, filtered = np.argmax(probs, 0), np.argmax(median, 0)
    assert np.mean(filtered == truth) > np.mean(plain == truth) + 0.01
    fg = probs[1] >= 0.35
    assert np.array_equal(postprocess_array(probs, PostprocessOptions(threshold=0.35)), fg)


def _textbook(p: np.ndarray, size, threshold=None) -> np.ndarray:
    """scipy's median of each channel's stored values, then the decision."""
    median = np.stack([ndimage.median_filter(c, size=size, mode="reflect") for c in p])
    f = median.astype(np.float32) / 255 if p.dtype == np.uint8 else median
    if f.shape[0] == 1:
        return (f[0] >= (0.5 if threshold is None else threshold)).astype(np.uint8)
    if threshold is not None:
        return (f[1] >= threshold).astype(np.uint8)
    return np.argmax(f, 0).astype(np.uint8)


@pytest.mark.parametrize("shape", [(7, 9, 11), (1, 12, 10), (2, 3, 30)])
@pytest.mark.parametrize("size", [3, 7, (1, 5, 5), (3, 1, 9)])
def test_the_median_decision_is_scipys_median_then_the_decision(shape, size):
    """Including the majority-vote fast path (one channel, a threshold, complementary
    channels), with many ties (few levels) and footprints wider than the volume."""
    rng = np.random.default_rng(7)
    q1 = rng.choice(np.array([0, 60, 127, 128, 200, 255], dtype=np.uint8), size=shape)
    complementary = np.stack([255 - q1, q1])
    loose = np.stack([rng.integers(0, 256, shape, dtype=np.uint8), q1])  # not 255 - q1
    f1 = q1.astype(np.float32) / 255
    floats = np.stack([np.float32(1) - f1, f1])
    three = rng.random((3, *shape)).astype(np.float32)
    for p, threshold in [(q1[None], None), (q1[None], 0.3), (f1[None], None),
                         (complementary, None), (complementary, 0.5), (loose, None),
                         (loose, 0.45), (floats, None), (floats, 0.2), (three, None)]:
        got = decide(p, PostprocessOptions(median_size=size, threshold=threshold))
        np.testing.assert_array_equal(got, _textbook(p, size, threshold),
                                      err_msg=f"{p.dtype} {p.shape} {threshold}")


@pytest.mark.parametrize("size", [3, 7, (1, 5, 5)])
def test_two_nearly_complementary_channels_take_exact_medians_where_unsure(size):
    """A float softmax: p0 is 1 - p1 only up to rounding; values at and near one half."""
    from volseg.postprocess.kernel import _two_class_argmax

    rng = np.random.default_rng(11)
    f1 = _phantom()[1][1].copy()  # bimodal: medians near one half are rare
    half = rng.random(SHAPE) < 0.03
    f1[half] = rng.choice(np.array([0.5 - 1e-7, 0.5, 0.5 + 1e-7], np.float32), half.sum())
    f0 = np.float32(1) - f1
    nudge = rng.random(SHAPE) < 0.3  # one float32 step off the complement
    towards = np.where(rng.random(int(nudge.sum())) < 0.5, -1, 2).astype(np.float32)
    f0[nudge] = np.nextafter(f0[nudge], towards)
    floats = np.stack([f0, f1])
    q1 = np.round(f1 * 255).astype(np.uint8)
    q0 = np.clip(255 - q1.astype(int) + rng.integers(-1, 2, SHAPE), 0, 255).astype(np.uint8)
    quantised = np.stack([q0, q1])
    for p in (floats, quantised):
        assert not np.array_equal(p[0], np.subtract(1 if p.dtype != np.uint8 else 255, p[1],
                                                    dtype=p.dtype))
        footprint = PostprocessOptions(median_size=size).median
        m1 = ndimage.median_filter(p[1], size=size, mode="reflect").astype(np.float32)
        m1 = m1 / 255 if p.dtype == np.uint8 else m1
        assert (np.abs(m1 - 0.5) < 0.0045).sum() > 50  # exact medians there
        fast = _two_class_argmax(p, footprint)
        assert fast is not None  # few voxels near one half: the majority votes decide
        np.testing.assert_array_equal(fast, _textbook(p, size))
        np.testing.assert_array_equal(decide(p, PostprocessOptions(median_size=size)),
                                      _textbook(p, size))


def test_majority_is_exact_when_its_sums_wrap_around():
    from volseg.postprocess.kernel import majority

    mask = np.random.default_rng(3).random((7, 7, 4000)) < 0.5  # the sums pass 2**16
    expected = ndimage.median_filter(mask.astype(np.uint8), size=7, mode="reflect")
    assert 0.2 < expected.mean() < 0.8
    np.testing.assert_array_equal(majority(mask, (7, 7, 7)), expected.astype(bool))


def test_small_objects_are_counted_across_blocks():
    truth, probs = _phantom(flips=0)  # no specks: the argmax is the truth
    options = PostprocessOptions(min_size=20, block_size=(5, 16, 13))
    got = _blockwise(probs, options)
    np.testing.assert_array_equal(got, postprocess_array(probs, options))
    plain = np.argmax(probs, 0)
    np.testing.assert_array_equal(plain, truth)
    # the 27-voxel object crosses block faces (z 10, y 16, x 13): cut, each piece has
    # at most 8 voxels; counted whole it stays
    assert plain[MEDIUM].sum() >= 20
    np.testing.assert_array_equal(got[MEDIUM], plain[MEDIUM])
    assert plain[SMALL].any() and not got[SMALL].any()  # 8 voxels: background
    components, _ = ndimage.label(got == 1, structure=np.ones((3, 3, 3)))
    assert np.bincount(components.ravel())[1:].min() >= 20


def test_holes_across_blocks_are_filled_and_open_cavities_kept(probs):
    options = PostprocessOptions(median_size=3, fill_holes=True, block_size=(5, 16, 13))
    got = _blockwise(probs, options)
    without = _blockwise(probs, PostprocessOptions(median_size=3, block_size=(5, 16, 13)))
    assert np.mean(without[CAVITY] == 0) > 0.9  # a cavity before ...
    assert got[CAVITY].all()  # ... a hole spanning 2 x 2 x 2 blocks: filled
    assert np.mean(got[OPEN_CAVITY] == 0) > 0.9  # reaches the border: not a hole
    np.testing.assert_array_equal(got[OPEN_CAVITY], without[OPEN_CAVITY])


def test_a_hole_touching_the_border_at_a_corner_block_is_not_filled():
    p1 = np.zeros((6, 9, 11), dtype=np.float32)
    p1[:, :, :] = 1.0
    p1[0:3, 3:6, 4:7] = 0.0  # touches z = 0
    p1[3:5, 2:4, 2:4] = 0.0  # inside: a hole
    p = np.stack([1 - p1, p1])
    options = PostprocessOptions(fill_holes=True, block_size=(2, 4, 5))
    got = _blockwise(p, options, in_chunks=(2, 3, 3, 3))
    assert (got[0:3, 3:6, 4:7] == 0).all()
    assert (got[3:5, 2:4, 2:4] == 1).all()
    np.testing.assert_array_equal(got, postprocess_array(p, options))


@pytest.mark.parametrize("options", [{}, {"median_size": 3, "min_size": 10},
                                     {"median_size": (3, 1, 5), "min_size": 5,
                                      "connectivity": 18}])
def test_three_classes(options):
    truth, _ = _phantom()
    truth[:, 0:20, 32:38] = 2
    rng = np.random.default_rng(1)
    p3 = np.eye(3, dtype=np.float32)[truth].transpose(3, 0, 1, 2) * 0.5
    p3 += rng.random(p3.shape, dtype=np.float32) * 0.6
    p3 /= p3.sum(0)
    o = PostprocessOptions(block_size=(5, 16, 13), **options)
    np.testing.assert_array_equal(_blockwise(p3, o, in_chunks=(3, 6, 10, 11)),
                                  postprocess_array(p3, o))
    assert set(np.unique(postprocess_array(p3, o))) == {0, 1, 2}


def test_three_classes_refuse_threshold_and_holes():
    p3 = np.full((3, 4, 5, 6), 1 / 3, dtype=np.float32)
    for options in (PostprocessOptions(threshold=0.5), PostprocessOptions(fill_holes=True)):
        with pytest.raises(ConfigError, match="two-class"):
            postprocess_array(p3, options)
        with pytest.raises(ConfigError, match="two-class"):
            postprocess_labels(da.from_array(p3), options)


def test_one_channel_and_uint8(probs):
    q = np.round(probs * 255).astype(np.uint8)
    options = PostprocessOptions(median_size=3, min_size=20, fill_holes=True,
                                 block_size=(5, 16, 13))
    expected = postprocess_array(q, options)
    np.testing.assert_array_equal(_blockwise(q, options), expected)
    # one foreground channel: the same labels as its two-class map
    np.testing.assert_array_equal(postprocess_array(q[1:], options), expected)
    np.testing.assert_array_equal(_blockwise(q[1:], options, in_chunks=(1, 6, 10, 11)),
                                  expected)
    # p >= 0.5 on one channel, as predict's labels
    assert np.array_equal(decide(probs[1:], PostprocessOptions()), probs[1] >= 0.5)


def test_a_single_section_and_thin_axes():
    _, p = _phantom()
    section = p[:, 7:8]
    options = PostprocessOptions(median_size=5, min_size=4, fill_holes=True,
                                 block_size=(1, 16, 13))
    np.testing.assert_array_equal(_blockwise(section, options, in_chunks=(2, 1, 10, 11)),
                                  postprocess_array(section, options))


def test_defaults_are_the_argmax_and_float16(probs):
    half = probs.astype(np.float16)
    np.testing.assert_array_equal(postprocess_array(half), np.argmax(half, 0))
    np.testing.assert_array_equal(
        _blockwise(half, PostprocessOptions(median_size=3, block_size=(5, 16, 13))),
        postprocess_array(half, PostprocessOptions(median_size=3)))


def test_options_validation():
    assert PostprocessOptions().median == (1, 1, 1)
    assert PostprocessOptions(median_size=5).halo == (2, 2, 2)
    assert PostprocessOptions(median_size=[1, 5, 7]).halo == (0, 2, 3)
    for bad in ({"median_size": 4}, {"median_size": (1, 4, 5)}, {"median_size": -1},
                {"threshold": 1.5}, {"min_size": -1}, {"connectivity": 4},
                {"block_size": (0, 4, 4)}):
        with pytest.raises(ValueError):
            PostprocessOptions(**bad)
    assert PostprocessOptions.from_dict(PostprocessOptions(median_size=(1, 3, 3)).to_dict()) \
        == PostprocessOptions(median_size=(1, 3, 3))


def test_block_chunks_and_bad_input():
    assert block_chunks(17, 5, 2) == (5, 5, 5, 2)
    assert block_chunks(17, 5, 3) == (5, 5, 7)
    assert block_chunks(3, 8, 4) == (3,)
    with pytest.raises(ConfigError, match="halo"):
        block_chunks(20, 2, 3)
    with pytest.raises(InputError):
        postprocess_labels(da.zeros((4, 5, 6), dtype=np.float32))
    with pytest.raises(InputError):
        postprocess_labels(da.zeros((2, 4, 5, 6), dtype=np.int32))
    with pytest.raises(InputError):
        postprocess_array(np.zeros((4, 5, 6), dtype=np.float32))
