"""bioimage.io model packages in: ``rdf.yaml`` (or a ``.zip`` holding one) as a volseg model.

A package is read with ``bioimageio.spec`` (any format version, converted to 0.5;
no file is downloaded: weights must lie in the package) and mapped onto what the
blockwise engine needs, a :class:`PackageSpec` with the attributes of
:class:`~volseg.models.spec.ModelSpec` that prediction reads (``kind``,
``patch_size``, ``context``, ``receptive_field``, ``classes``, ``in_channels``,
``normalization``, ``voxel_size``) plus :attr:`PackageSpec.activation`.

Axes
----
=========================================== ====================================
input axes (any order)                      volseg kind
=========================================== ====================================
``batch?, channel?, z, y, x``               ``3d``; outputs the same size
``batch?, channel?, z, y, x``, outputs       ``centre_voxel`` with ``R = 1 - o``
smaller by ``-o`` voxels per axis
``batch?, channel?, y, x``                  ``2.5d``: ``k`` sections as channels
                                            (``config.volseg.context``), or
                                            ``k = 1`` for one channel
=========================================== ====================================

A time or index axis, a space axis other than ``z``/``y``/``x``, a 2-D input with
several channels and no ``config.volseg.context`` (RGB), or outputs at another scale
are refused with one line naming the axis.

Processing
----------
Preprocessing becomes a :class:`PackageNormalization` applied to every input region
(``fixed_zero_mean_unit_variance``, ``scale_linear``, ``clip``; per-sample
``zero_mean_unit_variance`` and ``scale_range`` with statistics of the whole volume,
computed once before the blocks, so that the result does not depend on the blocks).
Postprocessing ``softmax``/``sigmoid`` over the channels is the read-out applied
*after* blending (as volseg does for its own logits); with no postprocessing the
outputs are logits, or probabilities if their declared range lies within [0, 1].
Other operations are refused with one line naming them.

Weights
-------
ONNX (onnxruntime) and TorchScript (``torch.jit.load`` behind the checks of
:mod:`volseg.models.backends`).  ``pytorch_state_dict`` weights are a pickle and are
never loaded: a package with only those is refused.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from volseg.errors import ConfigError, InputError

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
"""File names of a package's description."""
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
"""``backend`` choices: ``torch`` = TorchScript weights for packages."""
Activation = Literal["softmax", "sigmoid", "none", "auto"]
_UNIT_NM = {"nanometer": 1.0, "micrometer": 1e3, "millimeter": 1e6, "angstrom": 0.1,
            "picometer": 1e-3, "meter": 1e9, "centimeter": 1e7}
_DEFAULT_EDGE = 64
_PERCENTILE_VOXELS = 16_000_000


def is_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a bioimage.io package: ``.zip``, ``*.yaml`` or a folder of one."""
    p = Path(path)
    if p.suffix.lower() == ".zip" or p.suffix.lower() in (".yaml", ".yml"):
        return True
    return p.is_dir() and any((p / name).is_file() for name in RDF_NAMES)


# ------------------------------------------------------------------ normalisation
@dataclass(frozen=True)
class PackageNormalization:
    """A package's preprocessing as steps on float32 intensities.

    Attributes
    ----------
    steps
        ``("zmuv", mean, std)``: ``(x - mean) / std``; ``("linear", gain, offset)``:
        ``x * gain + offset``; ``("clip", low, high)``; and, until :meth:`resolve`
        replaces them with fixed steps, ``("volume_zmuv", eps, None)`` and
        ``("volume_range", (min_percentile, max_percentile), eps)``.
    """

    steps: tuple[tuple[str, Any, Any], ...] = ()

    @property
    def needs_statistics(self) -> bool:
        """Whether a step still waits for statistics of the volume."""
        return any(op.startswith("volume_") for op, _, _ in self.steps)

    def resolve(self, volume: Any) -> PackageNormalization:
        """Return the steps with the volume's statistics filled in (the first step only).

        Mean and standard deviation are exact (float64 over every voxel); percentiles
        are those of every voxel up to 16 M voxels, else of a regular sub-grid of
        about that many.
        """
        if not self.needs_statistics:
            return self
        op, a, b = self.steps[0]
        import dask.array as da

        arr = volume if isinstance(volume, da.Array) else da.from_array(  # type: ignore[no-untyped-call]
            np.asarray(volume))
        if op == "volume_zmuv":
            mean, std = da.compute(  # type: ignore[no-untyped-call]
                arr.astype(np.float64).mean(), arr.astype(np.float64).std())
            first: tuple[str, Any, Any] = ("zmuv", float(mean), float(std) + float(a))
        else:
            step = max(1, math.ceil((arr.size / _PERCENTILE_VOXELS) ** (1 / 3)))
            sub = np.asarray(arr[..., ::step, ::step, ::step], dtype=np.float64)
            low, high = np.percentile(sub, [a[0], a[1]])
            first = ("zmuv", float(low), float(high - low) + float(b))
        return PackageNormalization((first, *self.steps[1:]))

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Return ``block`` preprocessed, as a new float32 array."""
        out = np.array(block, dtype=np.float32, copy=True)
        for op, a, b in self.steps:
            if op == "zmuv":
                out -= np.float32(a)
                out /= np.float32(b)
            elif op == "linear":
                out *= np.float32(a)
                out += np.float32(b)
            elif op == "clip":
                np.clip(out, -np.inf if a is None else a, np.inf if b is None else b, out=out)
            else:
                raise RuntimeError(f"normalisation step {op!r} needs the volume's statistics "
                                   "(call resolve first)")
        return out


