"""The per-process model cache: each worker process loads a network once.

A prediction graph refers to its network through one small graph node, a
:class:`ModelRef`.  Every block task depends on that node; the cache turns it
into a ready module (on its device, in eval mode, densified for centre-voxel
networks) at most once per process and per device.

Shipping
--------
* A model **file** (or bioimage.io package) travels as its path (plus size,
  modification time and backend in the token, so a replaced file is reloaded);
  each process loads it with :func:`volseg.models.load_model`, which never
  unpickles.
* An in-memory ``torch.nn.Module`` travels inside the :class:`ModelRef` node.  With
  the local threaded scheduler nothing is copied at all.  On a ``distributed``
  cluster the node is one key of the graph: Dask serialises it once (pickle of the
  module: its class by reference, its state dict by value) and every worker fetches
  it once as a dependency, however many block tasks it runs.  The class must be
  importable on the workers (MONAI and volseg networks are).  This in-process
  pickling is never written to disk; model *files* carry no pickle.

The token of an in-memory module hashes its object id, class, ``repr`` and state
dict: the same module object with the same weights gives the same graph keys and
the same cache entry; changed weights give a new one.

Memory format
-------------
On the CPU a network loaded from a model file is converted to the channels-last
memory format (``NDHWC`` for 3-D convolutions, ``NHWC`` for 2-D), and the
predictor feeds it channels-last input: on the benchmark machine the
``bench_predict`` UNet's patches ran 35-40 % faster so (two concurrent one-thread
passes), with the same results up to float32 rounding.  A caller's in-memory module keeps the
format it has; its input follows the format of its first weight.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volseg.inference.dense import densify

_CACHE_SIZE = 4
_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, bool], CachedModel] = OrderedDict()
_stats = {"loads": 0, "hits": 0}


@dataclass
class CachedModel:
    """A ready network with the lock that serialises its forward passes.

    Attributes
    ----------
    module
        The network in eval mode on :attr:`device`.
    device
        Where it runs.
    spec
        The :class:`volseg.models.ModelSpec` when loaded from a file, else ``None``.
    lock
        Held around each forward pass on CUDA: one batch at a time uses the GPU
        while the other Dask threads read, pad, copy and accumulate.  CPU passes
        run concurrently (:mod:`volseg.inference.predictor`).
    memory_format
        The layout the network's input is given in (see the module notes).
    """

    module: nn.Module
    device: torch.device
    spec: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    memory_format: torch.memory_format = torch.contiguous_format


@dataclass(frozen=True)
class ModelRef:
    """What a block task needs to find (or load) its network in the process cache.

    Attributes
    ----------
    token
        Identity of the weights (file path+size+mtime, or a hash of the state dict).
    path
        Model file, or ``None`` for an in-memory module.
    module
        The in-memory module, or ``None`` for a file.
    dense
        Convert the network to its dense dilated equivalent (centre-voxel CNNs with
        pooling or strides), see :func:`volseg.inference.dense.densify`.
    backend
        How a model file's network runs: ``"auto"``, ``"torch"`` or ``"onnx"`` (see
        :func:`volseg.models.load_model`; packages included).
    """

    token: str
    path: str | None = None
    module: nn.Module | None = field(default=None, compare=False, repr=False)
    dense: bool = False
    backend: str = "auto"

    @classmethod
    def from_module(cls, module: nn.Module, *, dense: bool = False) -> ModelRef:
        """Reference an in-memory module (token: :func:`module_token`)."""
        return cls(token=module_token(module), module=module, dense=dense)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, dense: bool = False,
                  backend: str = "auto") -> ModelRef:
        """Reference a model file or package (token: resolved path, size, mtime, backend)."""
        p = Path(path).expanduser().resolve()
        st = p.stat()
        return cls(token=f"file:{p}:{st.st_size}:{st.st_mtime_ns}:{backend}", path=str(p),
                   dense=dense, backend=backend)


def module_token(module: nn.Module) -> str:
    """Return a SHA-1 of a module's identity, class, ``repr`` and state dict.

    The object id keeps two parameter-free modules of one class apart; the state
    dict makes a module whose weights changed since the last call a new entry.
    """
    h = hashlib.sha1(f"{id(module)}:{type(module).__module__}.{type(module).__qualname__}"
                     .encode(), usedforsecurity=False)
    h.update(repr(module).encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _on_device(module: nn.Module, device: torch.device) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return all(t.device == device for t in tensors)


def _first_weight(module: nn.Module) -> torch.Tensor | None:
    return next((t for t in module.parameters() if t.ndim in (4, 5)), None)


def channels_last_format(module: nn.Module) -> torch.memory_format:
    """Return the channels-last format for a module's convolutions.

    ``torch.channels_last_3d`` when its first 4-D/5-D weight is 5-D (3-D
    convolutions), ``torch.channels_last`` when it is 4-D, else
    ``torch.contiguous_format``.
    """
    weight = _first_weight(module)
    if weight is None:
        return torch.contiguous_format
    return torch.channels_last_3d if weight.ndim == 5 else torch.channels_last


def input_format(module: nn.Module) -> torch.memory_format:
    """Return the layout of a module's convolution weights, which its input should share.

    Decided by the first 4-D/5-D weight whose two layouts differ (a weight with one
    input channel or a 1-voxel kernel is both).
    """
    layout = channels_last_format(module)
    for tensor in module.parameters():
        if tensor.ndim not in (4, 5):
            continue
        contiguous = tensor.is_contiguous()
        last = tensor.is_contiguous(memory_format=layout)
        if contiguous != last:
            return layout if last else torch.contiguous_format
    return torch.contiguous_format


def _load(ref: ModelRef, device: torch.device) -> CachedModel:
    spec = None
    if ref.path is not None:
        from volseg.models import load_model

        module, spec = load_model(ref.path, backend=ref.backend)
    else:
        assert ref.module is not None
        module = ref.module
    if ref.dense:
        module = densify(module)  # a rewritten copy, or ``module`` itself
    if module is ref.module and not _on_device(module, device):
        # never move the caller's module to another device: work on a copy
        module = copy.deepcopy(module)
    module = module.to(device).eval()
    if ref.path is not None:  # a model file's own copy: batch norms into the convolutions
        from volseg.models.unet import fold_batch_norm

        module = fold_batch_norm(module)
    if ref.path is not None and device.type == "cpu":
        from volseg.models.unet import fuse_activations

        module = module.to(memory_format=channels_last_format(module))  # type: ignore[call-overload]
        module = fuse_activations(module)  # convolution + PReLU in one oneDNN call
    return CachedModel(module=module, device=device, spec=spec,
                       memory_format=input_format(module))


def get_model(ref: ModelRef, device: torch.device) -> CachedModel:
    """Return the cached network of ``ref`` on ``device``, loading it on first use.

    Thread-safe; at most :data:`_CACHE_SIZE` networks are kept (least recently used
    are dropped).
    """
    key = (ref.token, str(device), ref.dense)
    with _lock:
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
            _stats["hits"] += 1
            return entry
        entry = _load(ref, device)
        _stats["loads"] += 1
        _cache[key] = entry
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return entry


def cache_stats() -> dict[str, int]:
    """Return this process's cache counters: ``loads`` (networks built) and ``hits``."""
    with _lock:
        return {**_stats, "cached": len(_cache), "pid": os.getpid()}


def clear_cache() -> None:
    """Drop every cached network and reset the counters (tests)."""
    with _lock:
        _cache.clear()
        _stats.update(loads=0, hits=0)
