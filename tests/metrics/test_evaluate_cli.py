"""``volseg evaluate`` and the ``evaluate`` stage on real OME-Zarr inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information
from sklearn.metrics import average_precision_score, f1_score

from volseg.cli import main
from volseg.errors import OutputExistsError
from volseg.io.omezarr import write_image, write_labels
from volseg.metrics.confusion import quantise_probabilities
from volseg.stages import evaluate as stage
from volseg.workflow.stage import RunContext

CLASSES = ["cytoplasm", "membrane", "mito"]
SHAPE = (12, 40, 36)
SCORES = ("precision", "recall", "f1", "iou", "dice")
INSTANCE_KEYS = {
    "voi_split", "voi_merge", "adapted_rand_error", "adapted_rand_precision",
    "adapted_rand_recall", "cremi_score", "f1_iou50", "mean_matched_iou", "ap",
}  # fmt: skip


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(3)
    zz, yy, xx = np.indices(SHAPE)
    cells = (1 + zz // 4 * 100 + yy // 9 * 10 + xx // 8).astype(np.uint32)
    truth_sem = (cells % 3).astype(np.uint8)
    pred_sem = np.where(rng.random(SHAPE) < 0.8, truth_sem, rng.integers(0, 3, SHAPE))
    pred_sem = pred_sem.astype(np.uint8)
    sparse = truth_sem.copy()
    sparse[rng.random(SHAPE) < 0.6] = 255  # sparse annotation
    prob = rng.random((3, *SHAPE)) + 1.5 * (np.arange(3)[:, None, None, None] == pred_sem)
    prob_u8 = quantise_probabilities(prob / prob.sum(axis=0, keepdims=True))
    pred_cells = np.roll(cells, 2, axis=2) // 2
    image = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    chunks = (5, 16, 16)  # do not divide the shape
    write_image(image, root / "image.ome.zarr", voxel_size=(8, 8, 8), chunks=chunks)
    attrs = {"volseg": {"class_names": CLASSES}}
    write_labels(truth_sem, root / "image.ome.zarr", "truth", chunks=chunks, attrs=attrs)
    write_labels(sparse, root / "image.ome.zarr", "annotation", chunks=chunks, attrs=attrs)
    write_labels(cells, root / "image.ome.zarr", "cells", chunks=chunks)
    write_image(prob_u8, root / "prediction.ome.zarr", voxel_size=(8, 8, 8), chunks=(3, *chunks))
    write_labels(pred_sem, root / "prediction.ome.zarr", "semantic", chunks=chunks)
    write_labels(pred_cells, root / "prediction.ome.zarr", "instances", chunks=chunks)
    return {
        "root": root, "truth": truth_sem, "sparse": sparse, "pred": pred_sem,
        "prob": prob_u8, "cells": cells, "pred_cells": pred_cells,
    }  # fmt: skip


def _paths(root: Path) -> dict[str, str]:
    return {
        "truth": str(root / "image.ome.zarr/labels/truth"),
        "annotation": str(root / "image.ome.zarr/labels/annotation"),
        "cells": str(root / "image.ome.zarr/labels/cells"),
        "pred": str(root / "prediction.ome.zarr/labels/semantic"),
        "prob": str(root / "prediction.ome.zarr"),
        "pred_cells": str(root / "prediction.ome.zarr/labels/instances"),
    }


def test_cli_writes_documented_report(volumes: dict, tmp_path: Path) -> None:
    p = _paths(volumes["root"])
    report = tmp_path / "report"
    argv = ["evaluate", "--prediction", p["pred"], "--truth", p["annotation"],
            "--probabilities", p["prob"], "--instances", p["pred_cells"], p["cells"],
            "--report", str(report)]  # fmt: skip
    assert main(argv) == 0
    for name in ("metrics.json", "metrics.md", "confusion.png", "pr_curves.png"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((report / "metrics.json").read_text())
    assert set(data) == {"semantic", "instances", "meta"}
    sem = data["semantic"]
    assert list(sem["per_class"]) == CLASSES  # names from the labels' volseg.class_names
    for name in CLASSES:
        assert set(sem["per_class"][name]) == {*SCORES, "support"}
    for avg in ("macro", "weighted"):
        assert set(sem[avg]) == set(SCORES)
    assert {"accuracy", "cohen_kappa", "average_precision"} <= set(sem)
    assert set(sem["average_precision"]) == set(CLASSES)
    assert set(data["instances"]) >= INSTANCE_KEYS
    meta = data["meta"]
    assert meta["inputs"]["truth"] == p["annotation"]
    assert meta["ignore"]["semantic"]["ignore_label"] == 255
    assert meta["ignore"]["instances"]["ignore_labels"] == [0]
    assert meta["volseg"]["versions"]["volseg"] and meta["layout_version"] == 1
    # the numbers are the real ones
    keep = volumes["sparse"] != 255
    t, pr = volumes["sparse"][keep], volumes["pred"][keep]
    assert sem["macro"]["f1"] == pytest.approx(f1_score(t, pr, average="macro"), abs=1e-9)
    assert sem["ignored_voxels"] == int((~keep).sum())
    ap = average_precision_score(t == 2, volumes["prob"][2][keep])
    assert sem["average_precision"]["mito"] == pytest.approx(ap, abs=1e-9)
    split, merge = variation_of_information(
        volumes["cells"], volumes["pred_cells"], ignore_labels=(0,)
    )
    assert data["instances"]["voi_merge"] == pytest.approx(merge, abs=1e-9)
    assert data["instances"]["voi_split"] == pytest.approx(split, abs=1e-9)
    md = (report / "metrics.md").read_text()
    assert "| class | precision | recall | F1 | IoU | Dice | support | AP |" in md
    assert "| mito |" in md and "VOI split" in md


def test_cli_instances_only_and_classes_flag(volumes: dict, tmp_path: Path) -> None:
    p = _paths(volumes["root"])
    report = tmp_path / "inst"
    argv = ["evaluate", "--prediction", p["pred_cells"], "--truth", p["cells"], "--instances",
            "--report", str(report)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((report / "metrics.json").read_text())
    assert set(data) == {"instances", "meta"}
    are, _, _ = adapted_rand_error(volumes["cells"], volumes["pred_cells"])
    assert data["instances"]["adapted_rand_error"] == pytest.approx(are, abs=1e-9)
    assert not (report / "confusion.png").exists()
    report2 = tmp_path / "sem"
    argv = ["evaluate", "--prediction", p["pred"], "--truth", p["truth"], "--classes", "a", "b",
            "c", "--ignore-label", "none", "--report", str(report2)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((report2 / "metrics.json").read_text())
    assert list(data["semantic"]["per_class"]) == ["a", "b", "c"]
    assert data["semantic"]["ignored_voxels"] == 0
    assert not (report2 / "pr_curves.png").exists()  # no probabilities given


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("volseg: error: ")
    return err


def test_cli_errors_exit_2_with_one_line(
    volumes: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _paths(volumes["root"])
    report = tmp_path / "r"
    missing = str(tmp_path / "nope.ome.zarr")
    assert main(["evaluate", "--prediction", missing, "--truth", p["truth"],
                 "--report", str(report)]) == 2  # fmt: skip
    assert "nope.ome.zarr" in _one_line_error(capsys)
    # shape mismatch: a 2x-downsampled truth
    small = tmp_path / "small.npy"
    np.save(small, volumes["truth"][:, ::2, ::2])
    assert main(["evaluate", "--prediction", p["pred"], "--truth", str(small),
                 "--report", str(report)]) == 2  # fmt: skip
    assert "shape" in _one_line_error(capsys)
    # existing report without --overwrite
    args = ["evaluate", "--prediction", p["pred"], "--truth", p["truth"], "--report", str(report)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert main([*args, "--overwrite"]) == 0
    # --instances with one value
    assert main([*args, "--overwrite", "--instances", p["cells"]]) == 2
    _one_line_error(capsys)


def test_cli_subprocess_exit_status(volumes: dict, tmp_path: Path) -> None:
    p = _paths(volumes["root"])
    proc = subprocess.run(
        [sys.executable, "-m", "volseg", "evaluate", "--prediction", str(tmp_path / "missing"),
         "--truth", p["truth"], "--report", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing" in proc.stderr


def test_stage_runs_with_workflow_paths(volumes: dict, tmp_path: Path) -> None:
    root = volumes["root"]
    config = stage.Config.from_dict(
        {
            "prediction": "prediction.ome.zarr/labels/semantic",
            "truth": "image.ome.zarr/labels/annotation",
            "probabilities": "prediction.ome.zarr",
            "instances": {
                "prediction": "prediction.ome.zarr/labels/instances",
                "truth": "image.ome.zarr/labels/cells",
            },
            "report": str(tmp_path / "report"),
        }
    )
    assert isinstance(config, stage.Config)
    assert stage.NAME == "evaluate" and stage.ORDER == 70
    ctx = RunContext(workdir=root, base_dir=tmp_path)
    summary = stage.run(config, ctx)
    data = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert summary["macro_f1"] == data["semantic"]["macro"]["f1"]
    assert summary["voi_split"] == data["instances"]["voi_split"]
    assert data["meta"]["volseg"]["stage"] == "evaluate"
    with pytest.raises(OutputExistsError):
        stage.run(config, ctx)
    defaults = stage.Config()
    assert defaults.prediction == "crf.ome.zarr"
    assert defaults.truth == "image.ome.zarr/labels/truth"
    assert defaults.report == "report" and defaults.probabilities is None


def test_stage_in_a_workflow_run(volumes: dict, tmp_path: Path) -> None:
    from volseg.workflow.runner import run_workflow
    from volseg.workflow.schema import load_workflow

    yaml_path = tmp_path / "wf.yaml"
    yaml_path.write_text(
        f"name: eval\noutput_dir: {volumes['root']}\n"
        "evaluate:\n"
        "  prediction: prediction.ome.zarr/labels/semantic\n"
        "  truth: image.ome.zarr/labels/annotation\n"
        "  report: wf-report\n"
    )
    workflow = load_workflow(yaml_path)
    (outcome,) = run_workflow(workflow, base_dir=tmp_path)
    assert outcome.status == "ran" and outcome.summary["accuracy"] > 0.5
    data = json.loads((volumes["root"] / "wf-report" / "metrics.json").read_text())
    assert data["meta"]["volseg"]["stage_config"]["report"] == "wf-report"
    assert data["meta"]["ignore"]["semantic"]["ignore_label"] == 255
    (again,) = run_workflow(workflow, base_dir=tmp_path)
    assert again.status == "skipped"


def test_class_names_from_the_predict_record_of_the_image_group(
    volumes: dict, tmp_path: Path
) -> None:
    # what the predict stage writes: names under volseg.predict.classes of the image group
    record = {"volseg": {"predict": {"classes": ["x", "y", "z"]}}}
    group = tmp_path / "p.ome.zarr"
    write_image(volumes["prob"], group, voxel_size=(8, 8, 8), chunks=(3, 6, 20, 20), attrs=record)
    write_labels(volumes["pred"], group, "semantic", chunks=(6, 20, 20))
    truth = tmp_path / "truth.npy"
    np.save(truth, volumes["truth"])
    report = tmp_path / "r"
    argv = ["evaluate", "--prediction", str(group / "labels" / "semantic"), "--truth",
            str(truth), "--probabilities", str(group), "--report", str(report)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((report / "metrics.json").read_text())
    assert list(data["semantic"]["per_class"]) == ["x", "y", "z"]
    assert set(data["semantic"]["average_precision"]) == {"x", "y", "z"}


def test_z_range_evaluates_only_those_sections(volumes: dict, tmp_path: Path) -> None:
    paths = _paths(volumes["root"])
    report = tmp_path / "held_out"
    assert main(["evaluate", "--prediction", paths["pred"], "--truth", paths["truth"],
                 "--probabilities", paths["prob"], "--z-range", "5", "11",
                 "--report", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    truth, pred = volumes["truth"][5:11].ravel(), volumes["pred"][5:11].ravel()
    expected = f1_score(truth, pred, average=None, labels=[0, 1, 2])
    for name, value in zip(CLASSES, expected, strict=True):
        assert metrics["semantic"]["per_class"][name]["f1"] == pytest.approx(value, abs=1e-12)
    assert metrics["semantic"]["per_class"]["mito"]["support"] == int((truth == 2).sum())
    assert main(["evaluate", "--prediction", paths["pred"], "--truth", paths["truth"],
                 "--z-range", "5", "99", "--report", str(tmp_path / "bad")]) == 2


def test_no_label_of_the_confusion_plot_is_clipped(tmp_path: Path) -> None:
    """The saved PNG has a white margin all round: no text runs off its edges."""
    from PIL import Image

    from volseg.metrics.report import plot_confusion

    names = ["cytoplasm", "cell membrane", "mitochondrion", "mitochondrial membrane",
             "synapse", "vesicle", "undefined"]
    cm = np.arange(49).reshape(7, 7)
    plot_confusion({"confusion_matrix": cm.tolist(), "class_names": names},
                   tmp_path / "confusion.png")
    rgb = np.asarray(Image.open(tmp_path / "confusion.png").convert("L"))
    for edge in (rgb[:3], rgb[-3:], rgb[:, :3], rgb[:, -3:]):
        assert edge.min() >= 250
    dark_columns = np.flatnonzero((rgb < 128).any(axis=0))
    assert dark_columns[0] < 40  # the 'truth' label sits near the left edge, inside it
