"""The batched patch predictor: numpy batches in, float32 logits out.

A :class:`Predictor` wraps a cached network (:mod:`volseg.inference.cache`) with the
device, numeric precision, test-time augmentation and the input layout of the
network kind:

``"3d"``
    ``(N, Cin, Z, Y, X) -> (N, C, Z, Y, X)``.
``"2.5d"``
    A 2-D network fed ``k`` neighbouring sections as channels: the ``(N, Cin, k, Y, X)``
    input is reshaped to ``(N, Cin * k, Y, X)`` (channel ``c * k + j`` is image channel
    ``c`` of section ``j``; for one image channel simply the sections in z order) and
    the ``(N, C, Y, X)`` output becomes ``(N, C, 1, Y, X)``.
``"centre_voxel"``
    The dense network maps ``(N, Cin, a + R - 1, ...)`` to ``(N, C, a, ...)``.

On CUDA the forward pass runs under ``torch.autocast`` in bf16/fp16 when asked, with
``cudnn.benchmark`` on; host-to-device copies are issued from pinned memory on a
per-thread stream outside the model lock, so they overlap another thread's forward
pass.  On the CPU everything is float32 (``precision`` other than ``"fp32"`` is
ignored there, keeping CPU results exact and comparable with MONAI), and forward
passes are *not* serialised: Dask runs one block task per core, each forward pass
uses ``cpu_threads`` intra-op threads (one in block tasks), so the cores run several
forward passes at once and the reading, blending and encoding of one task fill
the gaps of the others.  On the benchmark machine (2 cores) two concurrent
one-thread passes of the default UNet deliver 17 % more voxels/s than one
two-thread pass, and a two-thread pass slowed down by 45 % when another thread
worked beside it (its threads wait for each other at every layer).
"""

from __future__ import annotations

import itertools
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import get_args

import numpy as np
import torch

from volseg.errors import ConfigError
from volseg.inference.cache import CachedModel
from volseg.inference.options import PRECISIONS
from volseg.models.registry import Kind

KINDS: tuple[str, ...] = get_args(Kind)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_local = threading.local()


def resolve_device(device: str | torch.device) -> torch.device:
    """Return the torch device for ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:i]"``.

    Raises
    ------
    ConfigError
        For ``"cuda"`` on a machine without a usable GPU, or an unknown name.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for but no CUDA GPU is available; "
                              f"use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def flip_sets(kind: str) -> list[tuple[int, ...]]:
    """Return the flips averaged by test-time augmentation (axes of ``(N, C, Z, Y, X)``).

    Eight for 3-D and centre-voxel networks (every subset of z, y, x), four for 2.5-D
    networks (subsets of y, x: the sections keep their order).
    """
    axes = (3, 4) if kind == "2.5d" else (2, 3, 4)
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    stream = getattr(_local, "stream", None)
    if stream is None:
        stream = torch.cuda.Stream(device=device)
        _local.stream = stream
    return stream


@dataclass
class Predictor:
    """Run a cached network on numpy batches.

    Parameters
    ----------
    model
        The cached network (on CUDA its lock serialises forward passes within a
        process; on the CPU passes run concurrently).
    kind
        ``"3d"``, ``"2.5d"`` or ``"centre_voxel"`` (input layout, see the module notes).
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; CUDA only).
    tta
        Average the logits over the flips of :func:`flip_sets`.
    cpu_threads
        Torch intra-op threads of a forward pass on the CPU (``torch.set_num_threads``,
        process-wide; ``None``, the default, leaves torch's setting alone; block tasks
        pass :attr:`volseg.inference.blockwise.ModelCall.cpu_threads`).
    """

    model: CachedModel
    kind: str = "3d"
    precision: str = "fp32"
    tta: bool = False
    cpu_threads: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.model.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        elif self.cpu_threads is not None and torch.get_num_threads() != self.cpu_threads:
            torch.set_num_threads(max(1, int(self.cpu_threads)))

    def _exclusive(self) -> AbstractContextManager[object]:
        """The model lock on CUDA (one pass at a time); nothing on the CPU."""
        return self.model.lock if self.model.device.type == "cuda" else nullcontext()

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        device = self.model.device
        if device.type != "cuda":
            return x
        stream = _copy_stream(device)
        with torch.cuda.stream(stream):
            x = x.pin_memory().to(device, non_blocking=True)
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "2.5d":
            n, c, k, y, w = x.shape
            x = x.reshape(n, c * k, y, w)
        layout = self.model.memory_format
        if layout is not torch.contiguous_format and x.ndim == (5 if layout is
                                                                 torch.channels_last_3d else 4):
            x = x.contiguous(memory_format=layout)
        device = self.model.device
        autocast = device.type == "cuda" and self.precision != "fp32"
        with self._exclusive(), torch.inference_mode():
            if device.type == "cuda":
                torch.cuda.current_stream(device).wait_stream(_copy_stream(device))
            if autocast:
                with torch.autocast("cuda", dtype=_DTYPES[self.precision]):
                    out = self.model.module(x)
            else:
                out = self.model.module(x)
            out = out.float()  # in the network's layout (see __call__)
        if self.kind == "2.5d":
            out = out[:, :, None]
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Return the logits of a batch, float32 on the host.

        Parameters
        ----------
        batch
            ``(N, Cin, ...)`` input patches (any real dtype; cast to float32).

        Returns
        -------
        numpy.ndarray
            ``(N, C, ...)`` float32 logits (averaged over flips with ``tta``, the sum
            accumulated in float64), in the network's memory layout: a channels-last
            network's logits come back channels-last (a strided view, channel stride
            1).  The blending reads them as they are; a transposing copy per batch
            cost more than the strided reads (``numpy.ascontiguousarray`` if needed).
        """
        x = self._to_device(batch)
        if not self.tta:
            return self._forward(x).cpu().numpy()
        total: np.ndarray | None = None
        flips = flip_sets(self.kind)
        with torch.inference_mode():
            for axes in flips:
                xi = torch.flip(x, axes) if axes else x
                out = self._forward(xi)
                out = torch.flip(out, axes) if axes else out
                arr = out.cpu().numpy().astype(np.float64)
                total = arr if total is None else total + arr
        assert total is not None
        return (total / len(flips)).astype(np.float32)
