"""Starting a network from another model file: backbone weights in, head re-initialised.

``train.init: PATH`` (and the fine-tuning after ``volseg pretrain``) builds the network
of the training config and fills it from a volseg model file:

* the file must hold the same architecture with the same hyper-parameters
  (``params``); a tensor of another shape is a one-line error naming the layer;
* the **head** is the set of tensors whose shape depends on the number of output
  channels (found by building the network with one more class and comparing the
  shapes, so it is right for every registered architecture without a list of layer
  names): with the same classes (same names, same order) everything is loaded, so
  training continues from the file's weights; with other classes the head keeps its
  fresh initialisation and everything else (the backbone) is loaded;
* :func:`freeze_backbone` stops the gradients of the backbone (and keeps its
  batch-norm statistics) for the first ``freeze_backbone_epochs`` epochs.

Nothing is unpickled: the weights are read with :mod:`safetensors` like
:func:`volseg.models.load_model`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volseg.errors import ConfigError
from volseg.models.files import _read_file_spec, _read_header
from volseg.models.registry import build_model
from volseg.models.spec import ModelSpec

__all__ = ["InitReport", "freeze_backbone", "head_tensors", "init_weights"]


def head_tensors(spec: ModelSpec) -> frozenset[str]:
    """Names of the state-dict tensors whose shape depends on the number of classes.

    Parameters
    ----------
    spec
        The network's spec.

    Returns
    -------
    frozenset of str
        The output layer(s): for a centre-voxel CNN ``head.3.weight`` and
        ``head.3.bias``, for a MONAI UNet its last convolution(s).

    Notes
    -----
    The network is built twice, with ``C`` and ``C + 1`` output channels; the tensors
    whose shapes differ, and the other tensors of their layers (e.g. a batch norm's
    ``num_batches_tracked``), are the head.
    """
    base = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    wider = spec.model_copy(update={"classes": (*spec.classes, "\0extra")})
    more = {k: tuple(v.shape) for k, v in build_model(wider).state_dict().items()}
    changed = {k for k in base if more.get(k) != base[k]}
    owners = {k.rpartition(".")[0] for k in changed}  # and their layers' other tensors
    return frozenset(k for k in base if k in changed or k.rpartition(".")[0] in owners)


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_weights` did.

    Attributes
    ----------
    path
        The model file.
    loaded
        Tensors copied from the file.
    reinitialised
        Head tensors left at their fresh initialisation (classes differ).
    same_classes
        True when the file has the config's classes: training continues from it.
    source
        The file's spec.
    """

    path: str
    loaded: tuple[str, ...]
    reinitialised: tuple[str, ...]
    same_classes: bool
    source: ModelSpec
    head: frozenset[str] = field(default_factory=frozenset)

    def summary(self) -> dict[str, Any]:
        """A JSON-able record for the trained model's spec (``training.init``)."""
        out: dict[str, Any] = {
            "path": self.path, "architecture": self.source.architecture,
            "classes": list(self.source.classes), "same_classes": self.same_classes,
            "loaded_tensors": len(self.loaded),
            "reinitialised": list(self.reinitialised),
        }
        pre = self.source.training.get("pretraining")
        if pre is not None:
            out["pretraining"] = pre
        return out


def init_weights(
    module: nn.Module, spec: ModelSpec, path: str | os.PathLike[str], *, key: str = "init"
) -> InitReport:
    """Fill ``module`` (built from ``spec``) with the weights of a model file.

    Parameters
    ----------
    module
        The freshly built network (``build_model(spec)``); changed in place.
    spec
        Its spec (architecture, params and classes of the training config).
    path
        A volseg model file (``.safetensors`` written by ``volseg train`` or
        ``volseg pretrain``).
    key
        How errors name the option (``init`` -> ``"init: ..."``).

    Returns
    -------
    InitReport
        Which tensors were loaded and which kept their initialisation.

    Raises
    ------
    InputError
        The file is missing or not a volseg model (see :func:`volseg.models.read_spec`).
    ConfigError
        Another architecture, a layer of another shape or a missing layer: one line
        naming the layer and the fix.
    """
    from safetensors import safe_open

    path = Path(path)
    source = _read_file_spec(path)
    if source.architecture != spec.architecture:
        raise ConfigError(
            f"{key}: {path} holds a {source.architecture} network, the config trains "
            f"{spec.architecture}; set model.architecture to {source.architecture} or "
            "start from another file"
        )
    header = _read_header(path)
    shapes = {n: tuple(int(d) for d in info["shape"]) for n, info in header.items()
              if n != "__metadata__"}
    target = {k: v for k, v in module.state_dict().items()}
    same = tuple(source.classes) == tuple(spec.classes)
    head = head_tensors(spec)
    skip = frozenset() if same else head
    for name, tensor in target.items():
        if name in skip:
            continue
        if name not in shapes:
            raise ConfigError(
                f"{key}: layer {name!r} of the network is not in {path}; use the file's "
                f"model.params ({_params(source)})"
            )
        if shapes[name] != tuple(tensor.shape):
            raise ConfigError(
                f"{key}: layer {name!r} has shape {shapes[name]} in {path} but "
                f"{tuple(tensor.shape)} in the network; use the file's model.params "
                f"({_params(source)})"
            )
    loaded: list[str] = []
    with safe_open(str(path), framework="pt", device="cpu") as f, torch.no_grad():
        for name, tensor in target.items():
            if name in skip:
                continue
            value = f.get_tensor(name)
            tensor.copy_(value.to(tensor.dtype))
            loaded.append(name)
    return InitReport(path=str(path), loaded=tuple(loaded),
                      reinitialised=tuple(sorted(skip & set(target))), same_classes=same,
                      source=source, head=head)


def _params(spec: ModelSpec) -> str:
    import json

    return json.dumps(spec.params, sort_keys=True)


def freeze_backbone(module: nn.Module, head: Iterable[str], frozen: bool) -> None:
    """Freeze (or release) every parameter outside ``head``.

    Parameters
    ----------
    module
        The network, in training mode.
    head
        State-dict names of the head tensors (:func:`head_tensors`).
    frozen
        True: no gradients for the backbone and its batch-norm layers in eval mode
        (their running statistics stay those of the file); False: everything trains.
    """
    head = set(head)
    for name, param in module.named_parameters():
        if name not in head:
            param.requires_grad_(not frozen)
    if frozen:
        for name, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm) and \
                    f"{name}.weight" not in head:
                sub.eval()
