"""Shared test fixtures: small and general (format writers live in ``volseg.io.testing``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real EM data folder ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data not found at {SHARED_DATA} (../shared/data)")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 server (moto) on 127.0.0.1 for the whole session; stopped by its PID."""
    from volseg.io.servers import s3_server

    with s3_server() as url:
        yield url


@pytest.fixture
def bucket(s3_endpoint: str) -> Iterator[str]:
    """A new empty bucket on the loopback S3 server, as ``s3://<name>``.

    ``AWS_ENDPOINT_URL`` and dummy credentials are set for the test only.
    """
    from volseg.io.servers import make_bucket, s3_environment

    with s3_environment(s3_endpoint):
        yield make_bucket(f"volseg-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 (byte ranges, like object stores and portals):
    ``(folder, url)``; stopped by its PID at the end of the session."""
    from volseg.io.servers import http_server

    folder = tmp_path_factory.mktemp("served")
    with http_server(folder) as url:
        yield folder, url
