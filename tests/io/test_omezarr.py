"""The OME-Zarr writer: layout, pyramids, transforms, labels, validation and resume.

The read-only tests run on an image written in each NGFF version (0.4 on zarr v2,
0.5 on zarr v3 with shards).
"""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from volseg.errors import InputError, OutputExistsError
from volseg.io import omezarr, open_volume, pyramid
from volseg.io.layout import PYRAMID_READ_BYTES, level_layout
from volseg.io.store import MARKER_DIR, forget_chunk, store_blocks
from volseg.io.validation import Validation, validate

SHAPE = (37, 61, 600)  # x > 2 * 256: two extra levels; no chunk divides it
CHUNKS = (16, 16, 64)


@pytest.fixture(scope="module", params=["0.4", "0.5"])
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Path, np.ndarray, np.ndarray]:
    """An image with a label image, written once per NGFF version for read-only tests."""
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[5:30, 10:50, 100:400] = 2
    labels[:, :, 450:] = 1
    path = tmp_path_factory.mktemp("ome") / "img.ome.zarr"
    omezarr.write_image(da.from_array(data, chunks=(10, 30, 100)), path, voxel_size=(5, 4, 4),
                        chunks=CHUNKS, attrs={"volseg": {"command": "pytest"}},
                        ngff=request.param)
    omezarr.write_labels(labels, path, "truth", classes=["bg", "a", "b"], ignore_id=255)
    return path, data, labels


def _zattrs(path: Path) -> dict:
    """The group attributes, NGFF keys flattened (0.5 keeps them under ``ome``)."""
    return omezarr.group_attrs(path)


def test_level_shapes_scales_and_translations(image: tuple[Path, np.ndarray, np.ndarray]
                                              ) -> None:
    path, _, _ = image
    ms = _zattrs(path)["multiscales"][0]
    version = omezarr.group_version(path)
    assert ms.get("version") == ("0.4" if version == "0.4" else None)
    assert omezarr.read_multiscales(path).version == version
    assert ms["axes"] == [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    shapes = [zarr.open_array(str(path / d["path"]), mode="r").shape for d in ms["datasets"]]
    assert shapes == [(37, 61, 600), (19, 31, 300), (10, 16, 150)]
    transforms = [d["coordinateTransformations"] for d in ms["datasets"]]
    assert transforms[0] == [{"type": "scale", "scale": [5.0, 4.0, 4.0]}]
    assert transforms[1] == [{"type": "scale", "scale": [10.0, 8.0, 8.0]},
                             {"type": "translation", "translation": [2.5, 2.0, 2.0]}]
    assert transforms[2][0]["scale"] == [20.0, 16.0, 16.0]
    assert transforms[2][1]["translation"] == [7.5, 6.0, 6.0]


def test_level_zero_is_exact_and_stored_as_promised(image: tuple[Path, np.ndarray, np.ndarray]
                                                   ) -> None:
    path, data, _ = image
    level0 = zarr.open_array(str(path / "0"), mode="r")
    np.testing.assert_array_equal(level0[:], data)
    assert level0.chunks == CHUNKS
    if omezarr.group_version(path) == "0.4":
        meta = json.loads((path / "0" / ".zarray").read_text())
        assert meta["chunks"] == list(CHUNKS) and meta["dimension_separator"] == "/"
        assert meta["compressor"]["id"] == "blosc" and meta["compressor"]["cname"] == "zstd"
        assert level0.shards is None
    else:
        meta = json.loads((path / "0" / "zarr.json").read_text())
        assert meta["zarr_format"] == 3 and meta["dimension_names"] == ["z", "y", "x"]
        sharding = meta["codecs"][0]
        assert sharding["name"] == "sharding_indexed"
        assert sharding["configuration"]["chunk_shape"] == list(CHUNKS)
        blosc = sharding["configuration"]["codecs"][1]
        assert blosc["name"] == "blosc" and blosc["configuration"]["cname"] == "zstd"
        # one shard = one written block: here the whole small image, in whole chunks
        assert level0.shards == (48, 64, 640)
        shard_files = [p for p in (path / "0" / "c").rglob("*") if p.is_file()]
        assert len(shard_files) == 1  # instead of 3 x 4 x 10 chunk files
    assert omezarr.group_attrs(path)["volseg"] == {"command": "pytest"}


def test_pyramid_levels_are_the_reductions(image: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, data, labels = image
    level1 = np.asarray(zarr.open_array(str(path / "1"), mode="r")[:])
    np.testing.assert_array_equal(level1, pyramid.reduce_mean(data, (2, 2, 2)))
    level2 = zarr.open_array(str(path / "2"), mode="r")[:]
    np.testing.assert_array_equal(level2, pyramid.reduce_mean(level1, (2, 2, 2)))
    lab1 = zarr.open_array(str(path / "labels" / "truth" / "1"), mode="r")[:]
    np.testing.assert_array_equal(lab1, pyramid.reduce_mode(labels, (2, 2, 2)))
    assert set(np.unique(lab1)) == {0, 1, 2}  # labels stay labels


def test_labels_metadata_and_class_frequencies(image: tuple[Path, np.ndarray, np.ndarray]
                                               ) -> None:
    path, _, labels = image
    assert _zattrs(path / "labels")["labels"] == ["truth"]
    attrs = _zattrs(path / "labels" / "truth")
    assert attrs["image-label"]["source"] == {"image": "../../"}
    assert attrs["multiscales"][0]["type"] == "mode"
    colors = {c["label-value"]: c["rgba"] for c in attrs["image-label"]["colors"]}
    assert colors == {0: [31, 119, 180, 255], 1: [255, 127, 14, 255], 2: [44, 160, 44, 255],
                      255: [0, 0, 0, 0]}
    assert attrs["image-label"]["properties"] == [
        {"label-value": 0, "class": "bg"}, {"label-value": 1, "class": "a"},
        {"label-value": 2, "class": "b"},
        {"label-value": 255, "class": "not annotated", "ignore": True}]
    assert omezarr.class_names(path / "labels" / "truth") == ["bg", "a", "b"]
    counts = {str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True),
                                               strict=True)}
    assert attrs["volseg"]["class_frequencies"] == counts


