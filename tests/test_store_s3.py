"""The model store against a real moto_server over HTTP: download, cache reuse, corrupt cache
re-fetched, unreachable endpoint as a 503."""
import json
import socket

import pytest

from imgapi.app import create_app
from imgapi.config import DEFAULT_SR_MODEL
from imgapi.errors import ApiError
from imgapi.store import ModelStore
from tests.helpers import MODEL_BUCKET as BUCKET
from tests.helpers import png_bytes, s3_config, seed_model_bucket

@pytest.fixture
def bucket(moto_env, tiny_weights):
    return seed_model_bucket(tiny_weights)


def test_downloads_checks_and_reuses_the_cache(bucket, tmp_path):
    cache = tmp_path / "cache"
    model = ModelStore(s3_config(cache)).get("srgan")
    cached = cache / "srgan.pt"
    assert cached.is_file() and model.sha256 == json.loads(
        bucket.get_object(Bucket=BUCKET, Key="weights/manifest.json")["Body"].read())["models"]["srgan"]["sha256"]
    assert not list(cache.glob(".part-*"))
    # A new cold start reuses the cached file: it loads even once the object is gone from S3.
    bucket.delete_object(Bucket=BUCKET, Key="weights/srgan.pt")
    mtime = cached.stat().st_mtime_ns
    ModelStore(s3_config(cache)).get("srgan")
    assert cached.stat().st_mtime_ns == mtime


def test_corrupt_cache_is_fetched_again(bucket, tmp_path):
    cache = tmp_path / "cache"
    ModelStore(s3_config(cache)).get("srresnet")
    good = (cache / "srresnet.pt").read_bytes()
    (cache / "srresnet.pt").write_bytes(good[: len(good) // 2])  # truncated
    ModelStore(s3_config(cache)).get("srresnet")
    assert (cache / "srresnet.pt").read_bytes() == good


def test_object_with_wrong_checksum_is_a_503_and_not_kept(bucket, tmp_path):
    bucket.put_object(Bucket=BUCKET, Key="weights/srgan.pt", Body=b"not the weights")
    cache = tmp_path / "cache"
    with pytest.raises(ApiError) as err:
        ModelStore(s3_config(cache)).get("srgan")
    assert err.value.status == 503 and err.value.code == "checksum_mismatch"
    assert not (cache / "srgan.pt").exists()


def test_app_serves_from_s3(bucket, tmp_path):
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    resp = client.post("/upscale", data={"image": (__import__("io").BytesIO(png_bytes(8, 8)), "a.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 200
    assert resp.get_json()["model"] == DEFAULT_SR_MODEL  # none named: the default
    assert client.get("/health").get_json()["models"][DEFAULT_SR_MODEL]["loaded"] is True


def test_unreachable_s3_is_a_retryable_503(moto_env, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    resp = client.post("/upscale", data={"image": (__import__("io").BytesIO(png_bytes(8, 8)), "a.png")},
                       content_type="multipart/form-data")
    assert resp.status_code == 503
    assert resp.get_json()["error"]["code"] == "model_store_unreachable"
    assert int(resp.headers["Retry-After"]) > 0


# -- weights not uploaded (issue 14, item 3) -------------------------------------------------------

def _post_upscale(client, **fields):
    return client.post("/upscale", data={"image": (__import__("io").BytesIO(png_bytes(8, 8)), "a.png"), **fields},
                       content_type="multipart/form-data")


def _assert_weights_missing(resp, key):
    assert resp.status_code == 503
    error = resp.get_json()["error"]
    assert error["code"] == "weights_missing"
    assert f"s3://{BUCKET}/{key}" in error["message"]
    assert "make upload-weights" in error["message"]


def test_empty_models_bucket_says_which_key_is_missing_and_how_to_upload(moto_env, tmp_path):
    import boto3
    boto3.client("s3").create_bucket(Bucket=BUCKET)  # what a bare `sls deploy` leaves: the bucket, empty
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    _assert_weights_missing(client.get("/health"), "weights/manifest.json")
    _assert_weights_missing(_post_upscale(client), "weights/manifest.json")


def test_missing_weights_file_is_named(bucket, tmp_path):
    bucket.delete_object(Bucket=BUCKET, Key="weights/srgan.pt")
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    _assert_weights_missing(_post_upscale(client, model="srgan"), "weights/srgan.pt")
    # The other models still work.
    resp = client.post("/upscale", data={"image": (__import__("io").BytesIO(png_bytes(8, 8)), "a.png"),
                                         "model": "srresnet"}, content_type="multipart/form-data")
    assert resp.status_code == 200


@pytest.fixture
def access_denied_s3(moto_env, monkeypatch):
    """An HTTP endpoint that answers every request as S3 does a missing key to a role without
    s3:ListBucket: 403 AccessDenied."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Denied(BaseHTTPRequestHandler):
        def _deny(self):
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                    b"<Message>Access Denied</Message></Error>")
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _deny

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Denied)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()
    server.server_close()


def test_access_denied_for_a_missing_key_is_weights_missing_too(access_denied_s3, tmp_path):
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    _assert_weights_missing(client.get("/health"), "weights/manifest.json")


def test_access_denied_weights_file_is_weights_missing(access_denied_s3, tmp_path, tiny_weights):
    store = ModelStore(s3_config(tmp_path / "cache"))
    store._manifest = json.loads((tiny_weights / "manifest.json").read_text())["models"]
    with pytest.raises(ApiError) as err:
        store.get("srgan")
    assert err.value.status == 503 and err.value.code == "weights_missing"
    assert "weights/srgan.pt" in err.value.message
