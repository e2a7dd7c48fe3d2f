"""The training loop and ``train`` (config -> model file + training curves).

:func:`fit` is objective-agnostic: it repeatedly draws a batch, applies
``objective(module, inputs, targets) -> loss``, steps AdamW, validates with a
``validate(module) -> metrics`` callable, keeps the best weights by a named metric,
schedules the learning rate and stops early.  :func:`train` wires it for supervised
segmentation from a :class:`~volseg.train.config.TrainConfig`.

Pre-training hook: a self-supervised objective (e.g. masked centre regression for a
centre-voxel backbone) is another ``objective`` and ``next_batch`` — typically on a
module with another head (``CentreVoxelNet.head``) — passed to the same :func:`fit`;
its backbone weights are then loaded into the segmentation network before
:func:`train`.  Nothing in :func:`fit` assumes labels or a segmentation loss.
"""

from __future__ import annotations

import copy
import csv
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from volseg.errors import ConfigError, VolsegError
from volseg.models import ModelSpec, build_model, save_model
from volseg.train.augment import augment
from volseg.train.config import OptimizerConfig, TrainConfig
from volseg.train.data import (
    Region,
    annotated_sections,
    extract,
    label_lut,
    map_labels,
    open_inputs,
    plan_split,
    sample_normalization,
    trim_halo,
)
from volseg.train.evaluate import confusion_matrix, predict_array, scores
from volseg.train.losses import build_loss
from volseg.train.sampling import AnchorSampler, window_start
from volseg.train.startup import start_run

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainingDivergedError(VolsegError):
    """The loss became NaN or infinite (a one-line error; nothing is saved)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    best_state
        State dict of the best weights (by ``select``; the last ones without validation).
    best_epoch
        1-based epoch of the best weights.
    best_metrics
        Validation metrics at the best epoch.
    history
        One dict per epoch (what the metrics CSV holds).
    stopped
        ``"epochs"``, ``"early_stopping"`` or ``"time_budget"`` (a divergence raises
        :class:`TrainingDivergedError`).
    seconds
        Wall time of the loop.
    schedule
        How the learning rate was scheduled: ``"cosine over epochs"``, ``"cosine
        annealed on the time budget"`` (a ``max_minutes`` budget with the cosine
        schedule: the rate reaches its minimum when the budget ends, or at the last
        epoch if that comes first), ``"plateau"`` or ``"none"``.
    """

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = "epochs"
    seconds: float = 0.0
    schedule: str = "none"

    def stop_reason(self, epochs: int) -> str:
        """One line saying after which epoch and why the loop stopped."""
        done = len(self.history)
        why = {"epochs": "all epochs done",
               "early_stopping": "early stopping (no better validation score for a while)",
               "time_budget": "time budget (max_minutes) reached"}.get(self.stopped,
                                                                      self.stopped)
        return f"stopped after epoch {done}/{epochs}: {why}"


def cosine_rate(lr: float, min_lr: float, progress: float) -> float:
    """The cosine-annealed learning rate at ``progress`` in [0, 1] (clipped).

    ``min_lr + (lr - min_lr) (1 + cos(π p)) / 2``: ``lr`` at 0, ``min_lr`` at 1; equal to
    :class:`torch.optim.lr_scheduler.CosineAnnealingLR` at ``p = (epoch - 1) / T_max``.
    """
    p = min(max(progress, 0.0), 1.0)
    return min_lr + (lr - min_lr) * (1.0 + math.cos(math.pi * p)) / 2.0


