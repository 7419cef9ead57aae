"""A real `moto_server` process for tests that talk to S3 (or CloudFormation) over HTTP, the way the
Lambda function talks to AWS.

Use it from a test module with ``from tests.moto_fixture import moto_server, moto_env  # noqa: F401``
(or list ``tests.moto_fixture`` in ``pytest_plugins``).

- ``moto_server`` (session scope): starts ``moto_server -H 127.0.0.1 -p <free port>`` from this
  interpreter's environment, waits until it answers, yields its endpoint URL (``http://127.0.0.1:PORT``),
  and stops that process (by its PID) at the end of the session.
- ``moto_env`` (function scope): points boto3 at that server for one test (``AWS_ENDPOINT_URL``, fake
  credentials, a region; no profile or real credentials can leak in) and wipes the server's state first,
  so every test starts with no buckets. Yields the endpoint URL.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 30.0
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto_server_executable() -> str:
    """The moto_server script installed beside the running interpreter (the project's .venv/bin)."""
    candidate = Path(sys.executable).parent / "moto_server"
    if not candidate.exists():
        pytest.fail(f"moto_server not found at {candidate}: install moto[server] into this environment")
    return str(candidate)


def _wait_until_up(endpoint: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with status {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer at {endpoint} within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server():
    """Endpoint URL (``http://127.0.0.1:PORT``) of a moto_server process that lives for the session."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [_moto_server_executable(), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_up(endpoint, proc, STARTUP_TIMEOUT_S)
        yield endpoint
    finally:
        _stop(proc)


def reset_moto(endpoint: str) -> None:
    """Forget every bucket, object and stack that earlier tests created on that server."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


@pytest.fixture
def moto_env(moto_server, monkeypatch):
    """Point boto3 at the session's moto_server, with fake credentials and a clean state."""
    reset_moto(moto_server)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    # No ~/.aws files of whoever runs the tests.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    yield moto_server
