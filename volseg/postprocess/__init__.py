"""Post-processing of class probabilities into labels, blockwise over large volumes.

A 3-D median filter on each class probability, the decision (a threshold for
two-class maps, else the argmax), small-object removal and hole filling with global
connected components (:func:`volseg.instances.label_instances`).
:func:`postprocess_array` is the whole-array twin in numpy/scipy;
:func:`postprocess_labels` maps it over a Dask array; :func:`run_postprocess` goes
from files to files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.lazy import lazy_exports

if TYPE_CHECKING:
    from volseg.postprocess.blockwise import block_chunks, postprocess_labels
    from volseg.postprocess.kernel import decide, postprocess_array
    from volseg.postprocess.options import PostprocessOptions

__all__ = [
    "PostprocessOptions",
    "block_chunks",
    "decide",
    "postprocess_array",
    "postprocess_labels",
]

lazy_exports(__name__, {
    "volseg.postprocess.blockwise": ("block_chunks", "postprocess_labels"),
    "volseg.postprocess.kernel": ("decide", "postprocess_array"),
    "volseg.postprocess.options": ("PostprocessOptions",),
})
