"""Dense evaluation of centre-voxel CNNs with pooling or strides ("filter rarefaction").

A centre-voxel network maps an R-cube to one voxel.  Without strides or pooling it
is fully convolutional: an ``R + n - 1`` input gives the ``n`` voxels' classes in one
pass.  With a stride ``s`` somewhere (a max-pool or a strided convolution) the plain
network returns only every ``s``-th voxel.  :func:`densify` rewrites it into a
network with stride 1 everywhere whose later layers are *dilated* by the product of
the strides before them; its output at every voxel equals the original network
applied to that voxel's own cube.

Notes
-----
Let layer :math:`\\ell` have kernel :math:`k_\\ell`, dilation :math:`\\delta_\\ell` and
stride :math:`s_\\ell`, and :math:`D_\\ell = \\prod_{m < \\ell} s_m`.  The dense network
has stride 1 and dilation :math:`\\delta_\\ell D_\\ell` in layer :math:`\\ell`; its
receptive field is :math:`R = 1 + \\sum_\\ell (k_\\ell - 1)\\, \\delta_\\ell D_\\ell`.
Sampling the dense output at multiples of :math:`D` reproduces the strided output;
every other offset is the strided network applied to a shifted input.

References
----------
Giusti, Cireşan, Masci, Gambardella, Schmidhuber, "Fast image scanning with deep
max-pooling convolutional neural networks", ICIP 2013; Long, Shelhamer, Darrell,
"Fully convolutional networks for semantic segmentation", CVPR 2015 (the
"shift-and-stitch"/"filter rarefaction" trick).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional

_POINTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Softmax, nn.LogSoftmax,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def _tuple(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (int(value),) * n


class DilatedAvgPool(nn.Module):
    """Average pooling with stride 1 and a dilation (torch's ``AvgPool`` has none).

    Parameters
    ----------
    kernel, dilation
        Per spatial axis.
    """

    def __init__(self, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> None:
        super().__init__()
        self.kernel = kernel
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average every channel over the dilated kernel (valid, stride 1)."""
        c = x.shape[1]
        n = len(self.kernel)
        count = 1
        for k in self.kernel:
            count *= k
        weight = torch.full((c, 1, *self.kernel), 1.0 / count, dtype=x.dtype, device=x.device)
        conv = (functional.conv1d, functional.conv2d, functional.conv3d)[n - 1]
        return conv(x, weight, dilation=self.dilation, groups=c)


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """Yield ``(parent, name, leaf)`` in registration order."""
    for name, child in module.named_children():
        if len(list(child.children())) == 0:
            yield module, name, child
        else:
            yield from _leaves(child, f"{prefix}{name}.")


def _strides(module: nn.Module) -> list[int]:
    out = []
    for _, _, leaf in _leaves(module):
        if isinstance(leaf, _CONV):
            out.append(max(_tuple(leaf.stride, 1)))
        elif isinstance(leaf, _MAXPOOL + _AVGPOOL):
            stride = leaf.stride if leaf.stride is not None else leaf.kernel_size
            out.append(max(_tuple(stride, 1)))
    return out


def needs_densify(module: nn.Module) -> bool:
    """Whether some convolution or pooling layer of ``module`` has a stride > 1."""
    return any(s > 1 for s in _strides(module))


def densify(module: nn.Module) -> nn.Module:
    """Return a stride-1, dilated copy of a valid-convolution network (or it unchanged).

    Parameters
    ----------
    module
        A centre-voxel CNN: unpadded convolutions, max/average pooling and pointwise
        layers, executed in registration order (e.g. nested ``nn.Sequential``).

    Returns
    -------
    torch.nn.Module
        ``module`` itself when nothing is strided, else a rewritten deep copy whose
        output at every voxel equals ``module`` applied to that voxel's cube.

    Raises
    ------
    ValueError
        For layers that cannot be made dense: padded convolutions or pooling,
        ``ceil_mode`` pooling, or any unknown layer with parameters (e.g. ``Linear``:
        write the head as a convolution).
    """
    if not needs_densify(module):
        return module
    dense = copy.deepcopy(module)
    factor: tuple[int, ...] | None = None
    for parent, name, leaf in list(_leaves(dense)):
        if isinstance(leaf, _CONV):
            n = len(leaf.kernel_size)
            factor = factor or (1,) * n
            pad = leaf.padding
            if pad != "valid" if isinstance(pad, str) else any(_tuple(pad, n)):
                raise ValueError(f"layer {name!r} pads; a centre-voxel network must not pad")
            stride = _tuple(leaf.stride, n)
            leaf.dilation = tuple(d * f for d, f in zip(_tuple(leaf.dilation, n), factor,
                                                        strict=True))
            leaf.stride = (1,) * n
            factor = tuple(f * s for f, s in zip(factor, stride, strict=True))
        elif isinstance(leaf, _MAXPOOL + _AVGPOOL):
            n = {1: 1, 2: 2, 3: 3}[int(type(leaf).__name__[-2])]
            factor = factor or (1,) * n
            kernel = _tuple(leaf.kernel_size, n)
            stride = _tuple(leaf.stride if leaf.stride is not None else kernel, n)
            if any(_tuple(leaf.padding, n)) or leaf.ceil_mode:
                raise ValueError(f"pooling layer {name!r} pads or uses ceil_mode")
            if isinstance(leaf, _MAXPOOL):
                dil = _tuple(leaf.dilation, n)
                new: nn.Module = type(leaf)(
                    kernel, stride=1,
                    dilation=tuple(d * f for d, f in zip(dil, factor, strict=True)),
                )
            else:
                new = DilatedAvgPool(kernel, factor)
            setattr(parent, name, new)
            factor = tuple(f * s for f, s in zip(factor, stride, strict=True))
        elif isinstance(leaf, _POINTWISE) or not any(True for _ in leaf.parameters()):
            if isinstance(leaf, (nn.Flatten, nn.Unflatten)):
                raise ValueError(f"layer {name!r} ({type(leaf).__name__}) is not convolutional")
            continue
        else:
            raise ValueError(
                f"cannot make layer {name!r} ({type(leaf).__name__}) dense; write it as a "
                f"convolution"
            )
    return dense


def receptive_field(module: nn.Module) -> int:
    """Return the receptive field R of a valid-convolution network along one axis.

    Notes
    -----
    :math:`R = 1 + \\sum_\\ell (k_\\ell - 1)\\, \\delta_\\ell D_\\ell` over convolutions and
    pooling layers in registration order (see the module notes); the largest value
    over axes is returned.
    """
    r = 1
    factor = 1
    for _, _, leaf in _leaves(module):
        if isinstance(leaf, _CONV):
            k, d, s = leaf.kernel_size[0], _tuple(leaf.dilation, 1)[0], _tuple(leaf.stride, 1)[0]
        elif isinstance(leaf, _MAXPOOL):
            k = _tuple(leaf.kernel_size, 1)[0]
            d = _tuple(leaf.dilation, 1)[0]
            s = _tuple(leaf.stride if leaf.stride is not None else k, 1)[0]
        elif isinstance(leaf, _AVGPOOL):
            k = _tuple(leaf.kernel_size, 1)[0]
            d, s = 1, _tuple(leaf.stride if leaf.stride is not None else k, 1)[0]
        elif isinstance(leaf, DilatedAvgPool):
            k, d, s = leaf.kernel[0], leaf.dilation[0], 1
        else:
            continue
        r += (k - 1) * d * factor
        factor *= s
    return r
