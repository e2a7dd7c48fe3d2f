"""Throughput per GPU: raw forward, volseg end to end, MONAI sliding window.

Measures on the device present

(a) the raw forward throughput of the network on batches of patches at the chosen
    precision (voxels of patch output per second);
(b) volseg end to end: OME-Zarr in → labels + uint8 probabilities out
    (:func:`volseg.inference.pipeline.run_predict`), voxels of volume per second of
    its block phase (network loading reported apart, as for the CPU benchmark);
(c) MONAI ``sliding_window_inference`` on the whole volume held in memory, with the
    output on the GPU when it fits and on the CPU when it does not;

and reports (b) against (a)/redundancy — the redundancy being the patch voxels
evaluated per volume voxel with the given overlap — the GPU busy fraction during
(b) (NVML or ``nvidia-smi`` sampling) and peak host/GPU memory.

Used by ``volseg bench gpu`` and ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from volseg.errors import ConfigError
from volseg.geometry import PatchGrid
from volseg.inference.predictor import resolve_device

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class GpuBenchConfig:
    """What to measure.

    Attributes
    ----------
    shape
        Volume ``(z, y, x)``; 512³ or more for figures worth extrapolating.
    patch
        Patch ``(z, y, x)`` of the 3D UNet.
    overlap
        Sliding-window overlap (0.25 as in the target).
    batch_size
        Patches per forward pass.
    precision
        ``fp32``, ``bf16`` or ``fp16`` (autocast on CUDA).
    device
        ``auto``, ``cuda`` or ``cpu`` (the CPU only for a smoke run).
    widths
        Channels per level of the default MONAI UNet.
    forward_iterations
        Timed forward passes for (a), after warm-up.
    """

    shape: tuple[int, int, int] = (512, 512, 512)
    patch: tuple[int, int, int] = (128, 128, 128)
    overlap: float = 0.25
    batch_size: int = 4
    precision: str = "bf16"
    device: str = "auto"
    widths: tuple[int, ...] = (32, 64, 128, 256)
    forward_iterations: int = 20


def redundancy(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> float:
    """Patch voxels evaluated per volume voxel for MONAI's sliding-window grid."""
    grid = PatchGrid.create(shape, patch, overlap)
    return len(grid) * math.prod(patch) / math.prod(shape)


class _Sampler:
    """Sample GPU utilisation (%) and host RSS of this process in a background thread."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self._device = device
        self._interval = interval
        self.utilisation: list[float] = []
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._read: Callable[[], float | None] = self._reader()

    def _reader(self) -> Callable[[], float | None]:
        if self._device.type != "cuda":
            return lambda: None
        try:
            torch.cuda.utilization(self._device)  # needs NVML (pynvml)
            return lambda: float(torch.cuda.utilization(self._device))
        except Exception:  # NVML missing: fall back to nvidia-smi
            pass
        index = self._device.index or 0

        def smi() -> float | None:
            out = subprocess.run(
                ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu",
                 "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5,
            )
            return float(out.stdout.strip()) if out.returncode == 0 else None

        return smi

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, proc.memory_info().rss)
            try:
                value = self._read()
            except Exception:  # sampling must never break the benchmark
                value = None
            if value is not None:
                self.utilisation.append(value)
            time.sleep(self._interval)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def busy_fraction(self) -> float | None:
        """Mean utilisation / 100, or ``None`` without a GPU."""
        return float(np.mean(self.utilisation)) / 100 if self.utilisation else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> Any:
    if device.type == "cuda" and precision != "fp32":
        return torch.autocast("cuda", dtype=_DTYPES[precision])
    return nullcontext()


@contextmanager
def _gpu_peak(device: torch.device) -> Iterator[dict[str, int]]:
    out: dict[str, int] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated(device))


def forward_throughput(module: torch.nn.Module, config: GpuBenchConfig,
                       device: torch.device) -> dict[str, Any]:
    """(a) Raw forward throughput on random patches (output voxels per second)."""
    x = torch.randn(config.batch_size, 1, *config.patch, device=device)
    with torch.inference_mode(), _autocast(device, config.precision), _gpu_peak(device) as mem:
        for _ in range(3):
            module(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(config.forward_iterations):
            module(x)
        _sync(device)
        seconds = time.perf_counter() - start
    voxels = config.forward_iterations * config.batch_size * math.prod(config.patch)
    return {"seconds": seconds, "voxels_per_second": voxels / seconds, **mem}


def monai_throughput(module: torch.nn.Module, image: np.ndarray, config: GpuBenchConfig,
                     device: torch.device, n_classes: int) -> dict[str, Any]:
    """(c) MONAI ``sliding_window_inference`` on the whole volume in memory."""
    from monai.inferers import sliding_window_inference

    out_bytes = 2 * n_classes * image.size * 4  # output + importance-count map, float32
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    out_device = device if device.type == "cuda" and out_bytes < 0.5 * free else torch.device("cpu")
    with _Sampler(device) as sampler, _gpu_peak(device) as mem:
        start = time.perf_counter()
        x = torch.from_numpy(image.astype(np.float32))[None, None].to(device)
        with torch.inference_mode(), _autocast(device, config.precision):
            logits = sliding_window_inference(
                x, config.patch, config.batch_size, module, overlap=config.overlap,
                mode="gaussian", sigma_scale=0.125, sw_device=device, device=out_device,
            )
            assert isinstance(logits, torch.Tensor)
            labels = torch.argmax(logits, dim=1).to(torch.uint8).cpu().numpy()
        _sync(device)
        seconds = time.perf_counter() - start
    del logits, labels
    return {"seconds": seconds, "voxels_per_second": image.size / seconds,
            "output_device": str(out_device), "peak_rss_bytes": sampler.peak_rss, **mem}


def volseg_throughput(model_path: Path, image_path: Path, out: Path, config: GpuBenchConfig,
                      device: torch.device) -> dict[str, Any]:
    """(b) volseg end to end: OME-Zarr in, labels + uint8 probabilities out."""
    from volseg.inference.options import PredictOptions
    from volseg.inference.pipeline import run_predict

    with _Sampler(device) as sampler, _gpu_peak(device) as mem:
        options = PredictOptions(overlap=config.overlap, batch_size=config.batch_size,
                                 device=device.type, precision=config.precision,
                                 probabilities="uint8", pyramid=False)
        result = run_predict(model_path, image_path, out, options, overwrite=True)
    return {"seconds": result.seconds, "voxels_per_second": result.voxels_per_second,
            "model_seconds": result.model_seconds, "block_seconds": result.block_seconds,
            "gpu_busy_fraction": sampler.busy_fraction, "peak_rss_bytes": sampler.peak_rss,
            "block_size": list(result.block_size), **mem}


def device_description(device: torch.device) -> dict[str, Any]:
    """GPU model, driver, torch and CUDA versions (or the CPU's description)."""
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__,
                            "cuda": torch.version.cuda}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True)
        info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    else:
        from volseg.provenance import hardware

        info["cpu"] = hardware()
    return info


