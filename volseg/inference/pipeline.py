"""Prediction from file to file: OME-Zarr image in, NGFF labels (and probabilities) out.

One Dask graph computes the blended logits of every block once and derives from
them both outputs: the class probabilities as the multiscale image ``OUT`` with axes
``c, z, y, x`` (``uint8`` = ``round(255 p)``, ``float16`` or ``float32``; mean
pyramid; ``omero`` channels named after the classes) and its label image
``OUT/labels/semantic`` (uint8 class ids, mode pyramid, class colours and names).
Without probabilities ``OUT`` is a standalone label image.  Both are written by the
one block writer of :mod:`volseg.io.store` (one task per block writes the block of
both outputs, so in NGFF 0.5 each block is one shard of each), with its
completion markers: an output chunk is complete or absent, and a rerun after an
interruption computes only the blocks whose markers are missing.  Locally the
blocks are streamed in raster order (:func:`stream_plan`).  A finished output is
refused unless ``overwrite``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import zarr

from volseg.errors import InputError, OutputExistsError
from volseg.inference.api import (
    Network,
    geometry,
    logits_to_labels,
    logits_to_probabilities,
    model_ref,
    predict_logits,
)
from volseg.inference.options import PROBABILITY_DTYPES, PredictOptions
from volseg.inference.stream import compute_in_order
from volseg.io.location import Location, PathLike, as_path, check_writable
from volseg.io.lock import locks

if TYPE_CHECKING:
    from distributed import Client

    from volseg.io.store import WritePlan

__all__ = ["LABEL_NAME", "PROBABILITY_DTYPES", "PredictResult", "labels_path", "output_state",
           "quantize", "run_predict", "stream_plan"]

LABEL_NAME = "semantic"


@dataclass(frozen=True)
class PredictResult:
    """What :func:`run_predict` wrote.

    Attributes
    ----------
    output, labels, probabilities
        The output group, its label image and the probability image (``None`` if
        not written).
    shape, classes, patch_size, block_size
        Volume shape ``(z, y, x)``, class names, output patch and block (= chunk) size.
    total_blocks, computed_blocks, skipped_blocks
        Blocks of the volume, computed now, and already complete (resume).
    seconds
        Wall time of the whole run.
    model_seconds, block_seconds, pyramid_seconds
        Its parts: loading the network before the blocks (local threads only; on a
        cluster each worker loads it in its first block), the blocks (graph, read,
        inference, read-outs, level-0 writes) and the downsampled levels.
    voxels_per_second
        Level-0 voxels of the computed blocks per second of ``block_seconds``.
    """

    output: Location
    labels: Location
    probabilities: Location | None
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    patch_size: tuple[int, int, int]
    block_size: tuple[int, int, int]
    total_blocks: int
    computed_blocks: int
    skipped_blocks: int
    seconds: float
    model_seconds: float
    block_seconds: float
    pyramid_seconds: float
    voxels_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-able data."""
        out = asdict(self)
        for key in ("output", "labels", "probabilities"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def labels_path(output: PathLike, probabilities: str = "uint8") -> Location:
    """Return where a prediction's labels go: ``OUT/labels/semantic``, or ``OUT`` itself
    when no probabilities are written (a standalone label image)."""
    out = as_path(output)
    return out if probabilities == "none" else out / "labels" / LABEL_NAME


def output_state(output: PathLike, probabilities: str = "uint8") -> str:
    """Return ``"absent"``, ``"partial"``, ``"complete"`` or ``"other"`` for a prediction."""
    from volseg.io.omezarr import image_state

    out = as_path(output)
    states = [image_state(labels_path(out, probabilities))]
    if probabilities != "none":
        states.append(image_state(out))
    if "other" in states:
        return "other" if out.exists() else "absent"
    if all(s == "complete" for s in states):
        return "complete"
    if all(s == "absent" for s in states):
        return "absent"
    return "partial"


def quantize(probabilities: da.Array, dtype: str) -> da.Array:
    """Return probabilities as stored: ``uint8`` = ``round(255 p)``, or a float dtype."""
    if dtype == "uint8":
        return da.map_blocks(_to_uint8, probabilities, dtype=np.uint8)
    return probabilities.astype(np.dtype(dtype))


def _to_uint8(p: np.ndarray) -> np.ndarray:
    scaled = np.multiply(p, np.float32(255.0), dtype=np.float32)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


# ----------------------------------------------------------------- streaming writes
class _VoxelProgress:
    """Progress bar counting written voxels, with voxels/s (a no-op off a terminal).

    Used as a context manager; :meth:`done` is called with each finished write key.
    """

    def __init__(self, description: str, keys: Mapping[Any, int], total: int) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._keys = keys
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} voxels"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            disable=not sys.stderr.isatty(),
        )
        self._task = self._progress.add_task(description, total=max(total, 1), rate="")

    def __enter__(self) -> _VoxelProgress:
        self._progress.start()
        return self

    def __exit__(self, *args: Any) -> None:
        self._progress.stop()

    def done(self, key: Any) -> None:
        """Count the voxels of a finished write task."""
        voxels = self._keys.get(key)
        if voxels:
            self._progress.advance(self._task, voxels)
            task = self._progress.tasks[0]
            speed = task.completed / max(task.elapsed or 1e-9, 1e-9)
            self._progress.update(self._task, rate=f"{speed:,.0f} voxels/s")


