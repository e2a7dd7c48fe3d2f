"""The CRF from files to files: probabilities + image OME-Zarr → the label image ``O``.

The output ``O`` (e.g. ``crf.ome.zarr``) is a standalone NGFF label image (uint8
class ids, mode pyramid) with the class names and colours of the probabilities and
``image-label.source`` pointing to the image, so it validates and opens in viewers
beside the image.

:class:`CRFOptions` is the one options object of the operation: the kernel parameters
(:class:`volseg.crf.CRFConfig`) plus how the volume is cut into blocks and computed.
:func:`run_crf` takes it whole, the ``crf`` workflow stage's config is it plus the
paths, and ``volseg crf``'s flags are generated from it.  This is the only place of
:mod:`volseg.crf` that touches files (through :mod:`volseg.io`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from volseg.crf.blockwise import block_bytes, crf_halo, crf_labels
from volseg.crf.options import CRFConfig, CRFOptions
from volseg.errors import InputError
from volseg.io import StoreReport, omezarr, open_volume
from volseg.io.guard import run_identity
from volseg.io.location import Location, PathLike, as_path
from volseg.io.lock import locks
from volseg.io.multiscales import carry_classes
from volseg.options import options_of

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["CRFOptions", "CRFRunResult", "crf_output_state", "default_processes", "run_crf"]


@dataclass(frozen=True)
class CRFRunResult:
    """What :func:`run_crf` did."""

    output: Location
    shape: tuple[int, int, int]
    n_classes: int
    voxel_size: tuple[float, float, float]
    halo: tuple[int, int, int]
    block_size: tuple[int, int, int]
    block_bytes: int
    report: StoreReport
    state_before: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able summary."""
        return {
            "output": str(self.output),
            "shape": list(self.shape),
            "classes": self.n_classes,
            "voxel_size_nm": list(self.voxel_size),
            "halo": list(self.halo),
            "block_size": list(self.block_size),
            "block_peak_bytes_estimate": self.block_bytes,
            "blocks": self.report.total_blocks,
            "computed_blocks": self.report.computed_blocks,
            "skipped_blocks": self.report.skipped_blocks,
            "resumed": self.state_before == "partial",
            "seconds": round(self.seconds, 3),
        }


def crf_output_state(output: PathLike) -> str:
    """``absent`` / ``partial`` / ``complete`` / ``other`` for the label image ``output``."""
    return omezarr.image_state(as_path(output))


def _voxel_size(
    given: Sequence[float] | None, *metas: Any
) -> tuple[float, float, float]:
    for candidate in (given, *(m.voxel_size for m in metas if m is not None)):
        if candidate is not None:
            vs = tuple(float(v) for v in candidate)
            return (vs[0], vs[1], vs[2])
    raise InputError(
        "the probabilities and image have no voxel size; pass --voxel-size Z Y X (nm)"
    )


def default_processes() -> int:
    """Worker processes for a CRF without a cluster: dask's ``num_workers`` or all cores."""
    configured = dask.config.get("num_workers", None)
    return int(configured) if configured else max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _scheduler(client: Client | None, processes: int | None) -> Iterator[None]:
    """Run on local worker processes when there is no cluster (the kernel holds the GIL)."""
    n = default_processes() if processes is None else int(processes)
    if client is not None or n <= 1:
        yield
        return
    with dask.config.set(scheduler="processes", num_workers=n):
        yield


