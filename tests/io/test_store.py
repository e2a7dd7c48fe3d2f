"""``volseg.io.store.store_blocks``: blockwise writes, done-markers, culling and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr

from volseg.io import store
from volseg.io.store import (
    CLAIM,
    MARKER_DIR,
    StoreMarkers,
    StoreReport,
    check_alignment,
    completed_chunks,
    forget_chunk,
    is_complete,
    storage_chunks,
    store_blocks,
    v2_layout,
)

SHAPE = (37, 61, 83)
CHUNKS = (10, 16, 20)  # zarr chunks: 4 x 4 x 5 = 80, none divides the shape


def _target(path: Path, zarr_format: int = 2) -> zarr.Array:
    return zarr.create_array(str(path), shape=SHAPE, chunks=CHUNKS, dtype=np.uint16,
                             fill_value=0, zarr_format=zarr_format)  # type: ignore[arg-type]


class Counter:
    """Counts calls of an upstream per-block function (thread-safe)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, block: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += 1
        return (block * 3 + 1).astype(np.uint16)


def _source(counter: Counter, chunks: tuple[int, int, int] = (20, 32, 40)) -> da.Array:
    base = da.arange(int(np.prod(SHAPE)), dtype=np.uint16).reshape(SHAPE).rechunk(chunks)
    return base.map_blocks(counter, dtype=np.uint16, meta=np.empty((0, 0, 0), np.uint16))


def _expected() -> np.ndarray:
    return (np.arange(int(np.prod(SHAPE)), dtype=np.uint16).reshape(SHAPE) * 3 + 1).astype(
        np.uint16)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_writes_every_block_and_marks_every_chunk(tmp_path: Path, zarr_format: int) -> None:
    target = _target(tmp_path / "t.zarr", zarr_format)
    counter = Counter()
    report = store_blocks(_source(counter), target, description="test")
    assert report == StoreReport(total_blocks=12, computed_blocks=12, skipped_blocks=0)
    assert counter.calls == 12
    np.testing.assert_array_equal(target[:], _expected())
    assert len(completed_chunks(target)) == 80 and is_complete(target)
    markers = sorted(os.listdir(tmp_path / "t.zarr" / MARKER_DIR))
    assert CLAIM in markers  # the writer claimed the array: volseg may resume it
    markers.remove(CLAIM)
    assert len(markers) == 12 and "2-4_2-4_4-5" in markers  # one per block: chunk ranges


def test_rerun_skips_done_blocks_and_culls_their_upstream(tmp_path: Path) -> None:
    target = _target(tmp_path / "t.zarr")
    store_blocks(_source(Counter()), target, description="first")
    counter = Counter()
    assert store_blocks(_source(counter), target, description="again") == StoreReport(12, 0, 12)
    assert counter.calls == 0
    # forget two blocks: (0,0,0) covers chunks 0-1 x 0-1 x 0-1, (1,1,2) covers 2-3 x 2-3 x 4
    assert forget_chunk(target, (1, 0, 1)) == 1
    assert forget_chunk(target, (3, 3, 4)) == 1
    assert len(completed_chunks(target)) == 80 - 8 - 4
    target[0:10, 0:16, 20:40] = 0  # and damage the data of the first one
    counter = Counter()
    report = store_blocks(_source(counter), target, description="resume")
    assert report == StoreReport(total_blocks=12, computed_blocks=2, skipped_blocks=10)
    assert counter.calls == 2
    np.testing.assert_array_equal(target[:], _expected())


def test_markers_survive_a_different_dask_chunking(tmp_path: Path) -> None:
    target = _target(tmp_path / "t.zarr")
    store_blocks(_source(Counter()), target, description="big blocks")
    counter = Counter()
    report = store_blocks(_source(counter, chunks=CHUNKS), target, description="small blocks")
    assert report == StoreReport(total_blocks=80, computed_blocks=0, skipped_blocks=80)
    assert counter.calls == 0


def test_overwrite_recomputes_everything(tmp_path: Path) -> None:
    target = _target(tmp_path / "t.zarr")
    store_blocks(_source(Counter()), target, description="first")
    counter = Counter()
    report = store_blocks(_source(counter), target, description="again", overwrite=True)
    assert report.computed_blocks == 12 and counter.calls == 12


def test_misaligned_or_misshapen_arrays_are_refused(tmp_path: Path) -> None:
    target = _target(tmp_path / "t.zarr")
    with pytest.raises(ValueError, match=r"axis 0 split zarr chunks of size 10 \(boundary at 15\)"):
        store_blocks(_source(Counter(), chunks=(15, 32, 40)), target, description="x")
    with pytest.raises(ValueError, match="shape"):
        store_blocks(da.zeros((5, 5, 5), dtype=np.uint16), target, description="x")
    assert not (tmp_path / "t.zarr" / MARKER_DIR).exists()


