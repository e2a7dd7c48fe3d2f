"""The model spec: everything needed to rebuild a network and feed it data.

A :class:`ModelSpec` is a small frozen, validated record stored (as JSON) next to the
weights in every model file.  Prediction needs nothing else: the spec says which
network to build (``architecture`` + ``params``), how to normalise the raw image
(:class:`Normalization`), which classes the output channels are, the patch geometry
(``patch_size``, :attr:`ModelSpec.context`, :attr:`ModelSpec.receptive_field`) and
the voxel size the model was trained at.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from volseg.models.registry import Kind, get_architecture

NormalizationMode = Literal["meanstd", "percentile", "none"]


class Normalization(BaseModel):
    """Intensity normalisation of the raw image, with the statistics it needs.

    Attributes
    ----------
    mode
        ``"meanstd"``: ``(x - mean) / std``. ``"percentile"``: robust scaling
        ``(x - low) / (high - low)`` where ``low``/``high`` are the
        ``low_percentile``/``high_percentile`` (default 5 and 95) percentiles of the
        training image, so that the 5-95 % range maps to ``[0, 1]`` (values outside
        are kept, not clipped). ``"none"``: the identity (cast to float32).
    mean, std
        Statistics for ``"meanstd"``.
    low, high
        Statistics for ``"percentile"``.
    low_percentile, high_percentile
        Which percentiles ``low`` and ``high`` are (recorded for provenance).

    Notes
    -----
    The statistics are scalars over all channels: EM images have one channel.  They
    are computed by :meth:`from_sample` from a sample of chunks of the training
    image (see :func:`volseg.train.data.sample_normalization`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: NormalizationMode = "none"
    mean: float | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    low_percentile: float = Field(5.0, ge=0.0, le=100.0)
    high_percentile: float = Field(95.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _check_stats(self) -> Normalization:
        if self.mode == "meanstd":
            if self.mean is None or self.std is None:
                raise ValueError("normalization mode 'meanstd' needs 'mean' and 'std'")
            if not (math.isfinite(self.mean) and math.isfinite(self.std)) or self.std <= 0:
                raise ValueError("normalization 'std' must be a finite number > 0")
        elif self.mode == "percentile":
            if self.low is None or self.high is None:
                raise ValueError("normalization mode 'percentile' needs 'low' and 'high'")
            if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
                raise ValueError("normalization 'high' must be finite and greater than 'low'")
            if self.high_percentile <= self.low_percentile:
                raise ValueError("'high_percentile' must be greater than 'low_percentile'")
        return self

    @classmethod
    def from_sample(
        cls,
        sample: np.ndarray,
        *,
        mode: NormalizationMode = "percentile",
        low_percentile: float = 5.0,
        high_percentile: float = 95.0,
    ) -> Normalization:
        """Compute the statistics of ``mode`` from an intensity sample.

        Parameters
        ----------
        sample
            Raw intensities (any shape; typically a concatenation of sampled chunks).
        mode
            ``"meanstd"``, ``"percentile"`` or ``"none"``.
        low_percentile, high_percentile
            Percentiles for ``"percentile"`` mode.

        Returns
        -------
        Normalization
            With the statistics filled in.  A constant sample gets ``std = 1`` (or
            ``high = low + 1``) so that normalisation stays finite.
        """
        values = np.asarray(sample, dtype=np.float64).ravel()
        if mode == "none":
            return cls(mode="none")
        if values.size == 0:
            raise ValueError("cannot compute normalisation statistics from an empty sample")
        if mode == "meanstd":
            std = float(values.std())
            return cls(mode="meanstd", mean=float(values.mean()), std=std if std > 0 else 1.0)
        low, high = np.percentile(values, [low_percentile, high_percentile])
        low_f, high_f = float(low), float(high)
        if high_f <= low_f:
            high_f = low_f + 1.0
        return cls(
            mode="percentile", low=low_f, high=high_f,
            low_percentile=low_percentile, high_percentile=high_percentile,
        )

    def apply(self, block: np.ndarray) -> np.ndarray:
        """Return ``block`` normalised, as float32 (a new array; the input is untouched).

        Parameters
        ----------
        block
            Raw intensities of any shape and numeric dtype.

        Returns
        -------
        numpy.ndarray
            float32 array of the same shape.
        """
        out = np.array(block, dtype=np.float32, copy=True)
        if self.mode == "meanstd":
            assert self.mean is not None and self.std is not None
            out -= np.float32(self.mean)
            out /= np.float32(self.std)
        elif self.mode == "percentile":
            assert self.low is not None and self.high is not None
            out -= np.float32(self.low)
            out /= np.float32(self.high - self.low)
        return out




class ModelSpec(BaseModel):
    """Everything about a trained network except its weights (frozen, validated).

    Attributes
    ----------
    architecture
        Registry name: ``"unet3d"``, ``"unet25d"`` or ``"centre_voxel"``
        (see :func:`volseg.models.available_architectures`).
    params
        Hyper-parameters of the architecture (JSON-able); see the builders in
        :mod:`volseg.models.registry` for the keys each accepts.
    in_channels
        Image channels per section (1 for EM).
    classes
        Class names; the network has one output (logit) channel per class.  A
        one-class model is read through a sigmoid, otherwise through a softmax.
    ignore_id
        Label id meaning "not annotated" in the training labels (``None``: none).
    patch_size
        ``(z, y, x)`` size of the **output** window of one forward pass.  For
        ``"3d"`` models the input window is the same; for ``"2.5d"`` models ``z`` is
        1 and the input is :attr:`context` sections centred on the output section;
        for ``"centre_voxel"`` models the input is ``patch_size + receptive_field - 1``
        per axis (see :attr:`input_size`).
    normalization
        How raw intensities are normalised before the network.
    voxel_size
        ``(z, y, x)`` voxel size in nm of the training data, or ``None`` if unknown.
    training
        Summary of how the model was trained (config, data, best epoch, metrics).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    in_channels: int = Field(1, ge=1)
    classes: tuple[str, ...] = Field(min_length=1)
    ignore_id: int | None = 255
    patch_size: tuple[int, int, int]
    normalization: Normalization = Field(default_factory=Normalization)
    voxel_size: tuple[float, float, float] | None = None
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_params(cls, data: Any) -> Any:
        """Validate ``params`` against the architecture and record every default."""
        if isinstance(data, dict) and isinstance(data.get("architecture"), str):
            arch = get_architecture(data["architecture"])
            data = dict(data)
            data["params"] = arch.parse_params(dict(data.get("params") or {})).model_dump(
                mode="json"
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size must be positive, got {self.patch_size}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique, got {self.classes}")
        arch = get_architecture(self.architecture)  # raises ValueError if unknown
        arch.validate(self)
        return self

    # -- derived geometry -------------------------------------------------------------
    @property
    def kind(self) -> Kind:
        """How the network consumes a volume: ``"3d"``, ``"2.5d"`` or ``"centre_voxel"``."""
        return get_architecture(self.architecture).kind

    @property
    def out_channels(self) -> int:
        """Number of output (logit) channels: one per class."""
        return len(self.classes)

    @property
    def context(self) -> int | None:
        """For ``"2.5d"`` models the odd number k of sections fed as channels, else ``None``."""
        if self.kind != "2.5d":
            return None
        return int(self.params.get("context", 1))

    @property
    def receptive_field(self) -> int | None:
        """For ``"centre_voxel"`` models the edge R of the cube that decides one voxel.

        The network maps an ``R + a - 1`` input to ``a`` outputs per axis (valid
        convolutions).  Output voxel ``i`` is the class of input voxel
        ``i + R // 2``: for odd R the exact centre, for even R the voxel just past the
        middle (``R // 2`` voxels before it, ``R // 2 - 1`` after it), see
        :attr:`halo`.  ``None`` for other kinds.
        """
        if self.kind != "centre_voxel":
            return None
        return int(self.params["receptive_field"])

    @property
    def halo(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """Extra input voxels ``(before, after)`` per axis ``z, y, x`` around an output window.

        ``(0, 0)`` everywhere for 3-D models; ``(k // 2, k // 2)`` in z for 2.5-D
        models; ``(R // 2, R - 1 - R // 2)`` on every axis for centre-voxel models.
        """
        if self.kind == "2.5d":
            h = (self.context or 1) // 2
            return ((h, h), (0, 0), (0, 0))
        if self.kind == "centre_voxel":
            r = self.receptive_field or 1
            side = (r // 2, r - 1 - r // 2)
            return (side, side, side)
        return ((0, 0), (0, 0), (0, 0))

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(z, y, x)`` size of the input window of one forward pass (patch plus halo)."""
        (pz, py, px), ((bz, az), (by, ay), (bx, ax)) = self.patch_size, self.halo
        return (pz + bz + az, py + by + ay, px + bx + ax)

    def to_json(self) -> str:
        """Return the spec as a JSON string (what model files store)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse and validate a spec from JSON (raises ``pydantic.ValidationError``)."""
        return cls.model_validate_json(text)
