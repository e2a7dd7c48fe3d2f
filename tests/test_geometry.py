"""Geometry on tiny cases worked out by hand, and the patch grid against MONAI's."""

from __future__ import annotations

import itertools

import pytest

from volseg.geometry import (
    Box,
    OverlapAddPlan,
    PatchGrid,
    block_boxes,
    border_pad,
    border_padding,
    centre_halo,
    chunk_bounds,
    halo_box,
    patch_starts,
    plan_axis,
    regular_chunks,
    scan_interval,
    tiles,
)


def test_box_basics() -> None:
    a = Box((0, 2), (3, 5))
    assert a.shape == (3, 3) and a.size == 9 and a.ndim == 2 and not a.empty
    assert a.intersect(Box((1, 0), (9, 3))) == Box((1, 2), (3, 3))
    assert a.intersect(Box((5, 5), (6, 6))).empty
    assert a.grow((1, 0), (0, 2)) == Box((-1, 2), (3, 7))
    assert a.shift((1, -2)) == Box((1, 0), (4, 3))
    assert a.relative_to((0, 2)).slices() == (slice(0, 3), slice(0, 3))
    assert Box.from_shape((2, 3), (1, 1)) == Box((1, 1), (3, 4))
    with pytest.raises(ValueError):
        Box((0,), (-1,))
    with pytest.raises(ValueError):
        Box((-1,), (2,)).slices()


def test_chunks_and_blocks() -> None:
    assert regular_chunks(10, 4) == (4, 4, 2)
    assert regular_chunks(8, 4) == (4, 4)
    assert regular_chunks(3, 8) == (3,)
    assert chunk_bounds((4, 4, 2)) == (0, 4, 8, 10)
    blocks = list(block_boxes([(2, 1), (3,)]))
    assert blocks == [((0, 0), Box((0, 0), (2, 3))), ((1, 0), Box((2, 0), (3, 3)))]
    assert [t.shape for t in tiles(Box((1, 1), (6, 3)), (2, 2))] == [(2, 2), (2, 2), (1, 2)]
    assert tiles(Box((1, 1), (6, 3)), (2, 2))[2] == Box((5, 1), (6, 3))


def test_halos() -> None:
    assert centre_halo(5) == (2, 2)
    assert centre_halo(4) == (2, 1)
    assert centre_halo(1) == (0, 0)
    assert halo_box(Box((0, 4), (4, 8)), [(1, 2), (0, 0)]) == Box((-1, 4), (6, 8))
    assert border_pad((-2, 5), 4) == ((0, 4), (2, 1))
    assert border_pad((1, 3), 4) == ((1, 3), (0, 0))


def test_scan_interval_matches_monai_rule() -> None:
    # interval = int(patch * (1 - overlap)), at least 1; a patch filling the axis: patch
    assert scan_interval(100, 32, 0.25) == 24
    assert scan_interval(100, 32, 0.5) == 16
    assert scan_interval(100, 3, 0.9) == 1  # int(0.3) = 0 -> 1
    assert scan_interval(32, 32, 0.5) == 32
    assert scan_interval(10, 5, 0.0) == 5
    with pytest.raises(ValueError):
        scan_interval(10, 5, 1.0)


def test_border_padding_splits_like_monai() -> None:
    # diff = patch - size; before = diff // 2, after = the rest
    assert border_padding(5, 8) == (1, 2)
    assert border_padding(4, 8) == (2, 2)
    assert border_padding(9, 8) == (0, 0)


def test_patch_starts_by_hand() -> None:
    # size 10, patch 4, overlap .5: interval 2, starts 0 2 4 6 (6 + 4 = 10 reaches the end)
    assert patch_starts(10, 4, 0.5) == (0, 2, 4, 6)
    # size 11, patch 4, overlap .25: interval 3: 0 3 6 9 -> last aligned to the end: 7
    assert patch_starts(11, 4, 0.25) == (0, 3, 6, 7)
    # exactly one patch
    assert patch_starts(4, 4, 0.25) == (0,)
    # axis shorter than the patch: padded 1 before, 2 after -> one patch at -1
    assert patch_starts(3, 6, 0.25) == (-1,)
    assert patch_starts(4, 8, 0.5) == (-2,)
    # overlap 0: tiling, last patch shifted back
    assert patch_starts(10, 4, 0.0) == (0, 4, 6)


