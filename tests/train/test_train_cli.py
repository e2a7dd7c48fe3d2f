"""End to end: ``volseg train`` and the ``train`` stage on a tiny synthetic volume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file

from volseg.cli import main
from volseg.io import open_volume
from volseg.models import load_model
from volseg.train.evaluate import predict_array
from volseg.workflow.stage import RunContext

torch.set_num_threads(2)

SHAPE = (16, 32, 32)


def _volume(tmp: Path, sparse: bool = False) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Bright blobs (class 1), dark walls at x % 16 < 2 (class 2), background 0."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    lab = np.zeros(SHAPE, np.uint8)
    for _ in range(8):
        c = rng.uniform((0, 0, 0), SHAPE)
        lab[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 16] = 1
    lab[(xx % 16) < 2] = 2
    img = (100 + 60 * (lab == 1) - 70 * (lab == 2) + rng.normal(0, 10, SHAPE)).clip(0, 255)
    img = img.astype(np.uint8)
    ann = lab.copy()
    if sparse:
        ann[:] = 255
        for z in (3, 8, 13):
            ann[z] = lab[z]
    for name, data in (("image.zarr", img), ("labels.zarr", ann)):
        arr = zarr.open_array(tmp / name, mode="w", shape=SHAPE, chunks=(8, 16, 16),
                              dtype="uint8", zarr_format=2)
        arr[:] = data
    return tmp / "image.zarr", tmp / "labels.zarr", img, lab


CONFIG = """\
image: {image}
labels: {labels}
classes: [background, blob, wall]
model: {{architecture: unet25d, params: {{context: 3, widths: [4, 8]}}, patch_size: [1, 16, 16]}}
split: {{validation: [[12, 16]], gap: 2}}
epochs: 2
steps_per_epoch: 2
batch_size: 2
threads: 2
seed: 5
"""


def test_volseg_train_end_to_end(tmp_path: Path) -> None:
    image, labels, img, _ = _volume(tmp_path)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(CONFIG.format(image=image, labels=labels))
    assert main(["train", str(cfg), "-o", str(tmp_path / "a")]) == 0
    model_path = tmp_path / "a" / "model.safetensors"
    rows = list(csv.DictReader((tmp_path / "a" / "training" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "val_loss", "macro_f1", "macro_iou", "f1[blob]"} <= set(rows[0])
    assert (tmp_path / "a" / "training" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    module, spec = load_model(model_path)
    assert spec.kind == "2.5d" and spec.context == 3 and spec.classes[1] == "blob"
    assert spec.normalization.mode == "percentile"
    assert spec.normalization.low == pytest.approx(np.percentile(img[:10], 5), abs=15)
    t = spec.training
    assert t["train_sections"] == [[0, 10]] and t["validation_sections"] == [[12, 16]]
    assert 1 <= t["best_epoch"] <= 2 and t["seed"] == 5
    best = float(max(float(r["macro_f1"]) for r in rows))
    assert t["best_metrics"]["macro_f1"] == pytest.approx(best)
    logits = predict_array(module, spec, img[12:])
    assert logits.shape == (3, 4, 32, 32) and np.isfinite(logits).all()
    # same seed -> the same model
    assert main(["train", str(cfg), "-o", str(tmp_path / "b")]) == 0
    a = load_file(str(model_path))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an existing model is not replaced without --overwrite
    assert main(["train", str(cfg), "-o", str(tmp_path / "a")]) == 2
    # the trained model runs through `volseg predict` unchanged
    out = tmp_path / "pred.ome.zarr"
    assert main(["predict", "--model", str(model_path), "--input", str(image),
                 "--output", str(out)]) == 0
    semantic, _ = open_volume(out / "labels" / "semantic")
    assert semantic.shape == SHAPE
    expected = predict_array(module, spec, img).argmax(0)
    agree = float((np.asarray(semantic) == expected).mean())
    assert agree > 0.99  # same model, same blending up to float rounding at ties


def test_volseg_train_config_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(CONFIG.format(image="x.zarr", labels="y.zarr") + "learning_rate: 3\n")
    assert main(["train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "learning_rate" in err and "unknown key" in err
    cfg.write_text(CONFIG.format(image="x.zarr", labels="y.zarr"))
    assert main(["train", str(cfg), "--set", "model.params.context=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "context" in err and "odd" in err
    image, labels, _, _ = _volume(tmp_path)
    cfg.write_text(CONFIG.format(image=image, labels=labels))
    assert main(["train", str(cfg), "--set", "split.train=[[0,11]]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "split.train" in err and "gap" in err


def test_a_nan_in_the_training_image_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, labels, img, _ = _volume(tmp_path)
    bad = img.astype(np.float32)
    bad[5, 17, 9] = np.nan
    image = tmp_path / "float.zarr"
    arr = zarr.open_array(image, mode="w", shape=SHAPE, chunks=(8, 16, 16), dtype="float32",
                          zarr_format=2)
    arr[:] = bad
    cfg = tmp_path / "train.yaml"
    cfg.write_text(CONFIG.format(image=image, labels=labels)
                   + "normalization: {mode: meanstd, sample_chunks: 64}\n")
    out = tmp_path / "run"
    assert main(["train", str(cfg), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith("volseg: error: ")
    assert "float.zarr" in last and "(5, 17, 9)" in last
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_region_names_its_first_nan_voxel(in_memory: bool) -> None:
    import dask.array as da

    from volseg.errors import InputError
    from volseg.train.data import Region

    image = np.zeros((6, 8, 8), np.float32)
    image[4, 2, 7] = np.inf

    def region() -> Region:
        return Region(da.from_array(image, chunks=4), da.zeros(image.shape, np.uint8, chunks=4),
                      (2, 6), lut=None, ignore_id=255, in_memory=in_memory, name="img.zarr")

    with pytest.raises(InputError, match=r"img.zarr: .*\(4, 2, 7\)"):
        if in_memory:
            region()  # checked once, when loaded
        else:
            lazy = region()
            lazy.read_image((0, 0, 0), (1, 8, 8))  # z = 2: finite
            lazy.read_image((2, 0, 0), (1, 8, 8))


def test_a_nan_loss_stops_training_with_a_one_line_error(tmp_path: Path) -> None:
    from volseg.train.config import OptimizerConfig
    from volseg.train.loop import TrainingDivergedError, fit

    net = torch.nn.Conv2d(1, 2, 1)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)

    def objective(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return m(x).sum() * float("nan")

    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match=r"epoch 1.*nan"):
        fit(net, next_batch=batch, objective=objective, validate=None, select="macro_f1",
            epochs=2, steps_per_epoch=2, optimizer=OptimizerConfig(), progress=False)
    for k, v in net.state_dict().items():  # no step was taken on the NaN
        assert torch.equal(v, before[k])


def test_train_stage_centre_voxel_on_sparse_slices(tmp_path: Path) -> None:
    """Dense-block centre-voxel training from 3 annotated sections, via the stage."""
    from volseg.stages import train as stage

    image, labels, _, _ = _volume(tmp_path, sparse=True)
    config = stage.Config(
        image=str(image), labels=str(labels), classes=("background", "blob", "wall"),
        model={"architecture": "centre_voxel",
               "params": {"receptive_field": 6, "width": 4, "head_width": 8},
               "patch_size": (2, 8, 8)},
        split={"mode": "slices", "validation_slices": [13], "gap": 2, "slab": 2},
        normalization={"mode": "meanstd"}, epochs=1, steps_per_epoch=3, batch_size=2,
        threads=2,
    )
    summary = stage.run(config, RunContext(workdir=tmp_path / "wf", base_dir=tmp_path))
    assert Path(summary["model"]) == tmp_path / "wf" / "model.safetensors"
    module, spec = load_model(tmp_path / "wf" / "model.safetensors")
    assert spec.kind == "centre_voxel" and spec.receptive_field == 6
    assert spec.normalization.mode == "meanstd"
    # slabs of +-2 around sections 3 and 8, kept 2 sections away from validation [11, 16)
    assert spec.training["train_sections"] == [[1, 9]]
    assert spec.training["validation_sections"] == [[11, 16]]
    # dense blocks: one sample of patch (2, 8, 8) yields up to 128 labelled outputs
    out = module(torch.zeros(1, 1, 2 + 5, 8 + 5, 8 + 5))
    assert tuple(out.shape) == (1, 3, 2, 8, 8)
    # and through `volseg predict`
    pred = tmp_path / "pred.ome.zarr"
    assert main(["predict", "--model", str(tmp_path / "wf" / "model.safetensors"),
                 "--input", str(image), "--output", str(pred)]) == 0
    semantic, _ = open_volume(pred / "labels" / "semantic")
    assert semantic.shape == SHAPE


def test_train_never_writes_into_its_inputs_or_over_a_foreign_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, labels, _, _ = _volume(tmp_path)
    cfg = tmp_path / "train.yaml"
    cfg.write_text(CONFIG.format(image=image, labels=labels))
    before = sorted(p.name for p in image.rglob("*"))
    assert main(["train", str(cfg), "-o", str(image), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "overlaps the input" in err and "image.zarr" in err
    assert sorted(p.name for p in image.rglob("*")) == before
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"someone else's weights")
    assert main(["train", str(cfg), "-o", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a volseg model file" in err
    assert (out / "model.safetensors").read_bytes() == b"someone else's weights"