def test_opens_with_ome_zarr_reader(image: tuple[Path, np.ndarray, np.ndarray]) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    path, data, _ = image
    location = parse_url(str(path))
    assert location is not None
    nodes = list(Reader(location)())
    first = nodes[0]
    assert [tuple(level.shape) for level in first.data] == [
        (37, 61, 600), (19, 31, 300), (10, 16, 150)]
    np.testing.assert_array_equal(np.asarray(first.data[0]), data)
    labels = [n for n in nodes if any(isinstance(spec, Label) for spec in n.specs)]
    assert len(labels) == 1 and labels[0].metadata["name"] == "truth"
    assert [tuple(level.shape) for level in labels[0].data][-1] == (10, 16, 150)


def test_validates_with_ome_zarr_models(image: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, _, _ = image
    version = omezarr.group_version(path)
    assert validate(path) == Validation("Image", str(version), 3)
    assert validate(path / "labels" / "truth") == Validation("ImageLabel", str(version), 3)
    assert validate(path / "labels").model == "Labels"


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_channel_axis_is_not_downsampled(tmp_path: Path, ngff: str) -> None:
    data = np.arange(3 * 4 * 5 * 520, dtype=np.float32).reshape(3, 4, 5, 520)
    omezarr.write_image(data, tmp_path / "p.ome.zarr", voxel_size=(1, 1, 1), ngff=ngff,
                        channel_names=["a", "b", "c"])
    assert validate(tmp_path / "p.ome.zarr").model == "Image"
    omero = _zattrs(tmp_path / "p.ome.zarr")["omero"]
    assert [c["label"] for c in omero["channels"]] == ["a", "b", "c"]
    assert omero["channels"][1]["color"] == "FF7F0E"
    assert omero["channels"][0]["window"] == {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
    ms = omezarr.read_multiscales(tmp_path / "p.ome.zarr")
    assert ms.axes == ("c", "z", "y", "x")
    assert [lv.shape for lv in ms.levels] == [(3, 4, 5, 520), (3, 2, 3, 260), (3, 1, 2, 130)]
    assert _zattrs(tmp_path / "p.ome.zarr")["multiscales"][0]["axes"][0] == {
        "name": "c", "type": "channel"}
    assert zarr.open_array(str(tmp_path / "p.ome.zarr" / "0"), mode="r").chunks[0] == 3


def test_unknown_voxel_size_round_trips_as_none(tmp_path: Path) -> None:
    omezarr.write_image(np.ones((2, 3, 4), np.uint8), tmp_path / "a.ome.zarr", voxel_size=None)
    axes = _zattrs(tmp_path / "a.ome.zarr")["multiscales"][0]["axes"]
    assert all("unit" not in a for a in axes)
    assert open_volume(tmp_path / "a.ome.zarr")[1].voxel_size is None
    with pytest.raises(InputError, match="three positive numbers"):
        omezarr.write_image(np.ones((2, 3, 4)), tmp_path / "b.ome.zarr", voxel_size=(1, 0, 1))


def test_anisotropic_plan_halves_the_fine_axes_first() -> None:
    plan = pyramid.plan_levels((40, 4000, 4000), (50.0, 4.0, 4.0), (True, True, True))
    assert [p[1] for p in plan] == [(50, 4, 4), (50, 8, 8), (50, 16, 16), (50, 32, 32),
                                    (100, 64, 64)]
    assert [p[0] for p in plan][-1] == (20, 250, 250)
    assert pyramid.plan_levels((1, 100, 100), (1, 1, 1), (True,) * 3) == [
        ((1, 100, 100), (1.0, 1.0, 1.0), (1, 1, 1))]


def test_reductions_by_hand() -> None:
    block = np.array([[[1, 2, 9], [3, 4, 9]], [[5, 6, 8], [7, 9, 8]]], dtype=np.uint8)
    # cells: 2x2x2 {1..7, 9} mean 37/8 = 4.625 -> 5 ; edge column {9, 9, 8, 8} -> 8.5 -> 8
    assert pyramid.reduce_mean(block, (2, 2, 2)).tolist() == [[[5, 8]]]
    labels = np.array([[[3, 3, 1], [2, 2, 1]], [[2, 3, 0], [2, 0, 0]]], dtype=np.uint8)
    # 2x2x2 cell: 3 x3, 2 x4 -> 2; edge cell {1, 1, 0, 0}: tie -> first in C order (1)
    assert pyramid.reduce_mode(labels, (2, 2, 2)).tolist() == [[[2, 1]]]
    assert pyramid.reduce_mean(np.array([[1.0, 2.0]], np.float32), (1, 2)).dtype == np.float32


def test_create_image_resumes_refuses_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "pred.ome.zarr"
    first = omezarr.create_image(path, shape=(20, 30, 40), dtype="float32", chunks=(8, 8, 8),
                                 voxel_size=(1, 1, 1))
    with pytest.raises(OutputExistsError, match=r"as NGFF 0\.5 .* cannot be resumed"):
        omezarr.create_image(path, shape=(20, 30, 40), dtype="float32", chunks=(8, 8, 8),
                             voxel_size=(1, 1, 1), ngff="0.4")
    store_blocks(da.ones((20, 30, 40), chunks=(8, 16, 16), dtype="float32"), first,
                 description="x")
    again = omezarr.create_image(path, shape=(20, 30, 40), dtype="float32", chunks=(8, 8, 8),
                                 voxel_size=(1, 1, 1))
    assert again[0, 0, 0] == 1.0 and (path / "0" / MARKER_DIR).is_dir()
    assert len(list((path / "0" / MARKER_DIR).iterdir())) == 1 + 3 * 2 * 3  # claim + blocks
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it"):
        omezarr.create_image(path, shape=(20, 30, 41), dtype="float32", chunks=(8, 8, 8),
                             voxel_size=(1, 1, 1))
    fresh = omezarr.create_image(path, shape=(20, 30, 41), dtype="uint8", chunks=(8, 8, 8),
                                 voxel_size=(1, 1, 1), overwrite=True)
    assert fresh.shape == (20, 30, 41) and fresh[0, 0, 0] == 0
    assert [p.name for p in (path / "0" / MARKER_DIR).iterdir()] == ["volseg"]  # claim only


def test_overwrite_never_deletes_a_plain_folder(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="not written by volseg"):
        omezarr.write_image(np.ones((2, 2, 2), np.uint8), folder, voxel_size=None,
                            overwrite=True)
    assert (folder / "thesis.txt").read_text() == "precious"


def test_image_state(tmp_path: Path) -> None:
    path = tmp_path / "s.ome.zarr"
    assert omezarr.image_state(path) == "absent"
    target = omezarr.create_image(path, shape=(4, 5, 300), dtype="uint8", chunks=(2, 5, 100),
                                  voxel_size=None)
    store_blocks(da.ones((4, 5, 300), chunks=(2, 5, 100), dtype="uint8"), target,
                 description="x")
    assert omezarr.image_state(path) == "partial"  # the pyramid is still missing
    omezarr.write_pyramid(path)
    assert omezarr.image_state(path) == "complete"
    assert forget_chunk(zarr.open_array(str(path / "1"), mode="r"), (0, 0, 0)) == 1
    assert omezarr.image_state(path) == "partial"
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").attrs["x"] = 1
    assert omezarr.image_state(plain) == "other"


def test_nearest_divisor_and_block_layouts_by_hand() -> None:
    assert [omezarr.nearest_divisor(n, 64) for n in (192, 96, 97, 8, 64, 200)] == [
        64, 48, 97, 8, 64, 50]
    lay = omezarr.block_layout((7, 100, 500, 500), (7, 64, 192, 192), "czyx", ngff="0.5")
    assert lay == omezarr.Layout((7, 64, 64, 64), (7, 64, 192, 192), (7, 64, 192, 192))
    # 0.4: the same chunks, no shards; blocks clipped to the volume
    assert omezarr.block_layout((30, 40, 50), (64, 64, 64), "zyx", ngff="0.4") == \
        omezarr.Layout((30, 40, 50), None, (30, 40, 50))
    assert omezarr.block_layout((100, 100, 100), (96, 96, 96), "zyx", ngff="0.5",
                                chunks=(32, 32, 96)).chunks == (32, 32, 96)
    # whole-array writes: 0.5 shards are slabs of whole chunks of about SHARD_BYTES
    big = omezarr.image_layout((1065, 1536, 2048), "zyx", 1, ngff="0.5")
    assert big.chunks == (64, 64, 64) and big.shards == big.blocks
    assert big.shards is not None and big.shards[0] == 64
    assert np.prod(big.shards) <= omezarr.SHARD_BYTES
    assert all(s % c == 0 for s, c in zip(big.shards, big.chunks, strict=True))
    small = omezarr.image_layout((1065, 1536, 2048), "zyx", 1, ngff="0.4")
    assert small.shards is None and np.prod(small.blocks) <= omezarr.READ_BLOCK_BYTES
    with pytest.raises(Exception, match="not supported"):
        omezarr.check_ngff("0.6")
    # pyramid levels: a level-k shard covers one level-(k-1) shard (at least a chunk)
    base = omezarr.Layout((64, 64, 64), (64, 128, 2048), (64, 128, 2048))
    one = level_layout(base, (64, 1024, 1024), (2, 2, 2), 1)
    assert one == omezarr.Layout((64, 64, 64), (64, 64, 1024), (64, 64, 1024))
    assert level_layout(one, (32, 512, 512), (2, 2, 2), 1).shards == (32, 64, 512)
    # 0.4: blocks of whole chunks that read about PYRAMID_READ_BYTES
    flat = level_layout(omezarr.Layout((64, 64, 64), None, (64, 512, 2048)),
                        (512, 1024, 1024), (2, 2, 2), 1)
    assert flat.shards is None and flat.chunks == (64, 64, 64)
    assert np.prod(flat.blocks) * 8 <= PYRAMID_READ_BYTES


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_standalone_label_image_and_its_source(tmp_path: Path, ngff: str) -> None:
    labels = np.zeros((6, 40, 300), np.uint8)
    labels[:, :, 100:] = 2
    omezarr.write_image(np.ones((6, 40, 300), np.uint8), tmp_path / "img.ome.zarr",
                        voxel_size=(2, 1, 1), ngff=ngff, origin=(10, 0, 0))
    path = tmp_path / "seg.ome.zarr"
    omezarr.write_label_image(labels, path, voxel_size=(2, 1, 1), ngff=ngff,
                              origin=(10, 0, 0), classes=["bg", "x", "y"],
                              image=tmp_path / "img.ome.zarr")
    assert validate(path).model == "ImageLabel"
    attrs = _zattrs(path)
    assert attrs["image-label"]["source"] == {"image": "../img.ome.zarr/"}
    assert omezarr.image_of(path) == (tmp_path / "img.ome.zarr").resolve()
    assert omezarr.class_names(path) == ["bg", "x", "y"]
    assert attrs["volseg"]["class_frequencies"] == {"0": 6 * 40 * 100, "2": 6 * 40 * 200}
    array, meta = open_volume(path)
    assert meta.kind == "labels" and meta.origin == (10.0, 0.0, 0.0)
    np.testing.assert_array_equal(array.compute(), labels)
    assert omezarr.image_state(path) == "complete"
    # a labels/<name> that is not there names the label image instead
    with pytest.raises(InputError, match="is itself a label image"):
        open_volume(path / "labels" / "semantic")
    # labels need an image to belong to
    with pytest.raises(InputError, match="not an OME-Zarr image"):
        omezarr.write_labels(labels, tmp_path / "nothing.ome.zarr", "x")
    # labels added to an image take its format
    omezarr.write_labels(labels, tmp_path / "img.ome.zarr", "seg")
    assert omezarr.group_version(tmp_path / "img.ome.zarr" / "labels" / "seg") == ngff
    assert validate(tmp_path / "img.ome.zarr").model == "Image"


def _levels(path: Path) -> list[np.ndarray]:
    ms = omezarr.read_multiscales(path)
    return [np.asarray(zarr.open_array(str(path / level.path), mode="r")[...])
            for level in ms.levels]


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
@pytest.mark.parametrize(("method", "axes", "block"), [
    ("mean", ("z", "y", "x"), (8, 16, 96)),        # odd last blocks: 37 = 4*8 + 5, ...
    ("mode", ("z", "y", "x"), (16, 32, 192)),
    ("mean", ("c", "z", "y", "x"), (2, 8, 32, 64)),  # a channel axis in one block
])
def test_first_level_from_the_blocks_equals_the_reread_pyramid(
        tmp_path: Path, ngff: str, method: str, axes: tuple[str, ...],
        block: tuple[int, ...]) -> None:
    from volseg.io.store import store_arrays

    rng = np.random.default_rng(3)
    shape = SHAPE if len(axes) == 3 else (2, *SHAPE)
    data = rng.integers(0, 4 if method == "mode" else 256, shape, dtype=np.uint8)
    data[..., 5:20, 10:40, 100:300] = 3  # uniform cells as well as mixed ones
    values = da.from_array(data, chunks=block)
    layout = omezarr.block_layout(shape, block, axes, ngff=ngff)  # type: ignore[arg-type]
    paths = []
    for name in ("blocks", "reread"):
        path = tmp_path / f"{name}.ome.zarr"
        target = omezarr.create_image(path, shape=shape, dtype=np.uint8, chunks=layout.chunks,
                                      shards=layout.shards, voxel_size=(5, 4, 4), axes=axes,
                                      ngff=ngff)  # type: ignore[arg-type]
        pairs = [(values, target)]
        if name == "blocks":
            first = omezarr.first_level(path, values, method=method)  # type: ignore[arg-type]
            assert len(first) == 1
            level1 = first[0][1]
            reduced = [-(-b // 2) for b in block[-3:]]  # one shard per halved block
            if ngff == "0.5":
                assert tuple(level1.shards)[-3:] == tuple(reduced)
            assert all(r % c == 0 for r, c in zip(reduced, level1.chunks[-3:], strict=True))
            pairs += first
        report = store_arrays(pairs, description="test")
        assert report.computed_blocks == report.total_blocks
        if name == "blocks":  # level 1 is complete before the pyramid runs
            from volseg.io.store import is_complete

            assert is_complete(zarr.open_array(str(path / "1"), mode="r"))
        omezarr.write_pyramid(path, method=method)  # type: ignore[arg-type]
        paths.append(path)
    got, expected = _levels(paths[0]), _levels(paths[1])
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    ms = [omezarr.read_multiscales(p) for p in paths]
    assert [lv.scale for lv in ms[0].levels] == [lv.scale for lv in ms[1].levels]
    assert validate(paths[0])


def test_first_level_needs_even_equal_blocks(tmp_path: Path) -> None:
    path = tmp_path / "odd.ome.zarr"
    omezarr.create_image(path, shape=SHAPE, dtype=np.uint8, chunks=(7, 61, 100),
                         shards=None, voxel_size=(5, 4, 4), ngff="0.4")
    odd = da.zeros(SHAPE, chunks=(7, 61, 100), dtype=np.uint8)  # 7 is odd along z
    assert omezarr.first_level(path, odd) == []
    small = tmp_path / "small.ome.zarr"
    omezarr.create_image(small, shape=(8, 8, 8), dtype=np.uint8, chunks=(8, 8, 8),
                         shards=None, voxel_size=(5, 4, 4), ngff="0.4")
    assert omezarr.first_level(small, da.zeros((8, 8, 8), dtype=np.uint8)) == []  # no level 1
