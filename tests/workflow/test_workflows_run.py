"""The shipped workflows (``workflows/*.yaml``), shrunk with ``--set`` overrides and run.

Each run uses the workflow file as shipped plus overrides that make it small (a tiny
volume, a tiny network, one short epoch), so what is tested is the file a user runs:
its stage sections, paths and products.  Quality is not tested here (one epoch of two
steps learns nothing); the products, their shapes, voxel sizes and the report are.
"""

from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from volseg.cluster import LocalProcessCluster, SlurmCluster
from volseg.io import open_volume
from volseg.workflow.runner import run_workflow
from volseg.workflow.schema import Workflow, load_workflow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"

TINY_TRAINING = (
    "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.threads=1",
    "train.early_stopping=null", "train.max_minutes=null",
)


def _load(name: str, out: Path, *overrides: str) -> Workflow:
    return load_workflow(WORKFLOWS / f"{name}.yaml", [f"output_dir={out}", *overrides])


def _run(wf: Workflow, base_dir: Path) -> list[str]:
    outcomes = run_workflow(wf, base_dir=base_dir)
    assert all(o.status == "ran" for o in outcomes)
    return [o.name for o in outcomes]


def _metrics(out: Path) -> dict:
    return json.loads((out / "report" / "metrics.json").read_text())


def _previews(out: Path, planes: tuple[str, ...] = ("xy", "xz", "yz")) -> None:
    for plane in planes:
        assert (out / "preview" / f"{plane}.png").stat().st_size > 0
    assert sorted(p.stem for p in (out / "preview").glob("*.png")) == sorted(planes)


def test_micrograph_shrunk_run_reports_contamination_iou(tmp_path: Path) -> None:
    out = tmp_path / "run"
    wf = _load(
        "micrograph", out, "synth.shape=[6, 96, 96]", "synth.annotated_slices=3",
        *TINY_TRAINING, "train.model.patch_size=[1, 64, 64]",
        "train.model.params={context: 1, widths: [8, 16], num_res_units: 0}",
    )
    assert _run(wf, tmp_path) == ["synth", "train", "predict", "evaluate", "preview"]
    semantic = _metrics(out)["semantic"]
    assert semantic["class_names"] == ["background", "contamination"]
    iou = semantic["per_class"]["contamination"]["iou"]
    assert 0.0 <= iou <= 1.0
    assert semantic["evaluated_voxels"] == 6 * 96 * 96  # every micrograph, fully labelled
    truth, _ = open_volume(out / "image.ome.zarr" / "labels" / "truth")
    pred, _ = open_volume(out / "prediction.ome.zarr" / "labels" / "semantic")
    t, p = truth.compute() == 1, pred.compute() == 1
    assert iou == pytest.approx((t & p).sum() / max((t | p).sum(), 1), abs=1e-6)
    _previews(out, ("xy",))  # a stack of 6 micrographs: xy sections, no 6-pixel strips


def test_cryoet_shrunk_run_writes_membranes_mrc_with_the_input_voxel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    wf = _load(
        "cryoet_membranes", out, "synth.shape=[24, 64, 64]", "synth.chunks=[8, 64, 64]",
        "convert.chunks=[8, 64, 64]",  # convert.input: the synth product, found in `out`
        *TINY_TRAINING, "train.model.patch_size=[1, 32, 32]", "train.split.gap=2",
        "train.model.params={context: 5, widths: [8, 16], num_res_units: 0}",
    )
    assert _run(wf, tmp_path) == [
        "synth", "convert", "train", "predict", "evaluate", "export", "preview"]
    with mrcfile.open(out / "tomogram.mrc", header_only=True) as mrc:
        tomogram_voxel = mrc.voxel_size.tolist()
    assert tomogram_voxel == pytest.approx((14.0, 14.0, 14.0))
    pred, _ = open_volume(out / "prediction.ome.zarr" / "labels" / "semantic")
    with mrcfile.open(out / "membranes.mrc") as mrc:
        assert mrc.voxel_size.tolist() == pytest.approx(tomogram_voxel)
        assert mrc.data.shape == (24, 64, 64) and mrc.data.dtype == np.int8
        assert np.array_equal(mrc.data, (pred.compute() == 1).astype(np.int8))
    assert 0.0 <= _metrics(out)["semantic"]["per_class"]["membrane"]["iou"] <= 1.0
    _previews(out)
    capsys.readouterr()
    assert {o.status for o in run_workflow(wf, base_dir=tmp_path)} == {"skipped"}
    assert "nothing to do" in capsys.readouterr().err


