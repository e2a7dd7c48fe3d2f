"""Counter-based hashing of integer coordinates: the randomness of every phantom.

Every random quantity of a phantom (a seed point, an object's size, a voxel's noise)
is a pure function of ``(seed, stream, integer coordinates)`` computed with the
SplitMix64 finaliser, so any block of a phantom can be computed on its own and the
bytes do not depend on how the volume is chunked.  Only integer arithmetic (and,
for floats, exactly-rounded IEEE operations) is used, so results are the same for
an element whatever the size, layout or alignment of the array it sits in.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

U64 = np.uint64
_M1 = U64(0xBF58476D1CE4E5B9)
_M2 = U64(0x94D049BB133111EB)
_GOLDEN = U64(0x9E3779B97F4A7C15)
# Odd multipliers that spread the three coordinates before mixing.
_PZ = U64(0xD6E8FEB86659FD93)
_PY = U64(0xA0761D6478BD642F)
_PX = U64(0xE7037ED1A0B428DB)

IntLike = npt.ArrayLike


def mix64(x: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """SplitMix64 finaliser, applied elementwise to ``uint64`` values.

    Notes
    -----
    ``x ^= x >> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >> 27; x *= 0x94D049BB133111EB;
    x ^= x >> 31`` (Steele, Lea & Flood 2014), arithmetic modulo :math:`2^{64}`.
    A bijection of 64-bit integers with good avalanche behaviour.
    """
    out = np.array(x, dtype=U64, copy=True)
    a = out.reshape(-1)  # a 1-d view: ufuncs on arrays wrap silently
    with np.errstate(over="ignore"):
        a ^= a >> U64(30)
        np.multiply(a, _M1, out=a)
        a ^= a >> U64(27)
        np.multiply(a, _M2, out=a)
        a ^= a >> U64(31)
    return out


def as_u64(v: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    """Integers (possibly negative) as ``uint64`` two's-complement bit patterns."""
    if isinstance(v, int):
        return np.asarray(v & 0xFFFFFFFFFFFFFFFF, dtype=U64)
    a = np.asarray(v)
    if a.dtype == U64:
        return a
    return a.astype(np.int64).astype(U64)


@functools.lru_cache(maxsize=65536)
def stream_key(seed: int, *tags: int) -> int:
    """Derive a 64-bit key for one random stream from the seed and integer tags."""
    k = mix64(as_u64(seed) ^ _GOLDEN)
    for t in tags:
        with np.errstate(over="ignore"):
            k = mix64(k + mix64(as_u64(t) + _GOLDEN))
    return int(k)


def hash3(key: int, z: IntLike, y: IntLike, x: IntLike) -> npt.NDArray[np.uint64]:
    """Hash integer coordinates (broadcast together) under ``key``.

    ``z``, ``y`` and ``x`` may be broadcastable arrays (e.g. open grids from
    :func:`numpy.ogrid`); the work is staged so that the full-size array is touched by
    one add and one :func:`mix64` only.
    """
    k = U64(key)
    with np.errstate(over="ignore"):
        a = mix64((as_u64(z) * _PZ) ^ k)
        b = mix64(a + as_u64(y) * _PY)
        return mix64(b + as_u64(x) * _PX)


def unit(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """Map hashes to uniform floats in ``[0, 1)`` (53 random bits)."""
    return (h >> U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def unit32(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
    """Map hashes to uniform ``float32`` values in ``[0, 1)`` (24 random bits)."""
    return (h >> U64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def gauss32(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.float32]:
    """Approximately standard-normal ``float32`` values from hashes.

    Notes
    -----
    Irwin–Hall with four terms: the 64 bits are split into four 16-bit uniforms
    :math:`u_k` and :math:`g = \\sqrt{3}\\,(\\sum_k u_k - 2)` has mean 0 and variance 1
    (the sum of four :math:`U(0, 1)` has variance 1/3); its support is
    :math:`[-2\\sqrt{3}, 2\\sqrt{3}]`.  Only exact integer and float arithmetic is
    used (no ``log``/``cos`` whose SIMD and scalar paths may differ in the last bit).
    """
    mask = U64(0xFFFF)
    s = (h & mask).astype(np.float32)
    s += ((h >> U64(16)) & mask).astype(np.float32)
    s += ((h >> U64(32)) & mask).astype(np.float32)
    s += (h >> U64(48)).astype(np.float32)
    s *= np.float32(1.0 / 65536.0)
    s -= np.float32(2.0 - 2.0 / 65536.0)
    s *= np.float32(np.sqrt(3.0))
    return s


def gauss_box(key: int, start: Sequence[int], shape: Sequence[int]) -> npt.NDArray[np.float32]:
    """Standard normal noise over the box ``start + shape`` (the same at any chunking)."""
    z, y, x = np.ogrid[
        start[0] : start[0] + shape[0],
        start[1] : start[1] + shape[1],
        start[2] : start[2] + shape[2],
    ]
    return gauss32(hash3(key, z, y, x))


def cell_uniform(key: int, cells: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.float64]:
    """``n`` uniform floats per integer cell: array ``(..., n)`` for cells ``(..., 3)``."""
    c = np.asarray(cells, dtype=np.int64)
    out = np.empty((*c.shape[:-1], n), dtype=np.float64)
    for i in range(n):
        k = stream_key(key, i)
        out[..., i] = unit(hash3(k, c[..., 0], c[..., 1], c[..., 2]))
    return out


def cell_rng(key: int, cell: tuple[int, ...]) -> np.random.Generator:
    """A small :class:`numpy.random.Generator` owned by one object cell.

    Objects (their number, size, orientation) are drawn from a generator keyed by the
    *cell* that owns them, never by the block being computed, so every block sees the
    same objects.
    """
    k = stream_key(key, *cell)
    return np.random.Generator(np.random.PCG64(k))
