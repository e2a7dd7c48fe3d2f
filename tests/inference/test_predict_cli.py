"""``volseg predict`` and the ``predict`` stage: outputs, one graph, refusal, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from monai.inferers import sliding_window_inference
from torch import nn

from volseg.cli import main
from volseg.inference import (
    Network,
    PredictOptions,
    logits_to_labels,
    logits_to_probabilities,
    predict_logits,
)
from volseg.inference.pipeline import output_state, stream_plan
from volseg.io import open_volume
from volseg.io.omezarr import group_attrs, image_of
from volseg.io.store import CLAIM
from volseg.io.validation import validate

SHAPE = (20, 40, 36)
PATCH = (16, 16, 16)


def _make_inputs(d: Path, shape: tuple[int, ...] = SHAPE) -> tuple[Path, Path]:
    from volseg.io.omezarr import write_image
    from volseg.models import ModelSpec, Normalization, build_model, save_model

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(size=shape) * 25 + 110, 0, 255).astype(np.uint8)
    image = d / "image.ome.zarr"
    write_image(img, image, voxel_size=(8, 4, 4), overwrite=True)
    spec = ModelSpec(architecture="unet3d", params={"widths": [4, 8], "num_res_units": 1},
                     classes=("bg", "membrane", "mito"), patch_size=PATCH,
                     normalization=Normalization(mode="meanstd", mean=110.0, std=25.0))
    torch.manual_seed(0)
    model = save_model(build_model(spec).eval(), spec, d / "model.safetensors")
    return image, model


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _make_inputs(tmp_path_factory.mktemp("predict"))


def _read(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path / "0"), mode="r")[...])


def test_cli_writes_labels_and_probabilities(inputs: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    image, model = inputs
    out = tmp_path / "prediction.ome.zarr"
    argv = ["predict", "--model", str(model), "--input", str(image), "--output", str(out),
            "--probabilities", "uint8", "--block", "8", "20", "18", "--overlap", "0.5",
            "--device", "cpu"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "labels/semantic" in text and "voxels/s" in text
    labels = _read(out / "labels" / "semantic")
    probs = _read(out)
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    assert probs.dtype == np.uint8 and probs.shape == (3, *SHAPE)
    level0 = zarr.open_array(str(out / "0"))
    assert level0.chunks == (3, 8, 20, 18) and level0.shards == (3, 8, 20, 18)  # 0.5
    # equals MONAI's sliding window on the normalised image
    from volseg.models import load_model

    net, spec = load_model(model)
    raw = np.asarray(zarr.open_array(str(image / "0"))[...])
    x = torch.from_numpy(spec.normalization.apply(raw))[None, None]
    with torch.no_grad():
        ref = sliding_window_inference(x, PATCH, 4, net, overlap=0.5, mode="gaussian",
                                       sigma_scale=0.125)
    assert isinstance(ref, torch.Tensor)
    p_ref = torch.softmax(ref[0], 0).numpy()
    assert np.abs(probs.astype(np.float64) - p_ref * 255).max() <= 0.5 + 1e-3
    logits = predict_logits(raw, model, PredictOptions(overlap=0.5, device="cpu")).compute()
    assert np.abs(logits - ref[0].numpy()).max() < 1e-4
    assert np.array_equal(labels, logits_to_labels(logits))
    # metadata: c axis for the probabilities, provenance, an NGFF label image
    attrs = group_attrs(out)
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert attrs["volseg"]["predict"]["classes"] == ["bg", "membrane", "mito"]
    assert "volseg predict" in attrs["volseg"]["command"]
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["bg", "membrane", "mito"]
    assert group_attrs(out / "labels")["labels"] == ["semantic"]
    label = group_attrs(out / "labels" / "semantic")["image-label"]
    assert [p["class"] for p in label["properties"]][:3] == ["bg", "membrane", "mito"]
    assert len(label["colors"]) == len(label["properties"])
    assert validate(out).model == "Image" and validate(out / "labels" / "semantic")
    assert output_state(out, "uint8") == "complete"

    # a finished output is refused (exit 2) unless --overwrite
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv[:7], "--probabilities", "float16", "--overwrite", "--overlap", "0.5",
                 "--device", "cpu"]) == 0
    p16 = _read(out)
    assert p16.dtype == np.float16
    assert np.abs(p16.astype(np.float64) - p_ref).max() < 2e-3


class Recorder(nn.Module):
    """Counts patches; logits = (x, -x) so labels and probabilities both depend on them."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = 0
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self.patches += x.shape[0]
        return torch.cat([x, -x], 1)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_labels_and_probabilities_come_from_one_graph(tmp_path: Path, zarr_format: int) -> None:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    from volseg.io.store import store_arrays

    shape, patch = (12, 17, 15), (6, 6, 6)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    rec = Recorder()
    logits = predict_logits(x, rec,
                            PredictOptions(patch_size=patch, overlap=0.5, block_size=(5, 6, 7),
                                           device="cpu"),
                            network=Network(out_channels=2))
    root = zarr.open_group(str(tmp_path / "o.zarr"), mode="w",
                           zarr_format=zarr_format)  # type: ignore[arg-type]
    # zarr v3: one shard per block, inner chunks smaller than it
    lab = root.create_array("labels", shape=shape, dtype=np.uint8,
                            **({"chunks": (5, 6, 7)} if zarr_format == 2 else
                               {"chunks": (5, 3, 7), "shards": (5, 6, 7)}))
    prob = root.create_array("probs", shape=(2, *shape), dtype=np.float32,
                             **({"chunks": (2, 5, 6, 7)} if zarr_format == 2 else
                                {"chunks": (2, 5, 6, 7), "shards": (2, 5, 6, 7)}))
    pairs = [(logits_to_labels(logits), lab), (logits_to_probabilities(logits), prob)]
    report = store_arrays(pairs, description="test", executor=stream_plan)
    assert report.total_blocks == report.computed_blocks == 3 * 3 * 3
    n_grid = len(dense_patch_slices(shape, patch, _get_scan_interval(shape, patch, 3,
                                                                     (0.5,) * 3)))
    assert rec.patches == n_grid  # the logits were computed once for both outputs
    assert np.array_equal(lab[...], (x < 0).astype(np.uint8))
    np.testing.assert_allclose(prob[0], 1 / (1 + np.exp(-2 * x)), rtol=1e-5, atol=1e-6)
    # nothing left to do: a rerun computes nothing
    rec.patches = 0
    again = store_arrays(pairs, description="test", executor=stream_plan)
    assert (again.total_blocks, again.computed_blocks) == (27, 0)
    assert rec.patches == 0


