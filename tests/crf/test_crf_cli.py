"""``volseg crf`` and the ``crf`` stage on real OME-Zarr files: output, provenance, resume."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from volseg.cli import main
from volseg.crf import CRFConfig, crf_halo, crf_labels, dense_crf
from volseg.crf.pipeline import CRFOptions, run_crf
from volseg.crf.testing import noisy_phantom as phantom
from volseg.io import open_volume
from volseg.io.omezarr import group_attrs, image_state, write_image
from volseg.io.store import marker_dir
from volseg.stages import crf as crf_stage
from volseg.workflow.stage import RunContext

VOXEL = (10.0, 5.0, 5.0)
SHAPE = (32, 64, 64)
BLOCK = (16, 32, 32)  # not thinner than the default halo (14, 27, 27)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("crf_inputs")
    truth, q, image = phantom(SHAPE, 3, seed=11)
    write_image(q, root / "prediction.ome.zarr", voxel_size=VOXEL, axes=("c", "z", "y", "x"),
                chunks=(3, 16, 16, 16), attrs={"volseg": {"class_names": ["a", "b", "c"]}})
    write_image(image, root / "image.ome.zarr", voxel_size=VOXEL, chunks=(16, 16, 16))
    return root, truth, q, image


def _args(root, out, *extra):
    return ["crf", "--probabilities", str(root / "prediction.ome.zarr"),
            "--image", str(root / "image.ome.zarr"), "--output", str(out),
            "--block", *map(str, BLOCK), "--processes", "1", *extra]


def test_cli_writes_semantic_labels(inputs, tmp_path, capsys):
    root, truth, q, image = inputs
    out = tmp_path / "crf.ome.zarr"
    assert main(_args(root, out, "--iterations", "4", "--bilateral-sigma", "10")) == 0
    assert "labels/semantic" in capsys.readouterr().out
    labels, meta = open_volume(out / "labels" / "semantic")
    assert meta.kind == "labels" and meta.voxel_size == VOXEL
    got = labels.compute()
    assert got.dtype == np.uint8 and got.shape == SHAPE
    cfg = CRFConfig(iterations=4, bilateral_sigma_nm=10)
    expected = crf_labels(da.from_array(q), da.from_array(image), voxel_size=VOXEL, config=cfg,
                          block_size=BLOCK).compute()
    np.testing.assert_array_equal(got, expected)
    whole = dense_crf(q, image, cfg, voxel_size=VOXEL)
    assert np.mean(got == whole) >= 0.999
    assert np.mean(got == truth) > np.mean(np.argmax(q, 0) == truth)
    record = group_attrs(out / "labels" / "semantic")["volseg"]
    assert record["crf"]["halo"] == list(crf_halo(cfg, voxel_size=VOXEL))
    assert record["crf"]["block_size"] == list(BLOCK)
    assert record["class_names"] == ["a", "b", "c"]  # carried over from the probabilities
    assert "volseg crf" in record["command"]
    assert image_state(out / "labels" / "semantic") == "complete"
    # finished output: refused without --overwrite (exit 2), replaced with it
    assert main(_args(root, out)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(_args(root, out, "--overwrite", "--bilateral-weight", "0", "--no-pyramid",
                      "--iterations", "1")) == 0


def test_cli_compat_matrix_yaml(inputs, tmp_path):
    root, _, q, _ = inputs
    matrix = tmp_path / "compat.yaml"
    matrix.write_text("compatibility:\n  - [0, 1, 3]\n  - [1, 0, 1]\n  - [3, 1, 0]\n")
    out = tmp_path / "m.ome.zarr"
    assert main(_args(root, out, "--compat", str(matrix), "--no-pyramid",
                      "--bilateral-weight", "0")) == 0
    got = open_volume(out / "labels" / "semantic")[0].compute()
    cfg = CRFConfig(bilateral_weight=0, compatibility=[[0, 1, 3], [1, 0, 1], [3, 1, 0]])
    expected = crf_labels(da.from_array(q), None, voxel_size=VOXEL, config=cfg,
                          block_size=BLOCK).compute()
    np.testing.assert_array_equal(got, expected)
    bad = tmp_path / "bad.yaml"
    bad.write_text("[[0, 1], [1, 0]]\n")  # 2 x 2 for 3 classes
    assert main(_args(root, tmp_path / "b.ome.zarr", "--compat", str(bad))) == 2
    assert main(_args(root, tmp_path / "c.ome.zarr", "--compat", "nope.yaml")) == 2


def test_resume_recomputes_only_missing_blocks(inputs, tmp_path):
    root, _, _, _ = inputs
    out = tmp_path / "r.ome.zarr"
    cfg = CRFConfig(bilateral_weight=0)
    # two local worker processes (the default without a cluster is one per core)
    first = run_crf(root / "prediction.ome.zarr", None, out,
                    CRFOptions(bilateral_weight=0, block_size=BLOCK, processes=2))
    assert first.report.computed_blocks == first.report.total_blocks == 8
    level0 = out / "labels" / "semantic" / "0"
    arr = zarr.open_array(str(level0), mode="r+")
    done = arr[...].astype(np.int64) + 1  # class ids + 1: never 0
    expected = crf_labels(open_volume(root / "prediction.ome.zarr")[0], None, voxel_size=VOXEL,
                          config=cfg, block_size=BLOCK).compute(scheduler="sync")
    np.testing.assert_array_equal(done - 1, expected)
    # simulate an interruption: the data is gone and one block's marker is missing
    arr[...] = 255
    markers = sorted(marker_dir(arr).iterdir())
    assert len(markers) >= 8
    markers[0].unlink()
    assert image_state(out / "labels" / "semantic") == "partial"
    second = run_crf(root / "prediction.ome.zarr", None, out,
                     CRFOptions(bilateral_weight=0, block_size=BLOCK, processes=1))
    assert second.state_before == "partial"
    assert second.report.computed_blocks == 1 and second.report.skipped_blocks == 7
    again = zarr.open_array(str(level0), mode="r")[...].astype(np.int64) + 1
    recomputed = again != 256
    assert recomputed.sum() == np.prod(BLOCK)  # exactly one block, identical to before
    np.testing.assert_array_equal(again[recomputed], done[recomputed])


def test_stage_runs_then_skips(inputs, tmp_path):
    root, _, _, _ = inputs
    ctx = RunContext(workdir=tmp_path, base_dir=root, provenance={"workflow": "t"})
    config = crf_stage.Config(block_size=BLOCK, iterations=3, bilateral_sigma_nm=10,
                              processes=1)
    assert config.probabilities == "prediction.ome.zarr" and config.output == "crf.ome.zarr"
    summary = crf_stage.run(config, ctx)
    assert summary["blocks"] == 8 and summary["computed_blocks"] == 8
    assert (tmp_path / "crf.ome.zarr" / "labels" / "semantic").exists()
    attrs = group_attrs(tmp_path / "crf.ome.zarr" / "labels" / "semantic")["volseg"]
    assert attrs["stage"] == "crf" and attrs["workflow"] == "t"
    assert crf_stage.run(config, ctx)["status"] == "complete (skipped)"
    with pytest.raises(ValueError):
        crf_stage.Config(compatibility=[[0, 1]])
    with pytest.raises(ValueError):
        crf_stage.Config(unknown=1)
