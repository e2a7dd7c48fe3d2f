"""Self-supervised pre-training on the unlabelled volume: ``volseg pretrain``.

A user with a large unlabelled stack and a few annotated sections pre-trains the
network on the whole stack first, then fine-tunes it on the labels with
``train.init`` (:mod:`volseg.models.transfer`: backbone loaded, head re-initialised).
Two objectives, for every registered architecture (centre-voxel CNN, 2.5-D and 3-D
UNets), both run by the same :func:`volseg.train.loop.fit` as supervised training:

``masked_centre``
    Masked-centre regression.  *Centre-voxel CNN*: the centre voxel of each
    ``R³`` input cube (or the centre cube of side ``2p + 1``, ``mask.radius = p``) is
    masked and the network regresses its ``(2p + 1)³`` intensities from the context
    (one output channel per masked voxel).  The network stays fully convolutional:
    one sample is an output block with masked centres on a grid of spacing
    ``R // 2 + p + 1``, so that no output's receptive field reaches another
    output's masked cube, and every grid point is one loss term.  *UNets*: cubes of
    side ``2p + 1`` at random places (``mask.fraction`` of the voxels; in a 2.5-D
    input the cube spans ``2p + 1`` of the ``k`` sections around the centre one) are
    masked and the one output channel regresses the masked intensities.  Loss: mean
    squared (``l2``) or absolute (``l1``) error over the masked voxels.
``vae``
    Variational auto-encoder.  The network outputs a Gaussian posterior
    ``(mu, log sigma²)`` of ``latent`` channels; a sample ``z = mu + sigma * eps``
    goes through a small decoder that exists only during pre-training (and is not
    saved).  *Centre-voxel CNN*: each grid point's latent reconstructs its whole
    ``R³`` input cube (MLP decoder).  *UNets*: each voxel's latent reconstructs its
    intensity (1³ convolutions), so the skip connections make it a denoising
    auto-encoder whose code is regularised by the KL term.  The input is optionally
    masked as above (``mask.radius``; ``null``: no mask).  Loss:
    ``rec + beta * KL / V`` with ``rec`` the mean squared (or absolute) error over
    the reconstructed voxels and ``KL`` the divergence from ``N(0, I)`` summed over
    the latent channels of one code that reconstructs ``V`` voxels.

Samples are windows drawn uniformly from the whole volume and read out-of-core
(:class:`volseg.train.data.Region`: only regions under ``in_memory_mb`` are loaded),
normalised with statistics sampled from the volume, augmented geometrically (and in
intensity) *before* masking.  The validation loss is computed on a fixed set of
``validation_batches`` batches drawn once with its own seed, without augmentation.

Products (as for training): ``pretrained.safetensors`` -- the network built with
``classes`` naming its output channels (``intensity`` / ``masked[i]`` /
``mu[i]``, ``logvar[i]``), its spec recording ``training.pretraining`` --,
``pretraining/metrics.csv`` and ``pretraining/curve.png``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import torch
from pydantic import Field, ValidationError, model_validator
from torch import nn

from volseg.errors import ConfigError, InputError
from volseg.models import ModelSpec, build_model, save_model
from volseg.options import Options
from volseg.train.config import AugmentConfig, ModelConfig, NormalizationConfig, OptimizerConfig

__all__ = ["MaskConfig", "PretrainConfig", "load_pretrain_config", "pretrain"]

Batch = tuple[torch.Tensor, torch.Tensor]


class MaskConfig(Options):
    """What is masked in a pre-training input.

    Attributes
    ----------
    radius
        p: the masked cube has side ``2p + 1`` (0: one voxel).  ``null`` (``vae``
        only): nothing is masked.
    fraction
        UNets: fraction of the output window's voxels covered by masked cubes (their
        number is ``max(1, round(fraction * voxels / (2p + 1)³))``).
    fill
        Value of masked voxels: ``zero`` (normalised units), the sample's ``mean`` or
        Gaussian ``noise`` with the sample's mean and standard deviation.
    """

    radius: int | None = Field(0, ge=0)
    fraction: float = Field(0.05, gt=0, le=0.5)
    fill: Literal["zero", "mean", "noise"] = "zero"


class PretrainConfig(Options):
    """Configuration of ``volseg pretrain`` and of the ``pretrain`` workflow stage.

    Attributes
    ----------
    image, image_dataset
        The unlabelled volume (any input :func:`volseg.io.open_volume` reads;
        OME-Zarr read out-of-core).
    method
        ``masked_centre`` or ``vae`` (see the module notes).
    model
        The architecture, its ``params`` and the ``patch_size`` (output window) of one
        sample; fine-tune with the same ``architecture`` and ``params``.
    mask
        What is masked (see :class:`MaskConfig`).
    loss
        ``l2`` (mean squared error) or ``l1`` (mean absolute error).
    latent, beta
        ``vae``: latent channels and the weight of the KL term.
    normalization, augment, optimizer
        As in :class:`volseg.train.TrainConfig`.
    epochs, steps_per_epoch, batch_size
        ``epochs * steps_per_epoch`` optimiser steps of ``batch_size`` windows.
    validation_batches
        Fixed batches for the validation loss (selects the kept weights).
    early_stopping, max_minutes, seed, device, amp, threads, in_memory_mb
        As in training.
    voxel_size
        ``(z, y, x)`` nm; default from the image metadata.
    model_path, training_dir
        Products, relative to the output directory.
    """

    image: str = "image.ome.zarr"
    image_dataset: str | None = None
    method: Literal["masked_centre", "vae"] = "masked_centre"
    model: ModelConfig = Field(default_factory=ModelConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    loss: Literal["l2", "l1"] = "l2"
    latent: int = Field(8, ge=1)
    beta: float = Field(1.0, ge=0)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(scheduler="cosine"))
    epochs: int = Field(20, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(4, ge=1)
    validation_batches: int = Field(4, ge=1)
    early_stopping: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    threads: int | None = Field(None, ge=1)
    in_memory_mb: float = Field(1024.0, ge=0)
    voxel_size: tuple[float, float, float] | None = None
    model_path: str = "pretrained.safetensors"
    training_dir: str = "pretraining"

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.method == "masked_centre" and self.mask.radius is None:
            raise ValueError("mask.radius: masked_centre needs a radius (0: the centre voxel)")
        return self


def load_pretrain_config(path: str | Path, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Read a pre-training YAML (safe loading, strict), apply ``key=value`` overrides."""
    from volseg.yamlconfig import load_yaml_config

    config, _ = load_yaml_config(path, PretrainConfig, overrides, what="pre-training config")
    return config