def test_fibsem_workflow_is_the_full_size_cluster_use_case() -> None:
    wf = load_workflow(WORKFLOWS / "fibsem.yaml")
    config = wf.config
    assert config.synth.shape == (1065, 1536, 2048)  # type: ignore[attr-defined]
    assert len(config.train.classes) == 7  # type: ignore[attr-defined]
    assert config.train.model.architecture in ("unet3d", "centre_voxel")  # type: ignore[attr-defined]
    cluster = config.cluster  # type: ignore[attr-defined]
    assert isinstance(cluster, SlurmCluster) and cluster.gpus_per_job >= 1
    mu = np.array(config.crf.compatibility)  # type: ignore[attr-defined]
    names = list(config.train.classes)  # type: ignore[attr-defined]
    membrane, mito = names.index("cell membrane"), names.index("mitochondrion")
    off = mu[~np.eye(7, dtype=bool)]
    assert mu[membrane, mito] == mu[mito, membrane] > np.median(off)
    assert sorted(config.instances.classes) == sorted(  # type: ignore[attr-defined]
        [names.index("mitochondrion"), names.index("vesicle")])
    # the workstation override documented in the file's header
    local = load_workflow(WORKFLOWS / "fibsem.yaml", [
        "cluster={type: local, n_workers: 4, memory_limit: 8GiB}"]).config.cluster  # type: ignore[attr-defined]
    assert isinstance(local, LocalProcessCluster) and local.n_workers == 4


def test_fibsem_shrunk_run_on_the_threaded_scheduler(tmp_path: Path) -> None:
    out = tmp_path / "run"
    wf = _load(
        "fibsem", out, "cluster={type: threads}", "synth.shape=[32, 96, 96]",
        "synth.chunks=[16, 48, 48]", "synth.annotated_slices=4",
        *TINY_TRAINING, "train.batch_size=1", "train.model.patch_size=[8, 32, 32]",
        "train.model.params={widths: [8, 16], num_res_units: 0}", "train.split.gap=2",
        "predict.block_size=[16, 48, 48]", "crf.iterations=1", "instances.block_size=[16, 48, 48]",
    )
    assert _run(wf, tmp_path) == [
        "synth", "train", "predict", "crf", "instances", "evaluate", "preview"]
    crf, meta = open_volume(out / "crf.ome.zarr")
    assert crf.shape == (32, 96, 96) and meta.voxel_size == pytest.approx((5.0, 5.0, 5.0))
    assert int(crf.max().compute()) < 7
    header = (out / "instances.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["id", "class", "voxel_count"]
    rows = [line.split(",") for line in (out / "instances.csv").read_text().splitlines()[1:]]
    assert {int(r[1]) for r in rows} <= {2, 5}
    assert len(_metrics(out)["semantic"]["per_class"]) == 7
    _previews(out)


def test_lucchi_paths_are_overridable() -> None:
    wf = load_workflow(WORKFLOWS / "lucchi.yaml", [
        "convert.input=/data/lucchi/training.tif",
        "convert.labels.truth.path=/data/lucchi/training_groundtruth.tif"])
    convert = wf.config.convert  # type: ignore[attr-defined]
    assert convert.input == "/data/lucchi/training.tif"
    assert convert.labels["truth"].path == "/data/lucchi/training_groundtruth.tif"
    assert convert.labels["truth"].values == {255: 1}  # kept: only the path was overridden
    shipped = load_workflow(WORKFLOWS / "lucchi.yaml").config
    assert shipped.convert.input == "../shared/data/lucchi/training.tif"  # type: ignore[attr-defined]
    assert shipped.train.split.train == [(0, 120)]  # type: ignore[attr-defined]
    # model selection next to the training slab; the scored slab is seen by nothing else
    assert shipped.train.split.validation == [(120, 130)]  # type: ignore[attr-defined]
    assert tuple(shipped.evaluate.z_range) == (130, 165)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.data
def test_lucchi_real_data_tiny_run(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "run"
    lucchi = shared_data / "lucchi"
    wf = _load(
        "lucchi", out, f"convert.input={lucchi / 'training.tif'}",
        f"convert.labels.truth.path={lucchi / 'training_groundtruth.tif'}",
        *TINY_TRAINING, "train.model.patch_size=[1, 64, 64]", "train.validation_sections=2",
        "train.model.params={context: 5, widths: [8, 16], num_res_units: 0}",
        "predict.batch_size=16", "predict.block_size=[55, 384, 512]",  # 12 blocks
    )
    assert _run(wf, tmp_path) == [
        "convert", "train", "predict", "postprocess", "evaluate", "preview"]
    image, meta = open_volume(out / "image.ome.zarr")
    assert image.shape == (165, 768, 1024) and meta.voxel_size == pytest.approx((5.0, 5.0, 5.0))
    truth, _ = open_volume(out / "image.ome.zarr" / "labels" / "truth")
    raw, _ = open_volume(lucchi / "training_groundtruth.tif")
    assert np.array_equal(truth[150].compute(), (raw[150].compute() == 255).astype(np.uint8))
    pred, _ = open_volume(out / "prediction.ome.zarr" / "labels" / "semantic")
    assert pred.shape == image.shape and int(pred.max().compute()) <= 1
    post, _ = open_volume(out / "postprocess.ome.zarr")  # what evaluate scores
    assert post.shape == image.shape and int(post.max().compute()) <= 1
    semantic = _metrics(out)["semantic"]
    assert semantic["ignored_voxels"] == 0  # 255 became class 1, nothing is ignored
    held_out = raw[130:165]  # lucchi.yaml scores only the held-out sections
    assert semantic["per_class"]["mitochondrion"]["support"] == int(
        (held_out == 255).sum().compute())
    _previews(out)
