"""The only code that opens files: readers, the OME-Zarr writer and the block store.

``open_volume`` gives any supported input as a lazy dask array plus
:class:`VolumeMeta`; :mod:`volseg.io.omezarr` writes NGFF images and labels;
:mod:`volseg.io.store` writes dask arrays block by block with completion markers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.lazy import lazy_exports

if TYPE_CHECKING:
    from volseg.io.readers import VolumeMeta, open_volume
    from volseg.io.store import StoreReport, store_blocks

__all__ = ["StoreReport", "VolumeMeta", "open_volume", "store_blocks"]

lazy_exports(__name__, {
    "volseg.io.readers": ("VolumeMeta", "open_volume"),
    "volseg.io.store": ("StoreReport", "store_blocks"),
})
