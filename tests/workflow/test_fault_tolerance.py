"""Faults at cluster scale: a worker lost mid-predict, a whole run SIGKILLed and resumed.

Real parts only: a ``distributed.LocalCluster`` of worker processes, a real MONAI UNet
saved as a volseg model file, real OME-Zarr stores and a real ``volseg run`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from volseg.io import open_volume
from volseg.io.omezarr import write_image
from volseg.io.store import MARKER_DIR
from volseg.models import ModelSpec, build_model, save_model

LABELS = Path("labels") / "semantic" / "0"


def _inputs(root: Path, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    """Write a random image and a random-weight 3-D UNet model file under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    image_path = root / "image.ome.zarr"
    write_image(image, image_path, voxel_size=(5.0, 5.0, 5.0), chunks=(16, 32, 32))
    spec = ModelSpec(architecture="unet3d", params={"widths": [8, 16], "num_res_units": 0},
                     classes=("a", "b", "c"), patch_size=(8, 16, 16))
    torch.manual_seed(0)
    model_path = root / "model.safetensors"
    save_model(build_model(spec).eval(), spec, model_path)
    return image_path, model_path


def _markers(array_dir: Path) -> int:
    try:
        return len(os.listdir(array_dir / MARKER_DIR))
    except FileNotFoundError:
        return 0


def _read(path: Path) -> np.ndarray:
    array, _ = open_volume(path)
    return np.asarray(array)


@pytest.mark.slow
def test_a_worker_killed_mid_predict_costs_only_its_blocks(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from volseg.inference.options import PredictOptions
    from volseg.inference.pipeline import run_predict

    image, model = _inputs(tmp_path, (32, 96, 96))
    options = PredictOptions(block_size=(8, 16, 16), batch_size=2, pyramid=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        reference = run_predict(model, image, tmp_path / "ref.ome.zarr", options,
                                client=client)
        total = reference.total_blocks
        out = tmp_path / "disturbed.ome.zarr"
        killed: dict[str, int] = {}

        def kill_one_worker_midway() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = _markers(out / LABELS)
                if total // 5 <= done < total:
                    pid = next(iter(client.run(os.getpid).values()))
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, done=done)
                    return
                time.sleep(0.005)

        killer = threading.Thread(target=kill_one_worker_midway)
        killer.start()
        result = run_predict(model, image, out, options, client=client)
        killer.join()
    assert killed, "the run finished before a worker could be killed midway"
    assert killed["done"] < total
    assert result.computed_blocks == total
    print(f"\nworker {killed['pid']} killed after {killed['done']}/{total} blocks; "
          "the run completed")
    assert np.array_equal(_read(out / "labels" / "semantic"),
                          _read(tmp_path / "ref.ome.zarr" / "labels" / "semantic"))
    assert np.array_equal(_read(out), _read(tmp_path / "ref.ome.zarr"))


@pytest.mark.slow
def test_a_killed_run_resumes_with_few_blocks_recomputed(tmp_path: Path) -> None:
    from volseg.inference.options import PredictOptions
    from volseg.inference.pipeline import run_predict

    image, model = _inputs(tmp_path / "wf", (48, 128, 128))
    reference = run_predict(model, image, tmp_path / "ref.ome.zarr",
                            PredictOptions(block_size=(8, 16, 16), batch_size=2))
    total = reference.total_blocks
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(textwrap.dedent(f"""\
        name: resume
        output_dir: {tmp_path / "wf"}
        cluster: {{type: threads, num_workers: 2}}
        predict: {{block_size: [8, 16, 16], batch_size: 2}}
        """))
    command = [sys.executable, "-m", "volseg", "run", str(workflow)]
    out = tmp_path / "wf" / "prediction.ome.zarr"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if _markers(out / LABELS) >= total // 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    marked_at_kill = _markers(out / LABELS)
    assert 0 < marked_at_kill < total

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((tmp_path / "wf" / ".volseg" / "stages" / "predict.json").read_text())
    computed = summary["summary"]["computed_blocks"]
    recomputed = computed - (total - marked_at_kill)
    print(f"\nkilled with {marked_at_kill}/{total} blocks complete; the rerun computed "
          f"{computed} blocks, {recomputed} of them ({recomputed / total:.1%}) already done")
    assert computed <= total - marked_at_kill + 0.10 * total
    assert recomputed / total <= 0.10
    assert np.array_equal(_read(out / "labels" / "semantic"),
                          _read(tmp_path / "ref.ome.zarr" / "labels" / "semantic"))
    assert np.array_equal(_read(out), _read(tmp_path / "ref.ome.zarr"))
