"""``volseg convert`` / ``volseg info`` and the ``convert`` stage, end to end on real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from volseg.cli import main
from volseg.io import open_volume, pyramid
from volseg.io import testing as fmt
from volseg.io.omezarr import group_attrs
from volseg.io.store import forget_chunk, storage_chunks
from volseg.io.validation import validate
from volseg.workflow.stage import RunContext

SHAPE = (37, 61, 83)
CHUNKS = ["--chunks", "16", "32", "40"]  # divides nothing


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return fmt.sample_volume(SHAPE)


def _convert(*argv: str | Path) -> int:
    return main(["convert", *map(str, argv)])


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Modification time and bytes of every file under (or at) ``root``."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
@pytest.mark.parametrize("name", sorted(fmt.WRITERS))
def test_every_format_converts_bit_for_bit(name: str, ngff: str, volume: np.ndarray,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    source, dataset = fmt.WRITERS[name](volume, tmp_path)
    out = tmp_path / "out.ome.zarr"
    extra = ["--dataset", dataset] if dataset else []
    assert _convert(source, out, *CHUNKS, *extra, "--ngff", ngff) == 0
    assert f"wrote {out} (NGFF {ngff})" in capsys.readouterr().out
    array, _ = open_volume(out)
    np.testing.assert_array_equal(array.compute(), volume)
    level0 = zarr.open_array(str(out / "0"), mode="r")
    assert level0.chunks == (16, 32, 40)
    # 0.5: one shard per written block, whole chunks (here the whole small volume)
    assert level0.shards == (None if ngff == "0.4" else (48, 64, 120))
    assert validate(out).model == "Image"


def test_mrc_voxel_size_reaches_the_transforms(volume: np.ndarray, tmp_path: Path) -> None:
    source, _ = fmt.write_mrc(volume, tmp_path)
    assert _convert(source, tmp_path / "a.ome.zarr") == 0
    attrs = group_attrs(tmp_path / "a.ome.zarr")
    scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx([8.0, 6.0, 4.0])  # 80, 60, 40 Å
    assert attrs["volseg"]["command"].startswith("volseg convert ")
    assert attrs["volseg"]["versions"]["zarr"] == zarr.__version__
    assert _convert(source, tmp_path / "b.ome.zarr", "--voxel-size", "30", "5", "5") == 0
    assert open_volume(tmp_path / "b.ome.zarr")[1].voxel_size == (30.0, 5.0, 5.0)


def test_labels_into_an_image_and_into_a_new_group(volume: np.ndarray, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    image_src, _ = fmt.write_npy(volume, tmp_path)
    labels = (volume > 200).astype(np.uint8)
    np.save(tmp_path / "mito.npy", labels)
    image = tmp_path / "img.ome.zarr"
    assert _convert(image_src, image, "--voxel-size", "5", "5", "5") == 0
    assert _convert(tmp_path / "mito.npy", "--labels-of", image, "--name", "mito") == 0
    read, meta = open_volume(image / "labels" / "mito")
    assert meta.kind == "labels" and meta.voxel_size == (5.0, 5.0, 5.0)
    np.testing.assert_array_equal(read.compute(), labels)
    assert validate(image).model == "Image" and validate(image / "labels" / "mito")
    # a standalone label image
    assert _convert(tmp_path / "mito.npy", tmp_path / "lab.ome.zarr", "--labels") == 0
    read, meta = open_volume(tmp_path / "lab.ome.zarr")
    assert meta.kind == "labels"
    np.testing.assert_array_equal(read.compute(), labels)
    assert validate(tmp_path / "lab.ome.zarr").model == "ImageLabel"
    capsys.readouterr()
    assert main(["info", str(image)]) == 0
    text = capsys.readouterr().out
    counts = np.bincount(labels.ravel())
    assert "labels/mito  37 × 61 × 83 uint8" in text
    assert f"0: {counts[0]} (" in text and f"1: {counts[1]} (" in text
    assert "command   volseg convert" in text and "voxel size  5 × 5 × 5 nm" in text
    assert main(["info", str(tmp_path / "lab.ome.zarr")]) == 0
    text = capsys.readouterr().out
    assert "(ome-zarr, labels)" in text and "37 × 61 × 83  uint8" in text
    assert f"1: {counts[1]} (" in text


def test_label_mistakes_are_one_line_errors(volume: np.ndarray, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image_src, _ = fmt.write_npy(volume, tmp_path)
    image = tmp_path / "img.ome.zarr"
    assert _convert(image_src, image) == 0
    np.save(tmp_path / "small.npy", np.zeros((3, 4, 5), np.uint8))
    np.save(tmp_path / "float.npy", np.zeros(SHAPE, np.float32))
    capsys.readouterr()
    assert _convert(tmp_path / "small.npy", "--labels-of", image, "--name", "x") == 2
    assert "labels must match the image voxel for voxel" in capsys.readouterr().err
    assert _convert(tmp_path / "float.npy", "--labels-of", image) == 2
    assert "integer volume" in capsys.readouterr().err
    assert _convert(tmp_path / "small.npy", "--labels-of", tmp_path / "nope.ome.zarr") == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (image / "labels").exists()


def _error_cases(tmp: Path, volume: np.ndarray) -> dict[str, tuple[list[str], str, Path]]:
    """name -> (argv, message, path that must stay untouched)."""
    mrc_dir = tmp / "mrc"
    mrc_dir.mkdir()
    mrc, _ = fmt.write_mrc(volume, mrc_dir)
    mrc.write_bytes(mrc.read_bytes()[:-5000])
    (tmp / "corrupt.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    (tmp / "notes.txt").write_text("not a volume")
    np.save(tmp / "five.npy", np.zeros((2, 2, 2, 2, 2), np.uint8))
    good, _ = fmt.write_npy(volume, tmp)
    existing = tmp / "done.ome.zarr"
    assert _convert(good, existing) == 0
    out = str(tmp / "new.ome.zarr")
    return {
        "missing": (["convert", str(tmp / "nope.mrc"), out], "does not exist", tmp / "mrc"),
        "unknown extension": (["convert", str(tmp / "notes.txt"), out],
                              "unknown file type '.txt'", tmp / "notes.txt"),
        "truncated mrc": (["convert", str(mrc), out], "not a readable MRC file (truncated", mrc),
        "corrupt tiff": (["convert", str(tmp / "corrupt.tif"), out], "not a readable TIFF file",
                         tmp / "corrupt.tif"),
        "wrong dimensionality": (["convert", str(tmp / "five.npy"), out], "has 5 dimensions",
                                 tmp / "five.npy"),
        "existing output": (["convert", str(good), str(existing)],
                            "done.ome.zarr exists; pass --overwrite to replace it", existing),
        "output is the input": (["convert", str(existing), str(existing), "--overwrite"],
                                "overlaps the input", existing),
    }


def test_bad_inputs_exit_2_with_one_line(volume: np.ndarray, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cases = _error_cases(tmp_path, volume)
    for case, (argv, message, keep) in cases.items():
        before = _snapshot(keep)
        capsys.readouterr()
        assert main(argv) == 2, case
        err = capsys.readouterr().err
        assert err.startswith("volseg: error: ") and err.count("\n") == 1, (case, err)
        assert message in err, (case, err)
        assert _snapshot(keep) == before, case
        assert not (tmp_path / "new.ome.zarr").exists(), case


@pytest.mark.parametrize("case", ["existing output"])
def test_bad_inputs_in_a_real_subprocess(case: str, volume: np.ndarray, tmp_path: Path) -> None:
    argv, message, keep = _error_cases(tmp_path, volume)[case]
    before = _snapshot(keep)
    proc = subprocess.run([sys.executable, "-m", "volseg", *argv], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert _snapshot(keep) == before


def _unit(array: zarr.Array, voxel: tuple[int, ...]) -> tuple[int, ...]:
    """Index of the storage chunk (shard, or chunk) holding ``voxel``."""
    return tuple(v // u for v, u in zip(voxel, storage_chunks(array), strict=True))


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_interrupted_conversion_resumes(volume: np.ndarray, tmp_path: Path, ngff: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    big = np.tile(volume, (1, 1, 4))  # 332 wide: one pyramid level more
    np.save(tmp_path / "big.npy", big)
    out = tmp_path / "big.ome.zarr"
    assert _convert(tmp_path / "big.npy", out, *CHUNKS, "--ngff", ngff) == 0
    # simulate an interruption: level 0 (one block here) and a level-1 chunk unmarked
    level0 = zarr.open_array(str(out / "0"), mode="r+")
    assert forget_chunk(level0, _unit(level0, (32, 32, 320))) == 1
    level1 = zarr.open_array(str(out / "1"), mode="r+")
    assert forget_chunk(level1, _unit(level1, (16, 0, 160))) == 1
    level1[16:19, 0:32, 160:166] = 0
    level0[0:16, 0:32, 0:40] = 0
    capsys.readouterr()
    assert _convert(tmp_path / "big.npy", out, *CHUNKS, "--ngff", ngff) == 0
    text = capsys.readouterr().out
    assert "resumed: 0 of 1 blocks were already written" in text
    np.testing.assert_array_equal(open_volume(out)[0].compute(), big)
    np.testing.assert_array_equal(level1[:], pyramid.reduce_mean(big, (2, 2, 2)))
    assert _convert(tmp_path / "big.npy", out, *CHUNKS, "--ngff", ngff) == 2  # complete
    assert _convert(tmp_path / "big.npy", out, "--overwrite", "--ngff", ngff) == 0
    assert zarr.open_array(str(out / "0"), mode="r").chunks == (37, 61, 64)


def test_info_on_plain_files_and_as_json(volume: np.ndarray, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    source, _ = fmt.write_mrc(volume, tmp_path)
    assert main(["info", str(source)]) == 0
    text = capsys.readouterr().out
    assert "37 × 61 × 83  uint16" in text and "voxel size  8 × 6 × 4 nm" in text
    assert _convert(source, tmp_path / "a.ome.zarr") == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "a.ome.zarr"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [37, 61, 83] and info["state"] == "complete"
    assert info["levels"][0]["scale"] == pytest.approx([8.0, 6.0, 4.0])
    assert info["provenance"]["git_revision"] is None or len(info["provenance"]["git_revision"])
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2


def test_convert_stage_with_labels_and_resume(volume: np.ndarray, tmp_path: Path) -> None:
    from volseg.stages import convert as stage

    src = tmp_path / "src"
    src.mkdir()
    fmt.write_tiff(volume, src)
    fmt.write_hdf5((volume > 128).astype(np.uint8), src)
    config = stage.Config.from_dict({
        "input": "src/volume.tif", "voxel_size": [5, 5, 5], "chunks": [16, 32, 40],
        "labels": {"truth": {"path": "src/volume.h5", "dataset": "volumes/raw"}},
    })
    assert isinstance(config, stage.Config)
    ctx = RunContext(workdir=tmp_path / "work", base_dir=tmp_path,
                     provenance={"workflow": "test"})
    summary = stage.run(config, ctx)
    assert summary["image"]["shape"] == list(SHAPE) and summary["labels"]["truth"]["levels"] == 1
    image = tmp_path / "work" / "image.ome.zarr"
    np.testing.assert_array_equal(open_volume(image)[0].compute(), volume)
    labels, _ = open_volume(image / "labels" / "truth")
    np.testing.assert_array_equal(labels.compute(), volume > 128)
    assert group_attrs(image)["volseg"]["stage"] == "convert"
    again = stage.run(config, ctx)
    assert again["image"] == "complete (skipped)" and again["labels"]["truth"].startswith(
        "complete")


@pytest.mark.data
def test_lucchi_convert_and_info(shared_data: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = shared_data / "lucchi" / "training.tif"
    if not source.exists():
        pytest.skip(f"{source} not found")
    out = tmp_path / "lucchi.ome.zarr"
    assert _convert(source, out, "--voxel-size", "5", "5", "5") == 0
    assert _convert(shared_data / "lucchi" / "training_groundtruth.tif", "--labels-of", out,
                    "--name", "mito") == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "165 × 768 × 1024  uint8" in text and "voxel size  5 × 5 × 5 nm" in text
    assert "level 2     42 × 192 × 256  scale 20 × 20 × 20" in text
    assert "labels/mito" in text and "255: " in text
    import tifffile

    first = tifffile.imread(str(source), key=range(0, 3))
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"), mode="r")[:3], first)


def test_label_values_are_mapped_to_class_ids(tmp_path: Path) -> None:
    import tifffile

    image = np.arange(5 * 7 * 9, dtype=np.uint8).reshape(5, 7, 9)
    mask = np.where(image % 3 == 0, 255, 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", mask)
    assert main(["convert", str(tmp_path / "img.tif"), str(tmp_path / "x.ome.zarr")]) == 0
    assert main(["convert", str(tmp_path / "mask.tif"), "--labels-of",
                 str(tmp_path / "x.ome.zarr"), "--name", "mito", "--map", "255=1"]) == 0
    labels, _ = open_volume(tmp_path / "x.ome.zarr" / "labels" / "mito")
    assert np.array_equal(np.asarray(labels), (mask == 255).astype(np.uint8))
    assert main(["convert", str(tmp_path / "img.tif"), str(tmp_path / "y.ome.zarr"),
                 "--map", "255=1"]) == 2


def test_a_mask_stored_as_the_ignore_id_is_warned_about_and_mapped(
        volume: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lucchi's case: mitochondria stored as 255 = the default ignore id."""
    image_src, _ = fmt.write_npy(volume, tmp_path)
    mask = np.where(volume > 200, 255, 0).astype(np.uint8)
    np.save(tmp_path / "mask.npy", mask)
    image = tmp_path / "img.ome.zarr"
    assert _convert(image_src, image) == 0
    capsys.readouterr()
    assert _convert(tmp_path / "mask.npy", "--labels-of", image, "--name", "raw") == 0
    err = capsys.readouterr().err
    assert "volseg: warning:" in err and "--map 255=1" in err and "labels/raw" in err
    assert main(["info", str(image)]) == 0
    assert "warning: these labels hold only the ids 0 and 255" in capsys.readouterr().out
    assert _convert(tmp_path / "mask.npy", "--labels-of", image, "--name", "mito",
                    "--map", "255=1") == 0
    assert "warning" not in capsys.readouterr().err
    read, _ = open_volume(image / "labels" / "mito")
    np.testing.assert_array_equal(read.compute(), mask // 255)
    # the provenance is the command line as given (no dangling --values, no unasked --name)
    command = group_attrs(image / "labels" / "mito")["volseg"]["command"]
    assert command.endswith("--labels-of " + str(image) + " --name mito --map 255=1")
    # evaluate against the unmapped truth warns too
    assert main(["evaluate", "--prediction", str(image / "labels" / "mito"), "--truth",
                 str(image / "labels" / "raw"), "--report", str(tmp_path / "report")]) == 0
    assert "the truth" in capsys.readouterr().err


def test_ignore_id_foreground_warns_only_for_exactly_background_and_ignore() -> None:
    from volseg.checks import ignore_id_foreground

    assert ignore_id_foreground({"0": 10, "255": 3}) is not None
    assert ignore_id_foreground({0: 10, 255: 3}, 7) is None
    assert ignore_id_foreground({"0": 10, "1": 2, "255": 3}) is None  # sparse annotation
    assert ignore_id_foreground({"0": 10, "255": 0}) is None
    assert ignore_id_foreground({"0": 10, "255": 3}, None) is None
    assert ignore_id_foreground(None) is None
