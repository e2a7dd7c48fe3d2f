"""``volseg synth`` and the ``synth`` stage: real OME-Zarr / MRC files on disk."""

from __future__ import annotations

from pathlib import Path

import dask
import mrcfile
import numpy as np
import pydantic
import pytest
import zarr

from volseg.cli import main
from volseg.errors import ConfigError
from volseg.io import open_volume
from volseg.stages import synth as stage
from volseg.synth import IGNORE_ID, cryoet, em2d, fibsem
from volseg.synth.pipeline import SynthOptions, make_phantom
from volseg.workflow.stage import RunContext

SHAPE = (16, 48, 40)
CHUNKS = (8, 48, 40)


@pytest.fixture(autouse=True)
def _synchronous_scheduler():
    with dask.config.set(scheduler="synchronous"):
        yield


def _args(*extra: str) -> list[str]:
    return ["--shape", *map(str, SHAPE), "--chunks", *map(str, CHUNKS), *extra]


def test_cli_fibsem_writes_readable_omezarr(tmp_path: Path, capsys):
    out = tmp_path / "image.ome.zarr"
    assert main(["synth", "fibsem", str(out), *_args("--seed", "4")]) == 0
    printed = capsys.readouterr().out
    for name in ("cytoplasm", "mitochondrial membrane", "undefined", "%"):
        assert name in printed

    ph = fibsem(SHAPE, seed=4, chunks=CHUNKS)
    image, meta = open_volume(out)
    assert meta.voxel_size == (5.0, 5.0, 5.0)
    assert np.array_equal(image.compute(), ph.image.compute())
    assert meta.attrs["volseg"]["command"].startswith("volseg synth fibsem")
    assert meta.attrs["volseg"]["config"]["seed"] == 4
    assert meta.attrs["volseg"]["synth"]["kind"] == "fibsem"

    truth, tmeta = open_volume(out / "labels" / "truth")
    expected_truth = ph.truth.compute()
    assert np.array_equal(truth.compute(), expected_truth)
    info = tmeta.attrs["volseg"]
    assert info["class_names"][1] == "cell membrane" and len(info["class_names"]) == 7
    assert info["ignore_id"] == IGNORE_ID
    counts = np.bincount(expected_truth.ravel(), minlength=7)
    assert info["class_frequencies"] == {str(i): int(n) for i, n in enumerate(counts) if n}
    # the printed table carries the same counts
    assert f"{int(counts[0]):,}" in printed

    annotation, ameta = open_volume(out / "labels" / "annotation")
    ann = annotation.compute()
    assert ameta.attrs["volseg"]["annotated_slices"] == [2, 8, 13]
    assert np.array_equal(ann[[2, 8, 13]], expected_truth[[2, 8, 13]])
    assert (ann == IGNORE_ID).sum() == ann.size - 3 * SHAPE[1] * SHAPE[2]


