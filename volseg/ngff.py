"""The OME-NGFF versions volseg writes, and the default (no heavy imports).

``"0.5"``: OME-Zarr on Zarr format 3 with sharded arrays (one shard per written
block, small inner chunks for viewers).  ``"0.4"``: OME-Zarr on Zarr format 2.  Both
are read, sharded or not.  Shared by :mod:`volseg.io.omezarr`, the stages and the
commands (``--ngff``, ``output.ngff``).
"""

from __future__ import annotations

from typing import Literal

Ngff = Literal["0.4", "0.5"]
NGFF_VERSIONS: tuple[Ngff, ...] = ("0.4", "0.5")
DEFAULT_NGFF: Ngff = "0.5"
"""The format volseg writes unless told otherwise."""
