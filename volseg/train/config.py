"""The training configuration: one frozen, strict schema for ``volseg train`` and the stage.

Example (YAML)::

    image: ../shared/data/lucchi/training.tif
    labels: ../shared/data/lucchi/training_groundtruth.tif
    classes: [background, mitochondrion]
    label_map: {0: 0, 255: 1}          # raw label value -> class id
    model:
      architecture: unet25d
      params: {context: 3, widths: [16, 32, 64, 128]}
      patch_size: [1, 256, 256]
    split: {mode: z_ranges, train: [[0, 120]], validation: [[130, 165]], gap: 10}
    loss: [{name: ce, weight: 1.0}, {name: dice, weight: 1.0}]
    epochs: 30
    steps_per_epoch: 50

Every key and its default is documented on the models below.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from volseg.options import Options


class _Strict(Options):
    """Strict, frozen sub-configs."""


class ModelConfig(_Strict):
    """Which network to train.

    Attributes
    ----------
    architecture
        Registry name (``unet3d``, ``unet25d``, ``centre_voxel``).
    params
        Architecture hyper-parameters (see :mod:`volseg.models.registry`).
    patch_size
        ``(z, y, x)`` output window of one training sample (``z = 1`` for ``unet25d``).
    """

    architecture: str = "unet25d"
    params: dict[str, Any] = Field(default_factory=dict)
    patch_size: tuple[int, int, int] = (1, 128, 128)

    @model_validator(mode="after")
    def _architecture_takes_it(self) -> ModelConfig:
        """Check the patch size and parameters as the network will (so ``--check`` does)."""
        from types import SimpleNamespace

        from volseg.models.registry import get_architecture

        arch = get_architecture(self.architecture)  # ValueError naming the choices
        params = arch.parse_params(dict(self.params))
        arch.check(SimpleNamespace(architecture=self.architecture, params=self.params,
                                   patch_size=tuple(self.patch_size), in_channels=1,
                                   out_channels=2), params)
        return self


class NormalizationConfig(_Strict):
    """How normalisation statistics are computed (and then stored in the model spec).

    Attributes
    ----------
    mode
        ``"percentile"``: robust ``low_percentile``/``high_percentile`` scaling;
        ``"meanstd"``: global mean and standard deviation.
    sample_chunks
        Number of random chunks of the training region the statistics come from.
    """

    mode: Literal["percentile", "meanstd"] = "percentile"
    low_percentile: float = Field(5.0, ge=0, le=100)
    high_percentile: float = Field(95.0, ge=0, le=100)
    sample_chunks: int = Field(16, ge=1)


class SplitConfig(_Strict):
    """Leak-free train / validation split along z, with a gap.

    Attributes
    ----------
    mode
        ``"z_ranges"``: validation (and training) are slabs of sections;
        ``"slices"``: the annotated sections are split (for sparse labels on a few
        slices), each used with a slab of ``slab`` sections of image context.
    train, validation
        ``z_ranges``: lists of ``[start, stop)`` section ranges.  Without
        ``validation`` the last ``validation_fraction`` of the sections validate;
        without ``train`` everything further than ``gap`` from validation trains.
    validation_fraction
        Fraction of sections (``z_ranges``) or of annotated sections (``slices``)
        used for validation when not given explicitly.
    validation_slices
        ``slices``: the annotated sections that validate (default: the last ones).
    gap
        Minimum number of sections between any training region and any validation
        region (no voxel of the gap is read by either).
    slab
        ``slices``: sections of context on each side of an annotated section
        (default: what the model needs, at least its half patch depth).

    Notes
    -----
    Every sample reads only inside its own region: image context that would fall
    outside is mirrored from inside the region and labels outside are ignored.  So no
    training input ever touches a validation or gap section.
    """

    mode: Literal["z_ranges", "slices"] = "z_ranges"
    train: list[tuple[int, int]] | None = None
    validation: list[tuple[int, int]] | None = None
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    validation_slices: list[int] | None = None
    gap: int = Field(4, ge=0)
    slab: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> SplitConfig:
        for name in ("train", "validation"):
            for a, b in getattr(self, name) or ():
                if not 0 <= a < b:
                    raise ValueError(f"{name} range [{a}, {b}) must have 0 <= start < stop")
        return self


class SamplingConfig(_Strict):
    """Where training patches come from.

    Attributes
    ----------
    anchor_probability
        p: probability that a patch is centred on a voxel of an anchor class picked
        by the class-balanced, capped probabilities; otherwise it is centred on a
        uniformly chosen annotated voxel.
    anchor_classes
        Class ids to anchor on (default: every class but 0, the background).
    max_oversampling
        Cap on how much more often a class is anchored than its share of annotated
        voxels: ``q_c <= max_oversampling * f_c``.
    """

    anchor_probability: float = Field(0.8, ge=0, le=1)
    anchor_classes: list[int] | None = None
    max_oversampling: float = Field(10.0, ge=1)


class AugmentConfig(_Strict):
    """Data augmentation (default: flips, in-plane 90° rotations, mild intensity changes).

    Attributes
    ----------
    flips
        Random flips of every axis.
    rot90
        Random 90° rotations in the y-x plane (180° only for non-square patches).
    gamma, contrast
        Ranges of a random gamma (on the patch rescaled to [0, 1]) and a contrast
        factor; ``null`` disables.
    brightness
        Maximum additive shift (normalised units).
    noise_std
        Maximum standard deviation of additive Gaussian noise (normalised units).
    probability
        Probability of each intensity change.
    """

    flips: bool = True
    rot90: bool = True
    gamma: tuple[float, float] | None = (0.8, 1.25)
    contrast: tuple[float, float] | None = (0.9, 1.1)
    brightness: float = Field(0.05, ge=0)
    noise_std: float = Field(0.03, ge=0)
    probability: float = Field(0.5, ge=0, le=1)


ClassWeights = list[float] | Literal["auto"] | None


class _Term(_Strict):
    weight: float = Field(1.0, ge=0)


class CETerm(_Term):
    """Cross-entropy, mean over annotated voxels (``class_weights``: weighted CE)."""

    name: Literal["ce"]
    class_weights: ClassWeights = None


class WeightedCETerm(_Term):
    """Cross-entropy with class weights (``"auto"``: inverse frequency, capped)."""

    name: Literal["weighted_ce"]
    class_weights: ClassWeights = "auto"


class FocalTerm(_Term):
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t``."""

    name: Literal["focal"]
    gamma: float = Field(2.0, ge=0)
    class_weights: ClassWeights = None


