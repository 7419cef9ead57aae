"""handler.handler with real API Gateway events (REST v1 and HTTP API v2 shapes, tests/events/)."""
import base64
import importlib
import json

import pytest

from imgapi.config import DEFAULT_SR_MODEL
from tests.helpers import EVENTS, decode_png



@pytest.fixture
def handler(tiny_weights, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("TORCH_THREADS", "1")
    monkeypatch.delenv("MODEL_BUCKET", raising=False)
    import handler as module
    return importlib.reload(module).handler


def invoke(handler, name, context):
    event = json.loads((EVENTS / name).read_text())
    resp = handler(event, context)
    body = base64.b64decode(resp["body"]) if resp.get("isBase64Encoded") else resp["body"].encode()
    headers = {k.lower(): v for k, v in (resp.get("headers") or {}).items()}
    # REST (v1) answers carry multiValueHeaders.
    headers.update({k.lower(): v[-1] for k, v in (resp.get("multiValueHeaders") or {}).items()})
    return resp["statusCode"], headers, body


@pytest.mark.parametrize("name, size, model", [
    ("rest_v1_upscale_multipart.json", (24, 16), "srresnet"),
    ("http_v2_upscale_multipart.json", (36, 24), DEFAULT_SR_MODEL),  # the event names no model
])
def test_multipart_upscale_events(handler, lambda_context, name, size, model):
    status, headers, body = invoke(handler, name, lambda_context)
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["model"] == model
    assert decode_png(base64.b64decode(doc["image"])).size == size


@pytest.mark.parametrize("name, size", [
    ("rest_v1_upscale_raw_png_accept_png.json", (48, 32)),
    ("http_v2_upscale_raw_png_accept_png.json", (48, 32)),
])
def test_raw_png_events_return_binary_png(handler, lambda_context, name, size):
    status, headers, body = invoke(handler, name, lambda_context)
    assert status == 200
    assert headers["content-type"] == "image/png"
    assert decode_png(body).size == size


@pytest.mark.parametrize("name", ["rest_v1_stylize_multipart.json", "http_v2_stylize_multipart.json"])
def test_stylize_events(handler, lambda_context, name):
    status, _, body = invoke(handler, name, lambda_context)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["style"] == "mosaic" and decode_png(base64.b64decode(doc["image"])).size == (12, 8)


def test_bad_image_event_is_a_json_415(handler, lambda_context):
    status, headers, body = invoke(handler, "http_v2_upscale_not_an_image.json", lambda_context)
    assert status == 415 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "unsupported_image"
