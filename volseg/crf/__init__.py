"""Blockwise fully connected CRF (Krähenbühl & Koltun) over large volumes.

:func:`dense_crf` refines one numpy block; :func:`crf_labels` maps it over a Dask
array with a halo derived from the kernel widths (:func:`crf_halo`) and a block size
chosen from a memory budget (:func:`choose_block_size`).
"""

from volseg.crf.blockwise import (
    CRFConfig,
    block_bytes,
    choose_block_size,
    crf_halo,
    crf_labels,
)
from volseg.crf.kernel import compatibility_matrix, dense_crf, to_probabilities
from volseg.crf.pipeline import CRFOptions, run_crf

__all__ = [
    "CRFConfig",
    "CRFOptions",
    "block_bytes",
    "choose_block_size",
    "compatibility_matrix",
    "crf_halo",
    "crf_labels",
    "dense_crf",
    "run_crf",
    "to_probabilities",
]
