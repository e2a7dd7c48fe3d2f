"""Training validation equals ``volseg predict`` + ``volseg evaluate`` on the same sections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from volseg.inference import PredictOptions
from volseg.inference.pipeline import run_predict
from volseg.io.omezarr import write_image, write_labels
from volseg.metrics.pipeline import EvaluateOptions, EvaluationInputs, run_evaluation
from volseg.models import read_spec
from volseg.synth import fibsem
from volseg.train import train
from volseg.train.config import TrainConfig

torch.set_num_threads(2)

SHAPE = (24, 48, 48)
VALIDATION = (17, 24)


@pytest.mark.parametrize("architecture, params, patch", [
    ("unet25d", {"context": 3, "widths": [4, 8]}, (1, 32, 32)),
    ("unet3d", {"widths": [4, 8]}, (8, 32, 32)),  # z: 7 sections, shorter than the patch
])
def test_validation_figures_equal_predict_then_evaluate(
        tmp_path: Path, architecture: str, params: dict[str, object],
        patch: tuple[int, int, int]) -> None:
    phantom = fibsem(SHAPE, seed=3, chunks=(8, 48, 48))
    image, truth = np.asarray(phantom.image), np.asarray(phantom.truth)
    write_image(image, tmp_path / "image.ome.zarr", voxel_size=(5, 5, 5), pyramid=False)
    write_labels(truth, tmp_path / "image.ome.zarr", "truth", pyramid=False)
    config = TrainConfig.model_validate({
        "image": str(tmp_path / "image.ome.zarr"),
        "labels": str(tmp_path / "image.ome.zarr" / "labels" / "truth"),
        "classes": list(phantom.class_names),
        "model": {"architecture": architecture, "params": params, "patch_size": list(patch)},
        "split": {"train": [[0, 13]], "validation": [list(VALIDATION)], "gap": 4},
        "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "threads": 2, "seed": 1,
    })
    summary = train(config, image=config.image, labels=config.labels, output_dir=tmp_path,
                    progress=False)
    training = read_spec(summary["model"]).training
    assert training["validation_sections"] == [list(VALIDATION)]

    # the validation sections as a volume of their own, through predict and evaluate
    a, b = VALIDATION
    write_image(image[a:b], tmp_path / "held_out.ome.zarr", voxel_size=(5, 5, 5), pyramid=False)
    write_labels(truth[a:b], tmp_path / "held_out.ome.zarr", "truth", pyramid=False)
    run_predict(summary["model"], tmp_path / "held_out.ome.zarr", tmp_path / "pred.ome.zarr",
                PredictOptions(probabilities="none", pyramid=False))
    metrics = run_evaluation(
        EvaluationInputs(prediction=str(tmp_path / "pred.ome.zarr" / "labels" / "semantic"),
                         truth=str(tmp_path / "held_out.ome.zarr" / "labels" / "truth")),
        tmp_path / "report", EvaluateOptions(classes=list(phantom.class_names)), quiet=True)
    sem = metrics["semantic"]

    assert training["confusion"] == sem["confusion_matrix"]
    best = training["best_metrics"]
    assert best["accuracy"] == sem["accuracy"]
    present = [n for n, c in sem["per_class"].items() if c["support"] > 0]
    for name in present:
        assert best["per_class"][name]["f1"] == sem["per_class"][name]["f1"]
        assert best["per_class"][name]["iou"] == sem["per_class"][name]["iou"]
    assert best["macro_f1"] == pytest.approx(
        np.mean([sem["per_class"][n]["f1"] for n in present]), abs=1e-12)
