"""Blockwise connected components: equal to a whole-volume labelling up to relabelling."""

from __future__ import annotations

import cc3d
import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from volseg.errors import ConfigError, InputError, OutputExistsError
from volseg.instances import (
    label_block,
    label_instances,
    neighbour_offsets,
    read_table,
    write_table,
)
from volseg.instances.blockwise import instance_dtype
from volseg.instances.kernel import plane_pairs

CLASSES = (2, 4, 5)


def semantic_phantom(shape=(29, 33, 37), *, seed=0, n_classes=7):
    """Random smooth class regions: many objects of several classes, touching each other."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal(shape), 1.2) * 6
    return (field.round().clip(-3, 3) + 3).astype(np.uint8) % n_classes


def whole_volume(sem, classes, connectivity):
    """Reference: cc3d on the whole class mask (class + 1, 0 elsewhere)."""
    mask = np.where(np.isin(sem, classes), sem.astype(np.uint16) + 1, 0)
    return cc3d.connected_components(mask, connectivity=connectivity, return_N=True)


def assert_same_partition(a, b):
    """``a`` and ``b`` label the same voxels and agree up to a bijective relabelling."""
    np.testing.assert_array_equal(a == 0, b == 0)
    m = a != 0
    pairs = np.unique(np.stack([a[m].astype(np.uint64), b[m].astype(np.uint64)]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


# ------------------------------------------------------------------ small pieces ----


def test_neighbour_offsets():
    assert len(neighbour_offsets(6)) == 6
    assert len(neighbour_offsets(18)) == 18
    assert len(neighbour_offsets(26)) == 26
    assert (1, 1, 0) in neighbour_offsets(18) and (1, 1, 1) not in neighbour_offsets(18)
    with pytest.raises(ConfigError):
        neighbour_offsets(8)


def test_plane_pairs_by_hand():
    """Two planes along z: a face pair, an edge (diagonal) pair and a corner pair."""
    ids = np.zeros((2, 3, 3), dtype=np.uint64)
    cls = np.zeros((2, 3, 3), dtype=np.uint16)
    ids[0, 0, 0], ids[1, 0, 0] = 1, 2  # face neighbours (dz = 1)
    ids[0, 2, 0], ids[1, 2, 1] = 3, 4  # edge neighbours (1, 0, 1)
    ids[0, 0, 2], ids[1, 1, 1] = 5, 6  # corner neighbours (1, 1, -1)
    cls[ids != 0] = 1
    cls[1, 1, 1] = 1
    f = {c: {tuple(p) for p in plane_pairs(ids, cls, axis=0, low=0, connectivity=c).tolist()}
         for c in (6, 18, 26)}
    assert f[6] == {(1, 2)}
    assert (3, 4) in f[18] and (5, 6) not in f[18]
    assert {(1, 2), (3, 4), (5, 6)} <= f[26]
    # different classes never pair
    cls[1, 0, 0] = 2
    assert (1, 2) not in {tuple(p) for p in plane_pairs(
        ids, cls, axis=0, low=0, connectivity=26).tolist()}


def test_label_block_keeps_classes_apart_and_class_zero_selectable():
    block = np.array([[[0, 0, 1, 1]]], dtype=np.uint8)
    labels, n = label_block(block, classes=[0, 1], connectivity=6)
    assert n == 2 and labels.dtype == np.uint32
    assert labels[0, 0, 0] == labels[0, 0, 1] != labels[0, 0, 2]


def test_instance_dtype():
    assert instance_dtype(10) == np.uint32
    assert instance_dtype(2**32 - 2) == np.uint32
    assert instance_dtype(2**32 - 1) == np.uint64


# ------------------------------------------------------ whole-volume equivalence ----


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("chunks", [(7, 11, 13), (10, 33, 6), (29, 4, 37)])
def test_equals_whole_volume_labelling(connectivity, chunks):
    sem = semantic_phantom()
    result = label_instances(da.from_array(sem, chunks=chunks), classes=CLASSES,
                             connectivity=connectivity)
    out = result.labels.compute()
    ref, n = whole_volume(sem, CLASSES, connectivity)
    assert result.labels.chunks == da.from_array(sem, chunks=chunks).chunks
    assert out.dtype == np.uint32
    assert len(result.table) == n == out.max()
    np.testing.assert_array_equal(np.unique(out), np.arange(n + 1))  # consecutive ids
    assert result.n_provisional > n  # objects really were cut by the blocks
    assert_same_partition(out, ref)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_scipy_label_agrees_for_one_class(connectivity):
    sem = semantic_phantom(seed=3)
    structure = ndi.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    ref, _ = ndi.label(sem == 4, structure=structure)
    out = label_instances(da.from_array(sem, chunks=(10, 12, 13)), classes=[4],
                          connectivity=connectivity).labels.compute()
    assert_same_partition(out, ref)


def test_diagonal_chains_across_block_corners():
    """Voxel chains that cross block edges/corners only diagonally (blocks of 6)."""
    sem = np.zeros((16, 16, 16), dtype=np.uint8)
    i = np.arange(16)
    sem[i, i, i] = 1  # corner-connected only: one object at 26, 16 at 6/18
    j = np.arange(12)
    sem[j, 11 - j, 3] = 1  # edge-connected (dz, dy) = (1, -1): one object at 18/26
    counts = {}
    for conn in (6, 18, 26):
        ref, _ = whole_volume(sem, [1], conn)
        out = label_instances(da.from_array(sem, chunks=(6, 6, 6)), classes=[1],
                              connectivity=conn).labels.compute()
        assert_same_partition(out, ref)
        counts[conn] = int(out.max())
    assert counts == {6: 28, 18: 17, 26: 2}


def test_object_crossing_many_blocks_gets_one_id():
    """A hand-made helix-like tube through all 27 blocks of a 3 x 3 x 3 grid."""
    sem = np.zeros((30, 30, 30), dtype=np.uint8)
    # a snake: along x in every (z, y) row pair, joined at alternating ends
    for z in range(2, 28, 6):
        for y in range(2, 28, 6):
            sem[z, y, 2:28] = 5
            end = 27 if (y // 6) % 2 == 0 else 2
            sem[z, y : y + 7, end] = 5 if y + 6 < 28 else 0
        sem[z : z + 7, 26 if (z // 6) % 2 == 0 else 2, 2] = 5
    sem[2:28, 2, 2] = 5  # a spine joining every layer
    sem[10, 10, 10:14] = 3  # another class touching nothing labelled
    _, n = whole_volume(sem, [5], 6)
    assert n == 1
    result = label_instances(da.from_array(sem, chunks=(10, 10, 10)), classes=[5],
                             connectivity=6)
    out = result.labels.compute()
    assert result.labels.numblocks == (3, 3, 3)
    assert set(np.unique(out[sem == 5])) == {1}
    assert out.max() == 1 and (out[sem != 5] == 0).all()
    assert result.n_provisional >= 27
    assert result.table.counts.tolist() == [int((sem == 5).sum())]


# ------------------------------------------------------------- size filter, table ----


def reference_table(ref, sem):
    """Per-object count, bbox, centroid computed on the whole array."""
    objs = ndi.find_objects(ref)
    idx = np.indices(ref.shape).reshape(3, -1)
    flat = ref.ravel()
    counts = np.bincount(flat)
    rows = {}
    for label, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        sel = flat == label
        sums = idx[:, sel].sum(axis=1)
        rows[label] = {
            "count": int(counts[label]),
            "bbox": [s.start for s in sl] + [s.stop for s in sl],
            "sums": sums,
            "class": int(sem.ravel()[sel][0]),
        }
    return rows


@pytest.mark.parametrize("min_size", [0, 5, 40])
def test_min_size_and_table_exact(min_size):
    sem = semantic_phantom(seed=1)
    vs = (30.0, 4.0, 4.5)
    result = label_instances(da.from_array(sem, chunks=(10, 12, 13)), classes=CLASSES,
                             connectivity=18, min_size=min_size, voxel_size=vs)
    out = result.labels.compute()
    ref, _ = whole_volume(sem, CLASSES, 18)
    rows = reference_table(ref, sem)
    kept = {k for k, r in rows.items() if r["count"] >= min_size}
    # the filter: exactly the small objects are gone, the rest numbered 1..K
    filtered = np.where(np.isin(ref, sorted(kept)), ref, 0)
    assert_same_partition(out, filtered)
    assert out.max() == len(kept) == len(result.table)
    if min_size > 1:
        assert len(kept) < len(rows)
    # the table, row by row, against the whole-array computation
    t = result.table
    for row in range(len(t)):
        obj = int(t.ids[row])
        ref_id = int(np.unique(ref[out == obj])[0])
        want = rows[ref_id]
        assert int(t.counts[row]) == want["count"] == int((out == obj).sum())
        assert [*t.bbox_min[row].tolist(), *t.bbox_max[row].tolist()] == want["bbox"]
        assert int(t.classes[row]) == want["class"]
        np.testing.assert_array_equal(t.coord_sums[row], want["sums"])
        centroid = want["sums"] / want["count"] * np.asarray(vs)
        np.testing.assert_allclose(t.centroids_nm[row], centroid, rtol=0, atol=1e-9)


def test_table_round_trip(tmp_path):
    sem = semantic_phantom(seed=2, shape=(12, 14, 16))
    result = label_instances(da.from_array(sem, chunks=(5, 7, 9)), classes=CLASSES,
                             voxel_size=(8.0, 4.0, 4.0))
    path = write_table(result.table, tmp_path / "objects.csv")
    cols = read_table(path)
    expected = result.table.columns()
    assert list(cols) == list(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(cols[name], values)  # exact, repr round trip
    with pytest.raises(OutputExistsError):
        write_table(result.table, path)
    write_table(result.table, path, overwrite=True)
    with pytest.raises(InputError):
        write_table(result.table, tmp_path / "objects.txt")


def test_parquet_table_or_a_clear_error(tmp_path):
    from volseg.instances.table import has_parquet

    sem = semantic_phantom(seed=2, shape=(10, 12, 14))
    table = label_instances(da.from_array(sem, chunks=(5, 6, 7)), classes=CLASSES).table
    if has_parquet():  # pyarrow is optional
        cols = read_table(write_table(table, tmp_path / "objects.parquet"))
        for name, values in table.columns().items():
            np.testing.assert_array_equal(cols[name], values)
    else:
        with pytest.raises(InputError, match="pyarrow"):
            write_table(table, tmp_path / "objects.parquet")
        assert not (tmp_path / "objects.parquet").exists()


def test_bad_arguments():
    sem = da.zeros((4, 4, 4), dtype=np.uint8)
    with pytest.raises(ConfigError):
        label_instances(sem, classes=[1], connectivity=8)
    with pytest.raises(ConfigError):
        label_instances(sem, classes=[])
    with pytest.raises(InputError):
        label_instances(da.zeros((4, 4, 4), dtype=np.float32), classes=[1])
    empty = label_instances(sem, classes=[1])
    assert len(empty.table) == 0 and int(empty.labels.max().compute()) == 0


def test_local_cluster_matches_local_scheduler():
    from distributed import Client, LocalCluster

    sem = semantic_phantom(seed=4, shape=(24, 26, 28))
    lazy = da.from_array(sem, chunks=(13, 14, 15))
    local = label_instances(lazy, classes=CLASSES, connectivity=26, min_size=3)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        remote = label_instances(lazy, classes=CLASSES, connectivity=26, min_size=3,
                                 client=client)
        remote_out = client.compute(remote.labels).result()
    np.testing.assert_array_equal(remote_out, local.labels.compute())
    np.testing.assert_array_equal(remote.table.counts, local.table.counts)
