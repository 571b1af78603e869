"""A real S3-compatible server for tests: moto's server mode (`moto.server`, as s3fs tests itself) on
127.0.0.1 at a free port, in its own process. `serve` starts it, sets the standard variables every client of
this process and its children reads (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), and stops it."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(bucket: str = "jade", timeout: float = 60.0) -> Iterator[str]:
    """Start the server with ``bucket`` made; yields its endpoint URL (the variables set meanwhile)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "moto server exited at start"
                assert time.time() < deadline, "moto server did not start"
                time.sleep(0.1)
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
