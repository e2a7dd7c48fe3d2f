"""Volumes on object storage: ``convert`` / ``info`` against a real S3 server on 127.0.0.1.

The ``bucket`` fixture (tests/conftest.py) starts moto's S3 server once per session
on a free loopback port and sets ``AWS_ENDPOINT_URL`` and dummy credentials for the
test only; nothing here touches any address but 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import s3fs
import zarr

from volseg.cli import main
from volseg.errors import InputError
from volseg.io import open_volume
from volseg.io import testing as fmt
from volseg.io.location import as_path, is_url, zarr_store
from volseg.io.omezarr import image_state, read_multiscales
from volseg.io.store import forget_chunk
from volseg.io.validation import validate

SHAPE = (20, 36, 44)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return fmt.sample_volume(SHAPE)


@pytest.fixture
def npy(tmp_path: Path, volume: np.ndarray) -> Path:
    path, _ = fmt.write_npy(volume, tmp_path)
    return path


def _keys(url: str) -> list[str]:
    return s3fs.S3FileSystem().find(url.removeprefix("s3://"))


def test_convert_to_a_bucket_writes_the_bucket_not_a_local_s3_folder(
        npy: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], volume: np.ndarray) -> None:
    """The issue's case: this wrote ``./s3:/bucket/out.ome.zarr`` and left the bucket empty."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = f"{bucket}/out.ome.zarr"
    assert main(["convert", str(npy), out, "--chunks", "16", "16", "16"]) == 0
    assert f"wrote {out} " in capsys.readouterr().out
    assert list(work.iterdir()) == []  # nothing local
    keys = _keys(out)
    assert f"{bucket.removeprefix('s3://')}/out.ome.zarr/zarr.json" in keys
    assert any("/out.ome.zarr/0/c/" in k for k in keys)  # level 0 (sharded, zarr v3)
    array, meta = open_volume(out)
    np.testing.assert_array_equal(array.compute(), volume)
    assert meta.attrs["format"] == "ome-zarr" and image_state(out) == "complete"
    assert validate(out).levels == len(read_multiscales(out).levels) == 1
    # the same through zarr alone (what another tool sees)
    group = zarr.open_group(zarr_store(as_path(out), read_only=True), mode="r")
    np.testing.assert_array_equal(group["0"][:], volume)