# ------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class PackageSpec:
    """What the blockwise engine needs to know about a bioimage.io package.

    Attributes
    ----------
    source
        The package (``.zip``) or its ``rdf.yaml``.
    name
        The package's name.
    kind, patch_size, context, receptive_field, in_channels, classes, normalization
        As in :class:`~volseg.models.spec.ModelSpec`.
    activation
        How blended outputs become probabilities: ``"softmax"``/``"sigmoid"`` (outputs
        are logits) or ``"none"`` (outputs are probabilities).
    voxel_size
        ``(z, y, x)`` nm (``z`` is ``None``-free: 2-D packages repeat ``y``), or ``None``.
    weights
        Weight formats volseg can run, in the package's order.
    input_axes, output_axes
        The package's axis ids in order (``batch``, ``channel``, ``z``, ``y``, ``x``).
    batch_one
        The package's batch axis is fixed to 1.
    sizes
        Valid input sizes per spatial axis id: ``(min, step)`` (step 0: fixed size).
    """

    source: str
    name: str
    kind: str
    patch_size: tuple[int, int, int]
    in_channels: int
    classes: tuple[str, ...]
    normalization: PackageNormalization
    activation: str
    context: int | None = None
    receptive_field: int | None = None
    voxel_size: tuple[float, float, float] | None = None
    weights: tuple[str, ...] = ()
    input_axes: tuple[str, ...] = ()
    output_axes: tuple[str, ...] = ()
    batch_one: bool = False
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        """Output channels: one per class."""
        return len(self.classes)

    @property
    def halo(self) -> tuple[tuple[int, int], ...]:
        """Extra input voxels ``(before, after)`` per axis around an output window."""
        return _halo(self.kind, self.context, self.receptive_field)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(z, y, x)`` input window of one forward pass."""
        return tuple(  # type: ignore[return-value]
            p + b + a for p, (b, a) in zip(self.patch_size, self.halo, strict=True))

    def check_patch(self, patch: Sequence[int]) -> None:
        """Raise :class:`ConfigError` unless ``patch`` gives an input size the package accepts."""
        check_input_sizes(self.sizes, patch, kind=self.kind, context=self.context,
                          receptive_field=self.receptive_field, source=self.source)


def _halo(kind: str, context: int | None,
          receptive_field: int | None) -> tuple[tuple[int, int], ...]:
    if kind == "2.5d":
        h = (context or 1) // 2
        return ((h, h), (0, 0), (0, 0))
    if kind == "centre_voxel":
        r = receptive_field or 1
        side = (r // 2, r - 1 - r // 2)
        return (side, side, side)
    return ((0, 0), (0, 0), (0, 0))


def check_input_sizes(sizes: dict[str, tuple[int, int]], patch: Sequence[int], *, kind: str,
                      context: int | None = None, receptive_field: int | None = None,
                      source: str = "the package") -> None:
    """Raise :class:`ConfigError` unless the input window of ``patch`` is a valid size.

    Parameters
    ----------
    sizes
        ``(min, step)`` per axis id (step 0: a fixed size), as :attr:`PackageSpec.sizes`.
    patch
        ``(z, y, x)`` output window; the input window adds the kind's halo.
    """
    halo = _halo(kind, context, receptive_field)
    for axis, p, (b, a) in zip("zyx", patch, halo, strict=True):
        if axis not in sizes:
            continue
        size, (low, step) = int(p) + b + a, sizes[axis]
        ok = size == low if step == 0 else size >= low and (size - low) % step == 0
        if not ok:
            valid = f"{low}" if step == 0 else f"{low} + n * {step}"
            raise ConfigError(
                f"{source}: an input of {size} voxels along axis {axis!r} (patch "
                f"{tuple(patch)}) is not one the package accepts ({valid}); choose "
                "another --patch")


# ------------------------------------------------------------------------ reading
def _load_description(path: Path) -> Any:
    """Load and validate a package's description, offline; return a v0.5 ``ModelDescr``."""
    try:
        from bioimageio.spec import InvalidDescr, load_description
        from bioimageio.spec.model import v0_5
    except ImportError:
        raise InputError(f"{path} is a bioimage.io package; reading it needs the optional "
                         "dependencies: pip install 'volseg[bioimageio]'") from None
    if not path.exists():
        raise InputError(f"model {path} does not exist")
    source = path
    if path.is_dir():
        source = next((path / n for n in RDF_NAMES if (path / n).is_file()), path / RDF_NAMES[0])
    if path.suffix.lower() == ".zip" and not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a zip archive (a bioimage.io package is a .zip "
                         "holding rdf.yaml)")
    try:
        descr = load_description(str(source), format_version="latest", perform_io_checks=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{path} could not be read as a bioimage.io package: "
                         f"{first[0] if first else type(exc).__name__}") from None
    if isinstance(descr, InvalidDescr):
        reason = (descr.get_reason() or "invalid description").splitlines()[0]
        raise InputError(f"{path} is not a valid bioimage.io description: {reason}")
    if not isinstance(descr, v0_5.ModelDescr):
        raise InputError(f"{path} describes a bioimage.io {descr.type!r}, not a model")
    return descr


