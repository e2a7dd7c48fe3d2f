"""Model files: safetensors weights with the spec JSON in the header metadata.

A volseg model file is a plain `safetensors <https://huggingface.co/docs/safetensors>`_
file whose ``__metadata__`` holds three strings:

``format``
    ``"volseg-model"``
``volseg_format_version``
    :data:`FORMAT_VERSION` (an integer as a string)
``volseg_spec``
    the :class:`~volseg.models.spec.ModelSpec` as JSON

Loading reads the header, validates the spec, builds the network from the registry
and checks that every tensor name and shape matches it before copying the weights.
Nothing is ever unpickled and no code from the file is executed: a ``torch.save``
checkpoint or any other pickle is refused with an :class:`~volseg.errors.InputError`.

:func:`read_spec` and :func:`load_model` also accept a bioimage.io model package
(``.zip``, ``rdf.yaml`` or its folder, see :mod:`volseg.models.bioimageio`): this is
the one place where prediction meets packages, so ``volseg predict --model
PACKAGE.zip`` runs through the same blockwise engine.  ``backend="onnx"`` runs a
model file's network through onnxruntime (exported in memory when loaded).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from torch import nn

from volseg.errors import InputError, OutputExistsError
from volseg.models.registry import build_model
from volseg.models.spec import ModelSpec

if TYPE_CHECKING:
    from volseg.models.bioimageio import PackageSpec

FORMAT_NAME = "volseg-model"
FORMAT_VERSION = 1
"""Version of the file layout written by :func:`save_model` (readers accept <= this)."""

_MAX_HEADER = 100 * 1024 * 1024


def save_model(
    module: nn.Module, spec: ModelSpec, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``module``'s weights and ``spec`` to a safetensors model file.

    Parameters
    ----------
    module
        The network (any device/dtype; weights are stored as float32 on the CPU,
        buffers keep their dtype).
    spec
        Its spec; ``build_model(spec)`` must produce a network with the same tensors.
    path
        Output file (conventionally ``model.safetensors``).
    overwrite
        Replace an existing file; otherwise :class:`OutputExistsError`.

    Returns
    -------
    pathlib.Path
        The written path.  The file is written to a temporary name and renamed, so
        it is complete or absent.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    state = {}
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()
        state[name] = t.contiguous().clone()
    _check_matches(spec, {k: tuple(v.shape) for k, v in state.items()}, source="module")
    metadata = {
        "format": FORMAT_NAME,
        "volseg_format_version": str(FORMAT_VERSION),
        "volseg_spec": spec.to_json(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would give
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    """The process's umask (read by setting it, then put back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_spec(path: str | os.PathLike[str]) -> ModelSpec | PackageSpec:
    """Read only the spec of a model file (no weights), validating the header.

    A bioimage.io package gives its :class:`~volseg.models.bioimageio.PackageSpec`.

    Raises
    ------
    InputError
        The file is missing, not safetensors (e.g. a pickle / ``torch.save``
        checkpoint), not a volseg model, of a newer format, or its spec is invalid.
    """
    from volseg.models.bioimageio import is_package, read_package

    if is_package(path):
        return read_package(path)
    return _read_file_spec(Path(path))


def _read_file_spec(path: Path) -> ModelSpec:
    header = _read_header(path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or "volseg_spec" not in meta:
        raise InputError(
            f"{path} is a safetensors file but not a volseg model (no 'volseg_spec' "
            "metadata); train one with `volseg train` or save it with volseg.models.save_model"
        )
    try:
        version = int(meta.get("volseg_format_version", "0"))
    except ValueError:
        version = -1
    if version < 1 or version > FORMAT_VERSION:
        raise InputError(
            f"{path} has volseg model format version {meta.get('volseg_format_version')!r}; "
            f"this volseg reads versions 1..{FORMAT_VERSION} (upgrade volseg)"
        )
    try:
        return ModelSpec.from_json(meta["volseg_spec"])
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in first[1:3]) or first[0]
        raise InputError(f"{path} has an invalid model spec: {detail}") from None


