"""The raster-order list scheduler of blockwise writes (volseg.inference.stream)."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import torch
import zarr

from volseg.geometry import OverlapAddPlan
from volseg.inference.blockwise import ModelCall, overlap_add
from volseg.inference.cache import ModelRef
from volseg.inference.stream import PIECE_PREFIX, compute_in_order, priorities


class Log:
    """Thread-safe record of calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Any] = []
        self.threads: set[str] = set()

    def add(self, item: object) -> None:
        with self.lock:
            self.calls.append(item)
            self.threads.add(threading.current_thread().name)


def _graph(writes: list[Any]) -> dict[Any, Any]:
    """The merged graph of delayed objects."""
    graph: dict[Any, Any] = {}
    for w in writes:
        graph.update(w.__dask_graph__())
    return graph


def _blocks(shape: tuple[int, ...], chunks: tuple[int, ...], log: Log,
            fail_at: tuple[int, ...] | None = None) -> tuple[list, list, dict, da.Array]:
    """Delayed writes of ``x + neighbours`` per block (blocks share inputs)."""
    x = da.arange(int(np.prod(shape)), chunks=-1).reshape(shape).rechunk(chunks)
    y = x + x[::-1, ...]  # each output block needs two input blocks
    out: dict[tuple[int, ...], np.ndarray] = {}

    def write(block: np.ndarray, idx: tuple[int, ...]) -> int:
        log.add(idx)
        if idx == fail_at:
            raise ValueError(f"block {idx} failed")
        out[idx] = block
        return 1

    delayed = y.to_delayed(optimize_graph=False)
    indices = list(np.ndindex(*delayed.shape))
    writes = [dask.delayed(write, pure=False)(delayed[idx], idx) for idx in indices]
    return writes, indices, out, y


def test_results_equal_dask_and_each_task_runs_once() -> None:
    log = Log()
    writes, indices, out, y = _blocks((7, 9, 5), (2, 4, 3), log)
    shuffled = list(zip(writes, indices, strict=True))
    random.Random(0).shuffle(shuffled)
    ran = compute_in_order(_graph(writes), [w.key for w, _ in shuffled],
                           [i for _, i in shuffled], num_workers=3)
    assert sorted(log.calls) == sorted(indices)  # every write once
    for idx, block in out.items():
        np.testing.assert_array_equal(block, y.blocks[idx].compute(scheduler="sync"))
    assert ran >= len(writes)


def test_one_worker_finishes_blocks_in_raster_order() -> None:
    log = Log()
    writes, indices, _, _ = _blocks((6, 6, 6), (2, 3, 2), log)
    order = list(range(len(writes)))
    random.Random(1).shuffle(order)
    done: list[object] = []
    compute_in_order(_graph(writes), [writes[i].key for i in order], [indices[i] for i in order],
                     num_workers=1, on_done=done.append)
    assert log.calls == sorted(indices)
    assert done == [writes[indices.index(i)].key for i in sorted(indices)]


def test_failure_propagates_and_nothing_new_starts() -> None:
    log = Log()
    writes, indices, _, _ = _blocks((4, 4, 4), (2, 2, 2), log, fail_at=(0, 1, 0))
    with pytest.raises(ValueError, match=r"block \(0, 1, 0\) failed"):
        compute_in_order(_graph(writes), [w.key for w in writes], indices, num_workers=1)
    assert log.calls[-1] == (0, 1, 0)  # the failing write was the last task started
    assert len(log.calls) < len(indices)