def stream_plan(plan: WritePlan, description: str) -> None:
    """Run a prediction's write plan on local threads, blocks finished in raster order.

    The executor handed to :func:`volseg.io.store.store_arrays`: a priority scheduler
    (:func:`volseg.inference.stream.compute_in_order`) bounds the overlap-add partial
    sums held in memory, with a voxels/s progress bar.
    """
    with _VoxelProgress(description, plan.voxels, sum(plan.voxels.values())) as bar:
        compute_in_order(plan.graph, plan.keys, plan.indices, on_done=bar.done)


# ---------------------------------------------------------------------------- run
@locks("output")
def run_predict(
    model: str | os.PathLike[str],
    image: PathLike,
    output: PathLike,
    options: PredictOptions | None = None,
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
    client: Client | None = None,
) -> PredictResult:
    """Predict a volume with a model file and write labels (and probabilities) as OME-Zarr.

    Parameters
    ----------
    model
        A volseg model file (weights + spec) or a bioimage.io package
        (:mod:`volseg.models.bioimageio`); the spec gives the kind, default patch,
        context/receptive field, classes and input normalisation.
    image
        The input volume (any format :func:`volseg.io.open_volume` reads; usually an
        OME-Zarr image).
    output
        The output group: the probability image ``output`` (``c, z, y, x``) with its
        label image ``output/labels/semantic`` (uint8), or, when
        ``options.probabilities`` is ``"none"``, ``output`` as a standalone label image.
    options
        The prediction's options (:class:`volseg.inference.PredictOptions`), used
        whole: the sliding window (see :func:`volseg.inference.predict_logits`),
        ``probabilities`` (``"none"``, ``"uint8"`` = ``round(255 p)``, ``"float16"``,
        ``"float32"``), ``pyramid`` (also write the downsampled levels), ``ngff``
        (``"0.5"``: zarr v3, one shard per block; ``"0.4"``: zarr v2) and ``chunks``
        (the divisors of the block nearest to these, default 64³:
        :func:`volseg.io.omezarr.block_layout`).
    overwrite
        Replace existing outputs; otherwise a complete output raises
        :class:`OutputExistsError` and a partial one is resumed.
    attrs
        Extra group attributes (provenance under ``"volseg"``).
    client
        A ``distributed.Client`` or ``None`` (local threads).

    Raises
    ------
    OutputExistsError
        If the output is complete (or not a volseg prediction) and ``overwrite`` is false,
        was started with another model, input or value-changing option (its run
        identity, :func:`volseg.io.guard.run_identity`), or, with ``overwrite``, is not
        an output volseg wrote.
    InputError
        If the output equals, contains or lies inside the image or the model.
    InputError, ConfigError
        For unreadable inputs or invalid options.
    """
    from volseg.inference.cache import get_model
    from volseg.inference.predictor import resolve_device
    from volseg.io import omezarr, open_volume
    from volseg.io.guard import (
        check_group_output,
        check_output_location,
        check_replaceable,
        run_identity,
    )
    from volseg.io.store import store_arrays
    from volseg.models import read_spec

    start = time.perf_counter()
    options = options or PredictOptions()
    probabilities = options.probabilities
    out = as_path(output)
    check_writable(out)
    check_output_location(out, [image, model])
    check_group_output(out)
    state = output_state(out, probabilities)
    if not overwrite and state in ("complete", "other"):
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if overwrite:
        check_replaceable(out)
    if not Path(model).exists():
        raise InputError(f"model file {model} does not exist")
    identity = run_identity("predict", options.to_dict(), inputs={"image": image}, model=model)
    spec = read_spec(model)
    arr, meta = open_volume(image)
    if (arr.ndim == 4 and arr.shape[0] != spec.in_channels) or (
            arr.ndim == 3 and spec.in_channels != 1):
        raise InputError(f"{image}: the model expects {spec.in_channels} image channel(s), "
                         f"got an array of shape {tuple(arr.shape)}")
    shape = (int(arr.shape[-3]), int(arr.shape[-2]), int(arr.shape[-1]))
    network = Network.from_spec(spec)
    patch, block = geometry(shape, options, network)
    window = options.model_copy(update={"patch_size": patch, "block_size": block})
    logits = predict_logits(arr, model, window, network=network, source=str(image))
    nclass = int(logits.shape[0])
    record = dict((attrs or {}).get("volseg") or {})
    classes = [str(c) for c in spec.classes]
    record["predict"] = {
        "model": str(model), "image": str(image), "classes": classes,
        "kind": spec.kind, "patch_size": list(patch), "overlap": options.overlap,
        "blend": options.blend, "sigma_scale": options.sigma_scale, "tta": options.tta,
        "precision": options.precision, "block_size": list(block),
        "probabilities": probabilities, "ngff": options.ngff, "backend": options.backend,
    }
    record["class_names"] = classes
    ignore_id = getattr(spec, "ignore_id", None)  # bioimage.io packages do not say
    if ignore_id is not None:
        record["ignore_id"] = int(ignore_id)
    group_attrs = {**dict(attrs or {}), "volseg": record}
    vs, origin, ngff = meta.voxel_size, meta.origin, options.ngff
    lab_layout = omezarr.block_layout(shape, block, ("z", "y", "x"), ngff=ngff,
                                      chunks=options.chunks)
    pairs: list[tuple[da.Array, zarr.Array]] = []
    prob_path = None
    if probabilities != "none":
        prob_layout = omezarr.block_layout((nclass, *shape), (nclass, *block),
                                           ("c", "z", "y", "x"), ngff=ngff,
                                           chunks=options.chunks)
        ptarget = omezarr.create_image(
            out, shape=(nclass, *shape), dtype=probabilities, chunks=prob_layout.chunks,
            shards=prob_layout.shards, voxel_size=vs, axes=("c", "z", "y", "x"),
            overwrite=overwrite, attrs=group_attrs, origin=origin, ngff=ngff,
            channel_names=classes, identity=identity)
        pairs.append((quantize(logits_to_probabilities(logits, network.activation),
                               probabilities), ptarget))
        prob_path = out
        ltarget = omezarr.create_labels(
            out, LABEL_NAME, shape=shape, dtype=np.uint8, chunks=lab_layout.chunks,
            shards=lab_layout.shards, voxel_size=vs, overwrite=overwrite, attrs=group_attrs,
            origin=origin, classes=classes, ignore_id=ignore_id, identity=identity)
    else:
        ltarget = omezarr.create_label_image(
            out, shape=shape, dtype=np.uint8, chunks=lab_layout.chunks,
            shards=lab_layout.shards, voxel_size=vs, overwrite=overwrite, attrs=group_attrs,
            origin=origin, ngff=ngff, image=omezarr.image_of(image), classes=classes,
            ignore_id=ignore_id, identity=identity)
    pairs.insert(0, (logits_to_labels(logits, network.activation), ltarget))
    labels = labels_path(out, probabilities)
    # level 1 of each pyramid reduced from the blocks in memory, in the same write tasks
    groups = [(labels, "mode")] + ([(prob_path, "mean")] if prob_path is not None else [])
    firsts = [omezarr.first_level(group, values, method=method)  # type: ignore[arg-type]
              if options.pyramid else []
              for (group, method), (values, _) in zip(groups, pairs, strict=True)]
    levels = [pair for first in firsts for pair in first]
    t0 = time.perf_counter()
    if client is None:  # local threads share this process's cache: load it up front
        get_model(model_ref(model, spec.kind, options.backend),
                  resolve_device(options.device))
    t1 = time.perf_counter()
    report = store_arrays(pairs + levels, description="predict", client=client,
                          overwrite=overwrite, executor=stream_plan, identity=identity)
    t2 = time.perf_counter()
    if options.pyramid:  # levels 2, ... from level 1 where it was written with level 0
        for (group, method), first in zip(groups, firsts, strict=True):
            omezarr.write_pyramid(group, method=method,  # type: ignore[arg-type]
                                  client=client, overwrite=overwrite and not first)
    t3 = time.perf_counter()
    total, computed = report.total_blocks, report.computed_blocks
    computed_voxels = computed / max(total, 1) * float(np.prod(shape))
    return PredictResult(
        output=out, labels=labels, probabilities=prob_path,
        shape=shape, classes=tuple(spec.classes), patch_size=patch,
        block_size=block, total_blocks=total, computed_blocks=computed,
        skipped_blocks=total - computed, seconds=time.perf_counter() - start,
        model_seconds=t1 - t0, block_seconds=t2 - t1, pyramid_seconds=t3 - t2,
        voxels_per_second=computed_voxels / (t2 - t1) if computed else 0.0,
    )
