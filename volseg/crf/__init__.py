"""Blockwise fully connected CRF (Krähenbühl & Koltun) over large volumes.

:func:`dense_crf` refines one numpy block; :func:`crf_labels` maps it over a Dask
array with a halo derived from the kernel widths (:func:`crf_halo`) and a block size
chosen from a memory budget (:func:`choose_block_size`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.lazy import lazy_exports

if TYPE_CHECKING:
    from volseg.crf.blockwise import (
        block_bytes,
        choose_block_size,
        crf_halo,
        crf_labels,
    )
    from volseg.crf.kernel import compatibility_matrix, dense_crf, to_probabilities
    from volseg.crf.options import CRFConfig, CRFOptions
    from volseg.crf.pipeline import run_crf

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

lazy_exports(__name__, {
    "volseg.crf.blockwise": ("block_bytes", "choose_block_size", "crf_halo", "crf_labels"),
    "volseg.crf.kernel": ("compatibility_matrix", "dense_crf", "to_probabilities"),
    "volseg.crf.options": ("CRFConfig", "CRFOptions"),
    "volseg.crf.pipeline": ("run_crf",),
})