def test_pieces_run_with_their_emission_and_tasks_run_in_priority_order(
        tmp_path: Path) -> None:
    """On a real overlap-add graph, one worker runs tasks in non-decreasing priority.

    So blocks stream in raster order, and an emission's overhang pieces are cut out
    right after it (their priority is the emission's, not their target block's):
    the emission never waits in memory for a later block.
    """
    shape = (21, 26, 17)
    chunks = [(8, 8, 5), (12, 12, 2), (8, 9)]
    plan = OverlapAddPlan.create(shape, chunks, patch=(8, 8, 8), overlap=0.25)
    net = torch.nn.Conv3d(1, 2, 1)
    x = da.from_array(np.random.default_rng(0).random((1, *shape), dtype=np.float32),
                      chunks=(1, 9, 9, 9))
    logits = overlap_add(x, plan, model=ModelRef.from_module(net),
                         call=ModelCall(device="cpu", batch_size=2), out_channels=2)
    target = zarr.open_array(str(tmp_path / "y.zarr"), mode="w", shape=logits.shape,
                             chunks=logits.chunksize, dtype=np.float32)
    delayed = logits.to_delayed(optimize_graph=False)
    indices = [idx[1:] for idx in np.ndindex(*delayed.shape)]

    def store(block: np.ndarray, idx: tuple[int, ...]) -> int:
        region = tuple(slice(sum(c[:i]), sum(c[:i + 1]))
                       for c, i in zip(logits.chunks[1:], idx, strict=True))
        target[(slice(None), *region)] = block
        return 1

    writes = [dask.delayed(store, pure=False)(delayed[(0, *idx)], idx) for idx in indices]
    from dask._task_spec import convert_legacy_graph
    from dask.base import collections_to_expr

    graph = convert_legacy_graph(dict(
        collections_to_expr(writes, optimize_graph=False).__dask_graph__()))
    deps = {k: frozenset(v.dependencies) for k, v in graph.items()}
    rank = priorities(deps, [w.key for w in writes])
    pieces = [k for k in graph if str(k[0]).startswith(PIECE_PREFIX)]
    carried = 0
    for piece in pieces:
        (emission,) = deps[piece]
        assert rank[piece] == rank[emission]
        consumers = [k for k in graph if piece in deps[k]]  # the merge of its block
        carried += all(rank[c] > rank[piece] for c in consumers)
    assert carried > 0  # overhangs into later blocks exist and are cut out early

    executed: list[object] = []
    original = dask._task_spec.Task.__call__

    def traced(self: Any, values: Any = ()) -> Any:
        executed.append(self.key)
        return original(self, values)

    dask._task_spec.Task.__call__ = traced  # type: ignore[method-assign]
    try:
        compute_in_order(_graph(writes), [w.key for w in writes], indices, num_workers=1)
    finally:
        dask._task_spec.Task.__call__ = original  # type: ignore[method-assign]
    ranks = [rank[k] for k in executed if k in rank]
    assert ranks == sorted(ranks)
    want = logits.compute(scheduler="sync")
    np.testing.assert_array_equal(target[...], want)


def test_priorities_take_the_first_write_needing_a_task() -> None:
    deps = {"a": frozenset(), "b": frozenset({"a"}), "w1": frozenset({"b"}),
            "w0": frozenset({"a"})}
    rank = priorities(deps, ["w0", "w1"])
    assert rank == {"w0": 0, "a": 0, "w1": 1, "b": 1}


def test_dask_synchronous_setting_runs_one_thread() -> None:
    log = Log()
    writes, indices, _, _ = _blocks((4, 4, 4), (2, 2, 2), log)
    callers: set[int] = set()
    with dask.config.set(scheduler="sync"):
        compute_in_order(_graph(writes), [w.key for w in writes], indices,
                         on_done=lambda key: callers.add(threading.get_ident()))
    assert len(log.threads) == 1 and sorted(log.calls) == sorted(indices)
    assert callers == {threading.get_ident()}  # on_done runs in the calling thread


def test_the_private_dask_calls_hold_in_the_pinned_range() -> None:
    """The scheduler uses dask._task_spec: the installed Dask is in the tested range."""
    import re
    import tomllib

    from dask._task_spec import convert_legacy_graph
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [re.sub(r"^dask", "", d) for d in deps if re.match(r"^dask[<>=!~ ]", d)]
    assert "<" in spec, "the scheduler's private Dask calls need an upper bound"
    assert Version(dask.__version__) in SpecifierSet(spec)
    # what compute_in_order relies on: legacy tuples become callables of their inputs
    graph = convert_legacy_graph({"a": 1, "b": (sum, ["a", "a"]), ("c", 0): (abs, "b")})
    assert set(graph["b"].dependencies) == {"a"}
    assert graph["b"]({"a": 2}) == 4 and graph[("c", 0)]({"b": -3}) == 3