class DiceTerm(_Term):
    """Soft Dice over softmax probabilities (MONAI ``DiceLoss``, masked)."""

    name: Literal["dice"]


class BCEDiceTerm(_Term):
    """Per-class sigmoid binary cross-entropy plus sigmoid Dice."""

    name: Literal["bce_dice"]


class TverskyTerm(_Term):
    """Tversky loss (MONAI ``TverskyLoss``, masked); ``alpha`` weighs FP, ``beta`` FN."""

    name: Literal["tversky"]
    alpha: float = Field(0.3, ge=0)
    beta: float = Field(0.7, ge=0)


LossTerm = Annotated[
    CETerm | WeightedCETerm | FocalTerm | DiceTerm | BCEDiceTerm | TverskyTerm,
    Field(discriminator="name"),
]


class OptimizerConfig(_Strict):
    """AdamW and the learning-rate schedule.

    Attributes
    ----------
    scheduler
        ``"plateau"``: ReduceLROnPlateau on the validation metric (``factor``,
        ``patience`` in validations); ``"cosine"``: cosine annealing over ``epochs``;
        ``"none"``.
    """

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(3, ge=0)
    min_lr: float = Field(1e-6, ge=0)


class TrainConfig(Options):
    """Configuration of ``volseg train`` and of the ``train`` workflow stage.

    Attributes
    ----------
    image, labels
        Inputs read with :func:`volseg.io.open_volume` (OME-Zarr, Zarr, TIFF, ...).
        In a workflow, relative paths name products of earlier stages first
        (default: the synth/convert products), else files relative to where the
        workflow was started.
    image_dataset, labels_dataset
        Dataset inside HDF5/Zarr/N5 containers, if needed.
    classes
        Class names; class ids are ``0 .. len(classes) - 1``.
    label_map
        Raw label value -> class id (or ``ignore_id``).  When given, raw values not
        listed are treated as not annotated.  Without it raw values are class ids.
    ignore_id
        Label value meaning "not annotated": in no loss and no metric.
    voxel_size
        ``(z, y, x)`` nm; default from the image metadata.
    model, normalization, split, sampling, augment, optimizer
        See the sub-models.
    loss
        Terms added with their ``weight`` (default CE + Dice).
    epochs, steps_per_epoch, batch_size
        Training length: ``epochs * steps_per_epoch`` optimiser steps.
    validate_every
        Validate every n epochs (and after the last).
    early_stopping
        Stop after this many validations without improvement (``null``: never).
    select_metric
        Validation metric that selects the kept model: ``macro_f1`` or ``macro_iou``
        over the classes present in the validation labels.
    max_minutes
        Stop after the epoch during which this wall time is exceeded.
    seed
        Seeds sampling, augmentation and initialisation: same seed, same model
        (on the same hardware and thread count).
    device, amp, threads
        ``auto`` uses CUDA when available; AMP (float16 autocast) applies on CUDA only;
        ``threads`` sets ``torch.set_num_threads``.
    in_memory_mb
        Regions whose image + labels fit in this many MiB are loaded into memory;
        larger ones are read patch by patch from the (chunked) store.
    validation_batch
        Windows per forward pass during validation.
    validation_sections
        2.5-D models: validate on at most this many evenly spaced sections of each
        validation region (default: all), to keep validation cheap on large regions.
    model_path, training_dir
        Products, relative to the output directory.
    init
        A volseg model file to start from (``volseg pretrain`` output or an earlier
        ``volseg train`` model) with the same architecture and ``model.params``: every
        backbone tensor is loaded; the head (the layers whose shape follows the number
        of classes) is re-initialised when the file's classes differ, else loaded too
        (continued training).  The file's normalisation statistics are used.  A layer of
        another shape is a one-line error naming it.  In a workflow, a product
        (``pretrained.safetensors``) or an external file.
    freeze_backbone_epochs
        With ``init``: train only the head for this many epochs first (the backbone's
        weights and batch-norm statistics fixed), then everything.
    """

    image: str = "image.ome.zarr"
    labels: str = "image.ome.zarr/labels/annotation"
    image_dataset: str | None = None
    labels_dataset: str | None = None
    classes: tuple[str, ...] = Field(min_length=2)
    label_map: dict[int, int] | None = None
    ignore_id: int = Field(255, ge=0)
    voxel_size: tuple[float, float, float] | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    loss: list[LossTerm] = Field(
        default_factory=lambda: [CETerm(name="ce"), DiceTerm(name="dice")],  # type: ignore[arg-type]
        min_length=1,
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    epochs: int = Field(50, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    batch_size: int = Field(4, ge=1)
    validate_every: int = Field(1, ge=1)
    early_stopping: int | None = Field(10, ge=1)
    select_metric: Literal["macro_f1", "macro_iou"] = "macro_f1"
    max_minutes: float | None = Field(None, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    threads: int | None = Field(None, ge=1)
    in_memory_mb: float = Field(1024.0, ge=0)
    validation_batch: int = Field(4, ge=1)
    validation_sections: int | None = Field(None, ge=1)
    model_path: str = "model.safetensors"
    training_dir: str = "training"
    init: str | None = None
    freeze_backbone_epochs: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        n = len(self.classes)
        if self.freeze_backbone_epochs and self.init is None:
            raise ValueError("freeze_backbone_epochs needs init (a model file to start from)")
        if self.label_map:
            for raw, cid in self.label_map.items():
                if not (0 <= cid < n or cid == self.ignore_id):
                    raise ValueError(
                        f"label_map {raw}: {cid} is neither a class id 0..{n - 1} nor the "
                        f"ignore id {self.ignore_id}"
                    )
        if self.ignore_id < n:
            raise ValueError(f"ignore_id {self.ignore_id} collides with a class id (< {n})")
        for cid in self.sampling.anchor_classes or ():
            if not 0 <= cid < n:
                raise ValueError(f"sampling.anchor_classes: {cid} is not a class id 0..{n - 1}")
        for term in self.loss:
            weights = getattr(term, "class_weights", None)
            if isinstance(weights, list) and len(weights) != n:
                raise ValueError(
                    f"loss {term.name}: class_weights needs {n} values, got {len(weights)}"
                )
        return self


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a training YAML (``yaml.safe_load``), apply ``key=value`` overrides, validate.

    Parameters
    ----------
    path
        The YAML file: a mapping of the :class:`TrainConfig` keys.
    overrides
        ``key.sub=value`` strings (values parsed as YAML scalars), applied first.

    Raises
    ------
    ConfigError
        One line naming the file, the line and the key, and the fix.
    """
    from volseg.yamlconfig import load_yaml_config

    config, _ = load_yaml_config(path, TrainConfig, overrides, what="training config")
    return config
