"""Dense CRF: numpy kernel, halo/budget arithmetic, blockwise agreement with a whole run."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pytest

from volseg.crf import (
    CRFConfig,
    block_bytes,
    choose_block_size,
    compatibility_matrix,
    crf_halo,
    crf_labels,
    dense_crf,
    to_probabilities,
)
from volseg.crf.testing import noisy_phantom
from volseg.errors import ConfigError, InputError

VOXEL = (10.0, 5.0, 5.0)  # anisotropic stack: z twice as coarse


def phantom(shape, n_classes, *, seed=0):
    """Smooth random class regions, noisy unaries (uint8 quantised) and an image."""
    return noisy_phantom(shape, n_classes, seed=seed)


# ---------------------------------------------------------------- numpy kernel ----


def test_to_probabilities_uint8_clips_and_renormalises():
    q = np.array([[255, 0], [0, 0], [0, 255]], dtype=np.uint8)[:, :, None, None, None][..., 0]
    p = to_probabilities(q.reshape(3, 2, 1, 1))
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(0), 1.0, rtol=1e-6)
    assert p.min() > 0  # 0 became >= 1e-6, so -log p is finite
    assert p[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError):
        to_probabilities(np.zeros((2, 1, 1, 1), dtype=np.int32))


def test_compatibility_potts_and_matrix():
    mu = compatibility_matrix(2.0, 3)
    np.testing.assert_array_equal(mu, 2.0 * (1 - np.eye(3, dtype=np.float32)))
    asym = [[0, 1, 4], [3, 0, 1], [0, 1, 0]]
    np.testing.assert_allclose(compatibility_matrix(asym, 3), [[0, 2, 2], [2, 0, 1], [2, 1, 0]])
    with pytest.raises(ConfigError):
        compatibility_matrix([[0, 1], [1, 0]], 3)


def test_potts_weight_equals_its_matrix():
    _, q, image = phantom((12, 20, 20), 3, seed=3)
    kw = dict(gaussian_sigma_nm=10.0, bilateral_weight=2.0, iterations=4)
    a = dense_crf(q, image, CRFConfig(compatibility=1.5, **kw), voxel_size=VOXEL)
    b = dense_crf(q, image, CRFConfig(compatibility=(1.5 * (1 - np.eye(3))).tolist(), **kw),
                  voxel_size=VOXEL)
    np.testing.assert_array_equal(a, b)


def test_zero_iterations_is_argmax_and_weights_off_is_identity():
    _, q, image = phantom((6, 10, 12), 4, seed=1)
    out = dense_crf(q, image, CRFConfig(iterations=0), voxel_size=VOXEL)
    assert out.dtype == np.uint8 and out.shape == q.shape[1:]
    np.testing.assert_array_equal(out, np.argmax(q, 0))
    out = dense_crf(q, None, CRFConfig(gaussian_weight=0, bilateral_weight=0), voxel_size=VOXEL)
    np.testing.assert_array_equal(out, np.argmax(to_probabilities(q), 0))


def test_matrix_compatibility_discourages_a_pair():
    """A high cost for class 0 next to class 2 removes class 2 from a class-0 region."""
    rng = np.random.default_rng(0)
    shape = (8, 24, 24)
    p = np.full((3, *shape), 0.05, dtype=np.float32)
    p[0] = 0.6
    p[1] = 0.3
    speck = rng.random(shape) < 0.15
    p[2][speck] = 0.65  # isolated class-2 voxels inside class 0
    p /= p.sum(0)
    kw = dict(gaussian_sigma_nm=10.0, bilateral_weight=0, gaussian_weight=1.0, iterations=5)
    mild = dense_crf(p, None, CRFConfig(
        compatibility=[[0, 0.1, 0.1], [0.1, 0, 0.1], [0.1, 0.1, 0]], **kw), voxel_size=(5, 5, 5))
    harsh = dense_crf(p, None, CRFConfig(
        compatibility=[[0, 0.1, 5], [0.1, 0, 0.1], [5, 0.1, 0]], **kw), voxel_size=(5, 5, 5))
    assert (harsh == 2).sum() < (mild == 2).sum()
    assert (harsh == 2).sum() == 0


def test_one_channel_is_a_foreground_probability():
    _, q, image = phantom((8, 16, 16), 2, seed=6)
    config = CRFConfig(bilateral_weight=1.0, iterations=3)
    two = dense_crf(np.stack([255 - q[1], q[1]]), image, config, voxel_size=VOXEL)
    np.testing.assert_array_equal(dense_crf(q[1:], image, config, voxel_size=VOXEL), two)
    lazy = crf_labels(da.from_array(q[1:]), da.from_array(image), voxel_size=VOXEL,
                      config=CRFConfig(bilateral_weight=1.0, iterations=3))
    np.testing.assert_array_equal(lazy.compute(), two)


def test_bad_inputs():
    _, q, image = phantom((4, 6, 6), 3)
    with pytest.raises(InputError):
        dense_crf(q[0], image, voxel_size=VOXEL)
    with pytest.raises(InputError):
        dense_crf(q, None, CRFConfig(bilateral_weight=1.0), voxel_size=VOXEL)
    with pytest.raises(InputError):
        dense_crf(q, image[:2], CRFConfig(bilateral_weight=1.0), voxel_size=VOXEL)


def test_crf_helps_on_noisy_unaries():
    truth, q, image = phantom((24, 48, 48), 4, seed=5)
    before = np.mean(np.argmax(q, 0) == truth)
    gauss = dense_crf(q, image, CRFConfig(bilateral_weight=0), voxel_size=VOXEL)
    both = dense_crf(q, image, CRFConfig(), voxel_size=VOXEL)
    acc_gauss, acc_both = np.mean(gauss == truth), np.mean(both == truth)
    assert before < 0.75
    assert acc_gauss > before + 0.05
    assert acc_both > acc_gauss  # the intensity term follows the image edges


# --------------------------------------------------------- halo and memory budget ----


def test_halo_formula_by_hand():
    # Gaussian only, Potts 1, w = 3: g = 3 <= 4 -> r = 6; sigma 10 nm over (10, 5, 5) nm.
    cfg = CRFConfig(gaussian_sigma_nm=10, gaussian_weight=3, bilateral_weight=0)
    assert crf_halo(cfg, voxel_size=VOXEL) == (6, 12, 12)
    # with the bilateral term (20 nm) g = 3 + 2 = 5 -> r = 6 + 0.25 * 1 * sqrt(5)
    cfg = CRFConfig(gaussian_sigma_nm=10, gaussian_weight=3, bilateral_sigma_nm=20,
                    bilateral_weight=2, iterations=5)
    r = 6 + 0.25 * math.sqrt(5)
    assert crf_halo(cfg, voxel_size=VOXEL) == (
        math.ceil(2 * r), math.ceil(4 * r), math.ceil(4 * r))
    # a cost matrix counts with its largest entry; more iterations widen the halo
    cfg = CRFConfig(gaussian_weight=4, bilateral_weight=0, compatibility=[[0, 2], [2, 0]],
                    iterations=16)
    assert crf_halo(cfg, voxel_size=(5, 5, 5)) == (math.ceil(2 * (6 + 0.25 * 4 * 4)),) * 3
    assert crf_halo(CRFConfig(halo=(1, 2, 3)), voxel_size=VOXEL) == (1, 2, 3)
    assert crf_halo(CRFConfig(gaussian_weight=0, bilateral_weight=0), voxel_size=VOXEL) == (0,) * 3
    # never below 5 sigma per axis
    for cfg in (CRFConfig(), CRFConfig(bilateral_weight=0), CRFConfig(iterations=1)):
        h = crf_halo(cfg, voxel_size=VOXEL)
        sigma = cfg.bilateral_sigma_nm if cfg.bilateral_weight else cfg.gaussian_sigma_nm
        assert all(hi >= 5 * sigma / v for hi, v in zip(h, VOXEL, strict=True))


def test_block_size_fits_budget():
    halo = (10, 20, 20)
    budget = 256 * 2**20
    core = choose_block_size((500, 2000, 2000), halo=halo, n_classes=7, bilateral=True,
                             memory_budget=budget)
    ext = [c + 2 * h for c, h in zip(core, halo, strict=True)]
    assert block_bytes(ext, n_classes=7, bilateral=True) <= budget
    assert all(c % 16 == 0 for c in core)
    # one more step on every axis would not fit
    bigger = [c + 16 + 2 * h for c, h in zip(core, halo, strict=True)]
    assert block_bytes(bigger, n_classes=7, bilateral=True) > budget
    assert choose_block_size((20, 30, 40), halo=(2, 2, 2), n_classes=3, bilateral=False) == (
        20, 30, 40)
    with pytest.raises(ConfigError):
        choose_block_size((500, 500, 500), halo=(50, 50, 50), n_classes=7, bilateral=True,
                          memory_budget=2**20)


def test_rejects_mismatch_and_thin_blocks():
    _, q, image = phantom((20, 30, 30), 3)
    with pytest.raises(ConfigError):
        crf_labels(da.from_array(q), da.from_array(image), voxel_size=VOXEL,
                   config=CRFConfig(compatibility=[[0, 1], [1, 0]]))
    with pytest.raises(InputError):
        crf_labels(da.from_array(q), da.from_array(image[:5]), voxel_size=VOXEL)
    with pytest.raises(ConfigError):  # 8-voxel blocks under a 12-voxel halo
        crf_labels(da.from_array(q), da.from_array(image), voxel_size=VOXEL,
                   config=CRFConfig(bilateral_weight=0), block_size=(8, 8, 8))


# ------------------------------------------------------------ blockwise agreement ----


def agreement(shape, n_classes, config, block_sizes, *, seed=0, float_input=False):
    truth, q, image = phantom(shape, n_classes, seed=seed)
    probs = q.astype(np.float32) / 255 if float_input else q
    whole = dense_crf(probs, image, config, voxel_size=VOXEL)
    fractions = []
    for block in block_sizes:
        lazy = crf_labels(
            da.from_array(probs, chunks=(1, 16, 32, 32)), da.from_array(image, chunks=32),
            voxel_size=VOXEL, config=config, block_size=block,
        )
        assert lazy.dtype == np.uint8 and lazy.shape == shape
        assert lazy.numblocks != (1, 1, 1)
        out = lazy.compute(scheduler="threads", num_workers=2)
        fractions.append(float(np.mean(out == whole)))
    print(f"agreement {shape} C={n_classes} blocks {block_sizes}: {fractions}")
    return fractions, whole, truth


def test_blockwise_agrees_gaussian_small():
    cfg = CRFConfig(bilateral_weight=0)
    fractions, _, _ = agreement((40, 64, 72), 4, cfg, [(20, 32, 36), (13, 27, 31)])
    assert all(f >= 0.9999 for f in fractions), fractions


def test_blockwise_agrees_bilateral_small_float_input():
    # a narrower bilateral kernel than the default keeps blocks wider than their halo
    # (7, 14, 14) on this small volume; the default kernel is the 96 x 128 x 128 case
    cfg = CRFConfig(bilateral_sigma_nm=12.0)
    fractions, _, _ = agreement((40, 64, 72), 3, cfg, [(20, 32, 36), (17, 29, 41)],
                                seed=2, float_input=True)
    assert all(f >= 0.999 for f in fractions), fractions


def test_halo_matters():
    """Without a halo, blocks visibly disagree with the whole run: the test can fail."""
    cfg = CRFConfig(bilateral_weight=0, halo=(0, 0, 0))
    fractions, _, _ = agreement((24, 48, 48), 3, cfg, [(8, 16, 16)], seed=4)
    assert fractions[0] < 0.999


@pytest.mark.slow
@pytest.mark.parametrize(
    ("n_classes", "config", "threshold"),
    [(3, CRFConfig(bilateral_weight=0), 0.9999),
     (7, CRFConfig(bilateral_weight=0, gaussian_sigma_nm=15, iterations=8), 0.9999),
     (5, CRFConfig(), 0.999)],
    ids=["gaussian-3", "gaussian-7", "bilateral-5"],
)
def test_blockwise_agrees_96x128x128(n_classes, config, threshold):
    fractions, _, _ = agreement(
        (96, 128, 128), n_classes, config, [(48, 64, 64), (40, 56, 72)], seed=n_classes
    )
    assert all(f >= threshold for f in fractions), fractions


@pytest.mark.slow  # (cluster start-up); the instances suite runs a LocalCluster by default
def test_blockwise_on_local_cluster():
    """The mapping runs on a real distributed cluster with worker processes."""
    from distributed import Client, LocalCluster

    _, q, image = phantom((24, 40, 40), 3, seed=7)
    cfg = CRFConfig(bilateral_weight=0)
    lazy = crf_labels(da.from_array(q), da.from_array(image), voxel_size=VOXEL, config=cfg,
                      block_size=(12, 20, 20))
    local = lazy.compute(scheduler="sync")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        remote = client.compute(lazy).result()
    np.testing.assert_array_equal(remote, local)


def test_uint8_unaries_by_lookup_give_the_renormalised_marginals():
    """uint8 probabilities go through a look-up table without renormalising: a
    per-voxel constant, so the marginals equal those of the renormalised floats."""
    from volseg.crf.kernel import unary_energy

    _, q, image = noisy_phantom((12, 24, 20), 4, seed=5)
    q[:, 0, 0, :] = 0  # all-zero voxels: every class clipped to 1e-6
    floats = to_probabilities(q)
    u8, uf = unary_energy(q), -np.log(floats)  # the unaries before the table
    assert u8.dtype == uf.dtype == np.float32 and u8.shape == q.shape
    shift = uf - u8  # log of each voxel's sum, the same for every class
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:1], shift.shape), atol=1e-5)
    config = CRFConfig(iterations=5)
    got = dense_crf(q, image, config, voxel_size=(10, 5, 5), return_probabilities=True)
    want = dense_crf(floats, image, config, voxel_size=(10, 5, 5), return_probabilities=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.array_equal(np.argmax(got, 0), np.argmax(want, 0))