@locks("output")
def run_crf(
    probabilities: PathLike,
    image: PathLike | None,
    output: PathLike,
    options: CRFOptions | None = None,
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    client: Client | None = None,
) -> CRFRunResult:
    """Run the blockwise dense CRF and write the label image ``output`` (uint8).

    Parameters
    ----------
    probabilities
        OME-Zarr multiscale image with axes ``c, z, y, x`` (uint8 ``q/255`` or float),
        e.g. ``prediction.ome.zarr``.
    image
        The image (``z, y, x``) for the bilateral term; may be ``None`` when the
        bilateral weight is 0.
    output
        The output label image (e.g. ``crf.ome.zarr``), with a mode pyramid.
    options
        Kernel parameters, blocks, voxel size, processes and pyramid
        (:class:`CRFOptions`, used whole; default: its defaults).
    overwrite
        Replace an existing output; otherwise a complete output is refused and a
        partial one (an interrupted run) resumed.
    attrs
        Group attributes (provenance under ``"volseg"``); the halo and block size
        are added under ``volseg.crf``.
    client
        Optional ``distributed.Client``.

    Raises
    ------
    OutputExistsError
        If the output is complete (or not ours) and ``overwrite`` is false.
    InputError
        If the inputs are missing or do not fit together.
    """
    start = time.perf_counter()
    config = options or CRFOptions()
    voxel_size = config.voxel_size
    output = as_path(output)
    state = omezarr.claim_label_output(output, [probabilities, image], overwrite=overwrite)
    identity = run_identity("crf", config.to_dict(),
                            inputs={"probabilities": probabilities, "image": image})
    probs, pmeta = open_volume(probabilities)
    if probs.ndim != 4:
        raise InputError(
            f"{probabilities}: class probabilities must have axes c, z, y, x, got "
            f"{probs.ndim} axes"
        )
    if not (probs.dtype == np.uint8 or np.issubdtype(probs.dtype, np.floating)):
        raise InputError(
            f"{probabilities}: probabilities must be uint8 (q/255) or float, got {probs.dtype}"
        )
    img = None
    imeta = None
    if image is not None and (config.bilateral_weight > 0 or voxel_size is None):
        img, imeta = open_volume(image)
        if img.ndim != 3:
            raise InputError(f"{image}: the image must be z, y, x, got {img.ndim} axes")
        if tuple(img.shape) != tuple(probs.shape[1:]):
            raise InputError(
                f"{image}: image shape {tuple(img.shape)} does not match the probabilities "
                f"{tuple(probs.shape[1:])}"
            )
    if config.bilateral_weight > 0 and img is None:
        raise InputError(
            "the bilateral term needs --image (or set the bilateral weight to 0)"
        )
    vs = _voxel_size(voxel_size, pmeta, imeta)
    n_classes = int(probs.shape[0])
    lazy = crf_labels(
        probs, img if config.bilateral_weight > 0 else None, voxel_size=vs, config=config,
        block_size=config.block_size, memory_budget=config.memory_budget_mib * 2**20,
    )
    halo = crf_halo(config, voxel_size=vs)
    core = (int(lazy.chunks[0][0]), int(lazy.chunks[1][0]), int(lazy.chunks[2][0]))
    ext = [min(c + 2 * h, s) for c, h, s in zip(core, halo, lazy.shape, strict=True)]
    peak = block_bytes(ext, n_classes=n_classes, bilateral=config.bilateral_weight > 0)
    all_attrs: dict[str, Any] = {k: v for k, v in (attrs or {}).items()}
    record = dict(all_attrs.get("volseg") or {})
    record["crf"] = {
        "probabilities": str(probabilities), "image": None if image is None else str(image),
        "config": options_of(CRFConfig, config).to_dict(),
        "voxel_size_nm": list(vs),
        "halo": list(halo), "block_size": list(core), "block_peak_bytes_estimate": peak,
    }
    # keep class names (and the ignore id) of the probabilities for later stages
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
    with _scheduler(client, config.processes):
        report = omezarr.store_levels(lazy, target, output, method="mode",
                                      pyramid=config.pyramid, description="dense CRF",
                                      client=client, overwrite=overwrite,
                                      identity=identity)
    return CRFRunResult(
        output=output, shape=shape, n_classes=n_classes,
        voxel_size=vs, halo=halo, block_size=core, block_bytes=peak, report=report,
        state_before=state, seconds=time.perf_counter() - start,
    )
