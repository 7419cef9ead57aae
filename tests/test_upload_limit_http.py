"""A body over the upload limit gets the JSON 413, not a connection reset, even in clients that send the
whole body before reading the answer (Python's urllib; issue 14, item 7). Against a real
``python -m imgapi serve`` (waitress) over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from imgapi.app import DRAIN_LIMIT_BYTES
from tests.helpers import png_bytes
from tools.loadtest import Server

LIMIT = 200_000


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    env = {"WEIGHTS_DIR": str(tiny_weights), "MAX_UPLOAD_BYTES": str(LIMIT), "TILE": "64", "MAX_CONCURRENT": "1"}
    with Server(env, threads=4, log_path=tmp_path_factory.mktemp("server") / "server.log") as srv:
        yield srv


def _urllib_post(port, body, content_type):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/upscale", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _multipart(payload: bytes) -> tuple[bytes, str]:
    boundary = "limit-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# 8 MB: far more than the loopback socket buffers hold, so a server that stops reading is noticed.
@pytest.mark.parametrize("size", [LIMIT + 1, 2 * LIMIT, 8_000_000])
@pytest.mark.parametrize("kind", ["multipart", "raw"])
def test_urllib_gets_the_json_413(server, size, kind):
    payload = b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)
    body, ctype = _multipart(payload) if kind == "multipart" else (payload, "image/png")
    status, headers, answer = _urllib_post(server.port, body, ctype)
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    error = json.loads(answer)["error"]
    assert error["code"] == "upload_too_large" and str(LIMIT) in error["message"]
    # The server is fine, and so is the next request.
    body, ctype = _multipart(png_bytes(8, 8))
    assert _urllib_post(server.port, body, ctype)[0] == 200


def test_the_drain_is_bounded():
    assert 8_000_000 <= DRAIN_LIMIT_BYTES <= 64 * 1024 * 1024
