"""The generated corpus of hostile uploads (tests/corpus.py): each gets its documented answer, a 4xx
is always a JSON error with a message, and the next normal request still works, through the Flask
test client and through a real waitress server over HTTP."""
import base64
import io
import json
import socket

import pytest
from PIL import Image, ImageFile

from imgapi.app import create_app
from imgapi.config import Config
from tests.corpus import build, good_request
from tools.loadtest import Server, request

LIMITS = dict(max_upload_bytes=200_000, max_upscale_pixels=64 * 64)
CORPUS = build(**LIMITS, style="mosaic")


def check_answer(case, status, content_type, body):
    """The answer the corpus documents: the status, and a JSON error (code, message) or a PNG."""
    assert status == case.status, f"{case.name}: {status} {body[:300]!r}"
    assert content_type.startswith("application/json"), f"{case.name}: {content_type}"
    doc = json.loads(body)
    if status == 200:
        img = Image.open(io.BytesIO(base64.b64decode(doc["image"])))
        assert img.format == "PNG" and img.size == (doc["width"], doc["height"])
        return
    err = doc["error"]
    assert err["message"] and err["code"], case.name
    if case.code:
        assert err["code"] == case.code, f"{case.name}: {err}"


@pytest.fixture(scope="module")
def shared_client(tiny_weights):
    """One app for the whole corpus, so a case that poisons state shows in the cases after it."""
    config = Config(weights_dir=tiny_weights, torch_threads=1, tile=64, **LIMITS)
    return create_app(config).test_client()


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 40
    statuses = {c.status for c in CORPUS}
    assert {200, 400, 404, 405, 413, 415} <= statuses


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_case_gets_its_answer_and_the_next_request_works(shared_client, case):
    resp = shared_client.open(case.target, method=case.method, data=case.body, headers=case.headers())
    check_answer(case, resp.status_code, resp.content_type, resp.data)
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    path, body, ctype = good_request("/stylize" if case.path == "/stylize" else "/upscale")
    assert shared_client.post(path, data=body, content_type=ctype).status_code == 200


@pytest.mark.parametrize("case", [c for c in CORPUS if c.name.startswith("bomb_")], ids=lambda c: c.name)
def test_bombs_are_refused_from_the_header(shared_client, case, monkeypatch):
    """No pixel of a decompression bomb is decoded: loading pixels would fail this test."""
    def no_load(self, *a, **kw):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    monkeypatch.setattr(Image.Image, "load", no_load)
    resp = shared_client.open(case.target, method=case.method, data=case.body, headers=case.headers())
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "too_many_pixels"
    assert str(LIMITS["max_upscale_pixels"]) in resp.get_json()["error"]["message"]


@pytest.fixture(scope="module")
def server(tiny_weights, tmp_path_factory):
    """``python -m imgapi serve`` (waitress) with the corpus's limits, for this module."""
    env = {"WEIGHTS_DIR": str(tiny_weights), "MAX_UPLOAD_BYTES": str(LIMITS["max_upload_bytes"]),
           "MAX_UPSCALE_PIXELS": str(LIMITS["max_upscale_pixels"]), "TILE": "64", "MAX_CONCURRENT": "1"}
    with Server(env, threads=4, log_path=tmp_path_factory.mktemp("server") / "server.log") as srv:
        yield srv


def test_corpus_against_a_real_server(server):
    """Every case over HTTP to the real server, a good request after each; the server is alive and
    healthy at the end."""
    failures = []
    for case in CORPUS:
        status, headers, body = request(server.port, case.method, case.target, case.body, case.headers(),
                                        timeout=30)
        try:
            check_answer(case, status, headers.get("content-type", ""), body)
        except (AssertionError, ValueError, KeyError) as exc:
            failures.append(f"{case.name}: {exc}")
        path, good, ctype = good_request()
        if request(server.port, "POST", path, good, {"Content-Type": ctype}, timeout=30)[0] != 200:
            failures.append(f"{case.name}: the next good request failed")
    assert server.alive()
    status, _, body = request(server.port, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\nContent-Type: image/png\r\n\r\n", 413),
    (b"POST /upscale HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: image/png\r\n\r\n"
     b"zz\r\n", 400),
], ids=["garbage_request_line", "negative_length", "huge_length", "bad_chunk"])
def test_malformed_http_gets_a_json_error(server, raw, status):
    """Requests waitress refuses itself, before the app: still a JSON error, and the server lives."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == str(status).encode(), answer[:300]
    assert b"application/json" in head.lower() and json.loads(body)["error"]["message"]
    path, good, ctype = good_request()
    assert request(server.port, "POST", path, good, {"Content-Type": ctype})[0] == 200
