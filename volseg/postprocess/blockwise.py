"""Post-processing mapped over a Dask array: median halo, global objects and holes.

1. *Decision* (one task per block): the median filter needs ``size // 2`` voxels of
   its neighbours per axis, so each block is extended by that halo
   (``map_overlap``, ``boundary="none"``: at the volume's faces the filter reflects
   exactly as a whole-volume run does) and trimmed after the threshold or argmax.
2. *Small objects*: the global connected components of the non-background classes
   (:func:`volseg.instances.label_instances`, with its ``min_size`` filter); voxels of
   the dropped objects become background.
3. *Holes*: the global connected components of the background (class 0, face
   connectivity), again with :func:`~volseg.instances.label_instances`; a component
   whose bounding box does not reach the volume's border is a hole and becomes
   foreground.

Steps 2 and 3 compute their first pass (block labels, statistics and cross-block
pairs) when the graph is built; the returned array is lazy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt

from volseg.errors import ConfigError, InputError
from volseg.geometry import regular_chunks
from volseg.postprocess.kernel import check_classes, decide, object_classes
from volseg.postprocess.options import PostprocessOptions

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["block_chunks", "postprocess_labels"]


def block_chunks(size: int, block: int, halo: int) -> tuple[int, ...]:
    """Chunks of ``block`` along an axis of ``size``; a last chunk thinner than the halo
    is merged into its neighbour (``map_overlap`` needs chunks at least as deep as the halo).

    Examples
    --------
    >>> block_chunks(17, 8, 2), block_chunks(17, 8, 3)
    ((8, 8, 1), (8, 9))
    """
    chunks = list(regular_chunks(size, min(block, size)))
    if len(chunks) > 1 and chunks[-1] < halo:
        last = chunks.pop()
        chunks[-1] += last
    if len(chunks) > 1 and min(chunks) < halo:
        raise ConfigError(f"block size {block} is thinner than the median filter's halo "
                          f"{halo}; use larger blocks")
    return tuple(chunks)


def _decide_block(block: npt.NDArray[Any], *, options: PostprocessOptions
                  ) -> npt.NDArray[np.uint8]:
    return decide(block, options)


def _keep(labels: npt.NDArray[np.uint8], objects: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    return np.where(objects > 0, labels, np.uint8(0)).astype(np.uint8, copy=False)


def _fill(labels: npt.NDArray[np.uint8], components: npt.NDArray[Any],
          hole: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    return np.where(hole[components], np.uint8(1), labels).astype(np.uint8, copy=False)


def postprocess_labels(
    probabilities: da.Array,
    options: PostprocessOptions | None = None,
    *,
    client: Client | None = None,
) -> da.Array:
    """Blockwise post-processing: lazy ``(Z, Y, X)`` uint8 labels from probabilities.

    Parameters
    ----------
    probabilities
        ``(C, Z, Y, X)`` class probabilities (uint8 ``q/255`` or float); one channel is
        a foreground probability.
    options
        The steps and the block size (:class:`PostprocessOptions`); default: the
        plain argmax.
    client
        A ``distributed.Client`` for the first passes of the connected components
        (else the local scheduler).

    Returns
    -------
    dask.array.Array
        ``(Z, Y, X)`` uint8 class ids, chunked in blocks of ``options.block_size``
        (a last block thinner than the median halo joins its neighbour); equal to
        :func:`volseg.postprocess.postprocess_array` on the whole volume.
    """
    options = options or PostprocessOptions()
    if probabilities.ndim != 4:
        raise InputError(
            f"probabilities must be (C, Z, Y, X), got {probabilities.ndim} dimensions")
    if not (probabilities.dtype == np.uint8
            or np.issubdtype(probabilities.dtype, np.floating)):
        raise InputError(f"probabilities must be uint8 (q/255) or float, got "
                         f"{probabilities.dtype}")
    n_channels = int(probabilities.shape[0])
    n_classes = check_classes(n_channels, options)
    shape = tuple(int(s) for s in probabilities.shape[1:])
    halo = options.halo
    chunks = tuple(block_chunks(s, b, h)
                   for s, b, h in zip(shape, options.block_size, halo, strict=True))
    probs = probabilities.rechunk(((n_channels,), *chunks))  # type: ignore[no-untyped-call]
    meta = np.empty((0, 0, 0), dtype=np.uint8)
    # an axis in one block needs no halo (and may be thinner than it)
    depth = {1 + a: (halo[a] if len(chunks[a]) > 1 else 0) for a in range(3)}
    if any(depth.values()):
        labels = da.map_overlap(  # type: ignore[no-untyped-call]
            _decide_block, probs, depth={0: 0, **depth}, boundary="none", trim=True,
            allow_rechunk=False, drop_axis=0, dtype=np.uint8, meta=meta, options=options)
    else:
        labels = da.map_blocks(  # type: ignore[no-untyped-call]
            _decide_block, probs, drop_axis=0, dtype=np.uint8, meta=meta, options=options)
    from volseg.instances import label_instances

    if options.min_size > 0:
        objects = label_instances(
            labels, classes=object_classes(n_classes), connectivity=options.connectivity,
            min_size=options.min_size, client=client,
            description="postprocess: objects for --min-size")
        labels = da.map_blocks(  # type: ignore[no-untyped-call]
            _keep, labels, objects.labels, dtype=np.uint8, meta=meta)
    if options.fill_holes:
        background = label_instances(
            labels, classes=[0], connectivity=6, client=client,
            description="postprocess: background for --fill-holes")
        table = background.table
        reaches = (table.bbox_min == 0).any(axis=1) | (
            table.bbox_max == np.asarray(shape, dtype=np.int64)).any(axis=1)
        hole = np.zeros(len(table) + 1, dtype=bool)
        hole[table.ids[~reaches]] = True
        labels = da.map_blocks(  # type: ignore[no-untyped-call]
            _fill, labels, background.labels, dask.delayed(hole, pure=True), dtype=np.uint8,
            meta=meta)
    result: da.Array = labels
    return result