def _reader_bytes(file_descr: Any, *, what: str, path: Path) -> bytes:
    """Read a file of the package; refuse anything outside it (volseg downloads nothing)."""
    source = str(file_descr.source)
    if source.startswith(("http://", "https://")):
        raise InputError(f"{path}: the {what} is at {source}; volseg downloads nothing: "
                         "download the package with its files and pass the .zip")
    try:
        return bytes(file_descr.get_reader().read())
    except Exception as exc:
        raise InputError(f"{path}: the {what} ({source}) could not be read: {exc}") from None


def _test_shape(descr: Any, path: Path) -> tuple[int, ...] | None:
    """Shape of the input test tensor (its .npy header only), or ``None``."""
    tensor = descr.inputs[0].test_tensor
    if tensor is None:
        return None
    try:
        data = _reader_bytes(tensor, what="input test tensor", path=path)
        f = io.BytesIO(data)
        major, _ = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if major == 1
                else np.lib.format.read_array_header_2_0)
        shape, _, _ = read(f)
        return tuple(int(s) for s in shape)
    except (InputError, ValueError):
        return None


def _size(axis: Any) -> tuple[int, int] | None:
    from bioimageio.spec.model import v0_5

    size = axis.size
    if isinstance(size, int):
        return (int(size), 0)
    if isinstance(size, v0_5.ParameterizedSize):
        return (int(size.min), int(size.step))
    return None


def _preprocessing(steps: Sequence[Any], path: Path) -> PackageNormalization:
    out: list[tuple[str, Any, Any]] = []
    for step in steps:
        sid, kw = step.id, step.kwargs
        if sid == "ensure_dtype":
            if kw.dtype not in ("float32", "float64"):
                raise InputError(f"{path}: preprocessing ensure_dtype {kw.dtype} is not "
                                 "supported (volseg feeds float32)")
            continue
        if sid in ("fixed_zero_mean_unit_variance", "scale_linear"):
            names = ("mean", "std") if sid.startswith("fixed") else ("gain", "offset")
            values = [getattr(kw, n) for n in names]
            scalars = []
            for v in values:
                flat = [float(x) for x in v] if isinstance(v, list) else [float(v)]
                if len(set(flat)) != 1:
                    raise InputError(f"{path}: preprocessing {sid} with per-channel values is "
                                     "not supported (volseg reads one-channel EM)")
                scalars.append(flat[0])
            out.append(("zmuv" if sid.startswith("fixed") else "linear", scalars[0],
                        scalars[1]))
        elif sid in ("zero_mean_unit_variance", "scale_range"):
            if out:
                raise InputError(f"{path}: preprocessing {sid} after another step is not "
                                 "supported")
            if getattr(kw, "reference_tensor", None) not in (None, "input") and \
                    str(kw.reference_tensor) != "input":
                raise InputError(f"{path}: preprocessing {sid} with a reference tensor is not "
                                 "supported")
            if sid == "zero_mean_unit_variance":
                out.append(("volume_zmuv", float(kw.eps), None))
            else:
                out.append(("volume_range",
                            (float(kw.min_percentile), float(kw.max_percentile)), float(kw.eps)))
        elif sid == "clip":
            out.append(("clip", kw.min, kw.max))
        else:
            raise InputError(f"{path}: preprocessing {sid!r} is not supported by volseg's "
                             "blockwise engine")
    return PackageNormalization(tuple(out))


