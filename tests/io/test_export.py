"""MRC writing (``volseg.io.mrc``) and the ``export`` stage: real files, read back."""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np
import pytest
import tifffile

from volseg.errors import ConfigError, InputError, OutputExistsError
from volseg.io import open_volume
from volseg.io.mrc import MrcSlabWriter, write_mrc, z_slabs
from volseg.io.omezarr import write_image, write_labels
from volseg.stages import export
from volseg.workflow.stage import RunContext

VOXEL_NM = (2.0, 1.5, 1.25)  # z, y, x


def _labels(shape: tuple[int, int, int] = (11, 20, 27)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 4, size=shape).astype(np.uint8)


def test_write_mrc_round_trip_voxel_size_and_header_stats(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(11, 20, 27)).astype(np.float32)
    lazy = da.from_array(data, chunks=(4, 7, 27))  # z-chunks that do not divide the depth
    out = write_mrc(lazy, tmp_path / "vol.mrc", voxel_size_nm=VOXEL_NM)
    assert out == tmp_path / "vol.mrc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.mrc"]  # no .partial left
    with mrcfile.open(out) as mrc:
        assert mrc.data.dtype == np.float32 and np.array_equal(mrc.data, data)
        # Å in the header, x y z order
        assert mrc.voxel_size.tolist() == pytest.approx((12.5, 15.0, 20.0))
        header = mrc.header
        assert float(header.dmin) == pytest.approx(float(data.min()))
        assert float(header.dmax) == pytest.approx(float(data.max()))
        assert float(header.dmean) == pytest.approx(float(data.astype(np.float64).mean()),
                                                    abs=1e-5)
        assert float(header.rms) == pytest.approx(float(data.astype(np.float64).std()), rel=1e-6)
    # volseg's own reader gives the voxel size back in nm
    array, meta = open_volume(out)
    assert meta.voxel_size == pytest.approx(VOXEL_NM)
    assert np.array_equal(array.compute(), data)


def test_write_mrc_numpy_dtypes_and_modes(tmp_path: Path) -> None:
    labels = _labels()
    write_mrc(labels, tmp_path / "u8.mrc", voxel_size_nm=VOXEL_NM)
    with mrcfile.open(tmp_path / "u8.mrc") as mrc:
        assert mrc.header.mode == 6 and np.array_equal(mrc.data, labels)  # uint8 -> uint16
    write_mrc(labels, tmp_path / "i8.mrc", voxel_size_nm=None, mode=0)
    with mrcfile.open(tmp_path / "i8.mrc") as mrc:
        assert mrc.data.dtype == np.int8 and np.array_equal(mrc.data, labels)
    with pytest.raises(InputError, match="no mode for int32"):
        write_mrc(labels.astype(np.int32), tmp_path / "i32.mrc", voxel_size_nm=None)


def test_write_mrc_keeps_at_most_nine_header_labels(tmp_path: Path) -> None:
    texts = [f"label {i} " + "x" * 90 for i in range(12)]
    write_mrc(_labels(), tmp_path / "l.mrc", voxel_size_nm=None, labels=texts)
    with mrcfile.open(tmp_path / "l.mrc", header_only=True) as mrc:
        assert int(mrc.header.nlabl) == 10
        stored = [bytes(t).decode().strip() for t in mrc.header.label[1:10]]
    assert stored == [t[:80] for t in texts[:9]]


def test_write_mrc_refuses_values_that_do_not_fit_and_leaves_nothing(tmp_path: Path) -> None:
    labels = _labels()
    labels[-1, 0, 0] = 255  # last slab: int8 cannot hold it
    lazy = da.from_array(labels, chunks=(3, 20, 27))
    with pytest.raises(InputError, match=r"values 0\.\.255 do not fit int8"):
        write_mrc(lazy, tmp_path / "bad.mrc", voxel_size_nm=VOXEL_NM, mode=0)
    assert list(tmp_path.iterdir()) == []  # complete or absent


def test_write_mrc_refuses_an_existing_file_unless_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "vol.mrc"
    path.write_bytes(b"not mine")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        write_mrc(_labels(), path, voxel_size_nm=VOXEL_NM)
    assert path.read_bytes() == b"not mine"
    write_mrc(_labels(), path, voxel_size_nm=VOXEL_NM, overwrite=True)
    with mrcfile.open(path) as mrc:
        assert np.array_equal(mrc.data, _labels())


