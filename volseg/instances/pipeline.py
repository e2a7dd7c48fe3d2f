"""Instances from files to files: semantic labels → the label image ``O`` + object table.

The output ``O`` (e.g. ``instances.ome.zarr``) is a standalone NGFF label image of
object ids (uint32, or uint64 when needed) without colours or properties — viewers
colour ids themselves, and the per-object table is a file beside it (recorded under
``volseg.instances.table``) — with ``image-label.source`` pointing to the image the
semantic labels belong to.

:class:`InstanceOptions` is the operation's one options object: :func:`run_instances`
takes it whole, the ``instances`` workflow stage's config is it plus the paths, and
``volseg instances``'s flags are generated from it.  This is the only place of
:mod:`volseg.instances` that touches files (through :mod:`volseg.io`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from volseg.errors import InputError, OutputExistsError
from volseg.instances.blockwise import label_instances
from volseg.instances.options import DEFAULT_BLOCK, InstanceOptions
from volseg.instances.table import write_table
from volseg.io import StoreReport, omezarr, open_volume
from volseg.io.guard import check_output_location, run_identity
from volseg.io.location import Location, PathLike, as_path, normalize
from volseg.io.lock import locks

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_BLOCK", "InstanceOptions", "InstancesRunResult", "instances_output_state",
           "run_instances"]

@dataclass(frozen=True)
class InstancesRunResult:
    """What :func:`run_instances` did."""

    output: Location
    table: Location | None
    shape: tuple[int, ...]
    dtype: str
    n_objects: int
    n_merged: int
    n_provisional: int
    voxel_size: tuple[float, float, float] | None
    block_size: tuple[int, int, int]
    report: StoreReport
    state_before: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary."""
        return {
            "output": str(self.output),
            "table": None if self.table is None else str(self.table),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "objects": self.n_objects,
            "objects_before_size_filter": self.n_merged,
            "block_components": self.n_provisional,
            "voxel_size_nm": None if self.voxel_size is None else list(self.voxel_size),
            "block_size": list(self.block_size),
            "blocks": self.report.total_blocks,
            "computed_blocks": self.report.computed_blocks,
            "skipped_blocks": self.report.skipped_blocks,
            "resumed": self.state_before == "partial",
            "seconds": round(self.seconds, 3),
        }


def instances_output_state(output: PathLike) -> str:
    """``absent`` / ``partial`` / ``complete`` / ``other`` for the label image ``output``."""
    return omezarr.image_state(as_path(output))


def _image_of(labels: PathLike) -> Location | None:
    """The image the semantic labels belong to (their ``image-label.source``)."""
    image = omezarr.image_of(labels)
    return None if image is None or str(image) == str(normalize(as_path(labels))) else image


@locks("output")
def run_instances(
    labels: PathLike,
    output: PathLike,
    options: InstanceOptions,
    *,
    table: PathLike | None = None,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    client: Client | None = None,
) -> InstancesRunResult:
    """Label objects blockwise and write the label image ``output`` and the table.

    Parameters
    ----------
    labels
        Semantic labels ``(z, y, x)``, e.g. ``crf.ome.zarr``.
    output
        Output label image (e.g. ``instances.ome.zarr``).
    options
        Classes, connectivity, minimum size, blocks, voxel size, pyramid, format and
        chunks (:class:`InstanceOptions`, used whole; see
        :func:`volseg.instances.label_instances`).
    table
        Object table path (``.csv``; ``.parquet`` with pyarrow), or ``None``.
    overwrite
        Replace existing outputs. Otherwise a complete output is refused and a
        partial one resumed (the first pass is recomputed — it is deterministic —
        and only missing blocks are written).
    attrs
        Group attributes (provenance under ``"volseg"``).
    client
        Optional ``distributed.Client``.
    """
    start = time.perf_counter()
    output = as_path(output)
    state = omezarr.claim_label_output(output, [labels], overwrite=overwrite)
    table_path = None if table is None else as_path(table)
    if table_path is not None:
        check_output_location(table_path, [labels])
        if not overwrite and state == "absent" and table_path.exists():
            raise OutputExistsError(f"{table_path} exists; pass --overwrite to replace it")
    identity = run_identity("instances", options.to_dict(), inputs={"labels": labels})
    sem, meta = open_volume(labels)
    if sem.ndim != 3:
        raise InputError(f"{labels}: semantic labels must be z, y, x, got {sem.ndim} axes")
    if np.issubdtype(sem.dtype, np.integer):
        info = np.iinfo(sem.dtype)
        impossible = [int(c) for c in options.classes if not info.min <= int(c) <= info.max]
        if impossible:
            raise InputError(f"{labels}: --classes {impossible} cannot occur in {sem.dtype} "
                             f"labels (ids {info.min}..{info.max}); choose class ids the "
                             f"labels hold")
    vs_in = options.voxel_size if options.voxel_size is not None else meta.voxel_size
    vs = None if vs_in is None else tuple(float(v) for v in vs_in)
    block = options.block_size
    classes, connectivity, min_size = options.classes, options.connectivity, options.min_size
    shape = tuple(int(s) for s in sem.shape)
    result = label_instances(
        sem, classes=classes, connectivity=connectivity, min_size=min_size,
        voxel_size=vs or (1.0, 1.0, 1.0), block_size=block, client=client,
        description="instances: label blocks and merge",
    )
    all_attrs: dict[str, Any] = {k: v for k, v in (attrs or {}).items()}
    record = dict(all_attrs.get("volseg") or {})
    record["instances"] = {
        "labels": str(labels), "classes": [int(c) for c in classes],
        "connectivity": int(connectivity), "min_size": int(min_size),
        "objects": len(result.table), "table": None if table_path is None else str(table_path),
        "block_size": list(block),
    }
    all_attrs["volseg"] = record
    layout = omezarr.block_layout(shape, block, ("z", "y", "x"), ngff=options.ngff,
                                  chunks=options.chunks)
    target = omezarr.create_label_image(
        output, shape=shape, dtype=result.labels.dtype, chunks=layout.chunks,
        shards=layout.shards, voxel_size=vs, overwrite=overwrite, attrs=all_attrs,
        origin=meta.origin, ngff=options.ngff, image=_image_of(labels), identity=identity,
    )
    report = omezarr.store_levels(result.labels, target, output, method="mode",  # blocks = shards
                                  pyramid=options.pyramid, description="instances: relabel",
                                  client=client, overwrite=overwrite,
                                  identity=identity)
    if table_path is not None:
        # on a resume the table is recomputed identically, so replacing it is safe
        write_table(result.table, table_path, overwrite=True)
    return InstancesRunResult(
        output=output, table=table_path, shape=shape,
        dtype=str(result.labels.dtype), n_objects=len(result.table),
        n_merged=result.n_merged, n_provisional=result.n_provisional,
        voxel_size=None if vs is None else (vs[0], vs[1], vs[2]),
        block_size=(block[0], block[1], block[2]), report=report, state_before=state,
        seconds=time.perf_counter() - start,
    )
