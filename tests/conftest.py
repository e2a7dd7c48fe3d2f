"""Shared test fixtures: small and general (format writers live in ``volseg.io.testing``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real EM data folder ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA.resolve()
