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
from volseg.inference.pipeline import output_state, store_together

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
    assert zarr.open_array(str(out / "0")).chunks == (3, 8, 20, 18)
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
    attrs = zarr.open_group(str(out)).attrs.asdict()
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert attrs["volseg"]["predict"]["classes"] == ["bg", "membrane", "mito"]
    assert "volseg predict" in attrs["volseg"]["command"]
    assert zarr.open_group(str(out / "labels")).attrs["labels"] == ["semantic"]
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


def test_labels_and_probabilities_come_from_one_graph(tmp_path: Path) -> None:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    shape, patch = (12, 17, 15), (6, 6, 6)
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    rec = Recorder()
    logits = predict_logits(x, rec,
                            PredictOptions(patch_size=patch, overlap=0.5, block_size=(5, 6, 7),
                                           device="cpu"),
                            network=Network(out_channels=2))
    root = zarr.open_group(str(tmp_path / "o.zarr"), mode="w", zarr_format=2)
    lab = root.create_array("labels", shape=shape, chunks=(5, 6, 7), dtype=np.uint8)
    prob = root.create_array("probs", shape=(2, *shape), chunks=(2, 5, 6, 7),
                             dtype=np.float32)
    total, computed = store_together(
        [(logits_to_labels(logits), lab), (logits_to_probabilities(logits), prob)],
        description="test")
    assert total == computed == 3 * 3 * 3
    n_grid = len(dense_patch_slices(shape, patch, _get_scan_interval(shape, patch, 3,
                                                                     (0.5,) * 3)))
    assert rec.patches == n_grid  # the logits were computed once for both outputs
    assert np.array_equal(lab[...], (x < 0).astype(np.uint8))
    np.testing.assert_allclose(prob[0], 1 / (1 + np.exp(-2 * x)), rtol=1e-5, atol=1e-6)
    # nothing left to do: a rerun computes nothing
    rec.patches = 0
    assert store_together([(logits_to_labels(logits), lab),
                           (logits_to_probabilities(logits), prob)],
                          description="test") == (27, 0)
    assert rec.patches == 0


def _markers(path: Path) -> int:
    d = path / "labels" / "semantic" / "0" / ".volseg_done"
    return len(os.listdir(d)) if d.is_dir() else 0


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
    assert zarr.open_group(str(out)).attrs["volseg"]["stage"] == "predict"
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
