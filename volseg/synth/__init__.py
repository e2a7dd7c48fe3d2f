"""Deterministic synthetic EM phantoms with ground truth, generated blockwise.

Every generator returns a :class:`Phantom` of lazy dask arrays whose blocks are
computed independently from a seed and global voxel coordinates, so phantoms of any
size can be written out-of-core and the bytes do not depend on the chunking.
No file I/O happens here (see :mod:`volseg.stages.synth` for writing).

>>> from volseg.synth import fibsem, class_frequencies
>>> ph = fibsem((64, 128, 128), seed=1)
>>> counts = class_frequencies(ph.truth, ph.n_classes).compute()
"""

from __future__ import annotations

from volseg.synth._common import IGNORE_ID, Phantom, PhantomParameterError, class_frequencies
from volseg.synth.fibsem import fibsem

__all__ = [
    "IGNORE_ID",
    "Phantom",
    "PhantomParameterError",
    "class_frequencies",
    "fibsem",
]
