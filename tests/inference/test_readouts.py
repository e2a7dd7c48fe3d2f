"""The fast per-block read-outs equal their plain numpy definitions.

Class ids (running maximum instead of ``numpy.argmax``), softmax/sigmoid, the
``uint8`` quantisation of probabilities, and the mode pyramid's few-values path
(against a brute-force count with the first-met tie rule).
"""

from __future__ import annotations

from collections import Counter
from itertools import product

import numpy as np
import pytest

from volseg.inference.api import logits_to_labels, logits_to_probabilities
from volseg.inference.pipeline import _to_uint8
from volseg.io import pyramid


@pytest.mark.parametrize("classes", [1, 2, 7, 40])
def test_labels_equal_argmax_with_ties_to_the_lowest_id(classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(classes, 9, 10, 11)).astype(np.float32)
    logits = np.round(logits, 1)  # many exact ties
    logits[:, 0, 0, 0] = 0.5  # all channels tie
    expected = np.argmax(logits, axis=0) if classes > 1 else logits[0] >= 0
    np.testing.assert_array_equal(logits_to_labels(logits), expected.astype(np.uint8))


@pytest.mark.parametrize("classes", [1, 3, 7])
def test_probabilities_equal_float64_softmax(classes: int) -> None:
    rng = np.random.default_rng(10 + classes)
    logits = (rng.normal(size=(classes, 8, 9, 10)) * 20).astype(np.float32)
    wide = logits.astype(np.float64)
    if classes == 1:
        expected = 1.0 / (1.0 + np.exp(-wide))
    else:
        e = np.exp(wide - wide.max(axis=0))
        expected = e / e.sum(axis=0)
    got = logits_to_probabilities(logits)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7)


def test_uint8_quantisation_is_float32_round_half_to_even_and_clips() -> None:
    """``round(255 p)`` in float32, as MONAI/torch compute it (not in float64)."""
    p = np.array([-0.1, 0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.5, 1.0, 1.2],
                 dtype=np.float32)
    expected = np.rint(np.clip(p, 0, 1) * np.float32(255)).astype(np.uint8)
    assert expected.tolist() == [0, 0, 0, 2, 2, 128, 255, 255]
    np.testing.assert_array_equal(_to_uint8(p), expected)


def _brute_mode(block: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Most frequent value of each cell; ties to the value met first in C order."""
    out_shape = tuple(-(-n // f) for n, f in zip(block.shape, factors, strict=True))
    out = np.empty(out_shape, dtype=block.dtype)
    for cell in product(*(range(n) for n in out_shape)):
        region = block[tuple(slice(c * f, (c + 1) * f)
                             for c, f in zip(cell, factors, strict=True))].ravel()
        counts = Counter(region.tolist())
        top = max(counts.values())
        out[cell] = next(v for v in region.tolist() if counts[v] == top)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.bool_, np.uint16])
@pytest.mark.parametrize("factors", [(2, 2, 2), (1, 2, 2), (2, 1, 1)])
def test_mode_reduction_equals_brute_force(dtype: type, factors: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    high = 2 if dtype is np.bool_ else 4
    block = rng.integers(0, high, size=(5, 7, 6)).astype(dtype)  # odd axes: padding
    if dtype is np.int8:
        block = (block - 2).astype(dtype)  # negative values too
    np.testing.assert_array_equal(pyramid.reduce_mode(block, factors),
                                  _brute_mode(block, factors))