def test_info_on_a_bucket(npy: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = f"{bucket}/info.ome.zarr"
    assert main(["convert", str(npy), out, "--ngff", "0.4", "--voxel-size", "4", "2", "2"]) == 0
    capsys.readouterr()
    assert main(["info", out]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{out}  (ome-zarr, image)")
    assert "20 × 36 × 44" in text and "state       complete  (OME-NGFF 0.4)" in text
    assert main(["info", out, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == list(SHAPE) and info["voxel_size"] == [4.0, 2.0, 2.0]
    assert info["provenance"]["command"].startswith("volseg convert")


def test_a_missing_bucket_path_is_one_line(bucket: str, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["info", f"{bucket}/nothing.ome.zarr"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("nothing.ome.zarr does not exist; check the URL")
    assert "\n" not in err and "Traceback" not in err


def test_killed_conversion_into_a_bucket_resumes_block_by_block(
        npy: Path, bucket: str, capsys: pytest.CaptureFixture[str], volume: np.ndarray) -> None:
    out = f"{bucket}/resume.ome.zarr"
    argv = ["convert", str(npy), out, "--chunks", "8", "16", "16", "--ngff", "0.4"]
    assert main(argv) == 0
    capsys.readouterr()
    level0 = zarr.open_array(zarr_store(as_path(out) / "0"), mode="r+")
    assert forget_chunk(level0, (1, 0, 1)) == 1  # what a kill before the marker leaves
    assert image_state(out) == "partial"
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(resumed: " in text
    total = int(text.split(" blocks were already written")[0].split(" of ")[-1])
    assert f"resumed: {total - 1} of {total} blocks" in text
    assert image_state(out) == "complete"
    np.testing.assert_array_equal(open_volume(out)[0].compute(), volume)
    # finished: refused without --overwrite, replaced with it
    assert main(argv) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_zarr_array_in_a_bucket_is_read(bucket: str, volume: np.ndarray) -> None:
    url = f"{bucket}/plain.zarr"
    array = zarr.create_array(zarr_store(as_path(url)), shape=volume.shape, chunks=(8, 16, 16),
                              dtype=volume.dtype, config={"write_empty_chunks": True})
    array[:] = volume
    got, meta = open_volume(url)
    assert meta.attrs["format"] == "zarr"
    np.testing.assert_array_equal(got.compute(), volume)


def test_mrc_and_npy_in_a_bucket_are_read_by_byte_ranges(
        bucket: str, tmp_path: Path, volume: np.ndarray,
        capsys: pytest.CaptureFixture[str]) -> None:
    fs = s3fs.S3FileSystem()
    for writer in (fmt.write_mrc, fmt.write_npy):
        path, _ = writer(volume, tmp_path)
        url = f"{bucket}/{path.name}"
        fs.put(str(path), url.removeprefix("s3://"))
        here, local_meta = open_volume(path)
        there, meta = open_volume(url, chunks=(7, 36, 44))  # slabs not aligned to anything
        np.testing.assert_array_equal(there.compute(), here.compute())
        assert meta.voxel_size == local_meta.voxel_size and meta.origin == local_meta.origin
        assert meta.attrs["format"] == local_meta.attrs["format"]
    out = f"{bucket}/from_mrc.ome.zarr"
    assert main(["convert", f"{bucket}/volume.mrc", out]) == 0  # bucket to bucket
    assert open_volume(out)[1].voxel_size == (8.0, 6.0, 4.0)  # the MRC header's, in nm
    fs.pipe(bucket.removeprefix("s3://") + "/cut.mrc",
            fs.cat(bucket.removeprefix("s3://") + "/volume.mrc")[:2000])
    assert main(["info", f"{bucket}/cut.mrc"]) == 2
    assert "is not a readable MRC file (truncated" in capsys.readouterr().err


def test_other_single_file_formats_in_a_bucket_say_copy_first(
        bucket: str, tmp_path: Path, volume: np.ndarray,
        capsys: pytest.CaptureFixture[str]) -> None:
    fs = s3fs.S3FileSystem()
    for writer in (fmt.write_tiff, fmt.write_hdf5):
        path, _ = writer(volume, tmp_path)
        fs.put(str(path), f"{bucket.removeprefix('s3://')}/{path.name}")
        assert main(["info", f"{bucket}/{path.name}"]) == 2
        err = capsys.readouterr().err
        assert f"reads {path.suffix} files from local disk only; copy it first" in err


# --------------------------------------------------------------------------- no fallback


def test_a_relative_path_that_looks_like_a_url_is_refused_and_not_created(
        npy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(npy), "s3:/bucket/out.ome.zarr"]) == 2
    err = capsys.readouterr().err
    assert "looks like a URL with a slash missing" in err
    assert "write s3://bucket/out.ome.zarr" in err
    assert not (tmp_path / "s3:").exists()
    with pytest.raises(InputError, match="slash missing"):
        as_path(Path("s3://bucket/x"))  # what pathlib makes of a URL
    assert as_path("./s3:/x") == Path("s3:/x")  # asked for explicitly: a local folder


def test_unknown_scheme_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "nosuchscheme://bucket/x.zarr"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown URL scheme nosuchscheme://" in err and "\n" not in err


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs installed")
def test_missing_backend_names_the_package(npy: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(npy), "gs://bucket/out.ome.zarr"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gs:// URLs need the gcsfs package" in err and "pip install gcsfs" in err
    assert list(tmp_path.iterdir()) == [npy] or not (tmp_path / "gs:").exists()


def test_https_outputs_are_refused(npy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(npy), "https://127.0.0.1:9/out.ome.zarr"]) == 2
    assert "https:// is read-only" in capsys.readouterr().err


def test_file_urls_are_local_paths(tmp_path: Path) -> None:
    assert as_path(f"file://{tmp_path}/x") == tmp_path / "x"
    assert not is_url(f"file://{tmp_path}") and is_url("s3://b/x")


def test_export_reads_a_bucket_and_refuses_to_write_one(
        npy: Path, bucket: str, tmp_path: Path, volume: np.ndarray) -> None:
    from volseg.io.export import export_volume

    image = f"{bucket}/export.ome.zarr"
    assert main(["convert", str(npy), image, "--voxel-size", "4", "2", "2"]) == 0
    result = export_volume(image, tmp_path / "out.tif", stamp="test")
    assert result["input"] == image and result["voxel_size_nm"] == [4.0, 2.0, 2.0]
    np.testing.assert_array_equal(open_volume(tmp_path / "out.tif")[0].compute(), volume)
    with pytest.raises(InputError, match="export writes MRC/TIFF files to local disk only"):
        export_volume(image, f"{bucket}/out.tif", stamp="test")


def test_one_writer_per_output_in_a_bucket(npy: Path, bucket: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import time

    from volseg.io.lock import lock_path, output_lock

    out = f"{bucket}/locked.ome.zarr"
    lock = lock_path(out)
    assert str(lock) == f"{bucket}/.locked.ome.zarr.volseg-lock"
    owner = {"pid": 1, "host": f"not-{socket.gethostname()}", "token": "t",
             "started": time.time(), "heartbeat": time.time(), "command": "volseg convert"}
    lock.write_text(json.dumps(owner))  # a live run elsewhere holds it
    assert main(["convert", str(npy), out]) == 2
    err = capsys.readouterr().err
    assert "is being written by another volseg run" in err and "not-" in err
    assert not _keys(out)  # nothing written
    lock.write_text(json.dumps({**owner, "heartbeat": time.time() - 3600}))  # stale
    assert main(["convert", str(npy), out]) == 0
    assert not lock.exists()  # taken over, then released
    with output_lock(out):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()
        from volseg.io.lock import _create

        assert not _create(lock, b"{}", "other")  # the conditional write refuses a second
    assert not lock.exists()


def test_resume_from_a_changed_object_is_refused(bucket: str, tmp_path: Path,
                                                 volume: np.ndarray,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """An interrupted conversion of an object is finished only from the same object."""
    fs = s3fs.S3FileSystem()
    path, _ = fmt.write_npy(volume, tmp_path)
    url = f"{bucket}/changing.npy"
    fs.put(str(path), url.removeprefix("s3://"))
    out = tmp_path / "out.ome.zarr"
    argv = ["convert", url, str(out), "--chunks", "8", "16", "16", "--ngff", "0.4"]
    assert main(argv) == 0
    level0 = zarr.open_array(str(out / "0"), mode="r+")
    assert forget_chunk(level0, (0, 0, 0)) == 1
    fs.pipe(url.removeprefix("s3://"), path.read_bytes()[:-1] + b"\\x01")  # same size, new
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to start again" in err and "\\n" not in err.strip()
    assert main([*argv, "--overwrite"]) == 0
