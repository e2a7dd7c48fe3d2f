"""Computing Dask collections with a progress bar, locally or on a cluster.

On a terminal a rich bar (local schedulers) or distributed's bar (a cluster) is drawn;
elsewhere (a batch job's log, a pipe) plain lines are printed instead, at most every
:data:`PLAIN_INTERVAL` seconds (work shorter than that prints nothing) and at the
end, each naming what is computed::

    volseg: predicting image.ome.zarr: 120/480 tasks (25 %), 42 s
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import dask
from dask.callbacks import Callback

if TYPE_CHECKING:
    from distributed import Client


def _plain_interval() -> float:
    """Seconds between plain progress lines (``VOLSEG_PROGRESS_INTERVAL``, default 30)."""
    try:
        return max(0.0, float(os.environ.get("VOLSEG_PROGRESS_INTERVAL", "30")))
    except ValueError:
        return 30.0


PLAIN_INTERVAL = _plain_interval()
"""Seconds between plain progress lines off a terminal (``VOLSEG_PROGRESS_INTERVAL``)."""


class PlainLines:
    """Progress as plain lines with a description (for logs, where bars garble).

    Parameters
    ----------
    description
        What is computed (begins each line).
    interval
        Least seconds between two lines, and before the first; the last line is printed
        only after earlier ones, so work shorter than ``interval`` prints nothing (a
        command's one error line stays alone); default :data:`PLAIN_INTERVAL`.
    """

    def __init__(self, description: str, interval: float | None = None) -> None:
        self.description = description
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self._start = time.perf_counter()
        self._last: float | None = None
        self._last_done = -1

    def update(self, done: int, total: int, *, final: bool = False) -> None:
        """Print a line if the interval has passed (or ``final``)."""
        now = time.perf_counter()
        if final:  # the last line only completes earlier ones: short work stays silent
            if self._last is None or done == self._last_done:
                return
        elif done == self._last_done or now - (self._last or self._start) < self.interval:
            return
        self._last, self._last_done = now, done
        percent = 100 * done / total if total else 100.0
        print(f"volseg: {self.description}: {done}/{total} tasks ({percent:.0f} %), "
              f"{now - self._start:.0f} s", file=sys.stderr, flush=True)


class _RichProgress(Callback):
    """A dask local-scheduler callback drawing a rich progress bar (tasks done / total)."""

    def __init__(self, description: str) -> None:
        super().__init__()
        self._description = description
        self._progress: Any = None
        self._task: Any = None
        self._plain: PlainLines | None = None
        self._total = 0

    def _start_state(self, dsk: Any, state: dict[str, Any]) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self._total = max(total, 1)
        if not sys.stderr.isatty():
            self._plain = PlainLines(self._description)
            self._plain.update(len(state["finished"]), self._total)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=self._total)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: dict[str, Any], wid: Any) -> None:
        if self._plain is not None:
            self._plain.update(len(state["finished"]), self._total)
        elif self._progress is not None:
            self._progress.update(self._task, completed=len(state["finished"]))

    def _finish(self, dsk: Any, state: dict[str, Any], errored: bool) -> None:
        if self._plain is not None and not errored:
            self._plain.update(len(state["finished"]), self._total, final=True)
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
        futures = client.compute(list(collections))
        cluster_progress(futures, description)
        return tuple(client.gather(futures))
    with _RichProgress(description):
        return tuple(dask.compute(*collections))


def cluster_progress(futures: Any, description: str) -> None:
    """Show the progress of ``futures`` on a cluster until they finish.

    On a terminal: the description, then distributed's bar; elsewhere: plain lines
    (:class:`PlainLines`) from the scheduler's task counts.
    """
    if sys.stderr.isatty():
        from distributed import progress

        print(f"volseg: {description}", file=sys.stderr, flush=True)
        progress(futures)
        return
    from distributed.diagnostics.progressbar import TextProgressBar

    plain = PlainLines(description)

    class _Lines(TextProgressBar):
        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
            plain.update(all - remaining, all, final=remaining == 0)

        def _draw_stop(self, **kwargs: Any) -> None:
            pass

    _Lines(futures, interval="500ms")


def task_progress(description: str) -> Callback:
    """Return a context manager drawing a progress bar over dask's local schedulers."""
    return _RichProgress(description)
