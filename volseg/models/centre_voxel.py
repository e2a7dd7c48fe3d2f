"""Centre-voxel CNN: valid (unpadded) 3-D convolutions classifying the centre of an R³ cube.

Because no layer pads, strides or pools with a stride, the network is fully
convolutional: an input of ``R + n - 1`` voxels per axis gives ``n`` outputs per
axis, and output ``i`` equals the prediction for the cube ``[i, i + R)`` alone.  So a
whole block is classified in one forward pass (inference) and a whole annotated block
gives one loss term per annotated voxel (training).

Two layer plans reach a receptive field of exactly R:

``"plain"``
    ``(R - 1) // 2`` convolutions 3³ (each adds 2) plus, for even R, one 2³ (adds 1).
``"dilated"``
    The dense ("filter rarefaction") equivalent of a network with pooling: 3³
    convolutions whose dilation doubles every two layers (1, 1, 2, 2, 4, 4, ...),
    each adding ``2 d``; the remainder is made up by smaller dilations.  Far fewer
    layers for large R (R = 32: 8 layers instead of 16).

The centre of an even R is the voxel with ``R // 2`` voxels before it and
``R // 2 - 1`` after it, i.e. output ``i`` belongs to input voxel ``i + R // 2``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Variant = Literal["plain", "dilated"]


def layer_plan(receptive_field: int, variant: Variant = "plain") -> list[tuple[int, int]]:
    """Return ``(kernel, dilation)`` of each convolution reaching exactly ``receptive_field``.

    Parameters
    ----------
    receptive_field
        R >= 2.
    variant
        ``"plain"`` or ``"dilated"``.

    Returns
    -------
    list of (int, int)
        Layers in order; their receptive field ``1 + sum((k - 1) * d)`` equals R.

    Examples
    --------
    >>> layer_plan(6)
    [(3, 1), (3, 1), (2, 1)]
    >>> layer_plan(16, "dilated")
    [(3, 1), (3, 1), (3, 1), (3, 2), (3, 2), (2, 1)]
    """
    if receptive_field < 2:
        raise ValueError(f"receptive_field must be >= 2, got {receptive_field}")
    remaining = receptive_field - 1
    layers: list[tuple[int, int]] = []
    if variant == "plain":
        layers = [(3, 1)] * (remaining // 2)
        if remaining % 2:
            layers.append((2, 1))
        return layers
    if variant != "dilated":
        raise ValueError(f"centre_voxel variant must be 'plain' or 'dilated', got {variant!r}")
    dilations: list[int] = []
    level = 0
    while True:
        d = 2 ** (level // 2)
        if 2 * d > remaining:
            break
        dilations.append(d)
        remaining -= 2 * d
        level += 1
    # make up the rest with the largest dilations that still fit
    d = 2 ** (level // 2)
    while remaining >= 2:
        while 2 * d > remaining:
            d //= 2
        dilations.append(d)
        remaining -= 2 * d
    layers = [(3, d) for d in sorted(dilations)]
    if remaining:
        layers.append((2, 1))
    return layers


class CentreVoxelNet(nn.Module):
    """A stack of valid 3-D convolutions followed by a per-voxel (1³) classifier head.

    Parameters
    ----------
    in_channels, out_channels
        Image channels and classes.
    receptive_field
        R: the cube edge that decides one output voxel.
    variant
        ``"plain"`` or ``"dilated"`` (see :func:`layer_plan`).
    width
        Channels of the convolution layers.
    head_width
        Channels of the hidden 1³ layer of the head.
    norm
        ``"batch"`` (BatchNorm; position independent in eval mode, so the dense
        equivalence holds) or ``"none"``.  Instance/group norm would break it.
    dropout
        Dropout probability before the last layer.

    Notes
    -----
    :meth:`features` returns the last feature map before the head, so that another
    head (e.g. masked centre regression for self-supervised pre-training) can reuse
    the backbone: ``net.head = nn.Conv3d(net.feature_channels, 1, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        receptive_field: int,
        variant: Variant = "plain",
        width: int = 32,
        head_width: int = 64,
        norm: Literal["batch", "none"] = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.receptive_field = receptive_field
        layers: list[nn.Module] = []
        channels = in_channels
        for kernel, dilation in layer_plan(receptive_field, variant):
            layers.append(
                nn.Conv3d(channels, width, kernel, dilation=dilation, bias=norm == "none")
            )
            if norm == "batch":
                layers.append(nn.BatchNorm3d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.backbone = nn.Sequential(*layers)
        self.feature_channels = width
        self.head = nn.Sequential(
            nn.Conv3d(width, head_width, 1),
            nn.ReLU(inplace=True),
            nn.Dropout3d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv3d(head_width, out_channels, 1),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(N, width, D - R + 1, H - R + 1, W - R + 1)``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, C, D - R + 1, H - R + 1, W - R + 1)`` for input ``(N, Cin, D, H, W)``."""
        r = self.receptive_field
        if min(x.shape[-3:]) < r:
            raise ValueError(
                f"centre-voxel input {tuple(x.shape[-3:])} is smaller than the receptive "
                f"field {r} on some axis"
            )
        return self.head(self.backbone(x))
