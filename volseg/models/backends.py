"""Networks as files other tools run: ONNX and TorchScript, written and read without pickle.

Writing
-------
:func:`write_torchscript` traces a network (``torch.jit.trace``) and
:func:`write_onnx` exports it with ``torch.onnx.export`` (the ``torch.export``-based
exporter) with dynamic batch and spatial sizes; both check the file against the
network on an example before returning.

Reading
-------
:func:`load_torchscript` and :func:`onnx_module` return ``torch.nn.Module`` objects
that the inference engine calls like any network (a float32 tensor
``(N, C, ...)`` in, one out).

What is never loaded
--------------------
A TorchScript file is a zip archive whose ``*.pkl`` members are pickles read by
TorchScript's own restricted unpickler (C++; it resolves only TorchScript classes
and tensor-rebuilding functions: a pickle naming ``posix.system`` fails with
``Unknown type name``).  Before handing the bytes to ``torch.jit.load``,
:func:`check_torchscript` also refuses, with one line naming the member:

* any pickle opcode that names a global outside TorchScript's own set
  (``__torch__.*`` classes, ``torch._utils._rebuild_tensor*``, ``torch.*Storage``,
  ``collections.OrderedDict``, ``torch.jit._pickle.*``);
* TorchScript code defining ``__setstate__`` (code that runs while loading);

and after loading, a program whose graphs call an operator that touches files
(``aten::save``, ``aten::from_file``).  ONNX files are protobuf (no pickle) and are
run by onnxruntime.
"""

from __future__ import annotations

import io
import pickletools
import re
import threading
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from volseg.errors import ConfigError, InputError

ONNX_OPSET = 18
"""Opset of the ONNX files written by :func:`write_onnx`."""

_ALLOWED_GLOBALS = re.compile(
    r"^(__torch__(\..+)? \S+|torch\._utils _rebuild_\w+|torch \w+Storage|"
    r"collections OrderedDict|torch\.jit\._pickle \w+)$"
)
_FILE_OPS = ("aten::save", "aten::from_file")
_STRING_OPS = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "STRING",
               "BINSTRING", "SHORT_BINSTRING")


# ------------------------------------------------------------------------- writing
def write_torchscript(module: nn.Module, example: torch.Tensor, path: Any) -> None:
    """Trace ``module`` on ``example`` and save the TorchScript program to ``path``.

    Raises
    ------
    RuntimeError
        If the traced program's output on ``example`` differs from the module's.
    """
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in torch but is bioimage.io's torch format; a size
        # check in a forward pass is traced as a constant (TracerWarning), harmlessly
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example,  # type: ignore[no-untyped-call]
                                 check_trace=False)
        expected = module(example)
        got = traced(example)
        if not torch.equal(expected, got):
            raise RuntimeError("the traced TorchScript program differs from the network")
        torch.jit.save(traced, str(path))


def write_onnx(
    module: nn.Module, example: torch.Tensor, path: Any, *, dynamic: Sequence[bool] | None = None
) -> int:
    """Export ``module`` to ONNX with a dynamic batch and spatial sizes; return the opset.

    Parameters
    ----------
    module
        The network (eval mode is set).
    example
        An input ``(N, C, ...)`` of a valid size.
    path
        The ``.onnx`` file.
    dynamic
        Per spatial axis, whether its size is dynamic (default: all).

    Raises
    ------
    RuntimeError
        If onnxruntime's output on ``example`` is not within 1e-4 of the module's.
    """
    from torch.export import Dim

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("exporting ONNX needs onnx and onnxscript: pip install "
                          "'volseg[bioimageio]'") from None
    module = module.eval()
    spatial = example.ndim - 2
    flags = list(dynamic) if dynamic is not None else [True] * spatial
    shapes: dict[int, Any] = {0: Dim.DYNAMIC}
    for axis, flag in enumerate(flags):
        if flag:
            shapes[2 + axis] = Dim.DYNAMIC
    import logging

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module, (example,), input_names=["input"], output_names=["output"],
                dynamic_shapes=(shapes,), dynamo=True, opset_version=ONNX_OPSET,
                verbose=False,
            )
        finally:
            quiet.setLevel(level)
    assert program is not None
    program.save(str(path))
    net = onnx_module(_read_bytes(path), name=str(path))
    with torch.no_grad():
        diff = float((net(example) - module(example)).abs().max())
    if not diff <= 1e-4:
        raise RuntimeError(f"onnxruntime differs from the network by {diff}")
    return ONNX_OPSET