def run_gpu_bench(config: GpuBenchConfig, *, workdir: Path | None = None) -> dict[str, Any]:
    """Run (a), (b) and (c) and return the figures (see the module notes).

    Raises
    ------
    ConfigError
        When ``device="auto"``/``"cuda"`` finds no GPU (use ``device="cpu"`` for a smoke run).
    """
    from volseg.io.omezarr import write_image
    from volseg.models import ModelSpec, build_model, save_model

    device = resolve_device(config.device)
    if config.device == "auto" and device.type != "cuda":
        raise ConfigError("no CUDA GPU visible: the GPU figures need one; pass --device cpu "
                          "for a smoke run of the benchmark on the CPU")
    classes = ("background", "membrane", "mitochondrion")
    spec = ModelSpec(architecture="unet3d", params={"widths": list(config.widths)},
                     classes=classes, patch_size=config.patch)
    torch.manual_seed(0)
    module = build_model(spec).eval()
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="volseg-bench-gpu-")) if workdir is None else workdir
    try:
        root.mkdir(parents=True, exist_ok=True)
        model_path = save_model(module, spec, root / "model.safetensors", overwrite=True)
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=config.shape, dtype=np.uint8)
        write_image(image, root / "image.ome.zarr", voxel_size=(5.0, 5.0, 5.0),
                    overwrite=True, pyramid=False)
        on_device = module.to(device)
        forward = forward_throughput(on_device, config, device)
        end_to_end = volseg_throughput(model_path, root / "image.ome.zarr",
                                       root / "prediction.ome.zarr", config, device)
        monai = monai_throughput(on_device, image, config, device, len(classes))
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    red = redundancy(config.shape, config.patch, config.overlap)
    ceiling = forward["voxels_per_second"] / red
    return {
        "benchmark": "bench_gpu",
        "config": asdict(config),
        "device": device_description(device),
        "redundancy": red,
        "a_forward": forward,
        "b_volseg": end_to_end,
        "c_monai": monai,
        "b_over_a_per_redundancy": end_to_end["voxels_per_second"] / ceiling,
        "b_over_c": end_to_end["voxels_per_second"] / monai["voxels_per_second"],
        "full_size_seconds_extrapolated": 1065 * 1536 * 2048 / end_to_end["voxels_per_second"],
    }
