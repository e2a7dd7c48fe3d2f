"""``predict_logits`` and the probability/label read-outs of blended logits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch import nn

from volseg.errors import ConfigError
from volseg.geometry import OverlapAddPlan, centre_halo, regular_chunks
from volseg.inference.blockwise import PAD_MODES, ModelCall, dense_map, overlap_add
from volseg.inference.cache import ModelRef, get_model
from volseg.inference.dense import receptive_field as _receptive_field
from volseg.inference.predictor import KINDS, PRECISIONS, Predictor, resolve_device
from volseg.inference.weights import BLENDS

DEFAULT_BLOCK = 64
"""Smallest default block edge (voxels) of centre-voxel networks."""
DEFAULT_TILE = 64
"""Default output sub-tile edge of a dense centre-voxel pass."""


def default_block_size(
    shape: Sequence[int], patch: Sequence[int], kind: str = "3d", overlap: float = 0.25
) -> tuple[int, ...]:
    """Return the default block (= output chunk) size for a volume and patch.

    Sliding-window kinds (``"3d"``, ``"2.5d"``): two patch strides per axis
    (``2 * scan_interval``; 8 sections in z for 2.5-D), clipped to the volume.
    Centre-voxel: ``max(patch, 64)``.

    Notes
    -----
    Blocks whose boundaries fall on the patch grid (multiples of the stride ``s``)
    overhang into their neighbours by only ``P - s`` voxels instead of ``P - 1``, so
    the partial sums waiting for a neighbour — ``(C + 1)`` channels over the
    overhang of a whole cross-section in the worst case — shrink by about
    ``(P - 1) / (P - s)`` (4x for the default overlap 0.25).  Two strides give
    ``2^3`` patches per block, enough to batch.
    """
    from volseg.geometry import scan_interval

    shape = tuple(int(n) for n in shape)
    if kind == "centre_voxel":
        block = [max(int(p), DEFAULT_BLOCK) for p in patch]
    else:
        block = [2 * scan_interval(max(n, int(p)), int(p), overlap)
                 for n, p in zip(shape, patch, strict=True)]
        if kind == "2.5d":
            block[0] = 8
    return tuple(max(1, min(n, b)) for n, b in zip(shape, block, strict=True))


def _as_dask(image: Any, block: Sequence[int]) -> da.Array:
    arr = image if isinstance(image, da.Array) else da.from_array(
        np.asarray(image), chunks=(-1, *block) if np.ndim(image) == 4 else tuple(block))
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ConfigError(f"image must be (Z, Y, X) or (C, Z, Y, X), got shape {arr.shape}")
    return arr


def _probe_channels(ref: ModelRef, call: ModelCall, in_channels: int,
                    in_patch: Sequence[int]) -> int:
    predictor = Predictor(get_model(ref, resolve_device(call.device)), kind=call.kind,
                          precision="fp32", tta=False)
    out = predictor(np.zeros((1, in_channels, *in_patch), dtype=np.float32))
    return int(out.shape[1])


def model_ref(model: nn.Module | str | os.PathLike[str], kind: str,
              backend: str = "auto") -> ModelRef:
    """Return the cache reference of a network as the prediction graph holds it.

    Centre-voxel networks are referenced densified
    (:func:`volseg.inference.dense.densify`); loading this reference with
    :func:`volseg.inference.cache.get_model` warms the cache the block tasks use.
    ``backend`` applies to model files and packages (:func:`volseg.models.load_model`).
    """
    dense = kind == "centre_voxel"
    if isinstance(model, nn.Module):
        return ModelRef.from_module(model, dense=dense)
    return ModelRef.from_path(model, dense=dense, backend=backend)


def predict_logits(
    image: Any,
    model: nn.Module | str | os.PathLike[str],
    *,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sigma_scale: float | Sequence[float] = 0.125,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    kind: str | None = None,
    context: int | None = None,
    receptive_field: int | None = None,
    block_size: Sequence[int] | None = None,
    tta: bool = False,
    border: str = "reflect",
    out_channels: int | None = None,
    cpu_threads: int | None = 1,
    source: str | None = None,
    backend: str = "auto",
) -> da.Array:
    """Return the blended network outputs of a volume as a lazy ``(C, Z, Y, X)`` float32 array.

    Parameters
    ----------
    image
        Dask or numpy array ``(Z, Y, X)`` or ``(C_in, Z, Y, X)``; any chunking.
    model
        A ``torch.nn.Module`` (put in eval mode; moved only as a copy) or the path of
        a volseg model file (:func:`volseg.models.save_model`) or bioimage.io package
        (:mod:`volseg.models.bioimageio`), whose spec supplies the defaults of
        ``kind``, ``patch_size``, ``context`` and ``receptive_field`` and whose
        normalisation is applied to the input.
    patch_size
        ``(z, y, x)`` output window of one forward pass: the sliding-window patch
        (3-D), ``(1, y, x)`` for 2.5-D (a 2-element ``(y, x)`` is accepted), or the
        sub-tile of a dense centre-voxel pass.  Required for modules.
    overlap
        Fraction of the patch shared by neighbouring patches, in ``[0, 1)``; the
        grid is MONAI's (:class:`volseg.geometry.PatchGrid`).
    blend
        ``"gaussian"`` (MONAI's importance map), ``"constant"`` or ``"bump"``.
    sigma_scale
        Gaussian sigma as a fraction of the patch size.
    batch_size
        Patches per forward pass.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``; resolved per worker.
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast on CUDA; the CPU runs fp32).
    kind
        ``"3d"`` (default for modules), ``"2.5d"`` or ``"centre_voxel"``.
    context
        2.5-D: the odd number k of sections fed to the 2-D network as channels.
    receptive_field
        Centre-voxel: R (default: computed from the module's layers).
    block_size
        ``(z, y, x)`` blocks = output chunks (default :func:`default_block_size`).
        The result does not depend on it.
    tta
        Average the logits of flipped inputs (8 flips in 3-D, 4 in-plane in 2.5-D).
    border
        Centre-voxel border policy: ``numpy.pad`` mode of the volume outside its
        border (``"reflect"``: mirrored without repeating the edge voxel).
    out_channels
        ``C`` if known (skips probing a module with one patch of zeros).
    cpu_threads
        Torch intra-op threads per forward pass on the CPU, set process-wide when a
        block runs (``None``: leave torch's setting).  Dask runs one block per core,
        so the default of one thread keeps the cores busy with concurrent passes.
    source
        How an error about a NaN or infinite input voxel names the image (its
        file; default "the input").
    backend
        For model files and packages: ``"auto"``, ``"torch"`` or ``"onnx"``
        (onnxruntime), see :func:`volseg.models.load_model`.

    Returns
    -------
    dask.array.Array
        ``(C, Z, Y, X)`` float32, chunked ``(C,)`` × blocks.

    Notes
    -----
    3-D and 2.5-D networks are blended by overlap-add
    (:func:`volseg.inference.blockwise.overlap_add`):

    .. math:: y(v) = \\frac{\\sum_p w(v - s_p)\\, f_p(v - s_p)}{\\sum_p w(v - s_p)}

    over the patches ``p`` (starts ``s_p``) covering voxel ``v``, each patch
    evaluated once.  For every chunking this equals
    ``monai.inferers.sliding_window_inference(x[None], patch_size, batch_size, model,
    overlap=overlap, mode=blend, sigma_scale=sigma_scale)`` (zero padding of axes
    shorter than the patch, at the volume border only), up to float32 rounding.

    Border policies: axes shorter than the patch are zero-padded (MONAI's
    ``padding_mode="constant"``); the z-context of 2.5-D networks beyond the first
    and last section is mirrored (``numpy.pad`` ``"reflect"``: section ``-1`` is
    section ``1``; a single section is repeated), as :mod:`volseg.train` mirrors
    it in training; centre-voxel networks see the volume padded with ``border``.

    Centre-voxel networks are evaluated densely
    (:func:`volseg.inference.blockwise.dense_map`): pooling/strided networks are
    first rewritten with dilations (:func:`volseg.inference.dense.densify`); output
    voxel ``v`` is the class of the cube ``[v - R//2, v - R//2 + R)``.
    """
    spec = None
    if isinstance(model, (str, os.PathLike)):
        from volseg.models import read_spec

        spec = read_spec(model)
        kind = kind or spec.kind
        patch_size = patch_size or spec.patch_size
        context = context or spec.context
        receptive_field = receptive_field or spec.receptive_field
        out_channels = out_channels or spec.out_channels
    elif not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module or a model file, got {type(model)}")
    kind = kind or "3d"
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if blend not in BLENDS:
        raise ConfigError(f"blend must be one of {BLENDS}, got {blend!r}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    dev = str(device).lower()
    if not (dev in ("auto", "cpu") or dev.startswith("cuda")):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if patch_size is None:
        if kind != "centre_voxel":
            raise ConfigError("patch_size is needed for an in-memory module")
        patch_size = (DEFAULT_TILE,) * 3
    patch = tuple(int(p) for p in patch_size)
    if kind == "2.5d" and len(patch) == 2:
        patch = (1, *patch)
    if len(patch) != 3 or any(p < 1 for p in patch):
        raise ConfigError(f"patch_size must be three positive sizes (z, y, x), got {patch}")
    if kind == "2.5d" and patch[0] != 1:
        raise ConfigError(f"a 2.5-D patch has z size 1, got {patch}")

    check_patch = getattr(spec, "check_patch", None)
    if check_patch is not None:  # a package accepts only some input sizes
        check_patch(patch)
    ref = model_ref(model, kind, backend)
    block = tuple(block_size) if block_size is not None else None
    shape3 = tuple(image.shape[-3:])
    if block is None:
        block = default_block_size(shape3, patch, kind, overlap)
    block = tuple(max(1, min(int(b), n)) for b, n in zip(block, shape3, strict=True))
    x = _as_dask(image, block)
    normalization = spec.normalization if spec is not None else None
    if getattr(normalization, "needs_statistics", False):  # per-volume package statistics
        normalization = normalization.resolve(x)  # type: ignore[union-attr]
    call = ModelCall(kind=kind, precision=precision, tta=tta, device=str(device),
                     batch_size=int(batch_size), normalization=normalization,
                     cpu_threads=cpu_threads, source=source or "the input")
    chunks = [regular_chunks(n, b) for n, b in zip(shape3, block, strict=True)]
    cin = int(x.shape[0])

    if kind == "centre_voxel":
        if receptive_field is None:
            assert isinstance(model, nn.Module)
            receptive_field = _receptive_field(model)
        halo = (centre_halo(int(receptive_field)),) * 3
        if border not in PAD_MODES:
            raise ConfigError(f"border must be one of {PAD_MODES}, got {border!r}")
        if out_channels is None:
            out_channels = _probe_channels(ref, call, cin, (int(receptive_field),) * 3)
        return dense_map(x, chunks, model=ref, call=call, out_channels=int(out_channels),
                         halo=halo, tile=patch, pad_modes=(border,) * 3)

    if kind == "2.5d":
        k = int(context or 0)
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"a 2.5-D network needs an odd context >= 1, got {context}")
        ctx = ((k // 2, k // 2), (0, 0), (0, 0))
        modes = ("reflect", "constant", "constant")
    else:
        ctx = ((0, 0),) * 3
        modes = ("constant",) * 3
    if out_channels is None:
        in_patch = tuple(p + b + a for p, (b, a) in zip(patch, ctx, strict=True))
        out_channels = _probe_channels(ref, call, cin, in_patch)
    plan = OverlapAddPlan.create(shape3, chunks, patch=patch, overlap=overlap, context=ctx)
    return overlap_add(x, plan, model=ref, call=call, out_channels=int(out_channels),
                       context=ctx, pad_modes=modes, blend=blend, sigma_scale=sigma_scale)


# ---------------------------------------------------------------------- read-outs
def _softmax(block: np.ndarray, activation: str = "auto") -> np.ndarray:
    """Softmax over axis 0 (sigmoid for one channel), float32.

    ``activation``: ``"auto"`` (that rule), ``"softmax"``, ``"sigmoid"`` (per channel)
    or ``"none"`` (the values are probabilities already: clipped to [0, 1]).
    ``torch.softmax``: 1.8x faster than the same formula in numpy on a 7 × 96³ block
    (one thread).
    """
    t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
    if activation == "auto":
        activation = "sigmoid" if t.shape[0] == 1 else "softmax"
    with torch.inference_mode():
        if activation == "none":
            out = t.clamp(0.0, 1.0)
        else:
            out = torch.sigmoid(t) if activation == "sigmoid" else torch.softmax(t, dim=0)
    return out.numpy()


def _labels(block: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Argmax over axis 0 (ties: the lowest id), uint8; ``>= threshold`` for one channel.

    A running maximum over the channels, branch-free: ``numpy.argmax`` along a
    leading axis is about ten times slower.  At most 256 channels.
    """
    b = np.asarray(block)
    if b.shape[0] == 1:
        return (b[0] >= threshold).astype(np.uint8)
    best = b[0].copy()
    out = np.zeros(b.shape[1:], dtype=np.uint8)
    greater = np.empty(b.shape[1:], dtype=bool)
    step = np.empty(b.shape[1:], dtype=np.uint8)
    for c in range(1, b.shape[0]):
        np.greater(b[c], best, out=greater)
        # out < c so far: max(out, c * greater) sets c exactly where channel c wins
        np.multiply(greater.view(np.uint8), np.uint8(c), out=step)
        np.maximum(out, step, out=out)
        np.maximum(best, b[c], out=best)
    return out


def logits_to_probabilities(logits: Any, activation: str = "auto") -> Any:
    """Return class probabilities of ``(C, ...)`` logits (dask or numpy, float32).

    Notes
    -----
    Softmax over the channel axis, :math:`p_c = e^{y_c - m} / \\sum_k e^{y_k - m}` with
    :math:`m = \\max_k y_k`; a one-channel model is read through the sigmoid
    :math:`p = 1 / (1 + e^{-y})`.  ``activation`` overrides that rule for packages
    (``"softmax"``, ``"sigmoid"`` per channel, ``"none"``: already probabilities).
    """
    if isinstance(logits, da.Array):
        return da.map_blocks(_softmax, logits, activation, dtype=np.float32,
                                 meta=np.empty((0,) * logits.ndim, dtype=np.float32))
    return _softmax(logits, activation)


def logits_to_labels(logits: Any, activation: str = "auto") -> Any:
    """Return ``uint8`` class ids of ``(C, ...)`` logits (dask or numpy).

    Notes
    -----
    ``argmax`` over channels (ties: the lowest id); a one-channel model gives
    ``1`` where the sigmoid is ``>= 0.5`` (logit ``>= 0``), else ``0``; with
    ``activation="none"`` (the outputs are probabilities) where the output is ``>= 0.5``.
    """
    threshold = 0.5 if activation == "none" else 0.0
    if isinstance(logits, da.Array):
        if logits.numblocks[0] != 1:
            logits = logits.rechunk({0: -1})
        return da.map_blocks(_labels, logits, threshold, drop_axis=0, dtype=np.uint8,
                                 meta=np.empty((0,) * (logits.ndim - 1), dtype=np.uint8))
    if logits.shape[0] > 256:
        raise ValueError("more than 256 classes do not fit uint8 labels")
    return _labels(logits, threshold)
