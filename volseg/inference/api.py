"""``predict_logits``, the network description it needs, and the read-outs of blended logits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import torch
from pydantic import Field
from torch import nn

from volseg.errors import ConfigError
from volseg.geometry import OverlapAddPlan, centre_halo, regular_chunks
from volseg.inference.blockwise import ModelCall, dense_map, overlap_add
from volseg.inference.cache import ModelRef, get_model
from volseg.inference.dense import receptive_field as _receptive_field
from volseg.inference.options import PredictOptions
from volseg.inference.predictor import Predictor, resolve_device
from volseg.models.bioimageio import PackageNormalization, PackageSpec, check_input_sizes
from volseg.models.registry import Kind
from volseg.models.spec import ModelSpec, Normalization
from volseg.options import Options, PositiveSize3

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


class Network(Options):
    """How a network consumes a volume; a model file's spec says it (:meth:`from_spec`).

    Attributes
    ----------
    kind
        ``"3d"``, ``"2.5d"`` or ``"centre_voxel"``.
    context
        2.5-D: the odd number k of sections fed to the 2-D network as channels.
    receptive_field
        Centre-voxel: R (default: computed from the module's layers).
    out_channels
        ``C`` if known (skips probing a module with one patch of zeros).
    patch_size
        The default patch (``PredictOptions.patch_size`` wins); centre-voxel networks
        default to a 64³ sub-tile.
    normalization
        Applied to the input before the network (``None``: the input as it is); a
        bioimage.io package's preprocessing may need the volume's statistics first
        (:meth:`volseg.models.bioimageio.PackageNormalization.resolve`).
    activation
        How blended outputs read out as probabilities: ``"auto"`` (softmax, sigmoid for
        one channel), ``"softmax"``, ``"sigmoid"`` or ``"none"`` (already
        probabilities; packages only).
    sizes
        Input sizes a bioimage.io package accepts per axis id, ``(min, step)`` (step
        0: fixed); ``None``: any.
    """

    kind: Kind = "3d"
    context: int | None = Field(None, ge=1)
    receptive_field: int | None = Field(None, ge=1)
    out_channels: int | None = Field(None, ge=1)
    patch_size: PositiveSize3 | None = None
    normalization: Normalization | PackageNormalization | None = None
    activation: Literal["auto", "softmax", "sigmoid", "none"] = "auto"
    sizes: dict[str, tuple[int, int]] | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec | PackageSpec) -> Network:
        """Return the network description of a model spec (or a package's)."""
        package = isinstance(spec, PackageSpec)
        return cls(kind=spec.kind, context=spec.context, receptive_field=spec.receptive_field,
                   out_channels=spec.out_channels, patch_size=spec.patch_size,
                   normalization=spec.normalization,
                   activation=spec.activation if package else "auto",  # type: ignore[union-attr]
                   sizes=spec.sizes if package else None)  # type: ignore[union-attr]


def geometry(
    shape: Sequence[int], options: PredictOptions, network: Network
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Return the patch and the block size of a prediction of a ``(z, y, x)`` volume.

    The patch is ``options.patch_size``, else the network's, else (centre-voxel) the
    64³ default tile; the block is ``options.block_size``, else
    :func:`default_block_size`, clipped to the volume.

    Raises
    ------
    ConfigError
        When no patch size is known or it does not fit the network kind.
    """
    size = options.patch_size or network.patch_size
    if size is None:
        if network.kind != "centre_voxel":
            raise ConfigError("patch_size is needed for an in-memory module")
        size = (DEFAULT_TILE,) * 3
    patch = (int(size[0]), int(size[1]), int(size[2]))
    if network.kind == "2.5d" and patch[0] != 1:
        raise ConfigError(f"a 2.5-D patch has z size 1, got {patch}")
    if network.sizes:  # a bioimage.io package accepts only some input sizes
        check_input_sizes(network.sizes, patch, kind=network.kind, context=network.context,
                          receptive_field=network.receptive_field)
    shape3 = tuple(int(n) for n in shape[-3:])
    block = options.block_size or default_block_size(shape3, patch, network.kind,
                                                     options.overlap)
    b = tuple(max(1, min(int(v), n)) for v, n in zip(block, shape3, strict=True))
    return patch, (b[0], b[1], b[2])


def predict_logits(
    image: Any,
    model: nn.Module | str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    network: Network | None = None,
    source: str | None = None,
) -> da.Array:
    """Return the blended network outputs of a volume as a lazy ``(C, Z, Y, X)`` float32 array.

    Parameters
    ----------
    image
        Dask or numpy array ``(Z, Y, X)`` or ``(C_in, Z, Y, X)``; any chunking.
    model
        A ``torch.nn.Module`` (put in eval mode; moved only as a copy) or the path of
        a volseg model file (:func:`volseg.models.save_model`) or bioimage.io package
        (:mod:`volseg.models.bioimageio`).
    options
        Patch, overlap, blending, batch, device, precision, TTA, blocks, border and
        CPU threads (:class:`PredictOptions`; default: its defaults).  The result
        does not depend on ``block_size``.
    network
        How the network consumes the volume (kind, 2.5-D context, centre-voxel
        receptive field, channels, default patch, input normalisation).  Default:
        the model file's spec; for a module, a 3-D network.
    source
        How an error about a NaN or infinite input voxel names the image (its
        file; default "the input").

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
    it in training; centre-voxel networks see the volume padded with
    ``options.border``.

    Centre-voxel networks are evaluated densely
    (:func:`volseg.inference.blockwise.dense_map`): pooling/strided networks are
    first rewritten with dilations (:func:`volseg.inference.dense.densify`); output
    voxel ``v`` is the class of the cube ``[v - R//2, v - R//2 + R)``.
    """
    options = options or PredictOptions()
    if network is None:
        if isinstance(model, nn.Module):
            network = Network()
        elif isinstance(model, (str, os.PathLike)):
            from volseg.models import read_spec

            network = Network.from_spec(read_spec(model))
        else:
            raise ConfigError(
                f"model must be a torch.nn.Module or a model file, got {type(model)}")
    kind = network.kind
    patch, block = geometry(image.shape, options, network)
    ref = model_ref(model, kind, options.backend)
    shape3 = tuple(int(n) for n in image.shape[-3:])
    x = _as_dask(image, block)
    normalization = network.normalization
    if isinstance(normalization, PackageNormalization) and normalization.needs_statistics:
        normalization = normalization.resolve(x)  # per-volume statistics, once
    call = ModelCall(kind=kind, precision=options.precision, tta=options.tta,
                     device=options.device, batch_size=options.batch_size,
                     normalization=normalization, cpu_threads=options.cpu_threads,
                     source=source or "the input")
    chunks = [regular_chunks(n, b) for n, b in zip(shape3, block, strict=True)]
    cin = int(x.shape[0])
    out_channels = network.out_channels

    if kind == "centre_voxel":
        receptive_field = network.receptive_field
        if receptive_field is None:
            if not isinstance(model, nn.Module):
                raise ConfigError("a centre-voxel network needs its receptive field")
            receptive_field = _receptive_field(model)
        halo = (centre_halo(int(receptive_field)),) * 3
        if out_channels is None:
            out_channels = _probe_channels(ref, call, cin, (int(receptive_field),) * 3)
        return dense_map(x, chunks, model=ref, call=call, out_channels=int(out_channels),
                         halo=halo, tile=patch, pad_modes=(options.border,) * 3)

    if kind == "2.5d":
        k = int(network.context or 0)
        if k < 1 or k % 2 == 0:
            raise ConfigError(f"a 2.5-D network needs an odd context >= 1, got "
                              f"{network.context}")
        ctx = ((k // 2, k // 2), (0, 0), (0, 0))
        modes = ("reflect", "constant", "constant")
    else:
        ctx = ((0, 0),) * 3
        modes = ("constant",) * 3
    if out_channels is None:
        in_patch = tuple(p + b + a for p, (b, a) in zip(patch, ctx, strict=True))
        out_channels = _probe_channels(ref, call, cin, in_patch)
    plan = OverlapAddPlan.create(shape3, chunks, patch=patch, overlap=options.overlap,
                                 context=ctx)
    return overlap_add(x, plan, model=ref, call=call, out_channels=int(out_channels),
                       context=ctx, pad_modes=modes, blend=options.blend,
                       sigma_scale=options.sigma_scale)


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
    result: np.ndarray = out.numpy()
    return result


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
