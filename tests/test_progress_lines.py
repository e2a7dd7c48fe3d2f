"""Plain progress lines off a terminal: silent for short work, periodic for long work."""

from __future__ import annotations

import pytest

from volseg.progress import PlainLines


def test_work_shorter_than_the_interval_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    lines = PlainLines("predicting x", interval=3600)
    for done in range(5):
        lines.update(done, 4)
    lines.update(4, 4, final=True)
    assert capsys.readouterr().err == ""


def test_long_work_prints_periodic_lines_and_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    lines = PlainLines("predicting x", interval=0)
    lines.update(1, 4)
    lines.update(1, 4)  # nothing new: no line
    lines.update(3, 4)
    lines.update(4, 4, final=True)
    lines.update(4, 4, final=True)  # already said
    err = capsys.readouterr().err.splitlines()
    assert [e.split(", ")[0] for e in err] == [
        "volseg: predicting x: 1/4 tasks (25 %)", "volseg: predicting x: 3/4 tasks (75 %)",
        "volseg: predicting x: 4/4 tasks (100 %)"]
