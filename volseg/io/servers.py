"""Loopback servers for tests and benchmarks: an S3 server (moto) and a static HTTP server.

Both listen on ``127.0.0.1`` on a free port, run as child processes and are stopped
by their PID when the ``with`` block ends::

    with s3_server() as endpoint, s3_environment(endpoint):
        ...  # s3:// URLs now reach the loopback server (AWS_ENDPOINT_URL, dummy keys)

    with http_server(folder) as url:   # python -m http.server, read-only
        open_volume(f"{url}/image.ome.zarr")

``moto[server]`` is in the ``dev`` extra.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

S3_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}
"""Dummy credentials for the loopback S3 server (never real ones)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server answered at {url} within {timeout:.0f} s")


@contextlib.contextmanager
def _serve(argv: list[str], url: str, *, cwd: Path | None = None, timeout: float = 60.0,
           log: Path | None = None) -> Iterator[str]:
    sink = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(argv, cwd=cwd, stdout=sink, stderr=sink)
    try:
        _wait(url, process, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if log is not None:
            sink.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def s3_server(timeout: float = 60.0, log: Path | None = None) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1; yield its endpoint URL (``http://127.0.0.1:N``).

    ``log``: a file that receives the server's request log (one line per request).
    """
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    with _serve(argv, f"http://{HOST}:{port}", timeout=timeout, log=log) as url:
        yield url


@contextlib.contextmanager
def http_server(directory: str | os.PathLike[str], timeout: float = 30.0) -> Iterator[str]:
    """Serve ``directory`` read-only over HTTP on 127.0.0.1 (``python -m volseg.io.servers``).

    Python's ``http.server`` with byte ranges (``Range: bytes=a-b`` and ``bytes=-n``),
    which sharded Zarr v3 readers need to fetch a shard's index and inner chunks, as
    object stores and the public portals serve them.
    """
    port = free_port()
    argv = [sys.executable, "-m", "volseg.io.servers", str(directory), str(port)]
    with _serve(argv, f"http://{HOST}:{port}", timeout=timeout) as url:
        yield url


def _range_handler() -> type:
    import http.server
    import re

    class RangeHandler(http.server.SimpleHTTPRequestHandler):
        """``SimpleHTTPRequestHandler`` answering single byte ranges with 206."""

        def log_message(self, format: str, *args: object) -> None:
            return

        def send_head(self) -> Any:
            header = self.headers.get("Range")
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
            path = self.translate_path(self.path)
            if match is None or not os.path.isfile(path):
                return super().send_head()
            size = os.path.getsize(path)
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:
                start, end = max(0, size - int(last or 0)), size - 1
            if start > end:
                self.send_error(416)
                return None
            f = open(path, "rb")  # noqa: SIM115 (closed by copyfile's caller)
            f.seek(start)
            self.send_response(206)
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            return _Limited(f, end - start + 1)

    return RangeHandler


class _Limited:
    """A file object that reads at most ``n`` bytes (for one range)."""

    def __init__(self, f: Any, n: int) -> None:
        self.f, self.left = f, n

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data: bytes = self.f.read(size)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


def _main(argv: list[str]) -> None:
    """``python -m volseg.io.servers DIRECTORY PORT``: serve a folder on 127.0.0.1."""
    import functools
    import http.server

    directory, port = argv
    handler = functools.partial(_range_handler(), directory=directory)
    with http.server.ThreadingHTTPServer((HOST, int(port)), handler) as server:
        server.serve_forever()


@contextlib.contextmanager
def s3_environment(endpoint: str) -> Iterator[None]:
    """Point the AWS clients of this process (and its children) at ``endpoint``.

    Sets ``AWS_ENDPOINT_URL`` and the dummy :data:`S3_ENVIRONMENT` credentials, and
    restores the previous values afterwards; s3fs's cached file systems are dropped
    on entry and exit so that none keeps the other endpoint.
    """
    values = {**S3_ENVIRONMENT, "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    _clear_s3fs()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _clear_s3fs()


def _clear_s3fs() -> None:
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


def make_bucket(name: str) -> str:
    """Create bucket ``name`` on the configured endpoint; return ``s3://name``."""
    import s3fs

    s3fs.S3FileSystem().mkdir(name)
    return f"s3://{name}"


if __name__ == "__main__":
    _main(sys.argv[1:])
