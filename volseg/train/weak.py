"""Weak labels from tile tags: ``volseg weak CONFIG.yaml``.

Input: the image and a CSV of tagged tiles (``z0,y0,x0,z1,y1,x1,classes``: a box and
the ``;``-separated names of the classes present in it; an empty list means only
background).  Three steps, each a product:

1. **Classifier with class activation maps** (``cam.safetensors``).  The network of
   ``model`` (a 2.5-D UNet) is built with one output channel per foreground class;
   its per-pixel output *is* the class activation map (the classifier applied before
   global average pooling, the "GAP-to-classifier swap": for a linear last layer
   ``mean(W f) = W mean(f)``), and the tile's logit is the map's mean.  Loss:
   multi-label binary cross-entropy on the tile logits plus the **Puzzle-CAM**
   terms (Jo & Yu, "Puzzle-CAM: improved localization via matching partial and full
   features", ICIP 2021): the tile is also cut into 2 × 2 pieces, each piece's map is
   computed on its own and the maps are recomposed; the recomposed map's logits get
   the same BCE and ``puzzle_weight * mean |CAM_full - CAM_recomposed|`` asks the two
   maps to agree, which spreads activation from the most discriminative part to the
   whole object.  Trained by :func:`volseg.train.loop.fit`.
2. **Pseudo-labels** (``pseudo.ome.zarr``, a standalone label image).  In every
   tagged tile each tagged class's map is rectified and divided by its maximum in the
   tile; a pixel takes the tagged class of largest normalised activation when that
   is at least ``threshold``, background when every activation is below
   ``background_threshold`` (default: ``threshold``) and the ignore id in between.
   Untagged classes are never assigned in a tile; untagged voxels are ignored.  With
   ``instances`` (an object-id volume, e.g. from ``volseg instances``) the
   foreground is intersected with the objects (ids > 0), and an object whose
   pixels are at least ``instance_fill`` foreground of one class is filled with it.
3. **Segmentation** (optional ``segment:`` section, a
   :class:`~volseg.train.TrainConfig` whose ``image``, ``labels``, ``classes`` and
   ``ignore_id`` default to these): ``model.safetensors`` trained on the
   pseudo-labels with :func:`volseg.train.train`.

:func:`tags_from_labels` derives tags from a label volume (benchmarks and tests: the
tags are then *derived from the ground truth*, not annotated).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, model_validator
from torch import nn

from volseg.errors import ConfigError, InputError
from volseg.models import ModelSpec, build_model, save_model
from volseg.options import Options
from volseg.train.config import (
    AugmentConfig,
    ModelConfig,
    NormalizationConfig,
    OptimizerConfig,
    TrainConfig,
)

__all__ = ["Tile", "WeakConfig", "load_weak_config", "read_tags", "tags_from_labels",
           "weak", "write_tags"]

TAG_COLUMNS = ("z0", "y0", "x0", "z1", "y1", "x1", "classes")


@dataclass(frozen=True)
class Tile:
    """One tagged box ``[start, stop)`` and the class ids present in it (not 0)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    classes: frozenset[int]


def read_tags(path: str | Path, classes: Sequence[str]) -> list[Tile]:
    """Read a tag CSV (``z0,y0,x0,z1,y1,x1,classes``; names separated by ``;``).

    Raises
    ------
    InputError
        Missing columns, a bad number, an unknown class name: one line naming the row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tags file {path} does not exist")
    names = {n: i for i, n in enumerate(classes)}
    tiles = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TAG_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; the header "
                             f"is {','.join(TAG_COLUMNS)}")
        for row_no, row in enumerate(reader, start=2):
            try:
                box = [int(row[c]) for c in TAG_COLUMNS[:6]]
            except (TypeError, ValueError):
                raise InputError(f"{path}:{row_no}: box coordinates must be integers") from None
            present = set()
            for name in (row["classes"] or "").split(";"):
                name = name.strip()
                if not name:
                    continue
                if name not in names or names[name] == 0:
                    raise InputError(
                        f"{path}:{row_no}: {name!r} is not a foreground class "
                        f"({', '.join(classes[1:])})")
                present.add(names[name])
            if any(b <= a for a, b in zip(box[:3], box[3:], strict=True)):
                raise InputError(f"{path}:{row_no}: empty box")
            tiles.append(Tile(tuple(box[:3]), tuple(box[3:]), frozenset(present)))  # type: ignore[arg-type]
    if not tiles:
        raise InputError(f"{path} holds no tagged tile")
    return tiles


def write_tags(path: str | Path, tiles: Sequence[Tile], classes: Sequence[str]) -> Path:
    """Write tiles as a tag CSV (the format :func:`read_tags` reads)."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TAG_COLUMNS)
        for t in tiles:
            w.writerow([*t.start, *t.stop, ";".join(classes[c] for c in sorted(t.classes))])
    return path


