"""The network registry: architectures by name, their hyper-parameters and builders.

Each architecture has a strict parameter schema (unknown keys are errors; defaults
are filled in so that a saved spec records every hyper-parameter), a ``kind`` that
tells inference how to feed it, a check of the spec (e.g. patch size divisible by the
network's down-sampling) and a builder returning a ``torch.nn.Module``.

============== ============== =====================================================
name           kind           network
============== ============== =====================================================
``unet3d``     ``3d``         MONAI ``UNet`` (:mod:`volseg.models.unet`, the same
                              network built without importing MONAI) /
                              ``BasicUNet`` / ``AttentionUnet`` /
                              ``SegResNet`` (``variant``), 3-D
``unet25d``    ``2.5d``       the same networks in 2-D; input channels are
                              ``context`` neighbouring sections (k = 1: plain 2-D);
                              ``variant="attention"`` adds attention gates
``centre_voxel`` ``centre_voxel`` :class:`~volseg.models.centre_voxel.CentreVoxelNet`
============== ============== =====================================================

New architectures are added with :func:`register_architecture`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

#: How a network consumes a volume.
Kind = Literal["3d", "2.5d", "centre_voxel"]


class SpecLike(Protocol):
    """What the builders and checks of an architecture read of a spec.

    :class:`volseg.models.ModelSpec` is one; the registry does not import it (the spec
    depends on the registry, not the other way round).
    """

    @property
    def architecture(self) -> str:
        """Registry key."""

    @property
    def in_channels(self) -> int:
        """Image channels."""

    @property
    def out_channels(self) -> int:
        """Output (logit) channels, one per class."""

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """``(z, y, x)`` output window."""

    @property
    def params(self) -> dict[str, Any]:
        """Architecture hyper-parameters."""

UNetVariant = Literal["unet", "basic", "attention", "segresnet"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UNetParams(_Params):
    """Hyper-parameters of ``unet3d`` and ``unet25d``.

    Attributes
    ----------
    variant
        ``"unet"`` (MONAI ``UNet``, residual units), ``"basic"`` (``BasicUNet``: exactly
        six widths, four 2x down-samplings), ``"attention"`` (``AttentionUnet``:
        attention gates on the skip connections) or ``"segresnet"`` (``SegResNet``:
        ``widths[0]`` initial filters, ``len(blocks_down)`` levels).
    widths
        Channels per level (default per variant).
    strides
        Down-sampling per level transition, an int or a per-axis tuple each
        (``len(widths) - 1`` entries; default 2 everywhere).  Use e.g. ``[1, 2, 2]``
        in 3-D for anisotropic data.  Ignored by ``basic`` and ``segresnet``.
    num_res_units
        Residual units per level (``unet`` only).
    norm
        ``"batch"`` or ``"instance"`` (``unet``, ``basic``).
    dropout
        Dropout probability.
    blocks_down
        Residual blocks per level (``segresnet`` only).
    context
        ``unet25d`` only: the odd number k of neighbouring sections fed as channels.
    downsample
        Run the UNet at 1/``downsample`` resolution (in-plane for ``unet25d``, on
        every axis for ``unet3d``): the input is average-pooled, the logits are
        upsampled back (bilinear / trilinear), so the module still maps a
        full-resolution patch to full-resolution logits.  ``downsample**2`` (or
        ``**3``) times cheaper and a wider field of view; for large structures
        (mitochondria), not thin ones (membranes).
    """

    variant: UNetVariant = "unet"
    widths: tuple[int, ...] | None = None
    strides: tuple[int | tuple[int, ...], ...] | None = None
    num_res_units: int = Field(2, ge=0)
    norm: Literal["batch", "instance"] = "batch"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    blocks_down: tuple[int, ...] = (1, 2, 2, 4)
    context: int = Field(1, ge=1)
    downsample: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _defaults(self) -> UNetParams:
        if self.widths is None:
            self.widths = {
                "unet": (16, 32, 64, 128),
                "attention": (16, 32, 64, 128),
                "basic": (16, 16, 32, 64, 128, 16),
                "segresnet": (16,),
            }[self.variant]
        if any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths}")
        if self.variant == "basic" and len(self.widths) != 6:
            raise ValueError("variant 'basic' needs exactly 6 widths")
        if self.variant in ("unet", "attention"):
            if len(self.widths) < 2:
                raise ValueError(f"variant {self.variant!r} needs at least 2 widths")
            if self.strides is None:
                self.strides = (2,) * (len(self.widths) - 1)
            if len(self.strides) != len(self.widths) - 1:
                raise ValueError(
                    f"strides needs len(widths) - 1 = {len(self.widths) - 1} entries, "
                    f"got {len(self.strides)}"
                )
        else:
            self.strides = None
        if self.context % 2 == 0:
            raise ValueError(f"context must be odd, got {self.context}")
        return self

    def divisor(self, ndim: int) -> tuple[int, ...]:
        """Per-axis factor the spatial patch size must be a multiple of."""
        return tuple(d * self.downsample for d in self._net_divisor(ndim))

    def _net_divisor(self, ndim: int) -> tuple[int, ...]:
        if self.variant == "basic":
            return (16,) * ndim
        if self.variant == "segresnet":
            return (2 ** (len(self.blocks_down) - 1),) * ndim
        out = [1] * ndim
        for s in self.strides or ():
            per_axis = (s,) * ndim if isinstance(s, int) else tuple(s)
            if len(per_axis) != ndim:
                raise ValueError(f"stride {s} must be an int or have {ndim} entries")
            out = [o * p for o, p in zip(out, per_axis, strict=True)]
        return tuple(out)


class CentreVoxelParams(_Params):
    """Hyper-parameters of ``centre_voxel`` (see :class:`.CentreVoxelNet`).

    Attributes
    ----------
    receptive_field
        R, the edge of the cube deciding one voxel (e.g. 16 or 32).
    variant
        ``"plain"`` (3³ convolutions) or ``"dilated"`` (doubling dilations).
    width, head_width
        Channels of the convolutions and of the hidden 1³ head layer.
    norm
        ``"batch"`` or ``"none"``.
    dropout
        Dropout before the last layer.
    """

    receptive_field: int = Field(16, ge=2)
    variant: Literal["plain", "dilated"] = "plain"
    width: int = Field(32, ge=1)
    head_width: int = Field(64, ge=1)
    norm: Literal["batch", "none"] = "batch"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@dataclass(frozen=True)
class Architecture:
    """A registered network family.

    Attributes
    ----------
    name
        Registry key (``ModelSpec.architecture``).
    kind
        ``"3d"``, ``"2.5d"`` or ``"centre_voxel"``.
    params_model
        Pydantic model of the hyper-parameters (strict; fills defaults).
    build
        ``build(spec, params) -> nn.Module``.
    check
        ``check(spec, params)``: raise ``ValueError`` if the spec cannot work.
    """

    name: str
    kind: Kind
    params_model: type[BaseModel]
    build: Callable[[SpecLike, Any], nn.Module]
    check: Callable[[SpecLike, Any], None]

    def parse_params(self, params: dict[str, Any]) -> BaseModel:
        """Validate ``params`` (raises ``pydantic.ValidationError``/``ValueError``)."""
        return self.params_model.model_validate(params)

    def validate(self, spec: SpecLike) -> None:
        """Check ``spec`` against this architecture (raises ``ValueError``)."""
        self.check(spec, self.parse_params(spec.params))


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(arch: Architecture, *, replace: bool = False) -> None:
    """Add an architecture to the registry (``replace=True`` to redefine a name)."""
    if arch.name in _REGISTRY and not replace:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch


def get_architecture(name: str) -> Architecture:
    """Return the registered architecture ``name`` (``ValueError`` if unknown)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def available_architectures() -> tuple[str, ...]:
    """Names of the registered architectures."""
    return tuple(sorted(_REGISTRY))