@pytest.mark.parametrize(("dtype", "fill"), [(">u2", 0), ("<f4", float("nan")), ("|u1", 7)])
def test_direct_v2_chunk_writes_match_zarr(tmp_path: Path, dtype: str, fill: float) -> None:
    """The fast path writes what zarr writes: edge chunks, fill chunks, byte order."""
    import numcodecs

    rng = np.random.default_rng(5)
    data = rng.integers(0, 200, SHAPE).astype(dtype)
    data[:20, :32, :40] = fill  # whole chunks equal to the fill value
    arrays = []
    for name in ("fast", "zarr"):
        arrays.append(zarr.create_array(
            str(tmp_path / name), shape=SHAPE, chunks=CHUNKS, dtype=dtype, fill_value=fill,
            zarr_format=2, compressors=numcodecs.Blosc(cname="zstd", clevel=3),
            chunk_key_encoding={"name": "v2", "separator": "/"}))
    fast, reference = arrays
    fast[:] = 1  # stale data that must be replaced, including chunks that become empty
    store_blocks(da.from_array(data, chunks=(20, 32, 40)), fast, description="fast")
    reference[:] = data
    np.testing.assert_array_equal(fast[:], reference[:])
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "fast"), mode="r")[:], data)
    chunk_files = {p.relative_to(tmp_path / "fast").as_posix()
                   for p in (tmp_path / "fast").rglob("*") if p.is_file()
                   and not p.name.startswith(".") and MARKER_DIR not in p.parts}
    reference_files = {p.relative_to(tmp_path / "zarr").as_posix()
                       for p in (tmp_path / "zarr").rglob("*") if p.is_file()
                       and not p.name.startswith(".")}
    assert chunk_files == reference_files and "0/0/0" not in chunk_files


def test_check_alignment_allows_blocks_spanning_chunks() -> None:
    check_alignment(((20, 17), (61,)), (37, 61), (10, 16))  # 61 is the end: fine
    with pytest.raises(ValueError):
        check_alignment(((20, 17), (30, 31)), (37, 61), (10, 16))


def test_on_a_local_cluster_of_processes(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    target = _target(tmp_path / "t.zarr")
    source = (da.from_array(_expected() - 1, chunks=(20, 32, 40)) + 1).astype(np.uint16)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        first = store_blocks(source, target, description="cluster", client=client)
        second = store_blocks(source, target, description="cluster", client=client)
    assert (first.computed_blocks, second.skipped_blocks) == (12, 12)
    np.testing.assert_array_equal(target[:], _expected())


_KILLED_RUN = textwrap.dedent("""
    import sys, time
    import dask, dask.array as da, numpy as np, zarr
    from volseg.io.store import store_blocks

    def slow(block):
        time.sleep(0.1)
        return (block * 3 + 1).astype(np.uint16)

    shape = (37, 61, 83)
    base = da.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape)
    source = base.rechunk((10, 16, 20)).map_blocks(slow, dtype=np.uint16)
    target = zarr.open_array(sys.argv[1], mode="r+")
    with dask.config.set(scheduler="synchronous"):
        store_blocks(source, target, description="to be killed")
    print("finished")
""")


@pytest.mark.parametrize("sharded", [False, True])
def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path, sharded: bool) -> None:
    target = _sharded(tmp_path / "t.zarr") if sharded else _target(tmp_path / "t.zarr")
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    markers = tmp_path / "t.zarr" / MARKER_DIR
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "t.zarr")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.is_dir() and len(os.listdir(markers)) >= 6:  # claim + 5 blocks
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len([name for name in os.listdir(markers) if name != CLAIM])
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    assert 5 <= done < 80

    counter = Counter()
    report = store_blocks(_source(counter, chunks=CHUNKS), target, description="resume")
    assert report == StoreReport(total_blocks=80, computed_blocks=80 - done, skipped_blocks=done)
    assert counter.calls == 80 - done

    undisturbed = _sharded(tmp_path / "u.zarr") if sharded else _target(tmp_path / "u.zarr")
    store_blocks(_source(Counter(), chunks=CHUNKS), undisturbed, description="reference")
    np.testing.assert_array_equal(target[:], undisturbed[:])


