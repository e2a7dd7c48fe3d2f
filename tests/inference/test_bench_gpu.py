"""The GPU benchmark's plumbing on the CPU, and CPU/GPU agreement where a GPU exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from volseg.bench.gpu import GpuBenchConfig, redundancy, run_gpu_bench
from volseg.errors import ConfigError

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_redundancy_counts_patch_voxels_per_volume_voxel() -> None:
    # 1-D: size 10, patch 4, overlap 0.5 -> interval 2, starts 0 2 4 6: 4 patches x 4 = 16
    assert redundancy((10,), (4,), 0.5) == pytest.approx(1.6)
    # no overlap and an exact tiling: every voxel once
    assert redundancy((8, 8), (4, 4), 0.0) == pytest.approx(1.0)


def test_auto_device_without_a_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_gpu_bench(GpuBenchConfig(device="auto"))


def test_cpu_smoke_run_reports_every_figure(tmp_path) -> None:
    config = GpuBenchConfig(shape=(12, 40, 40), patch=(8, 16, 16), batch_size=2,
                            precision="fp32", device="cpu", widths=(4, 8),
                            forward_iterations=2)
    result = run_gpu_bench(config, workdir=tmp_path)
    for key in ("a_forward", "b_volseg", "c_monai"):
        assert result[key]["voxels_per_second"] > 0
    assert result["redundancy"] == pytest.approx(redundancy((12, 40, 40), (8, 16, 16), 0.25))
    assert result["c_monai"]["output_device"] == "cpu"
    assert (tmp_path / "prediction.ome.zarr" / "labels" / "semantic").exists()


def _predict(model_path, image_path, out, device: str, precision: str) -> np.ndarray:
    from volseg.inference.options import PredictOptions
    from volseg.inference.pipeline import run_predict
    from volseg.io import open_volume

    run_predict(model_path, image_path, out,
                PredictOptions(device=device, precision=precision, probabilities="float32",
                               pyramid=False))
    probs, _ = open_volume(out)
    return np.asarray(probs)


@CUDA
@pytest.mark.parametrize(("precision", "tolerance", "label_agreement"),
                         [("fp32", 1e-4, 1.0), ("bf16", 0.05, 0.99)])
def test_gpu_and_cpu_agree(tmp_path, precision: str, tolerance: float,
                           label_agreement: float) -> None:
    from volseg.io.omezarr import write_image
    from volseg.models import ModelSpec, build_model, save_model

    spec = ModelSpec(architecture="unet3d", params={"widths": [8, 16, 32]},
                     classes=("a", "b", "c"), patch_size=(16, 32, 32))
    torch.manual_seed(0)
    model = save_model(build_model(spec).eval(), spec, tmp_path / "m.safetensors")
    image = np.random.default_rng(0).integers(0, 256, (40, 72, 72), dtype=np.uint8)
    write_image(image, tmp_path / "img.ome.zarr", voxel_size=(5.0, 5.0, 5.0))
    cpu = _predict(model, tmp_path / "img.ome.zarr", tmp_path / "cpu.ome.zarr", "cpu", "fp32")
    gpu = _predict(model, tmp_path / "img.ome.zarr", tmp_path / "gpu.ome.zarr", "cuda", precision)
    assert np.abs(cpu - gpu).max() <= tolerance
    assert (cpu.argmax(0) == gpu.argmax(0)).mean() >= label_agreement
