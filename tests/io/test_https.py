"""Reading OME-Zarr over HTTPS-style URLs, from a folder served on 127.0.0.1.

The ``served`` fixture (tests/conftest.py) serves a temporary folder with byte
ranges, the way object stores and public portals (the CryoET Data Portal) serve
OME-Zarr; nothing here touches any address but 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from volseg.cli import main
from volseg.io import open_volume
from volseg.io import testing as fmt
from volseg.io.validation import validate
from volseg.workflow.runner import run_workflow
from volseg.workflow.schema import load_workflow

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (20, 36, 44)


@pytest.mark.parametrize("ngff", ["0.5", "0.4"])
def test_ome_zarr_read_over_http(served: tuple[Path, str], ngff: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder, url = served
    volume = fmt.sample_volume(SHAPE)
    np.save(tmp_path / "v.npy", volume)
    name = f"image{ngff}.ome.zarr"
    assert main(["convert", str(tmp_path / "v.npy"), str(folder / name), "--chunks", "8", "16",
                 "16", "--ngff", ngff, "--voxel-size", "3", "2", "2"]) == 0
    array, meta = open_volume(f"{url}/{name}")
    np.testing.assert_array_equal(array.compute(), volume)  # 0.5: byte ranges of shards
    assert meta.voxel_size == (3.0, 2.0, 2.0) and meta.source == f"{url}/{name}"
    assert validate(f"{url}/{name}").version == ngff
    capsys.readouterr()
    assert main(["info", f"{url}/{name}"]) == 0
    assert f"state       complete  (OME-NGFF {ngff})" in capsys.readouterr().out
    # read-only: never written, with or without --overwrite
    assert main(["convert", str(tmp_path / "v.npy"), f"{url}/{name}", "--overwrite"]) == 2
    assert "http:// is read-only" in capsys.readouterr().err


def test_missing_and_single_file_urls_are_one_line(served: tuple[Path, str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    folder, url = served
    volume = fmt.sample_volume((4, 8, 8))
    fmt.write_tiff(volume, folder)
    assert main(["info", f"{url}/volume.tif"]) == 2
    assert "reads .tif files from local disk only; copy it first" in capsys.readouterr().err
    fmt.write_mrc(volume, folder)  # MRC (and NPY) are read by byte ranges
    np.testing.assert_array_equal(open_volume(f"{url}/volume.mrc")[0].compute(), volume)
    assert main(["info", f"{url}/absent.ome.zarr"]) == 2
    assert capsys.readouterr().err.strip().endswith("absent.ome.zarr does not exist; check the "
                                                    "URL")


def test_cryoet_portal_tomogram_from_a_url_in_the_cryoet_workflow(
        served: tuple[Path, str], tmp_path: Path) -> None:
    """workflows/cryoet_membranes.yaml reads a portal-style tomogram straight from its URL."""
    folder, url = served
    tomogram = fmt.sample_volume((24, 40, 48)).astype(np.float32) / 7
    path = fmt.write_cryoet_portal(tomogram, folder / "10000")
    relative = path.relative_to(folder).as_posix()
    assert relative == ("10000/TS_026/Tomograms/VoxelSpacing13.480/CanonicalTomogram/"
                        "TS_026.zarr")
    workflow = load_workflow(ROOT / "workflows" / "cryoet_membranes.yaml", [
        "synth=null", "convert.labels={}", f"convert.input={url}/{relative}",
        f"output_dir={tmp_path / 'run'}"])
    outcomes = run_workflow(workflow, base_dir=tmp_path, only=["convert"])
    assert [o.status for o in outcomes] == ["ran"]
    image, meta = open_volume(tmp_path / "run" / "image.ome.zarr")
    np.testing.assert_array_equal(image.compute(), tomogram)  # level 0, voxel for voxel
    assert meta.voxel_size == (1.348, 1.348, 1.348)  # 13.48 Å, in nm
    _, level2 = open_volume(f"{url}/{relative}", level=2)
    assert level2.voxel_size == (5.392, 5.392, 5.392)
