"""Pipelines and workflows on object storage, against a real S3 server on 127.0.0.1.

predict, crf, instances and evaluate read and write ``s3://`` URLs and give exactly
what the same commands give on local disk; a ``volseg predict`` SIGKILLed while
writing into a bucket resumes block by block; a workflow whose ``output_dir`` is a
bucket gets its endpoint and keys from ``storage_options`` alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import s3fs
import torch

from volseg.cli import main
from volseg.io import open_volume
from volseg.io import testing as fmt
from volseg.io.omezarr import write_image, write_labels
from volseg.io.servers import S3_ENVIRONMENT
from volseg.io.store import MARKER_DIR
from volseg.models import ModelSpec, Normalization, build_model, save_model
from volseg.workflow.runner import run_workflow
from volseg.workflow.schema import load_workflow

SHAPE = (16, 32, 48)
BLOCK = ["--block", "8", "16", "16"]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An image with its truth, a tiny UNet model file, and the local runs to compare to."""
    root = tmp_path_factory.mktemp("local")
    image = fmt.sample_volume(SHAPE)
    truth = (image > 120).astype(np.uint8) + (image > 170).astype(np.uint8)
    write_image(image, root / "image.ome.zarr", voxel_size=(8, 4, 4))
    write_labels(truth, root / "image.ome.zarr", "truth", classes=("bg", "a", "b"))
    spec = ModelSpec(architecture="unet3d", params={"widths": [4, 8], "num_res_units": 0},
                     classes=("bg", "a", "b"), patch_size=(8, 16, 16),
                     normalization=Normalization(mode="meanstd", mean=128.0, std=40.0))
    torch.manual_seed(0)
    save_model(build_model(spec).eval(), spec, root / "model.safetensors")
    np.save(root / "image.npy", image)
    return {"root": root, "image": root / "image.ome.zarr", "model": root / "model.safetensors",
            "npy": root / "image.npy"}


def _pipeline(model: Path, image: str, truth: str, out: str) -> None:
    """predict → crf → instances → evaluate, every path under ``out``."""
    assert main(["predict", "--model", str(model), "--input", image, "--output",
                 f"{out}/prediction.ome.zarr", *BLOCK, "--device", "cpu"]) == 0
    assert main(["crf", "--probabilities", f"{out}/prediction.ome.zarr", "--image", image,
                 "--output", f"{out}/crf.ome.zarr", "--iterations", "2"]) == 0
    assert main(["instances", "--labels", f"{out}/crf.ome.zarr", "--output",
                 f"{out}/instances.ome.zarr", "--table", f"{out}/instances.csv",
                 "--classes", "1", "2"]) == 0
    assert main(["evaluate", "--prediction", f"{out}/crf.ome.zarr", "--truth", truth,
                 "--report", f"{out}/report"]) == 0


def _array(path: str | Path) -> np.ndarray:
    return np.asarray(open_volume(path)[0])


