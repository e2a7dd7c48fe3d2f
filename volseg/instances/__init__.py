"""Blockwise connected components with globally consistent, consecutive ids.

:func:`label_instances` labels chosen classes of a semantic volume (6/18/26
connectivity), merges ids across block faces, edges and corners, applies a
minimum-size filter and returns lazy instance labels plus an exact per-object
table (:class:`ObjectTable`, written by :func:`write_table`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from volseg.lazy import lazy_exports

if TYPE_CHECKING:
    from volseg.instances.blockwise import InstanceResult, ObjectTable, label_instances
    from volseg.instances.kernel import label_block, neighbour_offsets
    from volseg.instances.table import read_table, write_table

__all__ = [
    "InstanceResult",
    "ObjectTable",
    "label_block",
    "label_instances",
    "neighbour_offsets",
    "read_table",
    "write_table",
]

lazy_exports(__name__, {
    "volseg.instances.blockwise": ("InstanceResult", "ObjectTable", "label_instances"),
    "volseg.instances.kernel": ("label_block", "neighbour_offsets"),
    "volseg.instances.table": ("read_table", "write_table"),
})