# -- the network during pre-training -------------------------------------------------
def channel_names(config: PretrainConfig, kind: str) -> tuple[str, ...]:
    """Names of the pre-training network's output channels (its spec's ``classes``)."""
    if config.method == "vae":
        n = config.latent
        return (*(f"mu[{i}]" for i in range(n)), *(f"logvar[{i}]" for i in range(n)))
    p = config.mask.radius or 0
    if kind == "centre_voxel" and p:
        return tuple(f"masked[{i}]" for i in range((2 * p + 1) ** 3))
    return ("intensity",)


class Pretrainer(nn.Module):
    """The network being pre-trained (``net``, saved) and the VAE decoder (not saved)."""

    def __init__(self, net: nn.Module, decoder: nn.Module | None) -> None:
        super().__init__()
        self.net = net
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output channels."""
        out: torch.Tensor = self.net(x)
        return out


def _decoder(config: PretrainConfig, spec: ModelSpec) -> nn.Module | None:
    if config.method != "vae":
        return None
    n = config.latent
    if spec.kind == "centre_voxel":
        r = spec.receptive_field or 1
        return nn.Sequential(nn.Linear(n, 128), nn.ReLU(inplace=True), nn.Linear(128, r ** 3))
    conv = nn.Conv2d if spec.kind == "2.5d" else nn.Conv3d
    return nn.Sequential(conv(n, 16, 1), nn.ReLU(inplace=True), conv(16, 1, 1))


def _spec(config: PretrainConfig, **extra: Any) -> ModelSpec:
    try:
        return ModelSpec(architecture=config.model.architecture, params=config.model.params,
                         in_channels=1, classes=channel_names(config, _kind(config)),
                         ignore_id=None, patch_size=config.model.patch_size, **extra)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(["model", *[str(p) for p in err["loc"]]])
        raise ConfigError(f"{loc}: {err['msg'].removeprefix('Value error, ')}") from None


def _kind(config: PretrainConfig) -> str:
    from volseg.models import get_architecture

    try:
        return get_architecture(config.model.architecture).kind
    except ValueError as exc:
        raise ConfigError(f"model.architecture: {exc}") from None


# -- samples ---------------------------------------------------------------------------
def _fill(x: np.ndarray, mask: np.ndarray, how: str, rng: np.random.Generator) -> None:
    if not mask.any():
        return
    if how == "zero":
        x[mask] = 0.0
    elif how == "mean":
        x[mask] = float(x.mean())
    else:
        x[mask] = rng.normal(float(x.mean()), float(x.std()) or 1.0,
                             size=int(mask.sum())).astype(np.float32)


def _box(centre: Sequence[int], p: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(c - p, 0), min(c + p + 1, n)) for c, n in zip(centre, shape,
                                                                          strict=True))


class Sampler:
    """Draw pre-training samples: windows from the whole volume, augmented, masked.

    Parameters
    ----------
    region
        The whole volume as a :class:`~volseg.train.data.Region` (labels unused).
    spec
        The pre-training spec (geometry).
    config
        The config (mask, augmentation, batch size).
    """

    def __init__(self, region: Any, spec: ModelSpec, config: PretrainConfig) -> None:
        self.region = region
        self.spec = spec
        self.config = config
        self.masked = config.method == "masked_centre" or config.mask.radius is not None
        r = spec.receptive_field
        if r is not None and (config.mask.radius or 0) > r - 1 - r // 2:
            raise ConfigError(
                f"mask.radius: {config.mask.radius} masks a cube wider than the receptive "
                f"field {r} allows; use at most {r - 1 - r // 2}")

    def window(self, rng: np.random.Generator, *, train: bool) -> np.ndarray:
        """A normalised input window (patch plus halo), augmented when ``train``."""
        from volseg.train.augment import augment
        from volseg.train.data import extract, trim_halo

        start = [int(rng.integers(0, e - s + 1)) if s <= e else (e - s) // 2
                 for s, e in zip(self.spec.patch_size, self.region.shape, strict=True)]
        raw, labels, trim = extract(self.region, start, self.spec)
        image = self.spec.normalization.apply(raw)
        if train:
            image, _ = augment(image, labels, self.config.augment, rng)
        return np.ascontiguousarray(trim_halo(image, trim))

    def sample(self, rng: np.random.Generator, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """One ``(input, target)`` pair (see :func:`objective` for the target layout)."""
        image = self.window(rng, train=train)
        x = image.copy()
        p = self.config.mask.radius or 0
        if self.spec.kind == "centre_voxel":
            r = self.spec.receptive_field or 1
            a = self.spec.patch_size
            s = r // 2 + p + 1
            grid = [range(int(rng.integers(0, min(s, n))), n, s) for n in a]
            marks = np.zeros(image.shape, np.float32)
            mask = np.zeros(image.shape, bool)
            for i in grid[0]:
                for j in grid[1]:
                    for k in grid[2]:
                        marks[i, j, k] = 1.0
                        if self.masked:
                            mask[_box((i + r // 2, j + r // 2, k + r // 2), p, image.shape)] = True
            _fill(x, mask, self.config.mask.fill, rng)
            return x[None], np.stack([image, marks])
        mask = np.zeros(image.shape, bool)
        if self.masked:
            out = self.spec.patch_size if self.spec.kind == "3d" else (1, *image.shape[1:])
            voxels = int(np.prod(out))
            count = max(1, round(self.config.mask.fraction * voxels / (2 * p + 1) ** 3))
            for _ in range(count):
                centre = [int(rng.integers(0, n)) for n in image.shape]
                if self.spec.kind == "2.5d":
                    centre[0] = image.shape[0] // 2
                mask[_box(centre, p, image.shape)] = True
            _fill(x, mask, self.config.mask.fill, rng)
        if self.spec.kind == "2.5d":
            c = image.shape[0] // 2
            return x, np.stack([image[c], mask[c].astype(np.float32)])
        return x[None], np.stack([image, mask.astype(np.float32)])

    def batch(self, rng: np.random.Generator, *, train: bool = True) -> Batch:
        """``config.batch_size`` samples as tensors."""
        pairs = [self.sample(rng, train=train) for _ in range(self.config.batch_size)]
        return (torch.from_numpy(np.stack([p[0] for p in pairs])),
                torch.from_numpy(np.stack([p[1] for p in pairs])))


# -- objectives ------------------------------------------------------------------------
def _error(pred: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    d = pred.float() - target.float()
    out: torch.Tensor = d.abs() if loss == "l1" else d * d
    return out


def objective(
    module: Pretrainer, x: torch.Tensor, t: torch.Tensor, *, config: PretrainConfig,
    spec: ModelSpec,
) -> torch.Tensor:
    """The pre-training loss of one batch.

    Parameters
    ----------
    module
        The :class:`Pretrainer`.
    x
        Masked inputs.
    t
        ``t[:, 0]``: the unmasked normalised input (centre-voxel CNN: the whole input
        window; UNets: the output window); ``t[:, 1]``: centre-voxel CNN: 1 at the
        start ``i`` of the input cube ``[i, i + R)`` of every output grid point; UNets:
        1 on masked voxels.
    config, spec
        Method, loss and geometry.
    """
    out = module(x)
    vae = config.method == "vae"
    if spec.kind == "centre_voxel":
        r = spec.receptive_field or 1
        a = out.shape[2:]
        marks = t[:, 1, : a[0], : a[1], : a[2]]
        n, i, j, k = torch.nonzero(marks > 0, as_tuple=True)
        picked = out[n, :, i, j, k]  # (K, C)
        image = t[:, 0]
        if not vae:
            q = 2 * (config.mask.radius or 0) + 1
            p0 = r // 2 - (config.mask.radius or 0)
            cubes = image.unfold(1, q, 1).unfold(2, q, 1).unfold(3, q, 1)
            target = cubes[n, i + p0, j + p0, k + p0].reshape(len(n), -1)
            mean: torch.Tensor = _error(picked, target, config.loss).mean()
            return mean
        cubes = image.unfold(1, r, 1).unfold(2, r, 1).unfold(3, r, 1)
        target = cubes[n, i, j, k].reshape(len(n), -1)
        mu, logvar = picked[:, : config.latent], picked[:, config.latent:].clamp(-10, 10)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if module.training else mu
        assert module.decoder is not None
        rec = _error(module.decoder(z), target, config.loss).mean()
        kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1).mean()
        total: torch.Tensor = rec + config.beta * kl / r ** 3
        return total
    image, mask = t[:, 0], t[:, 1]
    if not vae:
        err = _error(out[:, 0], image, config.loss)
        masked: torch.Tensor = (err * mask).sum() / mask.sum().clamp(min=1.0)
        return masked
    mu, logvar = out[:, : config.latent], out[:, config.latent:].clamp(-10, 10)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if module.training else mu
    assert module.decoder is not None
    rec = _error(module.decoder(z)[:, 0], image, config.loss).mean()
    kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1).mean()
    loss: torch.Tensor = rec + config.beta * kl
    return loss


# -- the command -----------------------------------------------------------------------
def pretrain(
    config: PretrainConfig,
    *,
    image: str | Path,
    output_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    extra_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pre-train a network on an unlabelled volume; write the model file and the curves.

    Parameters
    ----------
    config
        The validated config.
    image
        The resolved image path.
    output_dir
        Where ``config.model_path`` and ``config.training_dir`` go.
    overwrite
        Replace an existing model file.
    progress
        Show a progress bar.
    extra_summary
        Added to ``training.pretraining`` of the spec (e.g. provenance).

    Returns
    -------
    dict
        Paths, the validation loss before and after, epochs, seconds.
    """
    from volseg.io import open_volume
    from volseg.train.data import Region, sample_normalization
    from volseg.train.loop import _jsonable, _log, _write_csv, _write_curve, fit
    from volseg.train.startup import start_run

    output_dir = Path(output_dir)
    model_path = output_dir / config.model_path
    curves = output_dir / config.training_dir
    start = start_run(inputs=[image], models=[model_path], folders=[curves],
                      overwrite=overwrite, threads=config.threads, seed=config.seed,
                      device=config.device)
    rng, device, t_start = start.rng, start.device, start.started
    spec0 = _spec(config)
    img, meta = open_volume(str(image), dataset=config.image_dataset)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3:
        raise InputError(f"{image}: expected a single-channel (z, y, x) image, got shape "
                         f"{img.shape}")
    voxel = config.voxel_size or meta.voxel_size
    small = img.nbytes <= config.in_memory_mb * 2**20
    region = Region(img, da.zeros(img.shape, np.uint8, chunks=img.chunks), (0, img.shape[0]),
                    lut=None, ignore_id=255, in_memory=small, name=str(image))
    norm = sample_normalization([region], config.normalization, rng)
    spec = _spec(config, normalization=norm, voxel_size=voxel)
    assert spec0.classes == spec.classes
    module = Pretrainer(build_model(spec), _decoder(config, spec))
    sampler = Sampler(region, spec, config)
    val_rng = np.random.default_rng([config.seed, 1])
    val_batches = [sampler.batch(val_rng, train=False) for _ in range(config.validation_batches)]

    def loss(m: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert isinstance(m, Pretrainer)
        return objective(m, x, t, config=config, spec=spec)

    def validate(m: nn.Module) -> dict[str, Any]:
        m.eval()
        values = []
        with torch.no_grad():
            for x, t in val_batches:
                values.append(float(loss(m, x.to(device), t.to(device))))
        v = float(np.mean(values))
        return {"val_loss": v, "neg_val_loss": -v}

    module.to(device)
    initial = validate(module)["val_loss"]
    _log(f"volseg pretrain: {config.method} on {image} {tuple(img.shape)} "
         f"({'in memory' if small else 'out-of-core'}); validation loss before: {initial:.4f}")
    curves.mkdir(parents=True, exist_ok=True)

    def on_epoch(record: dict[str, Any], result: Any) -> None:
        _write_csv(curves / "metrics.csv", result.history)
        _write_curve(curves / "curve.png", result.history, "validation loss")

    result = fit(
        module, next_batch=lambda: sampler.batch(rng), objective=loss, validate=validate,
        select="neg_val_loss", epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
        optimizer=config.optimizer, early_stopping=config.early_stopping,
        max_minutes=config.max_minutes, device=device, amp=config.amp, on_epoch=on_epoch,
        progress=progress,
    )
    module.load_state_dict(result.best_state)
    best = float(result.best_metrics.get("val_loss", math.nan))
    record: dict[str, Any] = {
        "method": config.method, "mask": config.mask.to_dict(), "loss": config.loss,
        "image": str(image), "shape": list(img.shape), "out_of_core": not small,
        "initial_val_loss": initial, "best_val_loss": best,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "stopped": result.stopped, "seconds_training": round(result.seconds, 1),
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "device": str(device), "threads": torch.get_num_threads(),
        "decoder": "not saved (pre-training only)" if module.decoder is not None else None,
        **(extra_summary or {}),
    }
    if config.method == "vae":
        record.update(latent=config.latent, beta=config.beta)
    final = ModelSpec(**{**spec.model_dump(), "training": _jsonable(
        {"pretraining": record, "config": config.to_dict()})})
    save_model(module.net.cpu(), final, model_path, overwrite=True)
    _write_csv(curves / "metrics.csv", result.history)
    _write_curve(curves / "curve.png", result.history, "validation loss")
    _log(f"volseg pretrain: validation loss {initial:.4f} -> {best:.4f} (epoch "
         f"{result.best_epoch}); wrote {model_path}")
    return {
        "model": str(model_path), "metrics_csv": str(curves / "metrics.csv"),
        "curve": str(curves / "curve.png"), "initial_val_loss": initial,
        "best_val_loss": best, "best_epoch": result.best_epoch, "stopped": result.stopped,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