def test_patch_grid_equals_monai_dense_patch_slices() -> None:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for shape, patch, overlap in [
        ((13, 21, 10), (8, 8, 12), 0.25),
        ((13, 21, 10), (8, 8, 12), 0.5),
        ((7, 30, 31), (4, 9, 16), 0.6),
        ((1, 40, 17), (1, 16, 16), 0.25),
        ((50, 3), (7, 5), 0.9),
    ]:
        grid = PatchGrid.create(shape, patch, overlap)
        padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
        pad_before = [border_padding(s, p)[0] for s, p in zip(shape, patch, strict=True)]
        interval = _get_scan_interval(padded, patch, len(shape), (overlap,) * len(shape))
        monai = [
            tuple(sl.start - b for sl, b in zip(slices, pad_before, strict=True))
            for slices in dense_patch_slices(padded, patch, interval)
        ]
        assert [b.start for b in grid.boxes()] == monai
        assert len(grid) == len(monai)


def test_plan_axis_by_hand() -> None:
    p = plan_axis(10, (4, 4, 2), patch=4, overlap=0.5)
    assert p.starts == (0, 2, 4, 6)
    assert p.owned == ((0, 2), (2, 4), (4, 4))  # block 2 starts no patch
    assert p.write == ((0, 6), (4, 10), (8, 8))
    assert p.read == ((0, 6), (4, 10), (8, 8))
    assert p.sources == ((0,), (0, 1), (1,))
    # blocks of 2, patch 4: each block owns one patch reaching into the next block
    q = plan_axis(10, (2, 2, 2, 2, 2), patch=4, overlap=0.5)
    assert q.owned == ((0, 1), (1, 2), (2, 3), (3, 4), (4, 4))
    assert q.write == ((0, 4), (2, 6), (4, 8), (6, 10), (8, 8))
    assert q.sources == ((0,), (0, 1), (1, 2), (2, 3), (3,))
    # patch 6 (interval 3: starts 0 3 4): overhangs reach two blocks ahead
    r = plan_axis(10, (2, 2, 2, 2, 2), patch=6, overlap=0.5)
    assert r.starts == (0, 3, 4)
    assert r.owned == ((0, 1), (1, 2), (2, 3), (3, 3), (3, 3))
    assert r.write == ((0, 6), (3, 9), (4, 10), (6, 6), (8, 8))
    assert r.sources == ((0,), (0, 1), (0, 1, 2), (1, 2), (1, 2))
    # context (2.5-D z): the read interval grows, the write interval does not
    c = plan_axis(5, (3, 2), patch=1, overlap=0.25, context=(1, 1))
    assert c.starts == (0, 1, 2, 3, 4)
    assert c.write == ((0, 3), (3, 5)) and c.read == ((-1, 4), (2, 6))
    # padded axis: the single patch starts before 0 and is owned by block 0
    d = plan_axis(3, (2, 1), patch=6, overlap=0.25)
    assert d.owned == ((0, 1), (1, 1)) and d.read[0] == (-1, 5) and d.write[0] == (0, 3)
    assert d.sources == ((0,), (0,))


def test_plan_owns_every_patch_once_2d() -> None:
    shape, patch = (11, 9), (4, 5)
    for chunks in ([(11,), (9,)], [(3, 3, 3, 2), (2, 7)], [(1,) * 11, (4, 4, 1)]):
        plan = OverlapAddPlan.create(shape, chunks, patch=patch, overlap=0.5)
        owned = [s for b in plan.blocks() for s in plan.patch_starts(b)]
        grid = [b.start for b in PatchGrid.create(shape, patch, 0.5).boxes()]
        assert sorted(owned) == sorted(grid) and len(owned) == plan.n_patches
        # every block's own patches lie within its write box; sources cover blocks
        for b in plan.blocks():
            for s in plan.patch_starts(b):
                box = Box.from_shape(patch, s).intersect(Box.from_shape(shape))
                assert box.intersect(plan.write_box(b)) == box
            for src in plan.sources(b):
                assert not plan.write_box(src).intersect(plan.block_box(b)).empty
            # and no block outside sources reaches it
            others = set(plan.blocks()) - set(plan.sources(b))
            assert all(plan.write_box(o).intersect(plan.block_box(b)).empty for o in others)


def test_plan_2d_block_indices_are_products() -> None:
    plan = OverlapAddPlan.create((6, 6), [(3, 3), (2, 4)], patch=(4, 4), overlap=0.5)
    assert plan.grid == (2, 2)
    assert list(plan.blocks()) == list(itertools.product(range(2), range(2)))
    # starts 0, 2 on both axes: blocks (1, *) own no patch (and emit nothing)
    assert plan.patch_starts((1, 1)) == [] and plan.write_box((1, 1)).empty
    assert plan.patch_starts((0, 1)) == [(0, 2), (2, 2)]
    assert plan.sources((1, 1)) == [(0, 0), (0, 1)]
    assert plan.block_box((1, 0)) == Box((3, 0), (6, 2))