def _markers(path: Path) -> int:
    """Blocks marked done in both outputs (the writer's claim keys not counted).

    One task writes a block of the labels, then of the probabilities, each followed by
    its marker: a kill between the two leaves the block to redo.
    """
    def names(d: Path) -> set[str]:
        return {n for n in os.listdir(d) if n != CLAIM} if d.is_dir() else set()

    labels = names(path / "labels" / "semantic" / "0" / ".volseg_done")
    probs = {n.split("_", 1)[1] for n in names(path / "0" / ".volseg_done")}  # drop c range
    return len(labels & probs)


def test_interrupt_and_resume_equals_undisturbed_run(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    image, model = _make_inputs(tmp_path, shape=(32, 64, 64))
    common = ["--model", str(model), "--input", str(image), "--probabilities", "uint8",
              "--block", "8", "16", "16", "--device", "cpu", "--no-pyramid"]
    ref, out = tmp_path / "ref.ome.zarr", tmp_path / "killed.ome.zarr"
    assert main(["predict", *common, "--output", str(ref)]) == 0
    capsys.readouterr()
    total = 4 * 4 * 4
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "volseg", "predict", *common, "--output", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while (_markers(out) < total // 2 and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = _markers(out)
    assert 0 < done < total, f"kill came too late or too early ({done} of {total} done)"
    assert output_state(out, "uint8") == "partial"
    assert main(["predict", *common, "--output", str(out)]) == 0
    text = capsys.readouterr().out
    recomputed = total - done
    print(f"resume: {done} of {total} blocks survived the kill, {recomputed} recomputed")
    # only the missing chunks are recomputed, and the run says how many
    assert f"{done} of {total} blocks were done, {recomputed} recomputed" in text
    assert recomputed <= total - total // 2
    assert np.array_equal(_read(out / "labels" / "semantic"), _read(ref / "labels" /
                                                                    "semantic"))
    assert np.array_equal(_read(out), _read(ref))


def test_predict_stage(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    from volseg.stages import predict as stage
    from volseg.workflow.stage import RunContext

    image, model = inputs
    cfg = stage.Config.from_dict({"model": str(model), "input": str(image),
                                  "block_size": [10, 20, 36], "device": "cpu"})
    assert isinstance(cfg, stage.Config)
    assert cfg.probabilities == "uint8" and cfg.output == "prediction.ome.zarr"
    ctx = RunContext(workdir=tmp_path, provenance={"workflow": "test"})
    summary = stage.run(cfg, ctx)
    assert summary["computed_blocks"] == summary["total_blocks"] == 2 * 2
    out = tmp_path / "prediction.ome.zarr"
    assert _read(out).shape == (3, *SHAPE)
    assert group_attrs(out)["volseg"]["stage"] == "predict"
    assert stage.run(cfg, ctx)["status"] == "complete (skipped)"
    with pytest.raises(Exception, match="extra"):
        stage.Config.from_dict({"modle": "x"})


def test_nan_in_the_input_is_a_one_line_error(inputs: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from volseg.io.omezarr import image_state, write_image

    img = np.full(SHAPE, 100.0, dtype=np.float32)
    img[7, 11, 13] = np.nan
    image = tmp_path / "nan.ome.zarr"
    write_image(img, image, voxel_size=(8, 4, 4))
    out = tmp_path / "out.ome.zarr"
    _, model = inputs
    assert main(["predict", "--model", str(model), "--input", str(image),
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "NaN" in err and "(7, 11, 13)" in err and "\n" not in err
    assert str(image) in err  # names the file
    assert image_state(out / "labels" / "semantic") != "complete"


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_labels_only_output_is_a_valid_label_image(inputs: tuple[Path, Path], tmp_path: Path,
                                                   ngff: str) -> None:
    image, model = inputs
    out = tmp_path / "labels.ome.zarr"
    assert main(["predict", "--model", str(model), "--input", str(image), "--output", str(out),
                 "--probabilities", "none", "--block", "8", "20", "18",
                 "--chunks", "4", "8", "64", "--ngff", ngff, "--device", "cpu"]) == 0
    assert validate(out).model == "ImageLabel" and validate(out).version == ngff
    level0 = zarr.open_array(str(out / "0"))
    # chunks: the divisors of the block nearest the request; 0.5: one shard per block
    assert level0.chunks == (4, 10, 18)
    assert level0.shards == (None if ngff == "0.4" else (8, 20, 18))
    attrs = group_attrs(out)
    assert [p["class"] for p in attrs["image-label"]["properties"]][:3] == [
        "bg", "membrane", "mito"]
    assert image_of(out) == image.resolve()
    assert output_state(out, "none") == "complete"
    labels, meta = open_volume(out)
    assert meta.kind == "labels" and labels.shape == SHAPE


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_pyramids_from_the_blocks_equal_reread_pyramids(tmp_path: Path, ngff: str,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """Level 1 is reduced from the blocks in memory; every level equals what
    write_pyramid makes by re-reading level 0 (and the metadata lists the same levels)."""
    import shutil

    from volseg.io.omezarr import read_multiscales, write_pyramid

    image, model = _make_inputs(tmp_path, shape=(12, 36, 600))  # x > 512: levels 1, 2
    out = tmp_path / "pred.ome.zarr"
    assert main(["predict", "--model", str(model), "--input", str(image), "--output",
                 str(out), "--block", "8", "16", "64", "--device", "cpu", "--ngff", ngff,
                 "--overlap", "0.25"]) == 0
    capsys.readouterr()
    ref = tmp_path / "reread.ome.zarr"
    shutil.copytree(out, ref)
    groups = [("", "mean"), ("labels/semantic", "mode")]
    for sub, method in groups:
        write_pyramid(ref / sub, method=method, overwrite=True)  # type: ignore[arg-type]
    for sub, _ in groups:
        ms, ms_ref = read_multiscales(out / sub), read_multiscales(ref / sub)
        assert [lv.path for lv in ms.levels] == [lv.path for lv in ms_ref.levels] == [
            "0", "1", "2"]
        assert [lv.scale for lv in ms.levels] == [lv.scale for lv in ms_ref.levels]
        for level in ms.levels:
            a = zarr.open_array(str(out / sub / level.path), mode="r")
            b = zarr.open_array(str(ref / sub / level.path), mode="r")
            assert np.array_equal(a[...], b[...]), (sub, level.path)
        level1 = zarr.open_array(str(out / sub / "1"), mode="r")
        if ngff == "0.5":  # written with level 0: one shard per (halved) block
            assert tuple(level1.shards)[-3:] == (8, 8, 32)  # z (8 nm) is not halved
    assert validate(out).model == "Image" and validate(out / "labels" / "semantic")
