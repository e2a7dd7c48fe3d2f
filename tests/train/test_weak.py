"""Weak labels from tile tags: CAM classifier (Puzzle-CAM), pseudo-labels, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from volseg.cli import main
from volseg.errors import InputError
from volseg.io import open_volume
from volseg.io.omezarr import write_image, write_labels
from volseg.models import load_model
from volseg.synth import em2d
from volseg.train.weak import (
    CamConfig,
    Tile,
    WeakConfig,
    pseudo_tile,
    puzzle,
    read_tags,
    tags_from_labels,
    weak,
    write_tags,
)

torch.set_num_threads(2)


def test_pseudo_tile_thresholds_tags_and_instances() -> None:
    cam = np.zeros((2, 4, 4), np.float32)
    cam[0, 0, :] = [10, 5, 2, -3]  # class 1: normalised 1, 0.5, 0.2, 0
    cam[1, 3, 3] = 7.0            # class 2 is not tagged: never assigned
    cfg = CamConfig(threshold=0.4, background_threshold=0.1, instance_fill=None)
    out = pseudo_tile(cam, frozenset({1}), cfg, ignore_id=255)
    assert out[0].tolist() == [1, 1, 255, 0] and out[3, 3] == 0 and (out[1:] == 0).all()
    # intersected with objects: foreground outside objects -> background
    objects = np.zeros((4, 4), np.int32)
    objects[0, 0] = 5
    out = pseudo_tile(cam, frozenset({1}), cfg, ignore_id=255, objects=objects)
    assert out[0].tolist() == [1, 0, 255, 0]
    # an object mostly foreground is filled with its class
    objects[1, 0] = 5  # object 5: (0, 0) foreground, (1, 0) background -> 1/2 >= 0.5
    fill = CamConfig(threshold=0.4, background_threshold=0.1, instance_fill=0.5)
    out = pseudo_tile(cam, frozenset({1}), fill, ignore_id=255, objects=objects)
    assert out[0, 0] == 1 and out[1, 0] == 1 and out[0, 1] == 0


def test_puzzle_recomposes_a_per_pixel_network() -> None:
    net = torch.nn.Conv2d(1, 2, 1)
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(puzzle(net, x), net(x), atol=1e-6)


def test_tags_round_trip_and_one_line_errors(tmp_path: Path) -> None:
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[1, 5, 6] = 1
    tiles = tags_from_labels(labels, tile=4, n_classes=2)
    assert len(tiles) == 8 and [t for t in tiles if t.classes] == [
        Tile((1, 4, 4), (2, 8, 8), frozenset({1}))]
    path = write_tags(tmp_path / "tags.csv", tiles, ("background", "mito"))
    assert read_tags(path, ("background", "mito")) == tiles
    path.write_text("z0,y0,x0,z1,y1,x1,classes\n0,0,0,1,4,4,mitochondria\n")
    with pytest.raises(InputError, match=r"tags.csv:2: 'mitochondria' is not a foreground"):
        read_tags(path, ("background", "mito"))
    path.write_text("z0,y0,x0,classes\n")
    with pytest.raises(InputError, match="missing column"):
        read_tags(path, ("background", "mito"))


def test_weak_labels_on_the_em2d_phantom_beat_chance(tmp_path: Path) -> None:
    """Tags derived from the phantom's truth per 64^2 tile -> CAM pseudo-labels."""
    ph = em2d((4, 128, 128), seed=0, blob_spacing=32, blob_radius=(3.0, 8.0))
    image = tmp_path / "img.ome.zarr"
    write_image(ph.image, image, voxel_size=ph.voxel_size, pyramid=False)
    write_labels(ph.truth, image, "truth", voxel_size=ph.voxel_size, pyramid=False)
    truth = np.asarray(ph.truth)
    tiles = tags_from_labels(truth, tile=64, n_classes=2, min_voxels=10)
    tags = write_tags(tmp_path / "tags.csv", tiles, ph.class_names)
    cfg = WeakConfig(
        image=str(image), tags=str(tags), classes=ph.class_names,
        model={"architecture": "unet25d", "params": {"context": 1, "widths": [4, 8]},
               "patch_size": (1, 64, 64)},
        epochs=2, steps_per_epoch=8, batch_size=4, threads=2,
        optimizer={"lr": 1e-2, "scheduler": "none"},
        segment={"model": {"architecture": "unet25d",
                           "params": {"context": 1, "widths": [4, 8]},
                           "patch_size": (1, 64, 64)},
                 "split": {"validation": [[3, 4]], "gap": 0}, "epochs": 1,
                 "steps_per_epoch": 2, "batch_size": 2, "threads": 2},
    )
    assert cfg.segment is not None and cfg.segment.labels == "pseudo.ome.zarr"
    out = weak(cfg, image=image, tags=tags, truth=image / "labels" / "truth",
               output_dir=tmp_path / "o", progress=False)
    pseudo = np.asarray(open_volume(tmp_path / "o" / "pseudo.ome.zarr")[0])
    fg, truth_fg = pseudo == 1, truth == 1
    iou = (fg & truth_fg).sum() / (fg | truth_fg).sum()
    assert iou == pytest.approx(out["pseudo_iou"]["contamination"])
    # chance: a random mask of the same size; the tags alone: every positive tile
    q, f = fg.mean(), truth_fg.mean()
    chance = q * f / (q + f - q * f)
    positive = np.zeros_like(fg)
    for t in tiles:
        if t.classes:
            positive[t.start[0], t.start[1]:t.stop[1], t.start[2]:t.stop[2]] = True
    tags_only = (positive & truth_fg).sum() / (positive | truth_fg).sum()
    assert iou > 5 * chance and iou > tags_only, (iou, chance, tags_only)
    # no contamination pseudo-label in a tile tagged without it
    for t in tiles:
        if not t.classes:
            assert not fg[t.start[0], t.start[1]:t.stop[1], t.start[2]:t.stop[2]].any()
    _, spec = load_model(tmp_path / "o" / "cam.safetensors")
    assert spec.classes == ("contamination",) and spec.training["weak"]["tiles"] == 16
    _, seg = load_model(tmp_path / "o" / "model.safetensors")
    assert seg.classes == ph.class_names and "weak" in seg.training
    assert out["segment"]["model"] == str(tmp_path / "o" / "model.safetensors")


def test_weak_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "weak.yaml"
    cfg.write_text("image: x.zarr\ntags: t.csv\nclasses: [background, mito]\n"
                   "model: {architecture: unet3d, patch_size: [8, 64, 64]}\n")
    assert main(["weak", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unet25d" in err
    cfg.write_text("image: x.zarr\ntags: t.csv\nclasses: [background, mito]\n")
    assert main(["weak", str(cfg), "--check"]) == 0