def tags_from_labels(
    labels: np.ndarray, *, tile: int = 128, sections: Sequence[int] | None = None,
    n_classes: int, min_voxels: int = 1,
) -> list[Tile]:
    """Tags *derived from a label volume*: every full ``tile`` × ``tile`` box of a section.

    Parameters
    ----------
    labels
        Class ids ``(z, y, x)``.
    tile
        Tile edge in pixels (tiles that do not fit at the borders are left out).
    sections
        Sections to tag (default: all).
    n_classes
        Class ids ``1 .. n_classes - 1`` are foreground.
    min_voxels
        A class is present when it covers at least this many pixels of the tile.
    """
    out = []
    zs = range(labels.shape[0]) if sections is None else sections
    for z in zs:
        for y in range(0, labels.shape[1] - tile + 1, tile):
            for x in range(0, labels.shape[2] - tile + 1, tile):
                counts = np.bincount(labels[z, y:y + tile, x:x + tile].ravel(),
                                     minlength=n_classes)[:n_classes]
                present = frozenset(int(c) for c in range(1, n_classes)
                                    if counts[c] >= min_voxels)
                out.append(Tile((int(z), y, x), (int(z) + 1, y + tile, x + tile), present))
    return out


class CamConfig(Options):
    """How class activation maps become pseudo-labels.

    Attributes
    ----------
    threshold
        Normalised activation (``relu(cam) / max`` in the tile) from which a pixel
        takes the class.
    background_threshold
        Below this for every tagged class the pixel is background (default: the
        ``threshold``); in between it is ignored.
    instance_fill
        With instances: an object whose pixels are at least this fraction foreground
        of one class is labelled that class entirely (``null``: intersection only).
    """

    threshold: float = Field(0.3, gt=0, le=1)
    background_threshold: float | None = Field(None, ge=0, le=1)
    instance_fill: float | None = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> CamConfig:
        if self.background_threshold is not None and self.background_threshold > self.threshold:
            raise ValueError("background_threshold must not exceed threshold")
        return self


class WeakConfig(Options):
    """Configuration of ``volseg weak`` (weak labels from tile tags).

    Attributes
    ----------
    image, image_dataset
        The image.
    tags
        CSV of tagged tiles (see :func:`read_tags`).
    classes
        Class names; class 0 is the background (never tagged).
    ignore_id
        Id of pseudo-label voxels that are not labelled.
    instances
        Optional object-id volume (ids > 0: objects) the foreground is intersected with.
    truth
        Optional label volume (class ids) to score the pseudo-labels against
        (IoU per class over the tagged tiles; benchmarks).
    model
        The classifier network (``unet25d``); ``patch_size`` ``(1, T, T)`` must be the
        tiles' size.
    puzzle_weight
        Weight of the Puzzle-CAM reconstruction term (0: plain CAM training, and no
        pieces are computed).
    cam
        Pseudo-labels from the maps.
    normalization, augment, optimizer, epochs, steps_per_epoch, batch_size, seed,
    device, amp, threads, max_minutes
        Training of the classifier (as in :class:`~volseg.train.TrainConfig`).
    cam_path, pseudo_path, training_dir
        Products, relative to the output directory.
    segment
        Optional :class:`~volseg.train.TrainConfig` trained on the pseudo-labels.
    """

    image: str = "image.ome.zarr"
    image_dataset: str | None = None
    tags: str = "tags.csv"
    classes: tuple[str, ...] = Field(min_length=2)
    ignore_id: int = Field(255, ge=0)
    instances: str | None = None
    truth: str | None = None
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(
        architecture="unet25d", params={"context": 1, "widths": [8, 16, 32]},
        patch_size=(1, 128, 128)))
    puzzle_weight: float = Field(1.0, ge=0)
    cam: CamConfig = Field(default_factory=CamConfig)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: OptimizerConfig(scheduler="cosine"))
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    threads: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    cam_path: str = "cam.safetensors"
    pseudo_path: str = "pseudo.ome.zarr"
    training_dir: str = "weak"
    segment: TrainConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _segment_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("segment"), dict):
            seg = dict(data["segment"])
            seg.setdefault("image", data.get("image", "image.ome.zarr"))
            seg.setdefault("labels", data.get("pseudo_path", "pseudo.ome.zarr"))
            seg.setdefault("classes", data.get("classes"))
            seg.setdefault("ignore_id", data.get("ignore_id", 255))
            data = {**data, "segment": seg}
        return data

    @model_validator(mode="after")
    def _check(self) -> WeakConfig:
        if self.model.architecture != "unet25d":
            raise ValueError("model.architecture: the CAM classifier is a unet25d network")
        if self.ignore_id < len(self.classes):
            raise ValueError(f"ignore_id {self.ignore_id} collides with a class id")
        return self