def load_model(path: str | os.PathLike[str], *, backend: str = "auto"
               ) -> tuple[nn.Module, ModelSpec | PackageSpec]:
    """Load a model file written by :func:`save_model` (or a package); never unpickles.

    Parameters
    ----------
    path
        A ``.safetensors`` volseg model file, or a bioimage.io package.
    backend
        ``"auto"`` or ``"torch"``: the torch network (TorchScript for packages, else
        ONNX); ``"onnx"``: onnxruntime.

    Returns
    -------
    module : torch.nn.Module
        The network in eval mode, on the CPU, float32.
    spec : ModelSpec
        Its spec.

    Raises
    ------
    InputError
        One line naming the file and the problem: missing, a pickle / ``torch.save``
        file, another safetensors file, a newer format, an invalid spec, or weights
        whose names/shapes do not match the spec.
    """
    from volseg.models.bioimageio import BACKENDS, is_package, load_package

    if is_package(path):
        return load_package(path, backend=backend)
    if backend not in BACKENDS:
        from volseg.errors import ConfigError

        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    module, spec = _load_file(Path(path))
    if backend == "onnx":
        return _as_onnx(module, spec, str(path)), spec
    return module, spec


def _as_onnx(module: nn.Module, spec: ModelSpec, name: str) -> nn.Module:
    """The network exported to ONNX in memory and run by onnxruntime."""
    import torch

    from volseg.models.backends import onnx_module, write_onnx

    if spec.kind == "centre_voxel":
        from volseg.errors import ConfigError

        raise ConfigError(f"{name}: --backend onnx runs 3-D and 2.5-D UNets; centre-voxel "
                          "networks run with torch")
    size = spec.input_size if spec.kind != "2.5d" else spec.patch_size[1:]
    channels = spec.in_channels * (spec.context or 1)
    example = torch.zeros((1, channels, *size))
    with tempfile.TemporaryDirectory(prefix="volseg-onnx-") as tmp:
        target = Path(tmp) / "model.onnx"
        write_onnx(module, example, target)
        return onnx_module(target.read_bytes(), name=name)


def _load_file(path: Path) -> tuple[nn.Module, ModelSpec]:
    from safetensors import safe_open

    spec = _read_file_spec(path)
    header = _read_header(path)
    shapes = {
        name: tuple(int(d) for d in info["shape"])
        for name, info in header.items()
        if name != "__metadata__"
    }
    module = build_model(spec)
    _check_matches(spec, shapes, source=str(path), module=module)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"{path} could not be read as safetensors: {exc}") from None
    expected = module.state_dict()
    for name, tensor in state.items():
        if tensor.dtype != expected[name].dtype:
            state[name] = tensor.to(expected[name].dtype)
    module.load_state_dict(state, strict=True)
    module.eval()
    return module, spec


def _check_matches(spec: ModelSpec, shapes: dict[str, tuple[int, ...]], *, source: str,
                   module: nn.Module | None = None) -> None:
    """Raise InputError unless ``shapes`` are exactly the tensors of ``build_model(spec)``.

    ``module``: that network if already built (it is built once per load).
    """
    net = build_model(spec) if module is None else module
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of the wrong shape (e.g. {k!r}: {shapes[k]} instead of "
                f"{expected[k]})"
            )
        raise InputError(
            f"{source}: weights do not match the spec ({spec.architecture} "
            f"{json.dumps(spec.params, sort_keys=True)}): " + ", ".join(parts)
        )


def _read_header(path: Path) -> dict[str, Any]:
    """Parse the safetensors JSON header without touching the tensor data."""
    if not path.exists():
        raise InputError(f"model file {path} does not exist")
    if path.is_dir():
        raise InputError(f"model file {path} is a directory, not a .safetensors file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        # a safetensors header (8 length bytes, then JSON) can start like a pickle
        # (length 0x05 0x80 = 1408 bytes reads as b"\x80\x05") or a zip ("PK"): the
        # JSON's "{" tells them apart
        if (head[:2] == b"PK" or head[:1] == b"\x80") and head[8:9] != b"{":
            raise InputError(
                f"{path} is a pickle / torch.save checkpoint; volseg never unpickles model "
                "files: re-save the weights as safetensors with volseg.models.save_model"
            )
        if len(head) < 9:
            raise InputError(f"{path} is not a safetensors model file (too short)")
        (n,) = struct.unpack("<Q", head[:8])
        if n <= 1 or n > _MAX_HEADER or n > size - 8:
            raise InputError(f"{path} is not a safetensors model file (bad header)")
        raw = head[8:] + f.read(n - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path} is not a safetensors model file (bad header)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path} is not a safetensors model file (bad header)")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or "shape" not in info or "data_offsets" not in info:
            raise InputError(f"{path} is not a safetensors model file (bad tensor entry)")
        end = info["data_offsets"][1]
        if 8 + n + int(end) > size:
            raise InputError(f"{path} is truncated (tensor {name!r} extends past the end)")
    return header


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_model", "read_spec", "save_model"]
