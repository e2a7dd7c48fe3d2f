"""``volseg instances`` and the ``instances`` stage on real OME-Zarr files."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from volseg.cli import main
from volseg.instances import read_table
from volseg.instances.pipeline import InstanceOptions, run_instances
from volseg.io import open_volume
from volseg.io.omezarr import group_attrs, image_state, write_labels
from volseg.io.store import marker_dir
from volseg.stages import instances as instances_stage
from volseg.workflow.stage import RunContext

VOXEL = (8.0, 4.0, 4.0)
SHAPE = (30, 34, 38)


@pytest.fixture(scope="module")
def semantic(tmp_path_factory):
    root = tmp_path_factory.mktemp("instances_inputs")
    rng = np.random.default_rng(5)
    field = ndi.gaussian_filter(rng.standard_normal(SHAPE), 1.5) * 8
    sem = ((field.round().clip(-3, 3) + 3).astype(np.uint8)) % 7
    write_labels(sem, root / "crf.ome.zarr", "semantic", voxel_size=VOXEL, chunks=(16, 16, 16))
    return root, sem


def _reference(sem, classes, connectivity, min_size):
    mask = np.where(np.isin(sem, classes), sem.astype(np.uint16) + 1, 0)
    ref = cc3d.connected_components(mask, connectivity=connectivity)
    counts = np.bincount(ref.ravel())
    small = np.flatnonzero(counts < min_size)
    ref[np.isin(ref, small[small > 0])] = 0
    return ref


def _bijective(a, b):
    np.testing.assert_array_equal(a == 0, b == 0)
    m = a != 0
    pairs = np.unique(np.stack([a[m].astype(np.int64), b[m].astype(np.int64)]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def _args(root, out, table, *extra):
    return ["instances", "--labels", str(root / "crf.ome.zarr" / "labels" / "semantic"),
            "--classes", "2", "5", "--connectivity", "18", "--min-size", "4",
            "--output", str(out), "--table", str(table), "--block", "11", "13", "17", *extra]


def test_cli_writes_instances_and_table(semantic, tmp_path, capsys):
    root, sem = semantic
    out, table = tmp_path / "instances.ome.zarr", tmp_path / "instances.csv"
    assert main(_args(root, out, table)) == 0
    assert "objects" in capsys.readouterr().out
    labels, meta = open_volume(out / "labels" / "instances")
    got = labels.compute()
    assert meta.kind == "labels" and meta.voxel_size == VOXEL and got.dtype == np.uint32
    ref = _reference(sem, [2, 5], 18, 4)
    assert _bijective(got, ref)
    cols = read_table(table)
    n = int(got.max())
    np.testing.assert_array_equal(cols["id"], np.arange(1, n + 1))
    np.testing.assert_array_equal(cols["voxel_count"], np.bincount(got.ravel())[1:])
    z, y, x = np.nonzero(got)
    ids = got[z, y, x]
    for col, coord, size in (("centroid_z_nm", z, VOXEL[0]), ("centroid_x_nm", x, VOXEL[2])):
        mean = np.bincount(ids, weights=coord)[1:] / np.bincount(ids)[1:]
        np.testing.assert_allclose(cols[col], mean * size, rtol=1e-12)
    assert set(cols["class"].tolist()) <= {2, 5}
    record = group_attrs(out / "labels" / "instances")["volseg"]
    assert record["instances"]["objects"] == n and "volseg instances" in record["command"]
    # finished: refused without --overwrite, replaced with it
    assert main(_args(root, out, table)) == 2
    assert main(_args(root, out, table, "--overwrite", "--no-pyramid")) == 0


def test_resume_after_interruption(semantic, tmp_path):
    root, _ = semantic
    out = tmp_path / "r.ome.zarr"
    src = root / "crf.ome.zarr" / "labels" / "semantic"
    options = InstanceOptions(classes=[2, 5], connectivity=26, min_size=2,
                              block_size=(16, 17, 19))
    first = run_instances(src, out, options, table=tmp_path / "t.csv")
    level0 = out / "labels" / "instances" / "0"
    arr = zarr.open_array(str(level0), mode="r+")
    done = arr[...]
    # simulate an interruption: the data is gone and one block's marker is missing
    arr[...] = 0
    markers = sorted(marker_dir(arr).iterdir())
    assert len(markers) >= first.report.total_blocks > 1
    markers[0].unlink()
    assert image_state(out / "labels" / "instances") == "partial"
    second = run_instances(src, out, options, table=tmp_path / "t.csv")
    assert second.state_before == "partial"
    assert second.report.computed_blocks == 1
    assert second.report.skipped_blocks == first.report.total_blocks - 1
    again = zarr.open_array(str(level0), mode="r")[...]
    assert (again != 0).any()  # the one block was recomputed, identically
    assert np.all((again == done) | (again == 0))


def test_stage_runs_then_skips(semantic, tmp_path):
    root, sem = semantic
    ctx = RunContext(workdir=tmp_path, base_dir=root)
    config = instances_stage.Config(classes=[3], connectivity=6, block_size=(16, 16, 16))
    assert config.labels == "crf.ome.zarr/labels/semantic" and config.table == "instances.csv"
    summary = instances_stage.run(config, ctx)  # labels found via base_dir (external)
    ref = _reference(sem, [3], 6, 0)
    assert summary["objects"] == int(ref.max())
    assert (tmp_path / "instances.csv").exists()
    assert instances_stage.run(config, ctx)["status"] == "complete (skipped)"
    with pytest.raises(ValueError):
        instances_stage.Config(classes=[])
    with pytest.raises(ValueError):
        instances_stage.Config(classes=[1], connectivity=8)
