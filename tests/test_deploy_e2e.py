"""The deployed function end to end, offline: weights put in a moto_server bucket by
tools/upload_weights.py, the environment that serverless.yml gives the function, handler.handler driven
with HTTP API (v2) events as the stack's `$default` route delivers them. Cold start downloads the weights,
the warm one does not; a result over the response limit comes back as a presigned URL that downloads.
"""

from __future__ import annotations

import base64
import importlib
import json
import urllib.request

import pytest

from imgapi.config import DEFAULT_SR_MODEL
from tests.helpers import EVENTS, decode_png, deployed_buckets

MODELS = "imgapi-e2e-models"
RESULTS = "imgapi-e2e-results"


@pytest.fixture
def deployed(moto_env, tiny_weights, tmp_path, monkeypatch):
    """handler.handler configured like the stack (serverless.yml environment), buckets in moto."""
    s3 = deployed_buckets(tiny_weights, MODELS, RESULTS)
    cache = tmp_path / "models"
    env = {
        "MODEL_BUCKET": MODELS,
        "MODEL_PREFIX": "weights/",
        "MODEL_CACHE_DIR": str(cache),
        "RESULT_BUCKET": RESULTS,
        "RESULT_PREFIX": "results/",
        "RESULT_URL_EXPIRES": "3600",
        "CORS_ORIGINS": "*",
        "AWS_LAMBDA_FUNCTION_NAME": "imgapi-ci-api",
        # Not from serverless.yml: keeps the tiny test inside one core, nothing falls back to local files.
        "TORCH_THREADS": "1",
        "WEIGHTS_DIR": str(tmp_path / "no-local-weights"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MAX_RESPONSE_BYTES", raising=False)
    import handler as module

    return importlib.reload(module).handler, s3, cache


def _event(name: str) -> dict:
    event = json.loads((EVENTS / name).read_text())
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"  # serverless.yml: one catch-all route
    return event


def _invoke(handler, event, context):
    response = handler(event, context)
    body = base64.b64decode(response["body"]) if response.get("isBase64Encoded") else response["body"].encode()
    return response["statusCode"], body


def test_cold_start_downloads_the_weights_and_the_warm_one_does_not(deployed, lambda_context, tiny_weights):
    handler, s3, cache = deployed
    # The event names no model: the default one's file is what the cold start downloads.
    file = json.loads((tiny_weights / "manifest.json").read_text())["models"][DEFAULT_SR_MODEL]["file"]

    status, body = _invoke(handler, _event("http_v2_upscale_multipart.json"), lambda_context)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model"] == DEFAULT_SR_MODEL
    assert decode_png(base64.b64decode(answer["image"])).size == (36, 24)
    assert len(list(cache.rglob(file))) == 1  # under its content-addressed path, sha256/<hex>/

    # With the weights gone from the bucket, only a container that already holds them can still answer.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=MODELS)["Contents"] if o["Key"].endswith("/" + file)]
    assert len(keys) == 1
    s3.delete_objects(Bucket=MODELS, Delete={"Objects": [{"Key": key} for key in keys]})
    status, body = _invoke(handler, _event("http_v2_upscale_multipart.json"), lambda_context)
    assert status == 200, body


def test_result_over_the_response_limit_comes_back_as_a_presigned_url(deployed, lambda_context, monkeypatch):
    monkeypatch.setenv("MAX_RESPONSE_BYTES", "1000")  # the tiny test image stands in for a 20 MP upscale
    import handler as module

    handler = importlib.reload(module).handler

    status, body = _invoke(handler, _event("http_v2_upscale_multipart.json"), lambda_context)
    assert status == 200, body
    answer = json.loads(body)
    assert "image" not in answer and answer["expires_in"] == 3600
    with urllib.request.urlopen(answer["url"], timeout=30) as response:
        assert decode_png(response.read()).size == (36, 24)
    (stored,) = deployed[1].list_objects_v2(Bucket=RESULTS)["Contents"]
    assert stored["Key"].startswith("results/")