def test_slab_writer_refuses_a_volume_with_missing_sections(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="1 of 4 sections were never written"), \
            MrcSlabWriter(tmp_path / "v.mrc", (4, 5, 6), mode=2, voxel_size_nm=None) as w:
        w.write(0, np.zeros((3, 5, 6), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_z_slabs_follow_chunks_and_bound_memory() -> None:
    lazy = da.zeros((10, 4, 4), chunks=(3, 2, 2), dtype=np.uint8)  # 16 bytes per section
    assert z_slabs(lazy, slab_bytes=16 * 7) == [(0, 6), (6, 10)]
    assert z_slabs(lazy, slab_bytes=1) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert z_slabs(np.zeros((10, 4, 4), np.uint8), slab_bytes=16 * 4) == [(0, 4), (4, 8), (8, 10)]


# --------------------------------------------------------------------------- the stage


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A workflow directory with an image, a label image and a 3-channel probability map."""
    work = tmp_path / "run"
    labels = _labels()
    image = (labels * 40).astype(np.uint8)
    write_image(image, work / "image.ome.zarr", voxel_size=VOXEL_NM, chunks=(4, 16, 16),
                pyramid=False)
    write_labels(labels, work / "image.ome.zarr", "truth", chunks=(4, 16, 16), pyramid=False)
    probs = np.stack([(labels == c).astype(np.uint8) * 250 for c in range(3)])
    write_image(probs, work / "probs.ome.zarr", voxel_size=VOXEL_NM, chunks=(1, 4, 16, 16),
                axes=("c", "z", "y", "x"), pyramid=False)
    return work


def _ctx(workdir: Path, *, overwrite: bool = False) -> RunContext:
    return RunContext(workdir=workdir, base_dir=workdir.parent, overwrite=overwrite)


def test_export_mask_to_mrc_matches_the_source(workdir: Path) -> None:
    config = export.Config(input="image.ome.zarr/labels/truth", output="mask.mrc", classes=[1, 3])
    summary = export.run(config, _ctx(workdir))
    assert summary["stored"] == "MRC mode 0"
    with mrcfile.open(workdir / "mask.mrc") as mrc:
        assert mrc.data.dtype == np.int8
        assert np.array_equal(mrc.data, np.isin(_labels(), [1, 3]).astype(np.int8))
        assert mrc.voxel_size.tolist() == pytest.approx((12.5, 15.0, 20.0))
    assert export.read_stamp(workdir / "mask.mrc") == config.stamp()


def test_export_labels_and_a_channel_to_tiff(workdir: Path) -> None:
    export.run(export.Config(input="image.ome.zarr/labels/truth", output="labels.tif"),
               _ctx(workdir))
    with tifffile.TiffFile(workdir / "labels.tif") as tif:
        assert len(tif.pages) == 11 and np.array_equal(tif.asarray(), _labels())
    _, meta = open_volume(workdir / "labels.tif")
    assert meta.voxel_size == pytest.approx(VOXEL_NM)
    export.run(export.Config(input="probs.ome.zarr", output="p2.tiff", channel=2),
               _ctx(workdir))
    assert np.array_equal(tifffile.imread(workdir / "p2.tiff"),
                          (_labels() == 2).astype(np.uint8) * 250)
    with pytest.raises(ConfigError, match="3 channels"):
        export.run(export.Config(input="probs.ome.zarr", output="p.tif"), _ctx(workdir))
    with pytest.raises(ConfigError, match="cannot hold int8"):
        export.run(export.Config(input="image.ome.zarr/labels/truth", output="x.tif",
                                 dtype="int8"), _ctx(workdir))
    assert not (workdir / "p.tif").exists() and not (workdir / "x.tif").exists()


def test_export_skips_its_own_output_and_refuses_others(workdir: Path) -> None:
    config = export.Config(input="image.ome.zarr/labels/truth", output="mask.mrc", classes=[2])
    export.run(config, _ctx(workdir))
    out = workdir / "mask.mrc"
    before = out.stat().st_mtime_ns
    assert export.run(config, _ctx(workdir))["status"] == "complete (skipped)"
    assert out.stat().st_mtime_ns == before
    other = export.Config(input="image.ome.zarr/labels/truth", output="mask.mrc", classes=[1])
    with pytest.raises(OutputExistsError, match=r"other settings.*--overwrite"):
        export.run(other, _ctx(workdir))
    export.run(other, _ctx(workdir, overwrite=True))
    with mrcfile.open(out) as mrc:
        assert np.array_equal(mrc.data, (_labels() == 1).astype(np.int8))
    foreign = workdir / "foreign.tif"
    tifffile.imwrite(foreign, np.zeros((2, 3, 3), np.uint8))
    os.utime(foreign, ns=(1, 1))
    with pytest.raises(OutputExistsError, match="not written by volseg export"):
        export.run(export.Config(input="image.ome.zarr/labels/truth", output="foreign.tif"),
                   _ctx(workdir))
    assert foreign.stat().st_mtime_ns == 1


def test_export_config_is_strict() -> None:
    with pytest.raises(ValueError, match="output must end in"):
        export.Config(output="mask.png")
    with pytest.raises(ValueError, match="extra"):
        export.Config(output="mask.mrc", clases=[1])  # type: ignore[call-arg]


def test_volseg_run_refuses_a_foreign_output_with_status_2(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    from volseg.cli import main

    out = workdir.parent / "out"
    out.mkdir()
    (out / "membranes.mrc").write_bytes(b"someone else's tomogram")
    wf = workdir.parent / "wf.yaml"
    wf.write_text(
        f"name: exp\noutput_dir: {out}\n"
        f"export: {{input: {workdir / 'image.ome.zarr/labels/truth'}, output: membranes.mrc, "
        f"classes: [1]}}\n"
    )
    assert main(["run", str(wf)]) == 2
    err = capsys.readouterr().err
    assert "membranes.mrc exists and was not written by volseg export" in err
    assert (out / "membranes.mrc").read_bytes() == b"someone else's tomogram"
    assert main(["run", str(wf), "--overwrite"]) == 2  # --overwrite replaces only volseg's
    assert "volseg replaces only its own exports" in capsys.readouterr().err
    assert (out / "membranes.mrc").read_bytes() == b"someone else's tomogram"
    (out / "membranes.mrc").unlink()
    assert main(["run", str(wf)]) == 0
    with mrcfile.open(out / "membranes.mrc") as mrc:
        assert np.array_equal(mrc.data, (_labels() == 1).astype(np.int8))
        assert mrc.voxel_size.tolist() == pytest.approx((12.5, 15.0, 20.0))


def test_export_refuses_its_own_input_and_a_folder(workdir: Path) -> None:
    source = workdir / "labels.tif"
    export.run(export.Config(input="image.ome.zarr/labels/truth", output="labels.tif"),
               _ctx(workdir))
    digest = source.read_bytes()
    with pytest.raises(InputError, match="overlaps the input"):
        export.run(export.Config(input="labels.tif", output="labels.tif"),
                   _ctx(workdir, overwrite=True))
    assert source.read_bytes() == digest
    (workdir / "folder.tif").mkdir()
    with pytest.raises(OutputExistsError, match="is a folder"):
        export.run(export.Config(input="labels.tif", output="folder.tif"),
                   _ctx(workdir, overwrite=True))


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_mrc_origin_and_voxel_size_survive_convert_and_export(tmp_path: Path, ngff: str) -> None:
    """Header origin (100, 200, 300) Å -> NGFF translation (nm) -> the exported header."""
    from volseg.io.convert import ConvertOptions, convert_image
    from volseg.io.omezarr import group_attrs

    data = np.random.default_rng(2).integers(0, 200, size=(9, 40, 600), dtype=np.int16)
    source = tmp_path / "tomo.mrc"
    with mrcfile.new(str(source)) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (14.0, 14.0, 14.0)  # 1.4 nm, which float32 * 0.1 gets wrong
        mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = 100.0, 200.0, 300.0
    meta = open_volume(source)[1]
    assert meta.voxel_size == (1.4, 1.4, 1.4) and meta.origin == (30.0, 20.0, 10.0)
    out = tmp_path / "tomo.ome.zarr"
    convert_image(source, out, ConvertOptions(ngff=ngff))  # type: ignore[arg-type]
    datasets = group_attrs(out)["multiscales"][0]["datasets"]
    assert datasets[0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.4, 1.4, 1.4]},
        {"type": "translation", "translation": [30.0, 20.0, 10.0]}]
    # level 1 (2.8 nm voxels): half a voxel more, so the voxel centres stay in place
    assert datasets[1]["coordinateTransformations"] == [
        {"type": "scale", "scale": [2.8, 2.8, 2.8]},
        {"type": "translation", "translation": [30.7, 20.7, 10.7]}]
    metadata = (out / ("zarr.json" if ngff == "0.5" else ".zattrs")).read_text()
    assert "1.4000000000000001" not in metadata and "1.4," in metadata
    assert open_volume(out)[1].origin == (30.0, 20.0, 10.0)
    config = export.Config(input=str(out), output="back.mrc")
    export.run(config, RunContext(workdir=tmp_path))
    with mrcfile.open(str(tmp_path / "back.mrc")) as mrc:
        origin = mrc.header.origin
        assert (float(origin.x), float(origin.y), float(origin.z)) == (100.0, 200.0, 300.0)
        assert mrc.voxel_size.tolist() == pytest.approx((14.0, 14.0, 14.0))
        assert np.array_equal(mrc.data, data)
