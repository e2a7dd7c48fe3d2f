"""Post-processing from files to files: class probabilities OME-Zarr → the label image ``O``.

The output ``O`` (e.g. ``postprocess.ome.zarr``) is a standalone NGFF label image
(uint8 class ids, mode pyramid) with the class names and colours of the probabilities
and ``image-label.source`` pointing to the image, like the CRF's.

:class:`PostprocessOptions` is the one options object of the operation:
:func:`run_postprocess` takes it whole, the ``postprocess`` workflow stage's config is
it plus the paths, and ``volseg postprocess``'s flags are generated from it.  This is
the only place of :mod:`volseg.postprocess` that touches files (through
:mod:`volseg.io`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from volseg.errors import InputError
from volseg.io import StoreReport, omezarr, open_volume
from volseg.io.guard import run_identity
from volseg.io.location import Location, PathLike, as_path
from volseg.io.lock import locks
from volseg.io.multiscales import carry_classes
from volseg.postprocess.blockwise import postprocess_labels
from volseg.postprocess.options import PostprocessOptions

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["PostprocessOptions", "PostprocessRunResult", "postprocess_output_state",
           "run_postprocess"]


@dataclass(frozen=True)
class PostprocessRunResult:
    """What :func:`run_postprocess` did."""

    output: Location
    shape: tuple[int, int, int]
    n_classes: int
    voxel_size: tuple[float, float, float] | None
    halo: tuple[int, int, int]
    block_size: tuple[int, int, int]
    report: StoreReport
    state_before: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary."""
        return {
            "output": str(self.output),
            "shape": list(self.shape),
            "classes": self.n_classes,
            "voxel_size_nm": None if self.voxel_size is None else list(self.voxel_size),
            "halo": list(self.halo),
            "block_size": list(self.block_size),
            "blocks": self.report.total_blocks,
            "computed_blocks": self.report.computed_blocks,
            "skipped_blocks": self.report.skipped_blocks,
            "resumed": self.state_before == "partial",
            "seconds": round(self.seconds, 3),
        }


def postprocess_output_state(output: PathLike) -> str:
    """``absent`` / ``partial`` / ``complete`` / ``other`` for the label image ``output``."""
    return omezarr.image_state(as_path(output))


@locks("output")
def run_postprocess(
    probabilities: PathLike,
    output: PathLike,
    options: PostprocessOptions | None = None,
    *,
    image: PathLike | None = None,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    client: Client | None = None,
) -> PostprocessRunResult:
    """Post-process class probabilities blockwise and write the label image ``output``.

    Parameters
    ----------
    probabilities
        OME-Zarr multiscale image with axes ``c, z, y, x`` (uint8 ``q/255`` or float),
        e.g. ``prediction.ome.zarr``.
    output
        The output label image (e.g. ``postprocess.ome.zarr``), with a mode pyramid.
    options
        The steps, blocks and output format (:class:`PostprocessOptions`, used whole;
        default: the plain argmax).
    image
        The image the labels belong to (only for the output's ``image-label.source``;
        default: the one the probabilities name, else the probabilities).
    overwrite
        Replace an existing output; otherwise a complete output is refused and a
        partial one (an interrupted run) resumed.
    attrs
        Group attributes (provenance under ``"volseg"``); the options are added under
        ``volseg.postprocess``.
    client
        Optional ``distributed.Client``.

    Raises
    ------
    OutputExistsError
        If the output is complete (or not ours) and ``overwrite`` is false.
    InputError
        If the probabilities are missing or not ``c, z, y, x`` uint8/float.

    Notes
    -----
    With ``min_size`` or ``fill_holes`` the first passes of the global connected
    components run before the output is written; a resumed run repeats them (they are
    deterministic) and writes only the missing blocks.
    """
    start = time.perf_counter()
    config = options or PostprocessOptions()
    output = as_path(output)
    state = omezarr.claim_label_output(output, [probabilities, image], overwrite=overwrite)
    identity = run_identity("postprocess", config.to_dict(),
                            inputs={"probabilities": probabilities})
    probs, pmeta = open_volume(probabilities)
    if probs.ndim != 4:
        raise InputError(f"{probabilities}: class probabilities must have axes c, z, y, x, "
                         f"got {probs.ndim} axes (volseg predict writes them with "
                         f"--probabilities uint8)")
    if not (probs.dtype == np.uint8 or np.issubdtype(probs.dtype, np.floating)):
        raise InputError(f"{probabilities}: probabilities must be uint8 (q/255) or float, "
                         f"got {probs.dtype}")
    n_classes = max(2, int(probs.shape[0]))
    lazy = postprocess_labels(probs, config, client=client)
    vs_in = config.voxel_size if config.voxel_size is not None else pmeta.voxel_size
    vs = None if vs_in is None else (float(vs_in[0]), float(vs_in[1]), float(vs_in[2]))
    core = (int(lazy.chunks[0][0]), int(lazy.chunks[1][0]), int(lazy.chunks[2][0]))
    all_attrs: dict[str, Any] = dict(attrs or {})
    record = dict(all_attrs.get("volseg") or {})
    record["postprocess"] = {
        "probabilities": str(probabilities), "options": config.to_dict(),
        "halo": list(config.halo), "block_size": list(core),
    }
    names = carry_classes(probabilities, pmeta.attrs if isinstance(pmeta.attrs, dict) else {},
                          n_classes, record)
    all_attrs["volseg"] = record
    shape = (int(lazy.shape[0]), int(lazy.shape[1]), int(lazy.shape[2]))
    layout = omezarr.block_layout(shape, core, ("z", "y", "x"), ngff=config.ngff,
                                  chunks=config.chunks)
    belongs_to = (omezarr.image_of(image) if image is not None else None) or omezarr.image_of(
        probabilities)
    target = omezarr.create_label_image(
        output, shape=shape, dtype=np.uint8, chunks=layout.chunks, shards=layout.shards,
        voxel_size=vs, overwrite=overwrite, attrs=all_attrs, origin=pmeta.origin,
        ngff=config.ngff, classes=names, ignore_id=record.get("ignore_id"), image=belongs_to,
        identity=identity,
    )
    report = omezarr.store_levels(lazy, target, output, method="mode",
                                  pyramid=config.pyramid, description="postprocess",
                                  client=client, overwrite=overwrite, identity=identity)
    return PostprocessRunResult(
        output=output, shape=shape, n_classes=n_classes, voxel_size=vs, halo=config.halo,
        block_size=core, report=report, state_before=state,
        seconds=time.perf_counter() - start,
    )