def _read_bytes(path: Any) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------------------- reading
def check_torchscript(data: bytes, *, name: str) -> None:
    """Refuse a TorchScript archive whose pickles or code could run anything on load.

    Raises
    ------
    InputError
        One line naming ``name``, the archive member and what it holds.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.namelist()
    except zipfile.BadZipFile:
        raise InputError(f"{name} is not a TorchScript file (not a zip archive)") from None
    if not any(m.endswith("/data.pkl") for m in members):
        raise InputError(f"{name} is not a TorchScript file (no data.pkl)")
    for member in members:
        if member.endswith(".pkl"):
            for found in _pickle_globals(archive.read(member), f"{name}:{member}"):
                if not _ALLOWED_GLOBALS.match(found):
                    raise InputError(
                        f"{name}: {member} names {found.replace(' ', '.')!r}, which is not "
                        "part of a TorchScript program; volseg does not load pickles that "
                        "could run code"
                    )
        elif "/code/" in member and member.endswith(".py"):
            text = archive.read(member).decode("utf-8", errors="replace")
            if re.search(r"def\s+__setstate__", text):
                raise InputError(
                    f"{name}: {member} defines __setstate__ (code run while loading); "
                    "volseg loads only plain TorchScript networks"
                )


def _pickle_globals(data: bytes, where: str) -> list[str]:
    """Return ``"module name"`` of every global a pickle refers to (GLOBAL/STACK_GLOBAL)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in _STRING_OPS and isinstance(arg, str | bytes):
                strings.append(arg.decode() if isinstance(arg, bytes) else arg)
            elif op.name in ("GLOBAL", "INST"):
                found.append(str(arg))
            elif op.name == "STACK_GLOBAL":
                found.append(" ".join(strings[-2:]) if len(strings) >= 2 else "?")
    except Exception as exc:  # malformed pickle
        raise InputError(f"{where} is not a readable pickle ({exc})") from None
    return found


def load_torchscript(data: bytes, *, name: str) -> nn.Module:
    """Load a TorchScript program after :func:`check_torchscript`; on the CPU, eval mode.

    Raises
    ------
    InputError
        For a refused or unreadable archive, or a program calling a file operator.
    """
    check_torchscript(data, name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(  # type: ignore[no-untyped-call]
                io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{name} could not be loaded as TorchScript: "
                         f"{first[0] if first else type(exc).__name__}") from None
    for kind in _graph_ops(module.inlined_graph):
        if kind in _FILE_OPS:
            raise InputError(f"{name}: the TorchScript program calls {kind}; volseg runs no "
                             "program that touches files")
    loaded: nn.Module = module.eval()
    return loaded


def _graph_ops(graph: Any) -> set[str]:
    """Every operator kind in a TorchScript graph, including nested blocks."""
    kinds: set[str] = set()
    stack = [graph]
    while stack:
        for node in stack.pop().nodes():
            kinds.add(node.kind())
            stack.extend(node.blocks())
    return kinds


class OnnxModule(nn.Module):
    """An ONNX network run by onnxruntime behind the ``nn.Module`` call interface.

    Parameters
    ----------
    data
        The ``.onnx`` file's bytes (weights inside the file).
    name
        How errors name it.

    Notes
    -----
    One ``InferenceSession`` per intra-op thread count: a forward pass uses as many
    threads as torch is set to (:func:`torch.get_num_threads`, which the predictor
    sets per block task), so Dask's concurrent block tasks each run a one-thread pass
    as they do with torch.  ``session.run`` is thread-safe.  onnxruntime runs on the
    CPU here; inputs on another device are copied.
    """

    def __init__(self, data: bytes, *, name: str) -> None:
        super().__init__()
        import onnxruntime

        self._ort = onnxruntime
        self._data = data
        self.name = name
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        session = self._session(1)
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def _session(self, threads: int) -> Any:
        with self._lock:
            session = self._sessions.get(threads)
            if session is None:
                options = self._ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.log_severity_level = 3
                try:
                    session = self._ort.InferenceSession(
                        self._data, sess_options=options, providers=["CPUExecutionProvider"])
                except Exception as exc:
                    first = str(exc).strip().splitlines()
                    raise InputError(f"{self.name} could not be loaded as ONNX: "
                                     f"{first[0] if first else type(exc).__name__}") from None
                self._sessions[threads] = session
            return session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on ``x`` (float32), returning float32 on ``x``'s device."""
        session = self._session(max(1, torch.get_num_threads()))
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = session.run([self.output_name], {self.input_name: arr})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def onnx_module(data: bytes, *, name: str) -> OnnxModule:
    """Return an :class:`OnnxModule` for an ONNX file's bytes (``InputError`` if unreadable)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(f"{name}: running ONNX weights needs onnxruntime: pip install "
                          "'volseg[bioimageio]'") from None
    return OnnxModule(data, name=name)


__all__ = [
    "ONNX_OPSET",
    "OnnxModule",
    "check_torchscript",
    "load_torchscript",
    "onnx_module",
    "write_onnx",
    "write_torchscript",
]
