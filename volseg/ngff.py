"""The OME-NGFF versions volseg writes, and the default (no heavy imports).

``"0.5"``: OME-Zarr on Zarr format 3 with sharded arrays (one shard per written
block, small inner chunks for viewers).  ``"0.4"``: OME-Zarr on Zarr format 2.  Both
are read, sharded or not.  Shared by :mod:`volseg.io.omezarr`, the options objects of
the writing operations (``ngff``) and the workflow's ``output.ngff``.  In YAML and
``--set`` a version may be written unquoted (``ngff: 0.4``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator


def _as_version(value: Any) -> Any:
    """``0.4`` (a YAML number) -> ``"0.4"``; anything else unchanged."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return value


Ngff = Annotated[Literal["0.4", "0.5"], BeforeValidator(_as_version)]
NGFF_VERSIONS: tuple[Literal["0.4", "0.5"], ...] = ("0.4", "0.5")
DEFAULT_NGFF: Literal["0.4", "0.5"] = "0.5"
"""The format volseg writes unless told otherwise."""
