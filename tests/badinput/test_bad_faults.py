"""Corpus: OS and storage faults, and corrupt or incomplete Zarr inputs.

Each case is exit status 2 with one line naming the path, what happened and the fix,
and leaves every other file as it was.  The full-disk and read-only cases mount a
small ``tmpfs`` / a read-only bind mount (root only; skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from corpus import FAST, Inputs, Refuse, predict

from volseg.io.omezarr import write_image


def _mount(args: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount not permitted here: {proc.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at ``tmp_path/disk``, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)])
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/ro``: a read-only bind mount of ``tmp_path/rw`` (which holds a file)."""
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (rw / "kept.txt").write_text("untouched")
    _mount(["--bind", "-o", "ro", str(rw), str(ro)])
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def _read(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path / "0"), mode="r")[...])


# ------------------------------------------------------------------ the file system
def test_full_disk_is_one_line_and_the_rerun_resumes(inputs: Inputs, refused: Refuse,
                                                     small_disk: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    ref = tmp_path / "ref.ome.zarr"
    assert predict(inputs, ref, "--probabilities", "float32") == 0
    filler = small_disk / "filler.bin"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(os.urandom(max(free - 96 * 1024, 0)))  # ~96 KiB left
    out = small_disk / "pred.ome.zarr"
    err = refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
                   out, "--probabilities", "float32", *FAST],
                  "No space left on device (ENOSPC)", may_change=[out])
    assert "rerun the same command to resume" in err
    filler.unlink()
    capsys.readouterr()
    assert predict(inputs, out, "--probabilities", "float32") == 0
    assert np.array_equal(_read(out), _read(ref))
    assert np.array_equal(_read(out / "labels" / "semantic"), _read(ref / "labels" / "semantic"))


def test_read_only_file_system(inputs: Inputs, refused: Refuse, read_only: Path) -> None:
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
             read_only / "pred.ome.zarr", *FAST], "Read-only file system (EROFS)")
    refused(["convert", inputs.image, read_only / "copy.ome.zarr"],
            "Read-only file system (EROFS)")
    assert (read_only / "kept.txt").read_text() == "untouched"


def test_permission_denied(inputs: Inputs, refused: Refuse, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions (the read-only mount case covers writes)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
                 locked / "pred.ome.zarr", *FAST], "Permission denied (EACCES)")
    finally:
        locked.chmod(0o700)


def test_a_name_too_long(inputs: Inputs, refused: Refuse, tmp_path: Path) -> None:
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
             tmp_path / ("x" * 300 + ".ome.zarr"), *FAST], "(ENAMETOOLONG); choose a shorter")


def test_an_output_whose_parent_is_a_file(inputs: Inputs, refused: Refuse,
                                          tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    refused(["predict", "--model", inputs.model, "--input", inputs.image, "--output",
             tmp_path / "notes.txt" / "pred.ome.zarr", *FAST], "(ENOTDIR)")


def test_an_output_that_is_a_file(inputs: Inputs, refused: Refuse, tmp_path: Path) -> None:
    (tmp_path / "pred.ome.zarr").write_text("a file")
    for command in (["predict", "--model", inputs.model, "--input", inputs.image, *FAST],
                    ["crf", "--probabilities", inputs.image]):
        refused([*command, "--output", tmp_path / "pred.ome.zarr"],
                "is a file, not an OME-Zarr folder")


def test_an_output_under_proc(inputs: Inputs, refused: Refuse) -> None:
    if not Path("/proc/self").exists():
        pytest.skip("no /proc")
    refused(["convert", inputs.image, "/proc/volseg-test.ome.zarr"], "/proc/")


def test_synth_larger_than_the_free_space_is_refused(refused: Refuse, tmp_path: Path) -> None:
    refused(["synth", "fibsem", tmp_path / "huge.ome.zarr", "--shape", "100000", "100000",
             "100000"], "(uncompressed) but its file system has")


def test_broken_pipe_is_one_line(inputs: Inputs) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "volseg", "info", str(inputs.image)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away (`| head` after its lines)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 2
    assert err.count("\n") == 1 and "broken pipe" in err and "Traceback" not in err, err


# ------------------------------------------------------------------ corrupt inputs
@pytest.fixture
def image_v2(tmp_path: Path) -> Path:
    """A complete NGFF 0.4 image of 4 chunks (volseg-written, so with markers)."""
    image = tmp_path / "in.ome.zarr"
    rng = np.random.default_rng(3)
    write_image(rng.integers(60, 160, (16, 32, 32), dtype=np.uint8), image,
                voxel_size=(8, 4, 4), chunks=(16, 16, 16), ngff="0.4", pyramid=False)
    return image


def test_a_corrupt_input_chunk_is_named(inputs: Inputs, refused: Refuse, image_v2: Path,
                                        tmp_path: Path) -> None:
    (image_v2 / "0" / "0" / "1" / "0").write_bytes(b"not blosc" * 20)
    out = tmp_path / "pred.ome.zarr"
    refused(["predict", "--model", inputs.model, "--input", image_v2, "--output", out,
             *FAST], "chunk 0/1/0 cannot be decoded (error during blosc", may_change=[out])
    refused(["convert", image_v2, tmp_path / "copy.ome.zarr"], "chunk 0/1/0 cannot be decoded",
            may_change=[tmp_path / "copy.ome.zarr"])


def test_a_missing_input_chunk_is_an_error_unless_allowed(inputs: Inputs, refused: Refuse,
                                                          image_v2: Path, tmp_path: Path
                                                          ) -> None:
    from volseg.cli import main

    (image_v2 / "0" / "0" / "0" / "1").unlink()
    out = tmp_path / "pred.ome.zarr"
    refused(["predict", "--model", inputs.model, "--input", image_v2, "--output", out,
             *FAST], "chunk 0/0/1 is missing", may_change=[out])
    assert main(["predict", "--model", str(inputs.model), "--input", str(image_v2),
                 "--output", str(out), "--allow-missing-chunks", *FAST]) == 0
    copy = tmp_path / "copy.ome.zarr"
    assert main(["--allow-missing-chunks", "convert", str(image_v2), str(copy)]) == 0
    assert not _read(copy)[:, :16, 16:].any()  # read as the fill value, as asked


def test_chunks_left_out_by_volseg_as_fill_are_not_missing(tmp_path: Path) -> None:
    from volseg.io import open_volume

    data = np.random.default_rng(4).integers(1, 200, (16, 32, 32), dtype=np.uint8)
    data[:, :16, :16] = 0  # one chunk equal to the fill value: not stored
    image = tmp_path / "zeros.ome.zarr"
    write_image(data, image, voxel_size=None, chunks=(16, 16, 16), ngff="0.4", pyramid=False)
    assert not (image / "0" / "0" / "0" / "0").exists()
    assert np.array_equal(open_volume(image)[0].compute(), data)


def test_invalid_json_metadata_is_named(refused: Refuse, image_v2: Path, tmp_path: Path
                                        ) -> None:
    (image_v2 / ".zattrs").write_text("{not json")
    refused(["convert", image_v2, tmp_path / "copy.ome.zarr"],
            "in.ome.zarr/.zattrs: invalid Zarr metadata")
    refused(["info", image_v2], "invalid Zarr metadata")