def _sharded(path: Path, shards: tuple[int, int, int] = CHUNKS) -> zarr.Array:
    """A zarr v3 array whose storage chunks are shards of 2 x 2 x 2 inner chunks."""
    inner = tuple(s // 2 for s in shards)
    return zarr.create_array(str(path), shape=SHAPE, chunks=inner, shards=shards,
                             dtype=np.uint16, fill_value=0, zarr_format=3)


def test_sharded_targets_get_one_task_per_shard(tmp_path: Path) -> None:
    target = _sharded(tmp_path / "s.zarr")
    assert storage_chunks(target) == CHUNKS and target.chunks == (5, 8, 10)
    counter = Counter()
    report = store_blocks(_source(counter), target, description="sharded")
    assert report == StoreReport(total_blocks=12, computed_blocks=12, skipped_blocks=0)
    np.testing.assert_array_equal(target[:], _expected())
    # markers name shard ranges; a block covering 2 x 2 x 2 shards is one task
    assert len(completed_chunks(target)) == 80 and is_complete(target)
    shard_files = [p for p in (tmp_path / "s.zarr" / "c").rglob("*") if p.is_file()]
    assert len(shard_files) == 80  # one object per shard, not per inner chunk (640)
    # blocks aligned to the inner chunks but splitting shards are refused
    with pytest.raises(ValueError, match="split zarr chunks of size 10"):
        store_blocks(_source(Counter(), chunks=(5, 32, 40)), _sharded(tmp_path / "t.zarr"),
                     description="x")


def test_a_torn_shard_is_rewritten_on_resume(tmp_path: Path) -> None:
    """A shard half-written by a killed run would fail zarr's checksum on a rewrite."""
    target = _sharded(tmp_path / "s.zarr")
    store_blocks(_source(Counter()), target, description="first")
    shard = tmp_path / "s.zarr" / "c" / "1" / "1" / "2"  # shard (1, 1, 2): block (0, 0, 1)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # torn
    with pytest.raises(ValueError, match="checksum"):  # what zarr alone would do
        target[10:20, 16:32, 40:60] = 1
    assert forget_chunk(target, (1, 1, 2)) == 1  # the kill came before the marker
    counter = Counter()
    report = store_blocks(_source(counter), target, description="resume")
    assert (report.computed_blocks, counter.calls) == (1, 1)
    np.testing.assert_array_equal(target[:], _expected())


def test_markers_live_in_the_array_store_whatever_it_is() -> None:
    """Markers are keys of the array's own store: a memory store works like a folder."""
    from zarr.storage import MemoryStore

    store = MemoryStore()
    target = zarr.create_array(store, shape=SHAPE, chunks=(5, 8, 10), shards=CHUNKS,
                               dtype=np.uint16, fill_value=0, zarr_format=3)
    assert v2_layout(target) is None
    report = store_blocks(_source(Counter()), target, description="memory")
    assert report.computed_blocks == 12 and is_complete(target)
    names = StoreMarkers(store, "").names()
    assert CLAIM in names and "2-4_2-4_4-5" in names and len(names) == 13
    np.testing.assert_array_equal(target[:], _expected())
    counter = Counter()
    assert store_blocks(_source(counter), target, description="again").skipped_blocks == 12
    assert counter.calls == 0


def test_the_direct_v2_switch_writes_the_same_through_zarr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _target(tmp_path / "fast.zarr")
    assert v2_layout(fast) is not None
    store_blocks(_source(Counter()), fast, description="fast")
    monkeypatch.setattr(store, "DIRECT_V2", False)
    slow = _target(tmp_path / "zarr.zarr")
    assert v2_layout(slow) is None
    store_blocks(_source(Counter()), slow, description="through zarr")
    np.testing.assert_array_equal(fast[:], slow[:])
    np.testing.assert_array_equal(slow[:], _expected())


@pytest.mark.parametrize(("dtype", "fill"), [("|u1", 0), ("<u2", 7), ("<f4", float("nan")),
                                             ("<f2", 0), ("<u4", 0)])
def test_direct_shard_writes_match_zarr_byte_for_byte(tmp_path: Path, dtype: str,
                                                      fill: float) -> None:
    """The direct v3 shard writer writes zarr's files: edge shards, inner chunks equal to
    the fill value left out, wholly empty shards absent, the index and its checksum."""
    from volseg.io.omezarr import _compressor_v3
    from volseg.io.store import shard_layout

    rng = np.random.default_rng(5)
    data = rng.integers(0, 200, SHAPE).astype(dtype)
    data[:10, :16, :20] = fill  # a whole shard equal to the fill value
    data[10:15, 16:24, 20:30] = fill  # one inner chunk equal to it
    arrays = []
    for name in ("fast", "zarr"):
        arrays.append(zarr.create_array(
            str(tmp_path / name), shape=SHAPE, chunks=(5, 8, 10), shards=CHUNKS, dtype=dtype,
            fill_value=fill, zarr_format=3, compressors=_compressor_v3()))
    fast, reference = arrays
    assert shard_layout(fast) is not None
    fast[:] = 1  # stale shards that must be replaced, including one that becomes empty
    store_blocks(da.from_array(data, chunks=(20, 32, 40)), fast, description="fast")
    reference[:] = data
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "fast"), mode="r")[:], data)

    def shards(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / "c").rglob("*")
                if p.is_file()}

    got, expected = shards(tmp_path / "fast"), shards(tmp_path / "zarr")
    assert "0/0/0" not in got and set(got) == set(expected)
    assert got == expected  # byte for byte


def test_the_direct_shard_switch_writes_the_same_through_zarr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from volseg.io.omezarr import _compressor_v3
    from volseg.io.store import shard_layout

    def target(name: str) -> zarr.Array:
        return zarr.create_array(str(tmp_path / name), shape=SHAPE, chunks=(5, 8, 10),
                                 shards=CHUNKS, dtype=np.uint16, fill_value=0, zarr_format=3,
                                 compressors=_compressor_v3())

    fast = target("fast.zarr")
    store_blocks(_source(Counter()), fast, description="fast")
    monkeypatch.setattr(store, "DIRECT_SHARDS", False)
    slow = target("zarr.zarr")
    assert shard_layout(slow) is None
    store_blocks(_source(Counter()), slow, description="through zarr")
    np.testing.assert_array_equal(fast[:], slow[:])
    np.testing.assert_array_equal(slow[:], _expected())
