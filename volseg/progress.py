"""Computing Dask collections with a progress bar, locally or on a cluster."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import dask
from dask.callbacks import Callback

if TYPE_CHECKING:
    from distributed import Client


class _RichProgress(Callback):
    """A dask local-scheduler callback drawing a rich progress bar (tasks done / total)."""

    def __init__(self, description: str) -> None:
        super().__init__()
        self._description = description
        self._progress: Any = None
        self._task: Any = None

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
            disable=not sys.stderr.isatty(),
        )
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=max(total, 1))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], wid: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=len(state["finished"]))

    def _finish(self, dsk: Any, state: dict[str, Any], errored: bool) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=len(state["finished"]))
            self._progress.stop()


def compute(*collections: Any, description: str = "computing",
            client: Client | None = None) -> tuple:
    """Compute Dask collections and show progress; return their results as a tuple.

    Parameters
    ----------
    *collections
        Dask arrays / delayed objects to compute together (shared tasks run once).
    description
        Label of the progress bar.
    client
        A ``distributed.Client``; when given the work runs on its cluster and
        ``distributed.progress`` reports it, else the local threaded scheduler runs it.
    """
    if client is not None:
        from distributed import progress

        futures = client.compute(list(collections))
        if sys.stderr.isatty():
            progress(futures)
        return tuple(client.gather(futures))
    with _RichProgress(description):
        return tuple(dask.compute(*collections))