def load_weak_config(path: str | Path, overrides: Sequence[str] = ()) -> WeakConfig:
    """Read a weak-label YAML (safe loading, strict), apply ``key=value`` overrides."""
    from volseg.yamlconfig import load_yaml_config

    config, _ = load_yaml_config(path, WeakConfig, overrides, what="weak-label config")
    return config


# -- the classifier ----------------------------------------------------------------------
def tile_logits(cam: torch.Tensor) -> torch.Tensor:
    """Global average pooling of the maps: ``(N, F, Y, X) -> (N, F)``."""
    return cam.float().mean(dim=(2, 3))


def puzzle(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Maps of the 2 × 2 pieces of ``x`` computed separately, recomposed to ``x``'s size."""
    n, _, h, w = x.shape
    hh, hw = h // 2, w // 2
    pieces = torch.cat([x[:, :, :hh, :hw], x[:, :, :hh, hw:], x[:, :, hh:, :hw],
                        x[:, :, hh:, hw:]])
    maps = module(pieces)
    a, b, c, d = maps[:n], maps[n:2 * n], maps[2 * n:3 * n], maps[3 * n:]
    return torch.cat([torch.cat([a, b], dim=3), torch.cat([c, d], dim=3)], dim=2)


def cam_objective(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, puzzle_weight: float
) -> torch.Tensor:
    """Multi-label BCE of the full tile (and of the recomposed pieces) + Puzzle-CAM L1."""
    cam = module(x)
    loss = F.binary_cross_entropy_with_logits(tile_logits(cam), y)
    if puzzle_weight:
        re = puzzle(module, x)
        loss = loss + F.binary_cross_entropy_with_logits(tile_logits(re), y)
        loss = loss + puzzle_weight * (cam.float() - re.float()).abs().mean()
    return loss


def pseudo_tile(
    cam: np.ndarray, present: frozenset[int], cfg: CamConfig, *, ignore_id: int,
    objects: np.ndarray | None = None,
) -> np.ndarray:
    """Pseudo-labels of one tile from its maps ``(F, Y, X)`` (class ``f + 1`` = map ``f``).

    Returns
    -------
    numpy.ndarray
        uint8 ``(Y, X)``: 0 background, tagged class ids, ``ignore_id`` in between.
    """
    n_fg = cam.shape[0]
    norm = np.zeros_like(cam, dtype=np.float32)
    for f in range(n_fg):
        if f + 1 in present:
            a = np.maximum(cam[f], 0)
            top = float(a.max())
            if top > 0:
                norm[f] = a / top
    best = norm.argmax(0)
    score = norm.max(0)
    low = cfg.background_threshold if cfg.background_threshold is not None else cfg.threshold
    out = np.full(cam.shape[1:], ignore_id, np.uint8)
    out[score < low] = 0
    fg = score >= cfg.threshold
    out[fg] = (best[fg] + 1).astype(np.uint8)
    if objects is not None:
        inside = objects > 0
        out[fg & ~inside] = 0
        if cfg.instance_fill is not None:
            for obj in np.unique(objects[inside]):
                member = objects == obj
                counts = np.bincount(out[member][out[member] <= n_fg], minlength=n_fg + 1)
                cls = int(counts[1:].argmax()) + 1
                if counts[cls] >= cfg.instance_fill * member.sum():
                    out[member] = cls
    return out


def _iou(pred: np.ndarray, truth: np.ndarray, cls: int, ignore_id: int) -> float | None:
    valid = pred != ignore_id
    p, t = (pred == cls) & valid, (truth == cls) & valid
    union = int((p | t).sum())
    return int((p & t).sum()) / union if union else None


# -- the command ---------------------------------------------------------------------------
def weak(
    config: WeakConfig,
    *,
    image: str | Path,
    tags: str | Path,
    output_dir: str | Path,
    instances: str | Path | None = None,
    truth: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the CAM classifier, write pseudo-labels, optionally train on them.

    Parameters
    ----------
    config
        The validated config.
    image, tags, instances, truth
        Resolved input paths.
    output_dir
        Where the products go.
    overwrite
        Replace existing products.
    progress
        Show progress bars.

    Returns
    -------
    dict
        Paths, pseudo-label counts, IoU against ``truth`` (pseudo-labels; and, with
        ``segment``, the trained network's validation summary), seconds.
    """
    from volseg.io import open_volume
    from volseg.io.omezarr import write_label_image
    from volseg.train.augment import augment
    from volseg.train.data import Region, sample_normalization
    from volseg.train.loop import _jsonable, _log, _write_csv, _write_curve, fit, train
    from volseg.train.startup import start_run

    out_dir = Path(output_dir)
    cam_path, pseudo_path = out_dir / config.cam_path, out_dir / config.pseudo_path
    start = start_run(inputs=[image, tags, instances, truth], models=[cam_path],
                      images=[pseudo_path], folders=[out_dir / config.training_dir],
                      overwrite=overwrite, threads=config.threads, seed=config.seed,
                      device=config.device)
    rng, device, t0 = start.rng, start.device, start.started
    img, meta = open_volume(str(image), dataset=config.image_dataset)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3:
        raise InputError(f"{image}: expected a (z, y, x) image, got shape {img.shape}")
    tiles = read_tags(tags, config.classes)
    size = config.model.patch_size
    for t in tiles:
        if tuple(b - a for a, b in zip(t.start, t.stop, strict=True)) != size or \
                any(b > n for b, n in zip(t.stop, img.shape, strict=True)) or min(t.start) < 0:
            raise ConfigError(
                f"tags: tile {t.start}-{t.stop} is not a {size} box inside the image "
                f"{tuple(img.shape)}; every tile must have model.patch_size")
    fg = config.classes[1:]
    try:
        spec0 = ModelSpec(architecture="unet25d", params=config.model.params, classes=fg,
                          ignore_id=None, patch_size=size)
    except ValueError as exc:
        raise ConfigError(f"model: {str(exc).splitlines()[-1].strip()}") from None
    import dask.array as da

    region = Region(img, da.zeros(img.shape, np.uint8, chunks=img.chunks), (0, img.shape[0]),
                    lut=None, ignore_id=255, in_memory=img.nbytes <= 2**30, name=str(image))
    norm = sample_normalization([region], config.normalization, rng)
    spec = ModelSpec(**{**spec0.model_dump(), "normalization": norm,
                        "voxel_size": meta.voxel_size})
    k = spec.context or 1
    module = build_model(spec)

    def read_tile(t: Tile) -> np.ndarray:
        raw = region.read_image((t.start[0] - k // 2, t.start[1], t.start[2]),
                                (k, size[1], size[2]))
        return norm.apply(raw)

    targets = np.zeros((len(tiles), len(fg)), np.float32)
    for i, t in enumerate(tiles):
        for c in t.classes:
            targets[i, c - 1] = 1.0

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(len(tiles), size=config.batch_size)
        xs = []
        for i in idx:
            x = read_tile(tiles[int(i)])
            x, _ = augment(x, np.zeros((1, *size[1:]), np.uint8), config.augment, rng)
            xs.append(x)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(targets[idx])

    def objective(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cam_objective(m, x, y, puzzle_weight=config.puzzle_weight)

    curves = out_dir / config.training_dir
    curves.mkdir(parents=True, exist_ok=True)

    def on_epoch(record: dict[str, Any], result: Any) -> None:
        _write_csv(curves / "metrics.csv", result.history)
        _write_curve(curves / "curve.png", result.history, "the last epoch")

    _log(f"volseg weak: {len(tiles)} tagged tiles, classes present "
         + ", ".join(f"{n}: {int(targets[:, i].sum())}" for i, n in enumerate(fg)))
    result = fit(module, next_batch=next_batch, objective=objective, validate=None,
                 select="train_loss", epochs=config.epochs,
                 steps_per_epoch=config.steps_per_epoch, optimizer=config.optimizer,
                 max_minutes=config.max_minutes, device=device, amp=config.amp,
                 on_epoch=on_epoch, progress=progress)
    module.load_state_dict(result.best_state)
    module.eval()
    seconds_cam = time.perf_counter() - t0

    # pseudo-labels, tile by tile
    objects = open_volume(str(instances))[0] if instances is not None else None
    pseudo = np.full(img.shape, config.ignore_id, np.uint8)
    with torch.no_grad():
        for i in range(0, len(tiles), config.batch_size):
            group = tiles[i:i + config.batch_size]
            x = torch.from_numpy(np.stack([read_tile(t) for t in group])).to(device)
            cams = module(x).float().cpu().numpy()
            for t, cam in zip(group, cams, strict=True):
                box = tuple(slice(a, b) for a, b in zip(t.start, t.stop, strict=True))
                obj = None
                if objects is not None:
                    obj = np.asarray(objects[box])[0]
                pseudo[box] = pseudo_tile(cam, t.classes, config.cam,
                                          ignore_id=config.ignore_id, objects=obj)[None]
    counts = np.bincount(pseudo.ravel(), minlength=256)
    scores: dict[str, Any] = {}
    if truth is not None:
        tru = np.asarray(open_volume(str(truth))[0]).astype(np.int64)
        scores = {name: _iou(pseudo, tru, c, config.ignore_id)
                  for c, name in enumerate(config.classes)}
        tagged = pseudo != config.ignore_id
        scores["labelled_fraction_of_tiles"] = float(tagged.sum()) / max(
            1, sum(int(np.prod(size)) for _ in tiles))
    record = {
        "tiles": len(tiles), "puzzle_weight": config.puzzle_weight,
        "cam": config.cam.to_dict(), "epochs_run": len(result.history),
        "stopped": result.stopped, "seconds": round(seconds_cam, 1),
        "pseudo_counts": {("ignore" if v == config.ignore_id else config.classes[v]):
                          int(counts[v]) for v in np.flatnonzero(counts)},
        "pseudo_iou": scores, "tags": str(tags),
    }
    final = ModelSpec(**{**spec.model_dump(), "training": _jsonable(
        {"weak": record, "config": config.to_dict()})})
    save_model(module.cpu(), final, cam_path, overwrite=True)
    _write_csv(curves / "metrics.csv", result.history)
    _write_curve(curves / "curve.png", result.history, "the last epoch")
    write_label_image(pseudo, pseudo_path, voxel_size=meta.voxel_size, overwrite=True,
                      classes=config.classes, ignore_id=config.ignore_id,
                      attrs={"volseg": {"weak": _jsonable(record)}}, pyramid=False)
    _log(f"volseg weak: pseudo-labels {record['pseudo_counts']}"
         + (f", IoU against the truth {scores}" if scores else "") + f"; wrote {pseudo_path}")
    summary: dict[str, Any] = {"cam_model": str(cam_path), "pseudo_labels": str(pseudo_path),
                               "pseudo_counts": record["pseudo_counts"], "pseudo_iou": scores,
                               "seconds_cam": round(seconds_cam, 1)}
    if config.segment is not None:
        seg = config.segment
        seg_image = image if seg.image == config.image else Path(seg.image)
        seg_labels = pseudo_path if seg.labels == config.pseudo_path else Path(seg.labels)
        summary["segment"] = train(seg, image=seg_image, labels=seg_labels,
                                   output_dir=out_dir, overwrite=overwrite, progress=progress,
                                   extra_summary={"weak": _jsonable(record)})
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary
