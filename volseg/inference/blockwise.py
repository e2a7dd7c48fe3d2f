"""The Dask mapping: overlap-add of per-block weighted sums, and dense halo mapping.

Overlap-add (3-D and 2.5-D networks)
------------------------------------
The volume is cut into blocks (any size; independent of the patch).  Block ``b``
owns the patches of the global grid whose output start lies in it
(:class:`volseg.geometry.OverlapAddPlan`) and runs one task, the *emission*:

1. read the input its patches cover (block region plus up to ``patch - 1`` voxels
   after it, plus the network's context), assembled from the input blocks that
   intersect it and padded only where it leaves the *volume*;
2. evaluate its patches in batches;
3. return, over the union of its patches' outputs, the block's weighted mean
   :math:`m = \\sum_p w_p f_p / \\sum_p w_p` (``C`` channels) and weight
   :math:`W = \\sum_p w_p` (one channel), accumulated in float64 and stored as
   float32.

The emission is cut into *pieces*, one per output block it overlaps (itself and
the following neighbours its overhang reaches), so that it can be freed at once;
the *merge* of an output block combines its pieces,
:math:`y = \\sum_k W_k m_k / \\sum_k W_k` (float64, rounded to float32).  Every
patch is evaluated exactly once; the graph has one emission and one merge per
block plus one piece per (emitting block, receiving block) pair: ``O(blocks)``
tasks.

Accumulating in float64 makes a per-voxel network (``f = 2 x``) come back
bit-exactly: each product of two float32 numbers is exact in float64, the rounding
of a handful of float64 sums is far below float32 resolution, so each local mean
rounds back to exactly ``f`` and so does the merged mean.  Storing the pieces as
float32 means and weights (rather than float64 sums) halves the memory of the
overhangs waiting for their neighbours.

Dense halo mapping (centre-voxel networks)
------------------------------------------
Each block reads itself plus a halo of ``R // 2`` voxels before and ``R - 1 - R // 2``
after (per axis), padded at the volume border, and runs the dense network on
sub-tiles of the block: every voxel gets its class in one pass per tile.  This is
``dask.array.map_overlap`` with an asymmetric depth, written with the same reader
as overlap-add because ``map_overlap`` supports asymmetric depths only with
``boundary="none"`` (and its ``"reflect"`` is numpy's ``"symmetric"``).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import torch
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from volseg.checks import require_finite
from volseg.geometry import Box, OverlapAddPlan, chunk_bounds, halo_box, tiles
from volseg.inference.cache import ModelRef, get_model
from volseg.inference.predictor import Predictor, resolve_device
from volseg.inference.stream import PIECE_PREFIX
from volseg.inference.weights import importance_map

PAD_MODES: tuple[str, ...] = ("constant", "edge", "reflect", "symmetric")
_scratch = threading.local()


def scratch(shape: Sequence[int]) -> np.ndarray:
    """Return a float64 array of ``shape`` (not zeroed) backed by this thread's scratch buffer.

    The float64 accumulators of emissions are tens of MB per block;
    allocating them afresh makes the kernel fault in (and zero) every page again,
    which cost more system time than the arithmetic.  The buffer grows to the
    largest request and is reused by the next task of the same thread, so the
    result is valid only until this thread asks again: copy what you keep.
    """
    size = int(np.prod(shape))
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype=np.float64)
        _scratch.buffer = buffer
    return buffer[:size].reshape(tuple(shape))


def zeroed_scratch(shape: Sequence[int]) -> np.ndarray:
    """:func:`scratch`, filled with zeros."""
    view = scratch(shape)
    view.fill(0.0)
    return view


@dataclass(frozen=True)
class ModelCall:
    """How block tasks run the network (small; shipped with every task).

    Attributes
    ----------
    kind, precision, tta
        See :class:`volseg.inference.predictor.Predictor`.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda[:i]"``, resolved in the worker.
    batch_size
        Patches per forward pass.
    normalization
        An object with ``apply(np.ndarray) -> np.ndarray[float32]`` applied to the
        input region before padding (a model spec's normalisation), or ``None``.
    cpu_threads
        Torch intra-op threads per forward pass on the CPU (see
        :class:`volseg.inference.predictor.Predictor`).
    source
        How error messages about the input's voxels name it (its file).
    """

    kind: str = "3d"
    precision: str = "fp32"
    tta: bool = False
    device: str = "auto"
    batch_size: int = 4
    normalization: Any = None
    cpu_threads: int | None = 1
    source: str = "the input"

    def predictor(self, model: ModelRef) -> Predictor:
        """Return the predictor of ``model`` in this process (loading it once)."""
        cached = get_model(model, resolve_device(self.device))
        return Predictor(cached, kind=self.kind, precision=self.precision, tta=self.tta,
                         cpu_threads=self.cpu_threads)


# ------------------------------------------------------------------------- reading
def read_region(
    parts: Sequence[np.ndarray],
    part_boxes: Sequence[Box],
    region: Box,
    shape: Sequence[int],
    pad_modes: Sequence[str],
    normalization: Any = None,
    source: str = "the input",
) -> np.ndarray:
    """Assemble ``(Cin, *region.shape)`` float32 input from blocks, padding outside the volume.

    Parameters
    ----------
    parts
        Input blocks ``(Cin, ...)``, covering the part of ``region`` inside the volume.
    part_boxes
        Their spatial boxes in volume coordinates.
    region
        The wanted box; may extend past the volume.
    shape
        Spatial shape of the volume.
    pad_modes
        Per axis, how voxels outside the volume are made: ``"constant"`` (zero),
        ``"edge"``, ``"reflect"`` or ``"symmetric"`` (``numpy.pad`` modes).
    normalization
        Applied to the in-volume data before padding (``None``: cast to float32).
    source
        How the error about a NaN or infinite voxel names the input.
    """
    valid = region.intersect(Box.from_shape(shape))
    cin = parts[0].shape[0]
    out = np.empty((cin, *valid.shape), dtype=parts[0].dtype)
    filled = 0
    for part, box in zip(parts, part_boxes, strict=True):
        inter = box.intersect(valid)
        if inter.empty:
            continue
        src = (slice(None), *inter.relative_to(box.start).slices())
        dst = (slice(None), *inter.relative_to(valid.start).slices())
        out[dst] = part[src]
        filled += inter.size
    if filled != valid.size:
        raise RuntimeError(f"input blocks cover {filled} of the {valid.size} voxels of {valid}")
    require_finite(out, valid.start, name=source, action="predicting")
    data = (
        normalization.apply(out) if normalization is not None else out.astype(np.float32)
    )
    for axis, mode in enumerate(pad_modes):
        before = valid.start[axis] - region.start[axis]
        after = region.stop[axis] - valid.stop[axis]
        if before or after:
            widths = [(0, 0)] * data.ndim
            widths[axis + 1] = (before, after)
            if mode not in PAD_MODES:
                raise ValueError(f"pad mode must be one of {PAD_MODES}, got {mode!r}")
            data = np.pad(data, widths, mode=mode)  # type: ignore[call-overload]
    return np.asarray(data, dtype=np.float32)


# ------------------------------------------------------------------ overlap-add tasks
@dataclass(frozen=True)
class EmitTask:
    """Static description of one block's emission.

    Attributes
    ----------
    read, write
        Input region (may leave the volume) and emitted output region (inside it).
    starts
        Output starts of the owned patches.
    out_patch
        Output patch size; the input patch is ``out_patch + context`` per axis.
    context_before, context_after
        Input voxels read before / after each output patch, per axis.
    shape
        Spatial shape of the volume.
    pad_modes
        Per-axis padding outside the volume.
    blend, sigma_scale
        The weight map (:func:`volseg.inference.weights.importance_map`).
    out_channels
        Expected number of output channels ``C``.
    """

    read: Box
    write: Box
    starts: tuple[tuple[int, ...], ...]
    out_patch: tuple[int, ...]
    context_before: tuple[int, ...]
    context_after: tuple[int, ...]
    shape: tuple[int, ...]
    pad_modes: tuple[str, ...]
    blend: str
    sigma_scale: tuple[float, ...]
    out_channels: int


@functools.lru_cache(maxsize=16)
def _weight_tensor(patch: tuple[int, ...], blend: str,
                   sigma_scale: tuple[float, ...]) -> torch.Tensor:
    """The weight map as a float64 tensor, made once per process (read-only use)."""
    return torch.from_numpy(importance_map(patch, blend, sigma_scale=sigma_scale)
                            .astype(np.float64))


@functools.lru_cache(maxsize=4)
def _channel_weights(patch: tuple[int, ...], blend: str, sigma_scale: tuple[float, ...],
                     channels: int) -> torch.Tensor:
    """The weight map repeated over a trailing channel axis, ``(*patch, channels)`` float64.

    Multiplied element by element with channels-last logits, so that one fused
    multiply-add per patch runs over contiguous memory (vectorised) instead of one
    strided pass per channel.  Made once per process (read-only use).
    """
    weight = _weight_tensor(patch, blend, sigma_scale)
    return weight[..., None].expand(*patch, channels).contiguous()


@functools.lru_cache(maxsize=4)
def _weight_sums(shape: tuple[int, ...], starts: tuple[tuple[int, ...], ...],
                 patch: tuple[int, ...], blend: str,
                 sigma_scale: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, bool]:
    """:math:`W = \\sum_p w_p` over a write box of ``shape`` whose patches start at ``starts``.

    ``starts`` are relative to the write box.  ``W`` depends on the geometry alone, and
    all interior blocks of a volume share theirs, so it is summed once per geometry
    (a few per volume: the last block of an axis differs) instead of once per
    block.  Returns ``W`` in float64 (the same sums, in the same order, as an
    accumulator channel would hold), rounded to float32 (the emission's weight
    channel), both read-only, and whether every voxel has ``W > 0`` (no gap).
    """
    weight = _weight_tensor(patch, blend, sigma_scale)
    den = torch.zeros(shape, dtype=torch.float64)
    write = Box.from_shape(shape)
    for start in starts:
        pbox = Box.from_shape(patch, start)
        clip = pbox.intersect(write)
        if not clip.empty:
            den[clip.slices()].add_(weight[clip.relative_to(pbox.start).slices()])
    den64 = den.numpy()
    den32 = den64.astype(np.float32)
    covered = bool(np.all(den64 > 0))
    den64.setflags(write=False)
    den32.setflags(write=False)
    return den64, den32, covered


def _box_minus(outer: Box, inner: Box) -> list[Box]:
    """``outer`` without ``inner`` (a sub-box of it, or empty) as disjoint boxes."""
    if inner.empty:
        return [] if outer.empty else [outer]
    lo, hi = list(outer.start), list(outer.stop)
    parts = []
    for a in range(outer.ndim):
        if inner.start[a] > lo[a]:
            parts.append(Box(tuple(lo), (*hi[:a], inner.start[a], *hi[a + 1:])))
        if inner.stop[a] < hi[a]:
            parts.append(Box((*lo[:a], inner.stop[a], *lo[a + 1:]), tuple(hi)))
        lo[a], hi[a] = inner.start[a], inner.stop[a]
    return parts


def _first_touch(shape: tuple[int, ...], starts: tuple[tuple[int, ...], ...],
                 patch: tuple[int, ...]) -> list[tuple[Box, list[Box]]] | None:
    """Per patch, the part of its output box no earlier patch wrote, and the rest.

    ``starts`` (relative to a write box of ``shape``) must be the C-order product of
    sorted per-axis starts, as :meth:`volseg.geometry.OverlapAddPlan.patch_starts`
    gives them.  Then the first patch covering a voxel is, on each axis
    independently, the first start whose interval covers it: the parts of each
    axis's intervals not covered by that axis's earlier intervals make, per patch,
    one box it writes first, and these boxes partition the covered voxels.  Writing
    the products there and adding them elsewhere gives exactly the sums of a
    zero-filled accumulator (``0 + x = x``) without the fill or reading the zeros.
    ``None`` when ``starts`` are not such a grid.
    """
    nd = len(shape)
    axes = [sorted({s[a] for s in starts}) for a in range(nd)]
    if list(starts) != list(itertools.product(*axes)):
        return None
    fresh: list[dict[int, tuple[int, int]]] = []
    for a in range(nd):
        covered, spans = 0, {}
        for s in axes[a]:
            lo, hi = max(s, covered, 0), min(s + patch[a], shape[a])
            spans[s] = (lo, max(lo, hi))
            covered = max(covered, hi)
        fresh.append(spans)
    write = Box.from_shape(shape)
    out = []
    for start in starts:
        clip = Box.from_shape(patch, start).intersect(write)
        spans_here = [fresh[a][start[a]] for a in range(nd)]
        first = Box(tuple(lo for lo, _ in spans_here), tuple(hi for _, hi in spans_here))
        out.append((first, _box_minus(clip, first)))
    return out


def emit_block(
    model: ModelRef,
    parts: Sequence[np.ndarray],
    part_boxes: Sequence[Box],
    task: EmitTask,
    call: ModelCall,
) -> np.ndarray:
    """Evaluate a block's patches; return their ``(C + 1, *write.shape)`` float32 blend.

    Over ``task.write``, channels ``0 .. C-1`` hold the block's own weighted mean
    :math:`m = \\sum_p w_p f_p / \\sum_p w_p` and channel ``C`` its weight
    :math:`W = \\sum_p w_p` (sums accumulated in float64, then rounded).

    The logits are read in the network's layout, without a transposing copy.
    Channels-last logits (a model file's on the CPU) accumulate into a
    channels-last float64 buffer: one fused multiply-add per patch over contiguous
    memory with the channel-repeated weights (:func:`_channel_weights`), each voxel's
    first product written rather than added to a zero-filled buffer
    (:func:`_first_touch`), and the division, section by section, writes the
    channels-first result.  Other logits
    accumulate channel by channel.  Either way every sum is the same float64 sum
    in the same order.  ``W``, which depends on the geometry alone, is summed once
    per geometry (:func:`_weight_sums`).
    """
    region = read_region(parts, part_boxes, task.read, task.shape, task.pad_modes,
                         call.normalization, call.source)
    predictor = call.predictor(model)
    weight = _weight_tensor(task.out_patch, task.blend, task.sigma_scale)
    nc = task.out_channels
    shape = task.write.shape
    rel_starts = tuple(tuple(s - w for s, w in zip(start, task.write.start, strict=True))
                       for start in task.starts)
    den, den32, covered = _weight_sums(shape, rel_starts, task.out_patch, task.blend,
                                       task.sigma_scale)
    if not covered:  # the owned patches tile their write box without gaps
        raise RuntimeError(f"the patches of block {task.write} leave a gap (planning error)")
    acc: np.ndarray | None = None  # allocated after the first forward pass (memory)
    last = False
    boxes: list[tuple[Box, list[Box]]] | None = None
    in_patch = tuple(
        p + b + a for p, b, a in zip(task.out_patch, task.context_before, task.context_after,
                                     strict=True)
    )
    step = max(1, call.batch_size)
    for first in range(0, len(task.starts), step):
        starts = task.starts[first:first + step]
        batch = np.stack([
            region[(slice(None), *Box.from_shape(in_patch, s).shift(
                tuple(-b for b in task.context_before)).relative_to(task.read.start).slices())]
            for s in starts
        ])
        out = predictor(batch)
        expected = (len(starts), nc, *task.out_patch)
        if out.shape != expected:
            raise ValueError(f"the network returned shape {out.shape} for input "
                             f"{batch.shape}; expected {expected}")
        # (N, *spatial, C): contiguous for channels-last logits (channel stride 1)
        logits = torch.from_numpy(out).permute(0, *range(2, out.ndim), 1)
        if acc is None:
            last = logits.is_contiguous()
            boxes = _first_touch(shape, rel_starts, task.out_patch) if last else None
            acc = (scratch((*shape, nc)) if boxes is not None
                   else zeroed_scratch((*shape, nc) if last else (nc, *shape)))
        elif last and not logits.is_contiguous():  # a batch in another layout
            logits = logits.contiguous()
        sums = torch.from_numpy(acc)
        for i, start in enumerate(starts):
            pbox = Box.from_shape(task.out_patch, start)
            clip = pbox.intersect(task.write)
            src = clip.relative_to(pbox.start).slices()
            dst = clip.relative_to(task.write.start).slices()
            if last and boxes is not None:  # vectorised over (*spatial, C), float64
                weights = _channel_weights(task.out_patch, task.blend, task.sigma_scale, nc)
                rel = Box.from_shape(task.out_patch, rel_starts[first + i])
                written, added = boxes[first + i]
                if not written.empty:  # first products: written (exact: 0 + x = x)
                    part = written.relative_to(rel.start).slices()
                    sums[written.slices()].copy_(logits[i][part]).mul_(weights[part])
                for box in added:
                    part = box.relative_to(rel.start).slices()
                    sums[box.slices()].addcmul_(logits[i][part], weights[part])
            elif last:  # one vectorised fused multiply-add per patch
                weights = _channel_weights(task.out_patch, task.blend, task.sigma_scale, nc)
                sums[dst].addcmul_(logits[i][src], weights[src])
            else:  # channel by channel (torch's addcmul_: no temporaries)
                w, channels = weight[src], logits[i][src]
                for c in range(nc):
                    sums[c][dst].addcmul_(channels[..., c], w)
    # local weighted mean and weight, float32 (see merge_pieces: still exact)
    assert acc is not None
    result = np.empty((nc + 1, *shape), dtype=np.float32)
    if last:  # section by section: the transposing writes stay in the cache
        mean = result[:nc].transpose(*range(1, len(shape) + 1), 0)
        for z in range(shape[0]):
            np.divide(acc[z], den[z, ..., None], out=mean[z], casting="same_kind")
    else:
        np.divide(acc, den, out=result[:nc], casting="same_kind")
    result[nc] = den32
    return result


def take_piece(emission: np.ndarray, box: Box, copy: bool = True) -> np.ndarray:
    """Return the part ``box`` (relative to the emission) of an emission.

    A copy, so that the emission can be freed while the piece waits for its block;
    a block's own piece is a view (the emission lives until that merge anyway).
    """
    view = emission[(slice(None), *box.slices())]
    return np.array(view, copy=True) if copy else view


def merge_pieces(
    pieces: Sequence[np.ndarray], boxes: Sequence[Box], shape: tuple[int, ...]
) -> np.ndarray:
    """Combine the pieces falling into an output block into float32 logits.

    Parameters
    ----------
    pieces
        ``(C + 1, ...)`` float32 local means (channels ``0 .. C-1``) and weight
        (channel ``C``) of the emissions overlapping the block.
    boxes
        Their boxes relative to the block.
    shape
        Spatial shape of the block.

    Notes
    -----
    With the pieces' local means :math:`m_k` and weights :math:`W_k`,
    :math:`y = \\sum_k W_k m_k / \\sum_k W_k`, computed in float64 and rounded to
    float32.  This equals :math:`\\sum_p w_p f_p / \\sum_p w_p` over all patches up to
    float32 rounding, and is exact for a per-voxel network: every :math:`m_k` is
    then exactly :math:`f` (a float64 quotient within a few ulp of a float32 number
    rounds back to it), and so is :math:`y`.

    The block is cut into cells by the pieces' boundaries; a cell covered by one
    piece is that piece's mean, copied (the formula gives exactly :math:`m`: the
    float64 product of two float32 numbers is exact, and so is its quotient by
    :math:`W`).  Only cells where neighbours' overhangs meet are summed in float64.
    """
    nc = pieces[0].shape[0] - 1
    result = np.empty((nc, *shape), dtype=np.float32)
    cuts = [sorted({0, n, *(b.start[a] for b in boxes), *(b.stop[a] for b in boxes)})
            for a, n in enumerate(shape)]
    for bounds in itertools.product(*(itertools.pairwise(c) for c in cuts)):
        cell = Box(tuple(lo for lo, _ in bounds), tuple(hi for _, hi in bounds))
        where = (slice(None), *cell.slices())
        covering = [(piece, box) for piece, box in zip(pieces, boxes, strict=True)
                    if not box.intersect(cell).empty]
        if not covering:
            raise RuntimeError(f"cell {cell} of the block is covered by no patch "
                               f"(planning error)")
        if len(covering) == 1:
            piece, box = covering[0]
            result[where] = piece[(slice(0, nc), *cell.relative_to(box.start).slices())]
            continue
        # torch's fused multiply-adds, float32 operands promoted to float64: the first
        # piece's product written, the others added (no zero fill, no temporaries)
        num: torch.Tensor | None = None
        den: torch.Tensor | None = None
        for piece, box in covering:
            part = torch.from_numpy(piece[(slice(None), *cell.relative_to(box.start).slices())])
            if num is None or den is None:
                den = part[nc].to(torch.float64)
                num = torch.mul(part[:nc], den)
            else:
                num.addcmul_(part[:nc], part[nc])
                den.add_(part[nc])
        assert num is not None and den is not None
        if not bool((den > 0).all()):
            raise RuntimeError("a voxel of the block is covered by no patch (planning error)")
        np.divide(num.numpy(), den.numpy(), out=result[where], casting="same_kind")
    return result


def _input_keys(
    x: da.Array, bounds: Sequence[Sequence[int]], region: Box
) -> tuple[list[tuple[Any, ...]], list[Box]]:
    """Keys and boxes of the spatial blocks of ``x`` (channel axis one chunk) meeting ``region``."""
    valid = region.intersect(Box.from_shape(tuple(b[-1] for b in bounds)))
    ranges = []
    for axis_bounds, lo, hi in zip(bounds, valid.start, valid.stop, strict=True):
        j0 = bisect.bisect_right(axis_bounds, lo) - 1
        j1 = bisect.bisect_left(axis_bounds, hi)
        ranges.append(range(j0, j1))
    keys, boxes = [], []
    for idx in itertools.product(*ranges):
        keys.append((x.name, 0, *idx))
        boxes.append(Box(tuple(b[i] for b, i in zip(bounds, idx, strict=True)),
                         tuple(b[i + 1] for b, i in zip(bounds, idx, strict=True))))
    return keys, boxes


def _as_input(x: da.Array, chunks: Sequence[Sequence[int]]) -> da.Array:
    """Rechunk a ``(Cin, Z, Y, X)`` array to one channel chunk and the block grid.

    Without ``distributed`` loaded there is no client and dask's choice is ``"tasks"``;
    saying so spares the import of ``distributed`` (0.2-0.8 s) that dask's check does.
    """
    method = None if "distributed" in sys.modules else "tasks"
    return x.rechunk(((x.shape[0],), *(tuple(c) for c in chunks)), method=method)


def overlap_add(
    x: da.Array,
    plan: OverlapAddPlan,
    *,
    model: ModelRef,
    call: ModelCall,
    out_channels: int,
    context: Sequence[tuple[int, int]] | None = None,
    pad_modes: Sequence[str] | None = None,
    blend: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
) -> da.Array:
    """Map a network over ``x`` by overlap-add (see the module notes).

    Parameters
    ----------
    x
        ``(Cin, Z, Y, X)`` input (rechunked to the plan's blocks here).
    plan
        The overlap-add plan (its ``context`` must match ``context``).
    model, call
        The network and how to run it.
    out_channels
        ``C``, the number of output channels.
    context
        Input voxels ``(before, after)`` read around each output patch per axis.
    pad_modes
        Padding outside the volume per axis (default: zeros, as MONAI).
    blend, sigma_scale
        The weight map.

    Returns
    -------
    dask.array.Array
        ``(C, Z, Y, X)`` float32 blended logits, chunked ``(C,)`` × the plan's blocks.
    """
    nd = len(plan.shape)
    ctx = tuple(context) if context is not None else ((0, 0),) * nd
    modes = tuple(pad_modes) if pad_modes is not None else ("constant",) * nd
    ss = ((float(sigma_scale),) * nd if isinstance(sigma_scale, (int, float))
          else tuple(float(s) for s in sigma_scale))
    chunks = [tuple(int(v) for v in np.diff(a.bounds)) for a in plan.axes]
    bounds = [a.bounds for a in plan.axes]
    xr = _as_input(x, chunks)
    token = tokenize(xr.name, plan, model.token, call, out_channels, ctx, modes, blend, ss)
    model_key = f"volseg-model-{model.token}"
    ename, mname = (f"volseg-{s}-{token}" for s in ("emit", "logits"))
    pname = f"{PIECE_PREFIX}{token}"  # the scheduler gives pieces their emission's priority
    dsk: dict[Any, Any] = {model_key: model}
    for idx in plan.blocks():
        starts = plan.patch_starts(idx)
        if not starts:
            continue
        read = plan.read_box(idx)
        keys, boxes = _input_keys(xr, bounds, read)
        task = EmitTask(
            read=read, write=plan.write_box(idx), starts=tuple(starts),
            out_patch=plan.patch, context_before=tuple(c[0] for c in ctx),
            context_after=tuple(c[1] for c in ctx), shape=plan.shape, pad_modes=modes,
            blend=blend, sigma_scale=ss, out_channels=out_channels,
        )
        dsk[(ename, *idx)] = (emit_block, model_key, keys, boxes, task, call)
    for idx in plan.blocks():
        block = plan.block_box(idx)
        pieces, rel = [], []
        for src in plan.sources(idx):
            wbox = plan.write_box(src)
            inter = wbox.intersect(block)
            if inter.empty:
                continue
            pkey = (pname, *src, *idx)
            dsk[pkey] = (take_piece, (ename, *src), inter.relative_to(wbox.start),
                         src != idx)
            pieces.append(pkey)
            rel.append(inter.relative_to(block.start))
        dsk[(mname, 0, *idx)] = (merge_pieces, pieces, rel, block.shape)
    graph = HighLevelGraph.from_collections(mname, dsk, dependencies=[xr])  # type: ignore[list-item]
    return da.Array(graph, mname, chunks=((out_channels,), *chunks), dtype=np.float32,
                    meta=np.empty((0,) * (nd + 1), dtype=np.float32))


# -------------------------------------------------------------------- dense mapping
@dataclass(frozen=True)
class DenseTask:
    """Static description of one block of the dense (centre-voxel) mapping.

    Attributes
    ----------
    block
        The output block.
    halo
        ``(before, after)`` input voxels per axis around an output window.
    tile
        Output sub-tile edge per axis (one forward pass each; bounds memory).
    shape
        Spatial shape of the volume.
    pad_modes
        Padding outside the volume per axis (the border policy).
    out_channels
        ``C``.
    """

    block: Box
    halo: tuple[tuple[int, int], ...]
    tile: tuple[int, ...]
    shape: tuple[int, ...]
    pad_modes: tuple[str, ...]
    out_channels: int


def dense_block(
    model: ModelRef,
    parts: Sequence[np.ndarray],
    part_boxes: Sequence[Box],
    task: DenseTask,
    call: ModelCall,
) -> np.ndarray:
    """Classify every voxel of a block with a dense network; ``(C, *block.shape)`` float32."""
    read = halo_box(task.block, task.halo)
    region = read_region(parts, part_boxes, read, task.shape, task.pad_modes,
                         call.normalization, call.source)
    predictor = call.predictor(model)
    out = np.empty((task.out_channels, *task.block.shape), dtype=np.float32)
    for tile in tiles(task.block, task.tile):
        src = halo_box(tile, task.halo).relative_to(read.start).slices()
        logits = predictor(region[(None, slice(None), *src)])
        if logits.shape != (1, task.out_channels, *tile.shape):
            raise ValueError(
                f"the dense network returned {logits.shape[2:]} for an input of "
                f"{region[(slice(None), *src)].shape[1:]}; expected {tile.shape} "
                f"(is the receptive field {[sum(h) + 1 for h in task.halo]} right?)")
        out[(slice(None), *tile.relative_to(task.block.start).slices())] = logits[0]
    return out


def dense_map(
    x: da.Array,
    chunks: Sequence[Sequence[int]],
    *,
    model: ModelRef,
    call: ModelCall,
    out_channels: int,
    halo: Sequence[tuple[int, int]],
    tile: Sequence[int],
    pad_modes: Sequence[str],
) -> da.Array:
    """Map a dense (fully convolutional, valid) network over blocks with a halo.

    Parameters
    ----------
    x
        ``(Cin, Z, Y, X)`` input.
    chunks
        Output block sizes per spatial axis.
    model, call
        The (dense) network and how to run it.
    out_channels
        ``C``.
    halo
        ``(before, after)`` per axis; ``before + after + 1`` is the receptive field.
    tile
        Output sub-tile per forward pass.
    pad_modes
        Border policy per axis (``numpy.pad`` modes).

    Returns
    -------
    dask.array.Array
        ``(C, Z, Y, X)`` float32 logits, one per voxel.
    """
    nd = len(chunks)
    chunks = [tuple(int(c) for c in ch) for ch in chunks]
    bounds = [chunk_bounds(c) for c in chunks]
    shape = tuple(b[-1] for b in bounds)
    xr = _as_input(x, chunks)
    hal = tuple((int(b), int(a)) for b, a in halo)
    token = tokenize(xr.name, chunks, model.token, call, out_channels, hal, tuple(tile),
                     tuple(pad_modes))
    model_key = f"volseg-model-{model.token}"
    name = f"volseg-dense-{token}"
    dsk: dict[Any, Any] = {model_key: model}
    for idx in itertools.product(*(range(len(c)) for c in chunks)):
        block = Box(tuple(b[i] for b, i in zip(bounds, idx, strict=True)),
                    tuple(b[i + 1] for b, i in zip(bounds, idx, strict=True)))
        keys, boxes = _input_keys(xr, bounds, halo_box(block, hal))
        task = DenseTask(block=block, halo=hal, tile=tuple(int(t) for t in tile),
                         shape=shape, pad_modes=tuple(pad_modes), out_channels=out_channels)
        dsk[(name, 0, *idx)] = (dense_block, model_key, keys, boxes, task, call)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[xr])  # type: ignore[list-item]
    return da.Array(graph, name, chunks=((out_channels,), *chunks), dtype=np.float32,
                    meta=np.empty((0,) * (nd + 1), dtype=np.float32))
