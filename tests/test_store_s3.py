"""The model store against a real moto_server over HTTP: download, cache reuse, corrupt cache
re-fetched, unreachable endpoint as a 503."""
import json
import socket

import pytest

from imgapi.app import create_app
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
    assert client.get("/health").get_json()["models"]["srgan"]["loaded"] is True


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
