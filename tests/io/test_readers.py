"""``volseg.io.open_volume``: every format, lazy reading, metadata and one-line errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import dask
import numpy as np
import pytest

from volseg.errors import InputError
from volseg.io import VolumeMeta, open_volume
from volseg.io import testing as fmt
from volseg.io.readers import slab_chunks

SHAPE = (37, 61, 83)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return fmt.sample_volume(SHAPE)


@pytest.mark.parametrize("name", sorted(fmt.WRITERS))
def test_every_format_reads_back_exactly(name: str, volume: np.ndarray, tmp_path: Path) -> None:
    path, dataset = fmt.WRITERS[name](volume, tmp_path)
    array, meta = open_volume(path, dataset=dataset)
    assert isinstance(meta, VolumeMeta)
    # MRC has no unsigned 8-bit mode: mrcfile stores uint8 as uint16 (mode 6)
    expected_dtype = np.uint16 if name == "mrc" else volume.dtype
    assert array.shape == SHAPE and array.dtype == expected_dtype
    assert meta.axes == ("z", "y", "x")
    np.testing.assert_array_equal(array.compute(), volume)
    # explicit chunks that divide nothing: every task reads exactly its region
    rechunked, _ = open_volume(path, dataset=dataset, chunks=(8, 16, 40))
    assert rechunked.chunks[0][:2] == (8, 8) and rechunked.chunks[2] == (40, 40, 3)
    np.testing.assert_array_equal(rechunked.compute(), volume)


@pytest.mark.parametrize("name", ["mrc", "tiff", "npy", "hdf5", "n5", "png-slices"])
def test_arrays_pickle_small_and_read_lazily(name: str, volume: np.ndarray,
                                            tmp_path: Path) -> None:
    path, dataset = fmt.WRITERS[name](volume, tmp_path)
    array, _ = open_volume(path, dataset=dataset)
    assert len(pickle.dumps(array)) < 20_000  # the graph holds paths, not voxels
    region = array[5:9, 10:30, 70:83]
    np.testing.assert_array_equal(region.compute(), volume[5:9, 10:30, 70:83])


def test_uint16_and_big_endian_n5(tmp_path: Path) -> None:
    volume = fmt.sample_volume((9, 14, 23), dtype="uint16", seed=3)
    path, dataset = fmt.write_n5(volume, tmp_path, compression="raw", block=(4, 5, 6))
    array, _ = open_volume(path, dataset=dataset)
    assert array.dtype == np.uint16 and array.dtype.isnative
    np.testing.assert_array_equal(array.compute(), volume)


def test_n5_missing_blocks_read_as_zero(tmp_path: Path) -> None:
    volume = np.zeros((6, 7, 8), dtype=np.uint8)
    volume[3:, 6:, 6:] = 9  # one (truncated) edge block
    path, dataset = fmt.write_n5(volume, tmp_path, block=(3, 3, 3))
    files = [f for f in (path / "raw").rglob("*") if f.is_file() and f.name != "attributes.json"]
    assert len(files) == 1  # only the block holding the nines was written
    np.testing.assert_array_equal(open_volume(path, dataset=dataset)[0].compute(), volume)


def test_mrc_voxel_size_in_nanometres(volume: np.ndarray, tmp_path: Path) -> None:
    path, _ = fmt.write_mrc(volume, tmp_path)
    _, meta = open_volume(path)
    z, y, x = fmt.VOXEL_SIZE_ANGSTROM
    assert meta.voxel_size == pytest.approx((z / 10, y / 10, x / 10))
    assert meta.attrs["format"] == "mrc"


def test_ome_zarr_levels_labels_and_voxel_size(volume: np.ndarray, tmp_path: Path) -> None:
    from volseg.io.omezarr import write_image, write_labels

    image = tmp_path / "img.ome.zarr"
    big = np.tile(volume, (1, 1, 4))  # x = 332 > 256: one more level
    write_image(big, image, voxel_size=(5, 4, 4), chunks=(16, 16, 16),
                attrs={"volseg": {"command": "test"}})
    write_labels((big > 100).astype(np.uint8), image, "truth")
    level1, meta1 = open_volume(image, level=1)
    assert level1.shape == (19, 31, 166) and meta1.voxel_size == (10.0, 8.0, 8.0)
    _, meta0 = open_volume(image)
    assert meta0.kind == "image" and meta0.attrs["volseg"] == {"command": "test"}
    labels, meta_l = open_volume(image / "labels" / "truth")
    assert meta_l.kind == "labels" and meta_l.voxel_size == (5.0, 4.0, 4.0)
    np.testing.assert_array_equal(labels.compute(), big > 100)
    with pytest.raises(InputError, match=r"levels 0\.\.1, not 5"):
        open_volume(image, level=5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_foreign_ome_zarr_05_is_read(volume: np.ndarray, tmp_path: Path) -> None:
    """An NGFF 0.5 / Zarr 3 image written by ome-zarr-py (its default) opens too."""
    import zarr
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(tmp_path / "foreign.ome.zarr"), mode="w")
    write_image(volume, group, axes="zyx", scale_factors=(2,),
                scale={"z": 30.0, "y": 4.0, "x": 4.0},
                axes_units={"z": "nanometer", "y": "micrometer", "x": "micrometer"})
    array, meta = open_volume(tmp_path / "foreign.ome.zarr")
    np.testing.assert_array_equal(array.compute(), volume)
    assert meta.voxel_size == pytest.approx((30.0, 4000.0, 4000.0))


def test_two_dimensional_inputs_become_one_section(tmp_path: Path) -> None:
    image = fmt.sample_volume((1, 17, 23))[0]
    np.save(tmp_path / "a.npy", image)
    fmt.write_png_slices(image[None], tmp_path)
    import mrcfile

    with mrcfile.new(str(tmp_path / "m.mrc")) as mrc:
        mrc.set_data(image)
        mrc.voxel_size = (4.0, 4.0, 0.0)
    for path in (tmp_path / "a.npy", tmp_path / "png" / "img_1.png", tmp_path / "m.mrc"):
        array, _ = open_volume(path)
        assert array.shape == (1, 17, 23), path
        np.testing.assert_array_equal(array.compute()[0], image)
    assert open_volume(tmp_path / "m.mrc")[1].voxel_size == pytest.approx((0.4, 0.4, 0.4))


def test_four_dimensional_is_channels_first(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.save(tmp_path / "c.npy", data)
    array, meta = open_volume(tmp_path / "c.npy")
    assert meta.axes == ("c", "z", "y", "x")
    np.testing.assert_array_equal(array.compute(), data)


def test_slice_folder_uses_natural_order(volume: np.ndarray, tmp_path: Path) -> None:
    path, _ = fmt.write_png_slices(volume[:12], tmp_path)  # img_1 ... img_12
    array, meta = open_volume(path)
    assert meta.attrs["files"] == 12
    np.testing.assert_array_equal(array.compute(), volume[:12])


def test_hdf5_dataset_choice(volume: np.ndarray, tmp_path: Path) -> None:
    path, _ = fmt.write_hdf5(volume, tmp_path)
    with pytest.raises(InputError, match=r"holds datasets .*volumes/raw.*--dataset"):
        open_volume(path)
    with pytest.raises(InputError,
                       match="no dataset 'nope'; available: volumes/other, volumes/raw"):
        open_volume(path, dataset="nope")


def test_zarr_group_needs_dataset(volume: np.ndarray, tmp_path: Path) -> None:
    path, _ = fmt.write_zarr3_group(volume, tmp_path)
    with pytest.raises(InputError, match="choose an array with --dataset"):
        open_volume(path)
    with pytest.raises(InputError, match="no member 'x'; available: raw"):
        open_volume(path, dataset="x")


def test_n5_container_needs_dataset(volume: np.ndarray, tmp_path: Path) -> None:
    path, _ = fmt.write_n5(volume, tmp_path)
    with pytest.raises(InputError, match=r"N5 container.*--dataset \(raw\)"):
        open_volume(path)


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_inputs(tmp: Path, volume: np.ndarray) -> dict[str, tuple[Path, str]]:
    np.save(tmp / "five.npy", np.zeros((2,) * 5, dtype=np.uint8))
    np.save(tmp / "line.npy", np.zeros(7, dtype=np.uint8))
    np.save(tmp / "complex.npy", np.zeros((2, 3), dtype=np.complex64))
    (tmp / "notes.txt").write_text("hello")
    (tmp / "corrupt.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    (tmp / "garbage.mrc").write_bytes(bytes(range(256)) * 8)
    (tmp / "empty").mkdir()
    sub = tmp / "t"
    sub.mkdir()
    mrc, _ = fmt.write_mrc(volume, sub)
    tif, _ = fmt.write_tiff(volume, tmp)
    return {
        "missing": (tmp / "nothing.mrc", "does not exist; check the path"),
        "unknown extension": (tmp / "notes.txt", "unknown file type '.txt'; volseg reads"),
        "truncated mrc": (_truncate(mrc), r"not a readable MRC file \(truncated"),
        "garbage mrc": (tmp / "garbage.mrc", "not a readable MRC file"),
        "corrupt tiff": (tmp / "corrupt.tif", "not a readable TIFF file"),
        "truncated tiff": (_truncate(tif), r"not a readable TIFF file \(page \d+ data extends"),
        "five dims": (tmp / "five.npy", "has 5 dimensions"),
        "one dim": (tmp / "line.npy", "has 1 dimensions"),
        "complex": (tmp / "complex.npy", "dtype complex64"),
        "empty folder": (tmp / "empty", "folder without .tif/.tiff/.png slices"),
    }


def test_bad_inputs_raise_one_line_input_errors(volume: np.ndarray, tmp_path: Path) -> None:
    for case, (path, message) in _bad_inputs(tmp_path, volume).items():
        with pytest.raises(InputError, match=message) as info:
            open_volume(path)
        assert "\n" not in str(info.value), case
        assert str(path) in str(info.value), case


def test_corrupt_page_data_is_an_input_error_at_compute(volume: np.ndarray,
                                                       tmp_path: Path) -> None:
    import tifffile

    path, _ = fmt.write_tiff(volume, tmp_path)
    data = bytearray(path.read_bytes())
    # scribble over the middle of one page's compressed data, never over the tags
    # (random bytes anywhere in the file sometimes hit an IFD: an error at open)
    with tifffile.TiffFile(str(path)) as tif:
        page = tif.pages[len(tif.pages) // 2]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    start = offset + count // 4
    data[start: start + count // 2] = np.random.default_rng(0).bytes(count // 2)
    path.write_bytes(bytes(data))
    fresh, _ = open_volume(path)
    with pytest.raises(InputError, match="cannot be decoded"), \
            dask.config.set(scheduler="synchronous"):
        fresh.compute()


def test_slab_chunks_bounded() -> None:
    assert slab_chunks((1000, 2000, 2000), 1, budget=64 * 2**20) == (16, 2000, 2000)
    assert slab_chunks((10, 50_000, 50_000), 2, budget=2**20) == (1, 10, 50_000)
    assert slab_chunks((3, 4, 5), 8) == (3, 4, 5)


def test_imagej_tiff_voxel_size(tmp_path: Path) -> None:
    import tifffile

    stack = fmt.sample_volume((4, 8, 8))
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(250.0, 250.0),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
    array, meta = open_volume(tmp_path / "ij.tif")
    assert meta.voxel_size == pytest.approx((50.0, 4.0, 4.0))
    np.testing.assert_array_equal(array.compute(), stack)
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    assert open_volume(tmp_path / "plain.tif")[1].voxel_size is None


def test_an_array_rewritten_with_other_chunks_reads_afresh_in_the_same_process(tmp_path):
    # the per-process caches of the opened array are keyed by its chunks and shards too
    from volseg.io.omezarr import write_image

    path = tmp_path / "rewritten.ome.zarr"
    first = np.arange(6 * 20 * 22, dtype=np.uint8).reshape(6, 20, 22)
    write_image(first, path, voxel_size=(1.0, 1.0, 1.0), chunks=(3, 10, 11), pyramid=False)
    np.testing.assert_array_equal(open_volume(path)[0].compute(), first)
    second = first[::-1].copy()
    write_image(second, path, voxel_size=(1.0, 1.0, 1.0), chunks=(6, 20, 22), pyramid=False,
                overwrite=True)
    np.testing.assert_array_equal(open_volume(path)[0].compute(), second)