def fit(
    module: nn.Module,
    *,
    next_batch: Callable[[], Batch],
    objective: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    validate: Callable[[nn.Module], dict[str, Any]] | None,
    select: str,
    epochs: int,
    steps_per_epoch: int,
    optimizer: OptimizerConfig,
    validate_every: int = 1,
    early_stopping: int | None = None,
    max_minutes: float | None = None,
    device: torch.device | None = None,
    amp: bool = True,
    on_epoch: Callable[[dict[str, Any], FitResult], None] | None = None,
    progress: bool = True,
    before_epoch: Callable[[int, nn.Module], None] | None = None,
) -> FitResult:
    """Optimise ``module`` with AdamW; keep the best weights by validation ``select``.

    Parameters
    ----------
    module
        The network (moved to ``device``).
    next_batch
        Returns ``(inputs, targets)`` on the CPU.
    objective
        ``objective(module, inputs, targets) -> scalar loss`` (inputs on ``device``).
    validate
        ``validate(module) -> metrics`` (must contain ``select``), or None.
    select
        Metric to maximise (e.g. ``"macro_f1"``).
    epochs, steps_per_epoch
        Loop length.
    optimizer
        Learning rate, weight decay and schedule.
    validate_every
        Validate every n epochs and after the last.
    early_stopping
        Stop after this many validations without improvement.
    max_minutes
        Stop after the epoch in which this wall time is passed.  With the cosine
        schedule the learning rate anneals within this budget: its progress is the
        larger of the epochs' and the time's (``elapsed / budget``, updated every step),
        so a slow or loaded machine gets a fully annealed, shorter run rather than one
        cut mid-schedule.
    device
        Torch device (default CPU).
    amp
        Mixed precision (float16 autocast + gradient scaling); CUDA only.
    on_epoch
        Called after every epoch with the epoch's record and the running result.
    progress
        Show a rich progress bar (on a terminal).
    before_epoch
        Called with the 1-based epoch and the module (in training mode) before each
        epoch's steps, e.g. to freeze the backbone for the first epochs.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    device = device or torch.device("cpu")
    module.to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=optimizer.lr,
                            weight_decay=optimizer.weight_decay)
    sched: Any = None
    if optimizer.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=optimizer.factor, patience=optimizer.patience,
            min_lr=optimizer.min_lr,
        )
    elif optimizer.scheduler == "cosine" and max_minutes is None:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs, eta_min=optimizer.min_lr
        )
    on_time = optimizer.scheduler == "cosine" and max_minutes is not None
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    result = FitResult(best_state=copy.deepcopy(module.state_dict()), best_epoch=0,
                       best_metrics={},
                       schedule=("cosine annealed on the time budget" if on_time
                                 else "cosine over epochs" if optimizer.scheduler == "cosine"
                                 else optimizer.scheduler))
    best_value = -math.inf
    since_best = 0
    t0 = time.perf_counter()
    bar = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                   disable=not (progress and sys.stderr.isatty()))
    with bar:
        task = bar.add_task("train", total=epochs * steps_per_epoch, info="")
        for epoch in range(1, epochs + 1):
            module.train()
            if before_epoch is not None:
                before_epoch(epoch, module)
            losses = []
            for _ in range(steps_per_epoch):
                if on_time:
                    assert max_minutes is not None
                    progress_ = max((epoch - 1) / epochs,
                                    (time.perf_counter() - t0) / (60 * max_minutes))
                    for group in opt.param_groups:
                        group["lr"] = cosine_rate(optimizer.lr, optimizer.min_lr, progress_)
                inputs, targets = next_batch()
                inputs, targets = inputs.to(device), targets.to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss = objective(module, inputs, targets)
                if not use_amp and not torch.isfinite(loss.detach()):
                    # AMP's gradient scaler skips such steps itself; in fp32 one
                    # step on a NaN loss would turn every weight into NaN
                    raise TrainingDivergedError(
                        f"training diverged at epoch {epoch}: the loss is "
                        f"{float(loss.detach())}; lower optimizer.lr or check the "
                        "image and labels")
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                losses.append(float(loss.detach()))
                bar.update(task, advance=1, info=f"epoch {epoch} loss {losses[-1]:.4f}")
            record: dict[str, Any] = {
                "epoch": epoch, "lr": opt.param_groups[0]["lr"],
                "train_loss": float(np.mean(losses)),
            }
            last = epoch == epochs
            over_time = max_minutes is not None and (time.perf_counter() - t0) > 60 * max_minutes
            metrics: dict[str, Any] = {}
            if validate is not None and (epoch % validate_every == 0 or last or over_time):
                metrics = validate(module)
                record.update({k: v for k, v in metrics.items()
                               if not isinstance(v, dict | list)})
                value = float(metrics[select])
                if sched is not None and optimizer.scheduler == "plateau":
                    sched.step(value if math.isfinite(value) else -1.0)
                if value > best_value:
                    best_value = value
                    since_best = 0
                    result.best_state = copy.deepcopy(
                        {k: v.detach().cpu() for k, v in module.state_dict().items()}
                    )
                    result.best_epoch = epoch
                    result.best_metrics = metrics
                else:
                    since_best += 1
            elif validate is None:
                result.best_state = copy.deepcopy(
                    {k: v.detach().cpu() for k, v in module.state_dict().items()}
                )
                result.best_epoch = epoch
            if sched is not None and optimizer.scheduler == "cosine":
                sched.step()
            record["seconds"] = time.perf_counter() - t0
            result.history.append(record)
            shown = {k: record[k] for k in record if k in ("train_loss", "val_loss", select)}
            _log(f"volseg train: epoch {epoch}/{epochs} "
                 + " ".join(f"{k}={v:.4f}" for k, v in shown.items())
                 + f" ({record['seconds']:.0f} s)")
            if on_epoch is not None:
                on_epoch(record, result)
            if early_stopping is not None and since_best >= early_stopping:
                result.stopped = "early_stopping"
                break
            if over_time:
                result.stopped = "time_budget"
                break
    result.seconds = time.perf_counter() - t0
    _log(f"volseg train: {result.stop_reason(epochs)} ({result.seconds:.0f} s; learning "
         f"rate: {result.schedule}, last {opt.param_groups[0]['lr']:.3g})")
    return result


# -- supervised segmentation from a config -------------------------------------------
def _spec_from(config: TrainConfig, **extra: Any) -> ModelSpec:
    try:
        return ModelSpec(
            architecture=config.model.architecture, params=config.model.params,
            in_channels=1, classes=config.classes, ignore_id=config.ignore_id,
            patch_size=config.model.patch_size, **extra,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if not loc or loc[0] in ("architecture", "params", "patch_size"):
            key = ".".join(["model", *loc])
        else:
            key = ".".join(loc)
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{key}: {msg}") from None


def make_batch(
    sampler: AnchorSampler,
    regions: list[Region],
    spec: ModelSpec,
    config: TrainConfig,
    rng: np.random.Generator,
    *,
    train: bool = True,
) -> Batch:
    """Draw ``config.batch_size`` samples: anchors, windows, normalisation, augmentation.

    Returns
    -------
    inputs, targets
        ``(N, 1, Z, Y, X)`` / ``(N, Z, Y, X)`` for 3-D and centre-voxel models (inputs
        with the halo), ``(N, k, Y, X)`` / ``(N, Y, X)`` for 2.5-D models.
    """
    xs, ys = [], []
    for _ in range(config.batch_size):
        anchor = sampler.sample()
        region = regions[anchor.region]
        start = [
            window_start(a, p, e, rng)
            for a, p, e in zip(anchor.position, spec.patch_size, region.shape, strict=True)
        ]
        raw, labels, trim = extract(region, start, spec)
        image = spec.normalization.apply(raw)
        if train:
            image, labels = augment(image, labels, config.augment, rng)
        xs.append(trim_halo(image, trim))
        ys.append(labels)
    x = torch.from_numpy(np.stack(xs)[:, None])
    y = torch.from_numpy(np.stack(ys).astype(np.int64))
    if spec.kind == "2.5d":
        x = x[:, 0]  # (N, k, Y, X): the k sections are the channels
        y = y[:, 0]
    return x, y


def _read_init_spec(path: str | Path) -> ModelSpec:
    from volseg.models import read_spec

    spec = read_spec(path)
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"init: {path} is a bioimage.io package; start from a volseg "
                          ".safetensors model file")
    return spec


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for rec in history:
        keys += [k for k in rec if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for rec in history:
            w.writerow({k: rec.get(k, "") for k in keys})


def _write_curve(path: Path, history: list[dict[str, Any]], select: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    val = [(r["epoch"], r["val_loss"]) for r in history if "val_loss" in r]
    if val:
        ax1.plot(*zip(*val, strict=True), "s-", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key in ("macro_f1", "macro_iou"):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax2.plot(*zip(*pts, strict=True), "o-", label=f"validation {key}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("score")
    ax2.set_ylim(0, 1)
    ax2.set_title(f"model kept by {select}")
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(
    config: TrainConfig,
    *,
    image: str | Path,
    labels: str | Path,
    output_dir: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    extra_summary: dict[str, Any] | None = None,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train a segmentation model from a config; write the model and the curves.

    Parameters
    ----------
    config
        The validated training config.
    image, labels
        Resolved input paths (``config.image``/``config.labels`` after resolution).
    output_dir
        Where ``config.model_path`` and ``config.training_dir`` go.
    overwrite
        Replace an existing model file.
    progress
        Show progress bars.
    extra_summary
        Added to the spec's training summary (e.g. provenance).
    init
        The resolved ``config.init`` (default: ``config.init`` as given).

    Returns
    -------
    dict
        Summary: paths, best epoch, best validation metrics, wall time.
    """
    output_dir = Path(output_dir)
    model_path = output_dir / config.model_path
    train_dir = output_dir / config.training_dir
    start = start_run(inputs=[image, labels, init if init is not None else config.init],
                      models=[model_path], folders=[train_dir], overwrite=overwrite,
                      threads=config.threads, seed=config.seed, device=config.device)
    rng, device, t_start = start.rng, start.device, start.started

    spec0 = _spec_from(config)
    init_path = init if init is not None else config.init
    if init_path is not None:  # a file that does not fit fails before any data is read
        from volseg.models.transfer import init_weights

        init_weights(build_model(spec0), spec0, init_path)
    img, lab, voxel = open_inputs(str(image), str(labels), image_dataset=config.image_dataset,
                                  labels_dataset=config.labels_dataset)
    voxel = config.voxel_size or voxel
    lut = label_lut(config.label_map, dtype=lab.dtype, ignore_id=config.ignore_id)
    annotated = None
    if config.split.mode == "slices":
        mapped = (
            lab.map_blocks(map_labels, lut, dtype=np.int32)  # type: ignore[arg-type]
            if lut is not None else lab
        )
        annotated = annotated_sections(mapped, ignore_id=config.ignore_id)
    context = max(spec0.halo[0][0], spec0.patch_size[0] // 2)
    train_z, val_z = plan_split(config.split, depth=img.shape[0], annotated=annotated,
                                context=context)
    bytes_per_z = img.shape[1] * img.shape[2] * (img.dtype.itemsize + lab.dtype.itemsize)

    def region(z: tuple[int, int]) -> Region:
        small = (z[1] - z[0]) * bytes_per_z <= config.in_memory_mb * 2**20
        return Region(img, lab, z, lut=lut, ignore_id=config.ignore_id, in_memory=small,
                      name=str(config.image))

    train_regions = [region(z) for z in train_z]
    val_regions = [
        Region(img, lab, z, lut=lut, ignore_id=config.ignore_id, in_memory=True,
               name=str(config.image)) for z in val_z
    ]
    _log(f"volseg train: training sections {train_z}, validation sections {val_z}, "
         f"gap {config.split.gap}")
    tables = [r.block_table(len(config.classes)) for r in train_regions]
    anchor_classes = config.sampling.anchor_classes or list(range(1, len(config.classes)))
    sampler = AnchorSampler(
        tables, lambda r, b: train_regions[r].load_block(b),
        anchor_probability=config.sampling.anchor_probability, anchor_classes=anchor_classes,
        max_oversampling=config.sampling.max_oversampling, rng=rng,
    )
    if sampler.frequencies.size > 1 and not sampler.frequencies[1:].any():
        _log(f"volseg train: warning: the training sections hold no voxel of the classes "
             f"{', '.join(config.classes[1:])}; if the labels store them as the ignore id "
             f"{config.ignore_id} (a 0/{config.ignore_id} mask), map it with label_map "
             f"{{{config.ignore_id}: 1}}")
    if init_path is not None:
        # the backbone learnt its features under the file's normalisation: keep it
        norm = _read_init_spec(init_path).normalization
    else:
        norm = sample_normalization(train_regions, config.normalization, rng)
    spec = _spec_from(config, normalization=norm, voxel_size=voxel)
    freq = sampler.frequencies
    loss_fn = build_loss(config.loss, n_classes=len(config.classes), ignore_id=config.ignore_id,
                         class_frequencies=freq)
    module = build_model(spec)
    before_epoch = None
    init_summary: dict[str, Any] | None = None
    if init_path is not None:
        from volseg.models.transfer import freeze_backbone, init_weights

        report = init_weights(module, spec, init_path)
        init_summary = report.summary()
        _log(f"volseg train: started from {init_path} ({len(report.loaded)} tensors loaded"
             + (f", head {', '.join(report.reinitialised)} re-initialised"
                if report.reinitialised else ", same classes: continued") + ")")
        if config.freeze_backbone_epochs:
            head = report.head

            def before_epoch(epoch: int, m: nn.Module) -> None:
                freeze_backbone(m, head, epoch <= config.freeze_backbone_epochs)

    val_data = [
        (np.asarray(r.image), map_labels(np.asarray(r.labels), lut)) for r in val_regions
    ]

    def validate(m: nn.Module) -> dict[str, Any]:
        n = len(config.classes)
        cm = np.zeros((n, n), np.int64)
        vloss, vcount = 0.0, 0
        for image_v, labels_v_all in val_data:
            sections = None
            labels_v = labels_v_all
            depth_v = image_v.shape[0]
            if spec.kind == "2.5d" and config.validation_sections and \
                    depth_v > config.validation_sections:
                sections = np.unique(np.linspace(0, depth_v - 1, config.validation_sections)
                                     .round().astype(np.int64))
                labels_v = labels_v_all[sections]
            logits = predict_array(m, spec, image_v, device=device, sections=sections,
                                   batch_size=config.validation_batch, amp=config.amp)
            cm += confusion_matrix(logits.argmax(0), labels_v, n_classes=n,
                                   ignore_id=config.ignore_id)
            annotated_v = int((labels_v != config.ignore_id).sum())
            if annotated_v:
                with torch.no_grad():
                    lv = loss_fn(torch.from_numpy(logits)[None],
                                 torch.from_numpy(labels_v.astype(np.int64))[None])
                vloss += float(lv) * annotated_v
                vcount += annotated_v
        out = scores(cm, config.classes)
        out["val_loss"] = vloss / vcount if vcount else float("nan")
        for name, s in out["per_class"].items():
            out[f"f1[{name}]"] = s["f1"]
            out[f"iou[{name}]"] = s["iou"]
        out["confusion"] = cm.tolist()
        return out

    def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(m(x), y)

    train_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch(record: dict[str, Any], result: FitResult) -> None:
        _write_csv(train_dir / "metrics.csv", result.history)
        _write_curve(train_dir / "curve.png", result.history, config.select_metric)

    prep_seconds = time.perf_counter() - t_start
    result = fit(
        module, next_batch=lambda: make_batch(sampler, train_regions, spec, config, rng),
        objective=objective, validate=validate, select=config.select_metric,
        epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
        optimizer=config.optimizer, validate_every=config.validate_every,
        early_stopping=config.early_stopping, max_minutes=config.max_minutes, device=device,
        amp=config.amp, on_epoch=on_epoch, progress=progress, before_epoch=before_epoch,
    )
    module.load_state_dict(result.best_state)
    for param in module.parameters():
        param.requires_grad_(True)
    best = {k: v for k, v in result.best_metrics.items() if k != "confusion"}
    summary: dict[str, Any] = {
        "config": config.to_dict(),
        "image": str(image), "labels": str(labels),
        "train_sections": [list(z) for z in train_z],
        "validation_sections": [list(z) for z in val_z],
        "class_frequencies": [int(v) for v in freq],
        "anchor_probabilities": [round(float(v), 6) for v in sampler.class_probabilities],
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "stopped": result.stopped, "stop_reason": result.stop_reason(config.epochs),
        "lr_schedule": result.schedule, "max_minutes": config.max_minutes,
        "select_metric": config.select_metric,
        "best_metrics": best,
        "confusion": result.best_metrics.get("confusion"),
        "seconds_training": round(result.seconds, 1),
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "seconds_preparation": round(prep_seconds, 1),
        "device": str(device), "seed": config.seed, "threads": torch.get_num_threads(),
        **({"init": init_summary} if init_summary is not None else {}),
        **(extra_summary or {}),
    }
    final_spec = ModelSpec(**{**spec.model_dump(), "training": _jsonable(summary)})
    save_model(module.cpu(), final_spec, model_path, overwrite=True)
    _write_csv(train_dir / "metrics.csv", result.history)
    _write_curve(train_dir / "curve.png", result.history, config.select_metric)
    _log(f"volseg train: best {config.select_metric}="
         f"{best.get(config.select_metric, float('nan')):.4f} at epoch {result.best_epoch}; "
         f"wrote {model_path}")
    return {
        "model": str(model_path), "metrics_csv": str(train_dir / "metrics.csv"),
        "curve": str(train_dir / "curve.png"), "best_epoch": result.best_epoch,
        config.select_metric: best.get(config.select_metric),
        "macro_iou": best.get("macro_iou"), "per_class": best.get("per_class"),
        "stopped": result.stopped, "seconds": round(time.perf_counter() - t_start, 1),
    }


def _jsonable(obj: Any) -> Any:
    """Replace NaN/inf floats (not valid JSON) with None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj
