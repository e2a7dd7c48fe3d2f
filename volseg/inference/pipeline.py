"""Prediction from file to file: OME-Zarr image in, NGFF labels (and probabilities) out.

One Dask graph computes the blended logits of every block once and derives from
them both outputs: ``OUT/labels/semantic`` (uint8 class ids, mode pyramid) and,
when asked, the class probabilities as the multiscale image ``OUT`` with axes
``c, z, y, x`` (``uint8`` = ``round(255 p)``, ``float16`` or ``float32``; mean
pyramid).  Each write task stores one block of both outputs and then creates the
completion markers of :mod:`volseg.io.store` (same layout, so
:func:`volseg.io.omezarr.image_state` and ``store_blocks`` understand them): an
output chunk is complete or absent, and a rerun after an interruption computes
only the blocks whose markers are missing.  A finished output is refused unless
``overwrite``.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph

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

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["LABEL_NAME", "PROBABILITY_DTYPES", "PredictResult", "joint_writes",
           "output_state", "quantize", "run_predict", "store_together"]

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

    output: Path
    labels: Path
    probabilities: Path | None
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


def output_state(output: str | os.PathLike[str], probabilities: str = "uint8") -> str:
    """Return ``"absent"``, ``"partial"``, ``"complete"`` or ``"other"`` for a prediction."""
    from volseg.io.omezarr import image_state

    out = Path(output)
    states = [image_state(out / "labels" / LABEL_NAME)]
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


# ----------------------------------------------------------------- joint block store
def _write_blocks(
    blocks: Sequence[np.ndarray], directories: Sequence[str],
    regions: Sequence[tuple[slice, ...]], markers: Sequence[str], layouts: Sequence[Any],
) -> int:
    """Write one block of each output, each followed by its completion marker.

    Uses the block writer of :mod:`volseg.io.store` (data first, marker second), so a
    block interrupted between two outputs is unmarked in one of them and recomputed.
    """
    from volseg.io.store import write_block

    for block, directory, region, marker, layout in zip(
            blocks, directories, regions, markers, layouts, strict=True):
        write_block(block, directory, region, marker, layout)
    return 1


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


@dataclass(frozen=True)
class JointWrites:
    """The write tasks of :func:`joint_writes`.

    Attributes
    ----------
    graph
        One ``HighLevelGraph``: the arrays' graphs plus a layer of write tasks.
    keys, indices, voxels
        The write task of each block still to do, its block index and its voxels.
    total
        Number of blocks of the grid (done or not).
    """

    graph: Any
    keys: list[Any]
    indices: list[tuple[int, ...]]
    voxels: dict[Any, int]
    total: int


def joint_writes(
    pairs: Sequence[tuple[da.Array, zarr.Array]], *, overwrite: bool = False
) -> JointWrites:
    """Check the targets and build one write task per block still to do.

    See :func:`store_together`.  The write tasks form one graph layer over the
    arrays' graphs, unoptimised (fusing per array would duplicate the shared logits
    tasks).  Building it is linear in the blocks: a ``dask.delayed`` call per block
    walks the whole graph each time, and handing Dask one collection per block is
    quadratic too (356 s of graph preparation for the 4,224 blocks of a
    1065 × 1536 × 2048 volume; ``benchmarks/bench_graph.py``).
    """
    from volseg.io import store

    spatial = pairs[0][0].chunks[-3:]
    for array, target in pairs:
        if tuple(array.shape) != tuple(target.shape):
            raise ValueError(f"array shape {array.shape} != target shape {target.shape}")
        if array.chunks[-3:] != spatial or any(len(c) != 1 for c in array.chunks[:-3]):
            raise ValueError("arrays must share the spatial block grid, one chunk elsewhere")
        store.check_alignment(array.chunks, target.shape, target.chunks)
        if overwrite:
            store.clear_markers(target)
        store.marker_dir(target).mkdir(exist_ok=True)
    done = [store.completed_chunks(t) for _, t in pairs]
    dirs = [str(store.array_dir(t)) for _, t in pairs]
    layouts = [store.v2_layout(t) for _, t in pairs]
    name = f"volseg-write-{uuid.uuid4().hex}"
    layer: dict[Any, Any] = {}
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in spatial]
    keys: list[Any] = []
    indices: list[tuple[int, ...]] = []
    voxels: dict[Any, int] = {}
    total = 0
    for idx in np.ndindex(*(len(c) for c in spatial)):
        total += 1
        box = tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, idx, strict=True))
        regions, markers, todo = [], [], False
        for (array, target), finished in zip(pairs, done, strict=True):
            region = tuple(slice(0, n) for n in array.shape[:-3]) + box
            ranges = store.chunk_ranges(region, target.chunks)
            todo = todo or not all(ix in finished for ix in store.expand_ranges(ranges))
            regions.append(region)
            markers.append(store.marker_name(ranges))
        if not todo:
            continue
        key = (name, *(int(i) for i in idx))
        blocks = [(a.name, *(0,) * (a.ndim - 3), *idx) for a, _ in pairs]
        layer[key] = (_write_blocks, blocks, dirs, regions, markers, layouts)
        keys.append(key)
        indices.append(tuple(int(i) for i in idx))
        voxels[key] = int(np.prod([b.stop - b.start for b in box]))
    arrays: list[Any] = [a for a, _ in pairs]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=arrays)
    return JointWrites(graph, keys, indices, voxels, total)


def store_together(
    pairs: Sequence[tuple[da.Array, zarr.Array]], *, description: str,
    client: Client | None = None,
    overwrite: bool = False,
) -> tuple[int, int]:
    """Compute several arrays sharing one spatial block grid into their targets at once.

    Every array has the same spatial chunks in its last three axes (leading axes
    one chunk); block ``(i, j, k)`` of all of them is written by one task, so what
    they share upstream (the logits) is computed once per block.  Markers follow
    :mod:`volseg.io.store`; blocks whose chunks are all marked in every target are
    skipped and their upstream graph culled.  Locally the blocks are computed in
    raster order by a priority scheduler
    (:func:`volseg.inference.stream.compute_in_order`) to bound memory; on a
    ``distributed`` cluster the write tasks are submitted together.

    Returns
    -------
    total, computed
        Number of blocks, and of blocks computed now.
    """
    plan = joint_writes(pairs, overwrite=overwrite)
    if not plan.keys:
        return plan.total, 0
    if client is not None:
        from distributed import progress

        futures = client.get(plan.graph.cull(set(plan.keys)), plan.keys, sync=False)
        if sys.stderr.isatty():
            progress(futures)
        client.gather(futures)
    else:
        with _VoxelProgress(description, plan.voxels, sum(plan.voxels.values())) as bar:
            compute_in_order(plan.graph, plan.keys, plan.indices, on_done=bar.done)
    return plan.total, len(plan.keys)


# ---------------------------------------------------------------------------- run
def run_predict(
    model: str | os.PathLike[str],
    image: str | os.PathLike[str],
    output: str | os.PathLike[str],
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
        The output group: ``output/labels/semantic`` (uint8) and, unless
        ``options.probabilities`` is ``"none"``, the probability image ``output``
        (``c, z, y, x``).
    options
        The prediction's options (:class:`volseg.inference.PredictOptions`), used
        whole: the sliding window (see :func:`volseg.inference.predict_logits`),
        ``probabilities`` (``"none"``, ``"uint8"`` = ``round(255 p)``, ``"float16"``,
        ``"float32"``) and ``pyramid`` (also write the downsampled levels).
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
        If the output is complete (or not a volseg prediction) and ``overwrite`` is false.
    InputError, ConfigError
        For unreadable inputs or invalid options.
    """
    from volseg.inference.cache import get_model
    from volseg.inference.predictor import resolve_device
    from volseg.io import open_volume
    from volseg.io.omezarr import create_image, create_labels, write_pyramid
    from volseg.io.store import marker_dir
    from volseg.models import read_spec

    start = time.perf_counter()
    options = options or PredictOptions()
    probabilities = options.probabilities
    out = Path(output)
    state = output_state(out, probabilities)
    if not overwrite and state in ("complete", "other"):
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if not Path(model).exists():
        raise InputError(f"model file {model} does not exist")
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
    record["predict"] = {
        "model": str(model), "image": str(image), "classes": list(spec.classes),
        "kind": spec.kind, "patch_size": list(patch), "overlap": options.overlap,
        "blend": options.blend, "sigma_scale": options.sigma_scale, "tta": options.tta,
        "precision": options.precision, "block_size": list(block),
        "probabilities": probabilities, "backend": options.backend,
    }
    group_attrs = {**dict(attrs or {}), "volseg": record}
    vs = meta.voxel_size
    pairs: list[tuple[da.Array, zarr.Array]] = []
    prob_path = None
    if probabilities != "none":
        ptarget = create_image(out, shape=(nclass, *shape), dtype=probabilities,
                               chunks=(nclass, *block), voxel_size=vs,
                               axes=("c", "z", "y", "x"), overwrite=overwrite,
                               attrs=group_attrs)
        pairs.append((quantize(logits_to_probabilities(logits, network.activation),
                               probabilities), ptarget))
        prob_path = out
    ltarget = create_labels(out, LABEL_NAME, shape=shape, dtype=np.uint8, chunks=block,
                            voxel_size=vs, overwrite=overwrite, attrs=group_attrs)
    pairs.insert(0, (logits_to_labels(logits, network.activation), ltarget))
    for _, target in pairs:  # marks the outputs as ours (resumable) from the start
        marker_dir(target).mkdir(exist_ok=True)
    t0 = time.perf_counter()
    if client is None:  # local threads share this process's cache: load it up front
        get_model(model_ref(model, spec.kind, options.backend),
                  resolve_device(options.device))
    t1 = time.perf_counter()
    total, computed = store_together(pairs, description="predict", client=client,
                                     overwrite=overwrite)
    t2 = time.perf_counter()
    if options.pyramid:
        write_pyramid(out / "labels" / LABEL_NAME, method="mode", client=client,
                      overwrite=overwrite)
        if prob_path is not None:
            write_pyramid(prob_path, method="mean", client=client, overwrite=overwrite)
    t3 = time.perf_counter()
    computed_voxels = computed / max(total, 1) * float(np.prod(shape))
    return PredictResult(
        output=out, labels=out / "labels" / LABEL_NAME, probabilities=prob_path,
        shape=shape, classes=tuple(spec.classes), patch_size=patch,
        block_size=block, total_blocks=total, computed_blocks=computed,
        skipped_blocks=total - computed, seconds=time.perf_counter() - start,
        model_seconds=t1 - t0, block_seconds=t2 - t1, pyramid_seconds=t3 - t2,
        voxels_per_second=computed_voxels / (t2 - t1) if computed else 0.0,
    )