def _activation(output: Any, n_channels: int, path: Path) -> str:
    found = [p for p in output.postprocessing if p.id != "ensure_dtype"]
    for p in output.postprocessing:
        if p.id == "ensure_dtype" and p.kwargs.dtype not in ("float32", "float64"):
            raise InputError(f"{path}: postprocessing ensure_dtype {p.kwargs.dtype} is not "
                             "supported (volseg blends float outputs)")
    if not found:
        data = output.data
        rng = getattr(data, "range", (None, None)) if not isinstance(data, list) else (None, None)
        low, high = rng
        if low is not None and high is not None and low >= 0 and high <= 1:
            return "none"
        return "auto"
    if len(found) > 1:
        raise InputError(f"{path}: postprocessing {[p.id for p in found]} is not supported "
                         "(volseg reads logits or probabilities and derives labels itself)")
    step = found[0]
    if step.id == "sigmoid":
        return "sigmoid"
    if step.id == "softmax" and str(step.kwargs.axis) == "channel" and n_channels > 1:
        return "softmax"
    raise InputError(f"{path}: postprocessing {step.id!r} is not supported (volseg reads "
                     "logits or probabilities and derives labels itself)")


def read_package(path: str | os.PathLike[str]) -> PackageSpec:
    """Read a bioimage.io package into a :class:`PackageSpec` (no weights are loaded).

    Raises
    ------
    InputError
        One line naming the package and the problem (invalid description, an axis,
        a processing step or weights volseg cannot run).
    """
    p = Path(path)
    return _package_spec(_load_description(p), p)


