"""Synthetic phantoms: determinism across chunkings, classes, sparse annotation."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from volseg.errors import ConfigError
from volseg.synth import IGNORE_ID, KINDS, class_frequencies, cryoet, em2d, fibsem
from volseg.synth._hash import gauss32, hash3, mix64, stream_key

# Small shapes keep the whole file fast on a shared two-core machine.
SMALL = (24, 50, 61)
ODD_CHUNKS = [(7, 23, 31), (24, 13, 61), (5, 50, 17)]


@pytest.fixture(autouse=True)
def _synchronous_scheduler():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def fib64():
    """A 64 × 128 × 128 FIB-SEM phantom, its truth and annotation computed once."""
    with dask.config.set(scheduler="synchronous"):
        ph = fibsem((64, 128, 128), seed=7, annotated_slices=3)
        truth, annotation = dask.compute(ph.truth, ph.annotation)
    return ph, truth, annotation


# ------------------------------------------------------------------ hashing


def test_mix64_is_splitmix64_finaliser():
    # Reference values of the SplitMix64 finaliser computed with Python integers.
    def ref(x: int) -> int:
        m = (1 << 64) - 1
        x ^= x >> 30
        x = (x * 0xBF58476D1CE4E5B9) & m
        x ^= x >> 27
        x = (x * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    xs = [0, 1, 2**63 + 12345, 2**64 - 1]
    assert mix64(np.array(xs, dtype=np.uint64)).tolist() == [ref(x) for x in xs]


def test_hash_is_a_function_of_global_coordinates():
    k = stream_key(5, 1)
    z, y, x = np.ogrid[-3:9, 0:11, 4:20]
    whole = hash3(k, z, y, x)
    part = hash3(k, z[2:5], y[:, 3:7], x[:, :, 10:])
    assert np.array_equal(whole[2:5, 3:7, 10:], part)
    assert len(np.unique(whole)) == whole.size
    assert not np.array_equal(whole, hash3(stream_key(6, 1), z, y, x))


def test_gauss32_moments():
    g = gauss32(hash3(stream_key(1), *np.ogrid[0:40, 0:100, 0:100]))
    assert abs(float(g.mean())) < 0.01
    assert abs(float(g.std()) - 1.0) < 0.01
    assert g.dtype == np.float32


# ------------------------------------------------------------ determinism


@pytest.mark.parametrize("part", ["image", "truth", "annotation"])
def test_fibsem_is_chunking_invariant(part):
    whole = getattr(fibsem(SMALL, seed=3, chunks=SMALL, annotated_slices=4), part).compute()
    for chunks in ODD_CHUNKS:
        ph = fibsem(SMALL, seed=3, chunks=chunks, annotated_slices=4)
        arr = getattr(ph, part)
        assert arr.chunks[0][0] == chunks[0]
        assert np.array_equal(arr.compute(), whole), (part, chunks)


def test_fibsem_seed_changes_the_volume():
    a = fibsem(SMALL, seed=1).image.compute()
    b = fibsem(SMALL, seed=2).image.compute()
    assert a.shape == b.shape == SMALL
    assert np.mean(a != b) > 0.5


def test_fibsem_window_equals_crop_of_larger_volume():
    # The phantom is defined on global coordinates: a smaller volume is a crop.
    big = fibsem((30, 60, 70), seed=4, chunks=(16, 32, 32)).truth.compute()
    small = fibsem((20, 41, 33), seed=4, chunks=(9, 41, 10)).truth.compute()
    assert np.array_equal(big[:20, :41, :33], small)


# ---------------------------------------------------------------- content


def test_fibsem_metadata(fib64):
    ph, truth, _ = fib64
    assert ph.image.dtype == np.uint8 and ph.truth.dtype == np.uint8
    assert ph.image.shape == ph.truth.shape == (64, 128, 128)
    assert ph.voxel_size == (5.0, 5.0, 5.0)
    assert ph.class_names == (
        "cytoplasm", "cell membrane", "mitochondrion", "mitochondrial membrane",
        "synapse", "vesicle", "undefined",
    )
    assert ph.ignore_id == IGNORE_ID == 255
    assert ph.extra["kind"] == "fibsem"
    assert truth.max() < ph.n_classes


def test_fibsem_all_classes_present_with_plausible_frequencies(fib64):
    ph, truth, _ = fib64
    counts = class_frequencies(ph.truth, ph.n_classes).compute()
    assert np.array_equal(counts, np.bincount(truth.ravel(), minlength=7))
    frac = counts / counts.sum()
    assert frac[0] == frac.max()  # cytoplasm dominates
    assert 0.05 < frac[1] < 0.30  # cell membranes
    assert np.all(frac[2:] > 0.003), frac  # every organelle class clearly present


def test_fibsem_classes_differ_in_clean_appearance(fib64):
    _, truth, _ = fib64
    image = fibsem((64, 128, 128), seed=7, noise=0.0, blur=0.0).image.compute()
    means = np.array([image[truth == c].mean() for c in range(7)])
    assert means[0] > means[1] + 80  # bright cytoplasm, dark membranes
    assert means[4] < means[1]  # post-synaptic density darker than membrane
    assert means[3] < means[2]  # mitochondrial rim darker than matrix
    # undefined regions are granular: strong voxel-scale variation inside the class
    from scipy import ndimage

    detail = np.abs(image.astype(float) - ndimage.uniform_filter(image.astype(float), 3))
    inner = {c: ndimage.binary_erosion(truth == c, iterations=2) for c in (0, 6)}
    assert detail[inner[6]].mean() > 5 * detail[inner[0]].mean() + 5


def test_fibsem_annotation_only_on_k_slices(fib64):
    ph, truth, annotation = fib64
    slices = ph.annotated_slices
    assert slices == (10, 32, 53)
    labelled = np.flatnonzero((annotation != IGNORE_ID).any(axis=(1, 2)))
    assert tuple(labelled) == slices
    assert np.array_equal(annotation[list(slices)], truth[list(slices)])
    assert np.all(annotation[[z for z in range(64) if z not in slices]] == IGNORE_ID)


def test_fibsem_no_annotation_when_zero_slices():
    assert fibsem(SMALL, annotated_slices=0).annotation is None


def test_fibsem_noise_and_blur_knobs():
    clean = fibsem(SMALL, seed=2, noise=0.0, blur=0.0).image.compute().astype(float)
    noisy = fibsem(SMALL, seed=2, noise=0.2, blur=0.0).image.compute().astype(float)
    blurred = fibsem(SMALL, seed=2, noise=0.0, blur=2.0).image.compute().astype(float)
    assert 35 < np.std(noisy - clean) < 60  # ~0.2 * 255 before clipping
    grad = lambda v: np.abs(np.diff(v, axis=2)).mean()  # noqa: E731
    assert grad(blurred) < 0.7 * grad(clean)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (0, 10, 10)}, "shape"),
        ({"shape": (10, 10)}, "shape"),
        ({"noise": -1.0}, "noise"),
        ({"chunks": (0, 4, 4)}, "chunks"),
        ({"annotated_slices": -1}, "annotated_slices"),
        ({"synapse_probability": 2.0}, "synapse_probability"),
        ({"no_such_knob": 1}, "no_such_knob"),
    ],
)
def test_fibsem_rejects_bad_parameters(kwargs, match):
    args = {"shape": (8, 8, 8), **kwargs}
    with pytest.raises(ConfigError, match=match):
        fibsem(**args)


def test_class_frequencies_ignores_ids_outside_range():
    import dask.array as da

    arr = da.from_array(np.array([[0, 1, 1], [255, 2, 9]], np.uint8), chunks=(1, 2))
    assert class_frequencies(arr, 3).compute().tolist() == [1, 2, 1]


# ------------------------------------------------------------- cryo-ET, 2-D EM


@pytest.mark.parametrize("part", ["image", "truth"])
def test_cryoet_is_chunking_invariant(part):
    shape = (30, 64, 70)
    whole = getattr(cryoet(shape, seed=5, chunks=shape), part).compute()
    for chunks in [(7, 23, 31), (11, 64, 9)]:
        got = getattr(cryoet(shape, seed=5, chunks=chunks), part).compute()
        assert np.array_equal(got, whole), chunks


def test_cryoet_content():
    ph = cryoet((48, 128, 128), seed=2)
    image, truth = dask.compute(ph.image, ph.truth)
    assert image.dtype == np.float32 and truth.dtype == np.uint8
    assert ph.class_names == ("background", "membrane")
    assert ph.voxel_size == (1.4, 1.4, 1.4)
    assert set(np.unique(truth)) == {0, 1}
    assert 0.005 < truth.mean() < 0.15
    # membranes are dense, hence darker, but buried in noise (low SNR per voxel)
    contrast = image[truth == 0].mean() - image[truth == 1].mean()
    noise = image[truth == 0].std()
    assert 0.3 * noise < contrast < 2.0 * noise
    assert not np.array_equal(truth, cryoet((48, 128, 128), seed=3).truth.compute())


def test_cryoet_blur_is_elongated_along_z():
    ph = cryoet((40, 64, 64), seed=1, noise=0.0, noise_after=0.0, particle_probability=0.0)
    image = ph.image.compute()
    dz = np.abs(np.diff(image, axis=0)).mean()
    dx = np.abs(np.diff(image, axis=2)).mean()
    assert dz < dx


@pytest.mark.parametrize("part", ["image", "truth"])
def test_em2d_is_chunking_invariant(part):
    shape = (3, 100, 130)
    whole = getattr(em2d(shape, seed=9, chunks=shape), part).compute()
    for chunks in [(1, 37, 41), (2, 100, 17)]:
        got = getattr(em2d(shape, seed=9, chunks=chunks), part).compute()
        assert np.array_equal(got, whole), chunks


def test_em2d_positive_fraction_and_sections_independent():
    ph = em2d((6, 256, 256), seed=0, chunks=(1, 256, 256))
    image, truth = dask.compute(ph.image, ph.truth)
    assert image.dtype == np.uint8 and ph.class_names == ("background", "contamination")
    assert 0.015 < truth.mean() < 0.05, truth.mean()
    assert image[truth == 1].mean() < image[truth == 0].mean() - 60
    # no blob continues into the next section
    overlap = (truth[:-1] & truth[1:]).sum() / max(truth[:-1].sum(), 1)
    assert overlap < 0.2


def test_kinds_registry():
    assert set(KINDS) == {"fibsem", "cryoet", "em2d"}
    for kind, gen in KINDS.items():
        ph = gen((4, 32, 32), seed=0, chunks=(2, 16, 16))
        assert ph.extra["kind"] == kind
        assert ph.truth.shape == ph.image.shape == (4, 32, 32)
        assert ph.truth.chunks == ((2, 2), (16, 16), (16, 16))
