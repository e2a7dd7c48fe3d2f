"""MONAI's residual ``UNet``, built from torch alone (same modules, parameters and outputs).

``from monai.networks.nets import UNet`` runs ``monai/__init__``, which imports every
MONAI subpackage (transforms, data, apps, matplotlib, ...): about 1.5–2 s on a small
CPU, more than building and loading the network itself, and ``monai.networks`` cannot
be imported on its own (its ``__init__`` pulls in ``monai.apps`` and ``monai.data``).
volseg's default architecture (``unet3d`` / ``unet25d`` with ``variant="unet"``) is
therefore assembled here from the same ``torch.nn`` pieces in the same order:

* the module tree of ``monai.networks.nets.UNet`` (``model.0.conv.unit0.conv.weight``,
  ``model.1.submodule...``, the ``adn`` blocks with ``N``/``D``/``A``), so a state
  dict saved from either loads strictly into the other;
* the same layers — convolutions with "same" padding, strided down-sampling in the
  first convolution of each level, transposed convolutions with
  ``output_padding = stride - 1`` up-sampling, residual units with a strided 3³ (or
  1³ channel-adapting) residual convolution, ``N D A`` = norm, dropout, PReLU;
* and therefore the same outputs (``tests/models/test_unet.py`` compares them with
  MONAI's for 2-D/3-D, batch/instance norm, 0–2 residual units, per-axis strides).

Notes
-----
Reference: Kerfoot et al., "Left-ventricle quantification using residual U-Net",
STACOM 2018 (the architecture of MONAI's ``UNet``); MONAI ``monai.networks.nets.unet``,
``monai.networks.blocks.convolutions`` (``Convolution``, ``ResidualUnit``) and
``monai.networks.blocks.acti_norm.ADN``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["UNet", "fold_batch_norm", "fuse_activations"]

Stride = int | Sequence[int]
Norm = Literal["batch", "instance"]


def _per_axis(value: Stride, ndim: int) -> tuple[int, ...]:
    return (value,) * ndim if isinstance(value, int) else tuple(int(v) for v in value)


def _conv_type(ndim: int, transposed: bool = False) -> type[nn.Module]:
    if transposed:
        return nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d
    return nn.Conv2d if ndim == 2 else nn.Conv3d


class _ADN(nn.Sequential):
    """MONAI's ``ADN`` block in ``"NDA"`` order: norm, dropout, PReLU."""

    def __init__(self, ndim: int, channels: int, norm: Norm, dropout: float) -> None:
        super().__init__()
        if norm == "batch":
            self.add_module("N", (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(channels))
        else:
            self.add_module("N", (nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d)(
                channels))
        self.add_module("D", nn.Dropout(dropout))
        self.add_module("A", nn.PReLU())


class _Convolution(nn.Sequential):
    """MONAI's ``Convolution``: a (transposed) convolution, then ``adn`` unless ``conv_only``."""

    def __init__(self, ndim: int, cin: int, cout: int, *, strides: Stride, norm: Norm,
                 dropout: float, conv_only: bool = False, transposed: bool = False) -> None:
        super().__init__()
        stride = _per_axis(strides, ndim)
        conv: nn.Module
        if transposed:
            conv = _conv_type(ndim, True)(cin, cout, kernel_size=3, stride=stride, padding=1,
                                          output_padding=tuple(s - 1 for s in stride))
        else:
            conv = _conv_type(ndim)(cin, cout, kernel_size=3, stride=stride, padding=1)
        self.add_module("conv", conv)
        if not conv_only:
            self.add_module("adn", _ADN(ndim, cout, norm, dropout))


class _ResidualUnit(nn.Module):
    """MONAI's ``ResidualUnit``: ``subunits`` convolutions plus a residual path."""

    def __init__(self, ndim: int, cin: int, cout: int, *, strides: Stride, subunits: int,
                 norm: Norm, dropout: float, last_conv_only: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.residual: nn.Module = nn.Identity()
        channels, stride = cin, strides
        subunits = max(1, subunits)
        for index in range(subunits):
            self.conv.add_module(f"unit{index:d}", _Convolution(
                ndim, channels, cout, strides=stride, norm=norm, dropout=dropout,
                conv_only=last_conv_only and index == subunits - 1))
            channels, stride = cout, 1
        per_axis = _per_axis(strides, ndim)
        if math.prod(per_axis) != 1 or cin != cout:
            strided = math.prod(per_axis) != 1
            self.residual = _conv_type(ndim)(cin, cout, 3 if strided else 1, per_axis,
                                             1 if strided else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``conv(x) + residual(x)``."""
        res: torch.Tensor = self.residual(x)
        out: torch.Tensor = self.conv(x)
        if not torch.is_grad_enabled():  # inference: add into the fresh output in place
            return out.add_(res)
        return out + res


class _SkipConnection(nn.Module):
    """``cat([x, submodule(x)], dim=1)`` (MONAI's ``SkipConnection`` in ``cat`` mode)."""

    def __init__(self, submodule: nn.Module) -> None:
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input and the deeper levels' output, stacked along the channels."""
        return torch.cat([x, self.submodule(x)], dim=1)


class UNet(nn.Module):
    """A residual UNet equal to ``monai.networks.nets.UNet`` (kernel 3, PReLU, ``"NDA"``).

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels, out_channels
        Input channels and output (logit) channels.
    channels
        Channels per level, top first (at least 2).
    strides
        Down-sampling of each level transition (``len(channels) - 1`` entries), an
        int or a per-axis tuple each.
    num_res_units
        Residual units per level (0: plain convolutions).
    norm
        ``"batch"`` or ``"instance"`` (affine-free, as MONAI's default).
    dropout
        Dropout probability after each normalisation.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 channels: Sequence[int], strides: Sequence[Stride], num_res_units: int = 0,
                 norm: Norm = "instance", dropout: float = 0.0) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2:
            raise ValueError("the length of `channels` should be no less than 2.")
        if len(strides) < len(channels) - 1:
            raise ValueError("the length of `strides` should equal to `len(channels) - 1`.")
        self.dimensions = spatial_dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels, self.strides = tuple(channels), tuple(strides)
        self.num_res_units, self.norm, self.dropout = num_res_units, norm, dropout
        self.model = self._block(in_channels, out_channels, self.channels, self.strides, True)

    def _block(self, cin: int, cout: int, channels: Sequence[int], strides: Sequence[Stride],
               is_top: bool) -> nn.Module:
        c, s = channels[0], strides[0]
        sub: nn.Module
        if len(channels) > 2:
            sub = self._block(c, c, channels[1:], strides[1:], False)
            upc = 2 * c
        else:
            sub = self._down(c, channels[1], 1)
            upc = c + channels[1]
        return nn.Sequential(self._down(cin, c, s), _SkipConnection(sub),
                             self._up(upc, cout, s, is_top))

    def _down(self, cin: int, cout: int, strides: Stride) -> nn.Module:
        if self.num_res_units > 0:
            return _ResidualUnit(self.dimensions, cin, cout, strides=strides,
                                 subunits=self.num_res_units, norm=self.norm,
                                 dropout=self.dropout)
        return _Convolution(self.dimensions, cin, cout, strides=strides, norm=self.norm,
                            dropout=self.dropout)

    def _up(self, cin: int, cout: int, strides: Stride, is_top: bool) -> nn.Module:
        conv = _Convolution(self.dimensions, cin, cout, strides=strides, norm=self.norm,
                            dropout=self.dropout, transposed=True,
                            conv_only=is_top and self.num_res_units == 0)
        if self.num_res_units == 0:
            return conv
        return nn.Sequential(conv, _ResidualUnit(
            self.dimensions, cout, cout, strides=1, subunits=1, norm=self.norm,
            dropout=self.dropout, last_conv_only=is_top))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, one channel per output class, at the input's resolution."""
        out: torch.Tensor = self.model(x)
        return out


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Fold each batch norm of a :class:`UNet` in eval mode into the convolution before it.

    In eval mode a batch norm is a per-channel affine map of its input,
    ``gamma (y - mean) / sqrt(var + eps) + beta``, so it can be merged into the weights
    and bias of the (transposed) convolution that feeds it (``"NDA"``: the norm comes
    right after the convolution): one pass over each feature map less, about 10 % of
    a CPU forward pass of the default network.  The outputs agree with the unfolded
    network to float32 rounding (~1e-7 relative).  Modules other than this file's
    convolutions are left as they are; ``module`` is changed in place and returned.

    Parameters
    ----------
    module
        A network in eval mode (inference only: the folded network has no batch
        statistics to train).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if module.training:
        raise ValueError("fold_batch_norm is for networks in eval mode")
    for found in module.modules():
        if not isinstance(found, _Convolution) or "adn" not in found._modules:
            continue
        block: Any = found
        norm = block.adn._modules.get("N")
        if isinstance(norm, (nn.BatchNorm2d, nn.BatchNorm3d)) and norm.track_running_stats:
            conv = block.conv
            transposed = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
            block.conv = fuse_conv_bn_eval(conv, norm, transpose=transposed)
            block.adn.N = nn.Identity()
    return module


def _onednn_available() -> bool:
    ops = torch.ops.mkldnn
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    try:
        x = torch.ones(1, 1, 2, 2, 2)
        ops._convolution_pointwise(x, torch.ones(1, 1, 1, 1, 1), None, [0, 0, 0], [1, 1, 1],
                                   [1, 1, 1], 1, "leaky_relu", [0.5], "")
        ops._convolution_transpose_pointwise(x, torch.ones(1, 1, 1, 1, 1), None, [0, 0, 0],
                                             [0, 0, 0], [1, 1, 1], [1, 1, 1], 1,
                                             "leaky_relu", [0.5], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return True


class _ConvPReLU(nn.Module):
    """A (transposed) convolution followed by a one-parameter PReLU, in one oneDNN call.

    A PReLU with one parameter ``a`` is the leaky ReLU of slope ``a``, which oneDNN
    applies as a post-op of the convolution (``torch.ops.mkldnn._convolution_pointwise``,
    what ``torch.compile`` emits on CPUs): the same float32 result without a second pass
    over the feature map.  Off the CPU, in other dtypes or with gradients it runs the two
    ops separately.
    """

    def __init__(self, conv: nn.Module, slope: float) -> None:
        super().__init__()
        self.conv = conv
        self.slope = float(slope)
        self.transposed = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``leaky_relu(conv(x), slope)``."""
        c: Any = self.conv
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return nn.functional.leaky_relu(c(x), self.slope)
        args = (list(c.padding), list(c.stride), list(c.dilation), c.groups, "leaky_relu",
                [self.slope], "")
        if self.transposed:
            out: torch.Tensor = torch.ops.mkldnn._convolution_transpose_pointwise(
                x, c.weight, c.bias, list(c.padding), list(c.output_padding), *args[1:])
            return out
        out = torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, *args)
        return out


def fuse_activations(module: nn.Module) -> nn.Module:
    """Run each convolution + PReLU of a folded :class:`UNet` as one oneDNN call (CPU).

    For blocks whose norm is gone (:func:`fold_batch_norm`) or absent and whose
    activation is a one-parameter PReLU; dropout is the identity in eval mode.  Bit
    for bit the outputs of the unfused network (``tests/models/test_unet.py``), about
    a tenth to a sixth less time per CPU forward pass.  A no-op when this torch has
    no oneDNN post-op convolutions; ``module`` is changed in place and returned.
    """
    if module.training:
        raise ValueError("fuse_activations is for networks in eval mode")
    if not _onednn_available():
        return module
    for found in module.modules():
        if not isinstance(found, _Convolution) or "adn" not in found._modules:
            continue
        block: Any = found
        adn = block.adn._modules
        act = adn.get("A")
        if not isinstance(adn.get("N"), nn.Identity) or not isinstance(act, nn.PReLU):
            continue
        if act.weight.numel() != 1:
            continue
        block.conv = _ConvPReLU(block.conv, float(act.weight.detach().reshape(())))
        block.adn = nn.Identity()
    return module
