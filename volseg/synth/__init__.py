"""Deterministic synthetic EM phantoms with ground truth, generated blockwise.

Every generator returns a :class:`Phantom` of lazy dask arrays whose blocks are
computed independently from a seed and global voxel coordinates, so phantoms of any
size can be written out-of-core and the bytes do not depend on the chunking.
No file I/O happens here but in :mod:`volseg.synth.pipeline` (:func:`write_phantom`).

>>> from volseg.synth import fibsem, class_frequencies
>>> ph = fibsem((64, 128, 128), seed=1)
>>> counts = class_frequencies(ph.truth, ph.n_classes).compute()
"""

from __future__ import annotations

from collections.abc import Callable

from volseg.synth._common import IGNORE_ID, Phantom, PhantomParameterError, class_frequencies
from volseg.synth.cryoet import cryoet
from volseg.synth.em2d import em2d
from volseg.synth.fibsem import fibsem

KINDS: dict[str, Callable[..., Phantom]] = {"fibsem": fibsem, "cryoet": cryoet, "em2d": em2d}
"""Phantom generators by name: ``KINDS[kind](shape, seed=..., chunks=..., ...)``."""

__all__ = [
    "IGNORE_ID",
    "KINDS",
    "Phantom",
    "PhantomParameterError",
    "class_frequencies",
    "cryoet",
    "em2d",
    "fibsem",
]
