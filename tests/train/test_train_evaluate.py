"""Validation helpers: confusion matrix and scores by hand, whole-array prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from volseg.models import ModelSpec, Normalization, build_model
from volseg.train.evaluate import confusion_matrix, predict_array, scores

torch.set_num_threads(2)


def test_confusion_and_scores_hand_worked() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2, 255, 255])
    pred = np.array([0, 0, 1, 1, 0, 2, 2, 1])
    cm = confusion_matrix(pred, truth, n_classes=3, ignore_id=255)
    # rows = truth, columns = prediction; the two ignored voxels are not counted
    np.testing.assert_array_equal(cm, [[2, 1, 0], [1, 1, 0], [0, 0, 1]])
    s = scores(cm, ["a", "b", "c"])
    # a: TP 2, FP 1, FN 1 -> F1 4/6, IoU 2/4; b: TP 1, FP 1, FN 1 -> F1 2/4, IoU 1/3
    # c: TP 1 -> F1 1, IoU 1
    assert s["per_class"]["a"]["f1"] == pytest.approx(4 / 6)
    assert s["per_class"]["b"]["iou"] == pytest.approx(1 / 3)
    assert s["macro_f1"] == pytest.approx((4 / 6 + 1 / 2 + 1) / 3)
    assert s["macro_iou"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert s["accuracy"] == pytest.approx(4 / 6)
    # a class absent from the truth does not enter the macro means
    s2 = scores(np.array([[3, 1], [0, 0]]), ["a", "b"])
    assert s2["per_class"]["b"]["support"] == 0
    assert s2["macro_f1"] == pytest.approx(s2["per_class"]["a"]["f1"])


@pytest.mark.parametrize("arch", ["unet25d", "unet3d", "centre_voxel"])
def test_predict_array_shapes_and_section_subset(arch: str) -> None:
    params, patch = {
        "unet25d": ({"widths": [4, 8], "context": 3}, (1, 16, 16)),
        "unet3d": ({"widths": [4, 8]}, (8, 16, 16)),
        "centre_voxel": ({"receptive_field": 5, "width": 4, "head_width": 4}, (4, 8, 8)),
    }[arch]
    spec = ModelSpec(architecture=arch, params=params, classes=("a", "b"), patch_size=patch,
                     normalization=Normalization(mode="meanstd", mean=10.0, std=2.0))
    module = build_model(spec).eval()
    image = np.random.default_rng(0).normal(10, 2, size=(6, 20, 24)).astype(np.float32)
    out = predict_array(module, spec, image)
    assert out.shape == (2, 6, 20, 24) and np.isfinite(out).all()
    if arch == "unet25d":
        sub = predict_array(module, spec, image, sections=[1, 4])
        np.testing.assert_allclose(sub, out[:, [1, 4]], rtol=1e-5, atol=1e-5)
    if arch == "centre_voxel":
        # dense equals per-voxel: voxel (2, 3, 4) from its own mirrored 5^3 cube
        padded = np.pad(spec.normalization.apply(image), 2, mode="reflect")
        cube = torch.from_numpy(padded[2:7, 3:8, 4:9].copy())[None, None]
        with torch.no_grad():
            single = module(cube)[0, :, 0, 0, 0].numpy()
        np.testing.assert_allclose(out[:, 2, 3, 4], single, rtol=1e-4, atol=1e-5)