def test_cli_refuses_existing_output_then_overwrites(tmp_path: Path, capsys):
    out = tmp_path / "em.ome.zarr"
    assert main(["synth", "em2d", str(out), *_args()]) == 0
    capsys.readouterr()
    assert main(["synth", "em2d", str(out), *_args()]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert main(["synth", "em2d", str(out), *_args("--seed", "1", "--overwrite")]) == 0
    truth, _ = open_volume(out / "labels" / "truth")
    assert np.array_equal(truth.compute(), em2d(SHAPE, seed=1, chunks=CHUNKS).truth.compute())
    assert not (out / "labels" / "annotation").exists()


def test_cli_refuses_foreign_directory(tmp_path: Path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["synth", "fibsem", str(out), *_args()]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_cryoet_writes_mrc_pair(tmp_path: Path, capsys):
    out = tmp_path / "tomo.mrc"
    assert main(["synth", "cryoet", str(out), *_args("--seed", "2")]) == 0
    assert "membrane" in capsys.readouterr().out
    ph = cryoet(SHAPE, seed=2, chunks=CHUNKS)
    with mrcfile.open(out) as mrc:
        assert mrc.data.dtype == np.float32 and mrc.data.shape == SHAPE
        assert np.array_equal(mrc.data, ph.image.compute())
        assert np.allclose(mrc.voxel_size.tolist(), (14.0, 14.0, 14.0))
        assert mrc.header.dmin == pytest.approx(float(mrc.data.min()))
        assert mrc.header.dmean == pytest.approx(float(mrc.data.mean()), abs=1e-4)
    with mrcfile.open(tmp_path / "tomo_mask.mrc") as mrc:
        assert np.array_equal(mrc.data.astype(np.uint8), ph.truth.compute())
    _, meta = open_volume(out)
    assert meta.voxel_size == pytest.approx((1.4, 1.4, 1.4))
    assert not list(tmp_path.glob("*.partial"))
    assert main(["synth", "cryoet", str(out), *_args()]) == 2


def test_cli_rejects_mrc_for_uint8_kinds_and_bad_options(tmp_path: Path, capsys):
    assert main(["synth", "fibsem", str(tmp_path / "x.mrc"), *_args()]) == 2
    assert "OME-Zarr" in capsys.readouterr().err
    assert not (tmp_path / "x.mrc").exists()
    assert main(["synth", "fibsem", str(tmp_path / "y.ome.zarr"), "--shape", "0", "4", "4"]) == 2
    err = capsys.readouterr().err
    assert "--shape" in err and "positive" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["synth", "nosuchkind", str(tmp_path / "y.ome.zarr"), *_args()])


def test_stage_writes_skips_and_overwrites(tmp_path: Path):
    config = stage.Config.from_dict(
        {"kind": "fibsem", "shape": list(SHAPE), "chunks": list(CHUNKS), "seed": 3,
         "annotated_slices": 2, "noise": 0.05})
    ctx = RunContext(workdir=tmp_path, provenance={"workflow": "test"})
    summary = stage.run(config, ctx)  # type: ignore[arg-type]
    assert summary["shape"] == list(SHAPE)
    assert summary["annotated_slices"] == [4, 12]
    assert not summary["skipped"]
    freqs = summary["class_frequencies"]
    assert sum(freqs.values()) == int(np.prod(SHAPE))
    expected = fibsem(SHAPE, seed=3, chunks=CHUNKS, noise=0.05).truth.compute()
    assert freqs["cytoplasm"] == int((expected == 0).sum())

    attrs = zarr.open_group(str(tmp_path / "image.ome.zarr"), mode="r").attrs.asdict()
    assert attrs["volseg"]["workflow"] == "test"
    assert attrs["volseg"]["config"]["seed"] == 3

    again = stage.run(config, ctx)  # type: ignore[arg-type]
    assert again["skipped"] and again["class_frequencies"] == freqs
    redo = stage.run(config, RunContext(workdir=tmp_path, overwrite=True))  # type: ignore[arg-type]
    assert not redo["skipped"] and redo["class_frequencies"] == freqs


def test_stage_config_is_strict():
    with pytest.raises(pydantic.ValidationError):
        stage.Config.from_dict({"kind": "fibsem", "shape": [4, 4, 4], "colour": "red"})
    with pytest.raises(pydantic.ValidationError):
        stage.Config.from_dict({"kind": "sem", "shape": [4, 4, 4]})
    with pytest.raises(ConfigError, match="no_such"):
        make_phantom(SynthOptions(kind="fibsem", shape=(4, 8, 8), params={"no_such": 1}))
    ph = make_phantom(SynthOptions(kind="cryoet", shape=(4, 8, 8), blur=1.5))
    assert ph.extra["params"]["blur"] == (1.5, 1.5, 1.5)


@pytest.mark.slow
def test_stage_on_a_process_cluster_writes_the_same_bytes(tmp_path: Path):
    from distributed import Client, LocalCluster

    chunks = (7, 23, 31)  # odd chunks: every worker computes blocks on its own
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        ctx = RunContext(workdir=tmp_path, client=client)
        for kind, output in (("fibsem", "f.ome.zarr"), ("cryoet", "c.mrc")):
            config = stage.Config(kind=kind, shape=SHAPE, chunks=chunks, seed=6, output=output)
            stage.run(config, ctx)
    ref = fibsem(SHAPE, seed=6, chunks=SHAPE)
    image, _ = open_volume(tmp_path / "f.ome.zarr")
    truth, _ = open_volume(tmp_path / "f.ome.zarr" / "labels" / "truth")
    assert np.array_equal(image.compute(), ref.image.compute())
    assert np.array_equal(truth.compute(), ref.truth.compute())
    with mrcfile.open(tmp_path / "c.mrc") as mrc:
        assert np.array_equal(mrc.data, cryoet(SHAPE, seed=6, chunks=SHAPE).image.compute())
