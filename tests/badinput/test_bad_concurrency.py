"""Corpus: two writers of one output, and locks left by dead runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from corpus import Inputs, Refuse, predict

from volseg.io import lock as lockmod
from volseg.io.omezarr import write_image
from volseg.io.store import stored_identity


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _lock(output: Path, **info: object) -> Path:
    path = lockmod.lock_path(output)
    assert isinstance(path, Path)
    path.write_text(json.dumps({"token": "t", "started": time.time(),
                                "heartbeat": time.time(), **info}))
    return path


def test_a_second_predict_into_a_running_output_is_refused(inputs: Inputs, refused: Refuse,
                                                           tmp_path: Path) -> None:
    image = tmp_path / "big.ome.zarr"
    rng = np.random.default_rng(1)
    write_image(rng.integers(60, 160, (16, 64, 64), dtype=np.uint8), image,
                voxel_size=(8, 4, 4), pyramid=False)
    out = tmp_path / "pred.ome.zarr"
    common = ["--model", str(inputs.model), "--input", str(image), "--output", str(out),
              "--device", "cpu", "--no-pyramid", "--block", "8", "16", "16"]
    first = subprocess.Popen([sys.executable, "-m", "volseg", "predict", *common],
                             env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = lockmod.lock_path(out)
    try:
        deadline = time.monotonic() + 60
        while not (out / "0").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before the second could start"
        assert isinstance(lock, Path) and lock.exists()
        # the second run (other settings: it would have mixed them) is refused at once
        err = refused(["predict", *common, "--blend", "constant"],
                      f"is being written by another volseg run (pid {first.pid} on",
                      may_change=[out, lock])
        assert "wait for it to finish" in err
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert not lock.exists()  # released
    import zarr

    level0 = zarr.open_array(str(out / "0"), mode="r")
    assert (stored_identity(level0) or {}).get("blend") == "gaussian"  # the first run's only


def test_a_stale_lock_of_a_dead_process_is_taken_over(inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "pred.ome.zarr"
    lock = _lock(out, pid=_dead_pid(), host=socket.gethostname())
    assert predict(inputs, out) == 0
    assert not lock.exists() and (out / "labels" / "semantic").exists()


def test_a_lock_of_another_host_is_stale_only_without_heartbeat(inputs: Inputs,
                                                                refused: Refuse,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "pred.ome.zarr"
    lock = _lock(out, pid=1, host="elsewhere.invalid")
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output", out,
             "--device", "cpu"], "(pid 1 on elsewhere.invalid, started")
    _lock(out, pid=1, host="elsewhere.invalid", heartbeat=time.time() - 2 * lockmod.STALE)
    assert predict(inputs, out) == 0
    assert not lock.exists()


def test_a_live_lock_of_this_host_is_respected(inputs: Inputs, refused: Refuse,
                                               tmp_path: Path) -> None:
    out = tmp_path / "pred.ome.zarr"
    _lock(out, pid=os.getppid(), host=socket.gethostname(), heartbeat=0.0)  # alive, no beat
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output", out,
             "--device", "cpu"], f"(pid {os.getppid()} on")


def test_the_heartbeat_is_refreshed_and_the_lock_released(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(lockmod, "HEARTBEAT", 0.05)
    out = tmp_path / "missing" / "out.ome.zarr"
    with lockmod.output_lock(out) as path:
        first = lockmod.read_lock(path)
        time.sleep(0.3)
        later = lockmod.read_lock(path)
        with lockmod.output_lock(out):  # nested in one process: allowed
            pass
        assert path.exists()
    assert first is not None and later is not None
    assert later["heartbeat"] > first["heartbeat"] and later["token"] == first["token"]
    assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
    assert not path.exists() and not (tmp_path / "missing").exists()  # made, then removed