# -- UNets (MONAI) ------------------------------------------------------------------
class Rescaled(nn.Module):
    """Run ``net`` at 1/``factor`` resolution: average-pool in, interpolate logits out.

    Parameters
    ----------
    net
        The wrapped network (state-dict keys are prefixed ``net.``).
    factor
        Integer down-sampling factor of every spatial axis.
    spatial_dims
        2 or 3.
    """

    def __init__(self, net: nn.Module, factor: int, spatial_dims: int) -> None:
        super().__init__()
        self.net = net
        self.factor = factor
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.pool = nn.AvgPool2d(factor) if spatial_dims == 2 else nn.AvgPool3d(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution."""
        y = self.net(self.pool(x))
        return nn.functional.interpolate(y, size=x.shape[2:], mode=self.mode,
                                         align_corners=False)


def _build_unet(spatial_dims: int, in_channels: int, out_channels: int, p: UNetParams) -> nn.Module:
    net = _build_unet_core(spatial_dims, in_channels, out_channels, p)
    if p.downsample > 1:
        return Rescaled(net, p.downsample, spatial_dims)
    return net


def _build_unet_core(
    spatial_dims: int, in_channels: int, out_channels: int, p: UNetParams
) -> nn.Module:
    assert p.widths is not None
    if p.variant == "unet":  # MONAI's UNet rebuilt from torch alone: no `import monai`
        from volseg.models.unet import UNet

        assert p.strides is not None
        return UNet(spatial_dims, in_channels, out_channels, p.widths, p.strides,
                    num_res_units=p.num_res_units, norm=p.norm, dropout=p.dropout)
    from monai.networks.nets import AttentionUnet, BasicUNet, SegResNet

    if p.variant == "attention":
        assert p.strides is not None
        return AttentionUnet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
            channels=p.widths, strides=p.strides,  # type: ignore[arg-type]
            dropout=p.dropout,
        )
    if p.variant == "basic":
        norm: tuple[str, dict[str, Any]] = (
            ("batch", {}) if p.norm == "batch" else ("instance", {"affine": True})
        )
        return BasicUNet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
            features=p.widths, norm=norm, dropout=p.dropout,
        )
    return SegResNet(
        spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
        init_filters=p.widths[0], blocks_down=p.blocks_down,
        blocks_up=(1,) * (len(p.blocks_down) - 1),
        dropout_prob=p.dropout or None,
        norm=("GROUP", {"num_groups": math.gcd(8, p.widths[0])}),
    )


def _check_divisible(sizes: tuple[int, ...], divisor: tuple[int, ...], axes: str) -> None:
    bad = [s % d for s, d in zip(sizes, divisor, strict=True)]
    if any(bad):
        raise ValueError(
            f"patch_size {axes}={sizes} must be a multiple of the network's down-sampling "
            f"{divisor}"
        )


def _check_unet3d(spec: SpecLike, p: UNetParams) -> None:
    if p.context != 1:
        raise ValueError("'context' is a unet25d parameter; unet3d reads a 3-D patch")
    _check_divisible(spec.patch_size, p.divisor(3), "(z, y, x)")


def _check_unet25d(spec: SpecLike, p: UNetParams) -> None:
    if spec.patch_size[0] != 1:
        raise ValueError(
            f"unet25d patch_size must have z = 1 (one output section; the input is "
            f"'context' sections), got {spec.patch_size}"
        )
    _check_divisible(spec.patch_size[1:], p.divisor(2), "(y, x)")


def _build_unet3d(spec: SpecLike, p: UNetParams) -> nn.Module:
    return _build_unet(3, spec.in_channels, spec.out_channels, p)


def _build_unet25d(spec: SpecLike, p: UNetParams) -> nn.Module:
    return _build_unet(2, spec.in_channels * p.context, spec.out_channels, p)


# -- centre voxel --------------------------------------------------------------------
def _check_centre_voxel(spec: SpecLike, p: CentreVoxelParams) -> None:
    from volseg.models.centre_voxel import layer_plan

    layer_plan(p.receptive_field, p.variant)


def _build_centre_voxel(spec: SpecLike, p: CentreVoxelParams) -> nn.Module:
    from volseg.models.centre_voxel import CentreVoxelNet

    return CentreVoxelNet(
        spec.in_channels, spec.out_channels, receptive_field=p.receptive_field,
        variant=p.variant, width=p.width, head_width=p.head_width, norm=p.norm,
        dropout=p.dropout,
    )


register_architecture(Architecture("unet3d", "3d", UNetParams, _build_unet3d, _check_unet3d))
register_architecture(
    Architecture("unet25d", "2.5d", UNetParams, _build_unet25d, _check_unet25d)
)
register_architecture(
    Architecture(
        "centre_voxel", "centre_voxel", CentreVoxelParams, _build_centre_voxel,
        _check_centre_voxel,
    )
)


def build_model(spec: SpecLike) -> nn.Module:
    """Build the (untrained) network described by ``spec``.

    Parameters
    ----------
    spec
        A validated model spec.

    Returns
    -------
    torch.nn.Module
        In training mode, on the CPU.  Its outputs are logits, one channel per class:
        ``(N, C, Z, Y, X)`` for ``3d``, ``(N, C, Y, X)`` for ``2.5d`` (input
        ``(N, context * in_channels, Y, X)``), ``(N, C, a, b, c)`` for
        ``centre_voxel`` (input ``(N, Cin, R + a - 1, R + b - 1, R + c - 1)``).
    """
    arch = get_architecture(spec.architecture)
    params = arch.parse_params(spec.params)
    return arch.build(spec, params)