def _package_spec(descr: Any, p: Path) -> PackageSpec:
    """Map a loaded description onto volseg (see the module notes)."""
    from bioimageio.spec.model import v0_5

    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise InputError(f"{p}: the model has {len(descr.inputs)} inputs and "
                         f"{len(descr.outputs)} outputs; volseg runs one-input, one-output "
                         "models")
    inp, out = descr.inputs[0], descr.outputs[0]
    in_axes = [str(a.id) for a in inp.axes]
    out_axes = [str(a.id) for a in out.axes]
    spatial: list[str] = []
    batch_one = False
    in_channels = 1
    sizes: dict[str, tuple[int, int]] = {}
    scales: dict[str, tuple[float, str | None]] = {}
    for axis in inp.axes:
        aid = str(axis.id)
        if isinstance(axis, v0_5.BatchAxis):
            batch_one = axis.size == 1
        elif isinstance(axis, v0_5.ChannelAxis):
            in_channels = axis.size
        elif isinstance(axis, v0_5.SpaceInputAxis) and aid in ("z", "y", "x"):
            spatial.append(aid)
            size = _size(axis)
            if size is None:
                raise InputError(f"{p}: input axis {aid!r} has a size given by another axis; "
                                 "volseg needs fixed or min/step sizes")
            sizes[aid] = size
            scales[aid] = (float(axis.scale), axis.unit)
        else:
            raise InputError(f"{p}: input axis {aid!r} ({axis.type}) cannot be mapped onto "
                             "volseg's z, y, x volumes")
    if sorted(spatial) not in (["x", "y", "z"], ["x", "y"]):
        raise InputError(f"{p}: input space axes {spatial}; volseg needs z, y, x or y, x")
    hints = _hints(descr)
    classes: tuple[str, ...] = ("foreground",)
    offsets: dict[str, int] = {}
    for axis in out.axes:
        aid = str(axis.id)
        if isinstance(axis, v0_5.BatchAxis):
            continue
        if isinstance(axis, v0_5.ChannelAxis):
            classes = tuple(str(n) for n in axis.channel_names)
            continue
        if not isinstance(axis, v0_5.SpaceOutputAxis | v0_5.SpaceOutputAxisWithHalo) or \
                aid not in spatial:
            raise InputError(f"{p}: output axis {aid!r} ({axis.type}) has no input axis volseg "
                             "can map it to")
        scale = float(axis.scale)
        if scale != scales[aid][0]:
            raise InputError(f"{p}: output axis {aid!r} is at another scale than the input "
                             f"({scale} vs {scales[aid][0]}); volseg needs outputs on the "
                             "input grid")
        out_size = axis.size
        if isinstance(out_size, v0_5.SizeReference):
            if str(out_size.axis_id) != aid:
                raise InputError(f"{p}: output axis {aid!r} follows input axis "
                                 f"{out_size.axis_id!r}; volseg needs each axis to follow "
                                 "itself")
            offsets[aid] = int(out_size.offset)
        elif isinstance(out_size, int) and sizes[aid][1] == 0:
            offsets[aid] = int(out_size) - sizes[aid][0]
        else:
            raise InputError(f"{p}: output axis {aid!r} has a size volseg cannot relate to "
                             "the input")
    if sorted(offsets) != sorted(spatial):
        missing = sorted(set(spatial) - set(offsets))
        raise InputError(f"{p}: the output has no axis {missing[0]!r}")
    context: int | None = None
    receptive_field: int | None = None
    if "z" not in spatial:
        kind = "2.5d"
        context = int(hints.get("context") or 1)
        if in_channels % context:
            raise InputError(f"{p}: config.volseg.context {context} does not divide the "
                             f"{in_channels} input channels")
        if context == 1 and in_channels != 1:
            names = getattr(next(a for a in inp.axes if isinstance(a, v0_5.ChannelAxis)),
                            "channel_names", [])
            raise InputError(f"{p}: 2-D input with {in_channels} channels on axis 'channel' "
                             f"({', '.join(map(str, names))}) and no z axis; volseg maps "
                             "one-channel sections (or config.volseg.context sections) only")
        in_channels //= context
        if set(offsets.values()) != {0}:
            raise InputError(f"{p}: 2-D outputs must have the input's size")
    else:
        offset = set(offsets.values())
        if len(offset) != 1 or next(iter(offset)) > 0:
            raise InputError(f"{p}: output sizes differ from the input's by {offsets}; volseg "
                             "runs same-size outputs or valid networks smaller by the same "
                             "amount on every axis")
        o = next(iter(offset))
        kind = "3d" if o == 0 else "centre_voxel"
        if o < 0:
            receptive_field = 1 - o
    patch = _patch(hints, sizes, spatial, inp, _test_shape(descr, p), kind,
                   receptive_field, context)
    formats = tuple(w for w in ("torchscript", "onnx") if getattr(descr.weights, w) is not None)
    if not formats:
        present = [w for w, entry in descr.weights if entry is not None]
        if present == ["pytorch_state_dict"]:
            raise InputError(f"{p}: its only weights are pytorch_state_dict, a pickle; volseg "
                             "never unpickles: use a package with ONNX or TorchScript weights")
        raise InputError(f"{p}: weights {', '.join(present)}; volseg runs ONNX or TorchScript "
                         "weights")
    if inp.dtype not in ("float32", "float64"):
        raise InputError(f"{p}: the input data type is {inp.dtype}; volseg feeds float32")
    voxel = None
    if all(scales[a][1] in _UNIT_NM for a in spatial):
        nm = {a: scales[a][0] * _UNIT_NM[str(scales[a][1])] for a in spatial}
        voxel = (nm.get("z", nm["y"]), nm["y"], nm["x"])
    spec = PackageSpec(
        source=str(p), name=str(descr.name), kind=kind, patch_size=patch,
        in_channels=in_channels, classes=classes,
        normalization=_preprocessing(inp.preprocessing, p),
        activation=_activation(out, len(classes), p), context=context,
        receptive_field=receptive_field, voxel_size=voxel, weights=formats,
        input_axes=tuple(in_axes), output_axes=tuple(out_axes), batch_one=batch_one,
        sizes=sizes,
    )
    spec.check_patch(patch)
    return spec


def _hints(descr: Any) -> dict[str, Any]:
    """``config.volseg`` of a package exported by volseg (``{}`` for others)."""
    config = descr.config
    extra = getattr(config, "model_extra", None) or {}
    hints = extra.get("volseg") if isinstance(extra, dict) else None
    return dict(hints) if isinstance(hints, dict) else {}