def test_predict_crf_instances_evaluate_in_a_bucket_equal_the_local_run(
        local: dict[str, Path], bucket: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "ref"
    reference.mkdir()
    _pipeline(local["model"], str(local["image"]), f"{local['image']}/labels/truth",
              str(reference))
    assert main(["convert", str(local["image"]), f"{bucket}/image.ome.zarr"]) == 0
    assert main(["convert", f"{local['image']}/labels/truth", "--labels-of",
                 f"{bucket}/image.ome.zarr", "--name", "truth"]) == 0
    _pipeline(local["model"], f"{bucket}/image.ome.zarr",
              f"{bucket}/image.ome.zarr/labels/truth", bucket)
    capsys.readouterr()
    for name in ("prediction.ome.zarr", "prediction.ome.zarr/labels/semantic", "crf.ome.zarr",
                 "instances.ome.zarr"):
        np.testing.assert_array_equal(_array(f"{bucket}/{name}"), _array(reference / name),
                                      err_msg=name)
    fs = s3fs.S3FileSystem()
    base = bucket.removeprefix("s3://")
    assert fs.cat(f"{base}/instances.csv") == (reference / "instances.csv").read_bytes()
    remote = json.loads(fs.cat(f"{base}/report/metrics.json"))
    here = json.loads((reference / "report" / "metrics.json").read_text())
    assert remote["semantic"] == here["semantic"]
    assert fs.exists(f"{base}/report/confusion.png")
    assert not list(tmp_path.glob("s3*"))


def _done(fs: s3fs.S3FileSystem, group: str) -> int:
    """Blocks of a prediction marked complete in both its labels and its probabilities."""
    def names(prefix: str) -> set[str]:
        try:
            found = fs.ls(f"{prefix}/{MARKER_DIR}", refresh=True)
        except FileNotFoundError:
            return set()
        return {k.rsplit("/", 1)[-1] for k in found} - {"volseg"}

    labels = names(f"{group}/labels/semantic/0")
    return len({f"0-1_{n}" for n in labels} & names(f"{group}/0"))


def test_a_killed_predict_into_a_bucket_resumes_block_by_block(
        local: dict[str, Path], bucket: str, tmp_path: Path) -> None:
    reference = tmp_path / "ref.ome.zarr"
    argv = ["predict", "--model", str(local["model"]), "--input", str(local["image"]),
            *BLOCK, "--device", "cpu", "--batch-size", "1", "--no-pyramid"]
    assert main([*argv, "--output", str(reference)]) == 0
    out = f"{bucket}/killed.ome.zarr"
    command = [sys.executable, "-m", "volseg", *argv, "--output", out]
    total = 2 * 2 * 3
    fs = s3fs.S3FileSystem()
    group = out.removeprefix("s3://")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if _done(fs, group) >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"ended before the kill: {proc.stderr.read()!r}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _done(fs, group)
    assert 0 < done < total
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    line = next(t for t in rerun.stdout.splitlines() if f" of {total} blocks of " in t)
    computed = int(line.split()[0])
    assert "(resumed: " in rerun.stdout, rerun.stdout
    assert computed <= total - done + 1, rerun.stdout  # at most the block in flight again
    for name in ("", "/labels/semantic"):
        np.testing.assert_array_equal(_array(out + name), _array(f"{reference}{name}"))
    assert main([*argv, "--output", out]) == 2  # finished: refused without --overwrite


def test_workflow_with_its_output_dir_in_a_bucket(
        local: dict[str, Path], s3_endpoint: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Endpoint and keys come from the workflow's storage_options alone (no environment)."""
    for key in [*S3_ENVIRONMENT, "AWS_ENDPOINT_URL", "AWS_PROFILE"]:
        monkeypatch.delenv(key, raising=False)
    options = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    name = f"volseg-wf-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(name)
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(textwrap.dedent(f"""\
        name: bucket
        output_dir: s3://{name}/run
        storage_options:
          s3: {json.dumps(options)}
        convert: {{input: {local['npy']}, voxel_size: [8, 4, 4]}}
        predict: {{model: {local['model']}, block_size: [8, 16, 16], device: cpu}}
        instances: {{labels: prediction.ome.zarr/labels/semantic, classes: [1, 2]}}
        """))
    outcomes = run_workflow(load_workflow(workflow), base_dir=tmp_path)
    assert [o.status for o in outcomes] == ["ran", "ran", "ran"]
    keys = fs.find(f"{name}/run")
    for product in ("image.ome.zarr/zarr.json", "prediction.ome.zarr/labels/semantic/zarr.json",
                    "instances.ome.zarr/zarr.json", "instances.csv",
                    ".volseg/stages/predict.json"):
        assert f"{name}/run/{product}" in keys, product
    assert not list(tmp_path.glob("s3*")) and not (tmp_path / "runs").exists()
    reference = tmp_path / "ref.ome.zarr"
    assert main(["predict", "--model", str(local["model"]), "--input", str(local["image"]),
                 *BLOCK, "--device", "cpu", "--output", str(reference)]) == 0
    got = json.loads(fs.cat(f"{name}/run/.volseg/stages/predict.json"))
    assert got["summary"]["computed_blocks"] == 12
    url = f"s3://{name}/run/prediction.ome.zarr/labels/semantic"
    from volseg.io.location import as_path

    np.testing.assert_array_equal(_array(as_path(url, storage_options=options)),
                                  _array(reference / "labels" / "semantic"))
    again = run_workflow(load_workflow(workflow), base_dir=tmp_path)
    assert [o.status for o in again] == ["skipped"] * 3


def test_storage_options_by_scheme_and_url_prefix() -> None:
    from volseg.workflow.stage import locate, options_for

    options = {"s3": {"endpoint_url": "http://127.0.0.1:1", "anon": False},
               "s3://public": {"anon": True}, "s3://public/deeper": {"requester_pays": True}}
    assert options_for("s3://mine/x.zarr", options) == {"endpoint_url": "http://127.0.0.1:1",
                                                        "anon": False}
    assert options_for("s3://public/x.zarr", options)["anon"] is True
    assert options_for("s3://public/deeper/x", options) == {
        "endpoint_url": "http://127.0.0.1:1", "anon": True, "requester_pays": True}
    assert options_for("s3://publicity/x", options)["anon"] is False  # a prefix, not a start
    assert options_for("/local/x", options) == {}
    assert locate("s3://public/x", options).storage_options["anon"] is True