def _patch(hints: dict[str, Any], sizes: dict[str, tuple[int, int]], spatial: list[str],
           inp: Any, test_shape: tuple[int, ...] | None, kind: str,
           receptive_field: int | None, context: int | None) -> tuple[int, int, int]:
    """The default output patch: volseg's hint, the test tensor's size, or about 64."""
    if hints.get("patch_size"):
        return tuple(int(v) for v in hints["patch_size"])  # type: ignore[return-value]
    order = [str(a.id) for a in inp.axes]
    window: dict[str, int] = {}
    for aid in spatial:
        low, step = sizes[aid]
        size = None
        if test_shape is not None and len(test_shape) == len(order):
            size = int(test_shape[order.index(aid)])
            if size < low or (step and (size - low) % step) or (not step and size != low):
                size = None
        if size is None:
            size = low if step == 0 else low + step * max(0, math.ceil((_DEFAULT_EDGE - low)
                                                                       / step))
        window[aid] = size
    shrink = (receptive_field or 1) - 1
    if kind == "2.5d":
        return (1, window["y"], window["x"])
    return tuple(window[a] - shrink for a in "zyx")  # type: ignore[return-value]


# ------------------------------------------------------------------------ loading
class PackageNet(nn.Module):
    """A package's network behind volseg's layout: ``(N, C, [Z,] Y, X)`` in and out.

    Parameters
    ----------
    core
        The TorchScript module or :class:`~volseg.models.backends.OnnxModule`.
    spec
        The package's spec (axis orders, fixed batch of one).
    """

    def __init__(self, core: nn.Module, spec: PackageSpec) -> None:
        super().__init__()
        self.core = core
        spatial = ("y", "x") if spec.kind == "2.5d" else ("z", "y", "x")
        self._std_in = ("batch", "channel", *spatial)
        self._in = spec.input_axes
        self._out = spec.output_axes
        self._batch_one = spec.batch_one

    def _to(self, x: Any, src: tuple[str, ...], dst: tuple[str, ...]) -> Any:
        for name in src:
            if name not in dst:
                x = x.squeeze(src.index(name))
                src = tuple(a for a in src if a != name)
        for i, name in enumerate(dst):
            if name not in src:
                x = x.unsqueeze(i)
                src = (*src[:i], name, *src[i:])
        return x.permute(*[src.index(a) for a in dst])

    def forward(self, x: Any) -> Any:
        """Run the package's network on ``(N, C, ...)`` input."""
        import torch

        if self._batch_one and x.shape[0] > 1:
            return torch.cat([self.forward(x[i:i + 1]) for i in range(x.shape[0])], 0)
        if "batch" not in self._in and x.shape[0] > 1:
            return torch.cat([self.forward(x[i:i + 1]) for i in range(x.shape[0])], 0)
        if self._in != self._std_in:
            x = self._to(x, self._std_in, self._in).contiguous()
        y = self.core(x)
        if self._out != self._std_in:
            y = self._to(y, self._out, self._std_in).contiguous()
        return y


def load_package(path: str | os.PathLike[str], *, backend: str = "auto") -> tuple[nn.Module,
                                                                                   PackageSpec]:
    """Load a package's network for the engine: ``(module, spec)``.

    Parameters
    ----------
    path
        The package (``.zip``, ``rdf.yaml`` or its folder).
    backend
        ``"auto"`` (TorchScript when present, else ONNX), ``"torch"`` (TorchScript) or
        ``"onnx"``.

    Raises
    ------
    InputError
        The package cannot be read, or lacks the asked-for weights.
    """
    from volseg.models.backends import load_torchscript, onnx_module

    p = Path(path)
    descr = _load_description(p)
    spec = _package_spec(descr, p)
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fmt = {"auto": spec.weights[0] if "torchscript" not in spec.weights else "torchscript",
           "torch": "torchscript", "onnx": "onnx"}[backend]
    if fmt not in spec.weights:
        raise InputError(f"{p} has no {fmt} weights (it has {', '.join(spec.weights)}); "
                         "choose another --backend")
    entry = getattr(descr.weights, fmt)
    data = _reader_bytes(entry, what=f"{fmt} weights", path=p)
    where = f"{p}:{entry.source}"
    if fmt == "onnx":
        if getattr(entry, "external_data", None) is not None:
            raise InputError(f"{p}: ONNX weights with external data are not supported")
        core: nn.Module = onnx_module(data, name=where)
    else:
        core = load_torchscript(data, name=where)
    return PackageNet(core, spec).eval(), spec


__all__ = [
    "BACKENDS",
    "RDF_NAMES",
    "PackageNet",
    "PackageNormalization",
    "PackageSpec",
    "check_input_sizes",
    "is_package",
    "load_package",
    "read_package",
]
