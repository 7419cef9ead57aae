"""Large results go to the result bucket and come back as a presigned URL that really downloads them."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import boto3
import pytest

from imgapi.config import Config
from imgapi.errors import ApiError
from imgapi.results import put_result

BUCKET = "imgapi-test-results"


def ResultSettings(**overrides):
    """The app's Config as the function gets it: RESULT_BUCKET set, other variables at their defaults."""
    env = {"RESULT_BUCKET": BUCKET}
    env.update(overrides)
    return Config.from_env(env)


@pytest.fixture
def s3(moto_env):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def _png_like(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (size // 256)


def test_result_is_stored_under_the_prefix_as_png(s3):
    png = _png_like(64 * 1024)
    answer = put_result(png, ResultSettings())

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 1
    assert keys[0].startswith("results/") and keys[0].endswith(".png")
    stored = s3.get_object(Bucket=BUCKET, Key=keys[0])
    assert stored["ContentType"] == "image/png"
    assert stored["Body"].read() == png
    assert answer["expires_in"] == 900  # the default: short, as role credentials may not outlive more


def test_presigned_url_downloads_the_same_bytes(s3):
    png = _png_like(7 * 1024 * 1024)  # past the 6 MB inline limit, the case this exists for
    answer = put_result(png, ResultSettings(RESULT_URL_EXPIRES="120"))

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer["url"]).query)
    assert query["X-Amz-Expires"] == ["120"]
    assert answer["expires_in"] == 120
    with urllib.request.urlopen(answer["url"], timeout=30) as response:
        assert response.status == 200
        assert response.read() == png


def test_each_result_gets_its_own_key(s3):
    first = put_result(b"one", ResultSettings())
    second = put_result(b"two", ResultSettings())

    assert first["url"] != second["url"]
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 2


def test_url_without_valid_signature_is_refused(s3):
    answer = put_result(b"secret", ResultSettings())
    unsigned = answer["url"].split("?", 1)[0]

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=30)
    assert refused.value.code == 403


def test_prefix_comes_from_the_environment(s3):
    put_result(b"png", ResultSettings(RESULT_PREFIX="big/"))

    (item,) = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert item["Key"].startswith("big/")


def test_unwritable_bucket_is_a_retryable_503(moto_env):
    with pytest.raises(ApiError) as refused:
        put_result(b"png", ResultSettings(RESULT_BUCKET="imgapi-no-such-bucket"))
    assert refused.value.status == 503
    assert refused.value.code == "result_store_unreachable"
    assert refused.value.headers["Retry-After"]


def test_no_result_bucket_is_a_configuration_error():
    with pytest.raises(ValueError, match="RESULT_BUCKET"):
        put_result(b"x", Config.from_env({}))


# -- presigned URLs die with their credentials (issue 14, item 5) -------------------------------------

@pytest.fixture
def expiring_credentials(s3, tmp_path, monkeypatch):
    """Credentials that expire in 20 minutes, from a credential_process (as role, SSO and container
    credentials do): the SDK knows their expiry."""
    import datetime
    import sys

    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=20)
    process = tmp_path / "creds.py"
    process.write_text("import json\nprint(json.dumps(" + repr({
        "Version": 1, "AccessKeyId": "testing", "SecretAccessKey": "testing", "SessionToken": "session",
        "Expiration": expiry.isoformat()}) + "))\n")
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\ncredential_process = {sys.executable} {process}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    return expiry


def test_expires_in_is_cut_to_the_credentials_life(expiring_credentials):
    png = _png_like(4096)
    answer = put_result(png, ResultSettings(RESULT_URL_EXPIRES="3600"))

    assert 17 * 60 <= answer["expires_in"] <= 19 * 60  # 20 minutes less the clock-skew margin
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer["url"]).query)
    assert query["X-Amz-Expires"] == [str(answer["expires_in"])]
    assert query["X-Amz-Security-Token"] == ["session"]
    with urllib.request.urlopen(answer["url"], timeout=30) as response:
        assert response.read() == png


def test_a_setting_the_credentials_outlive_is_kept(expiring_credentials):
    assert put_result(b"png", ResultSettings(RESULT_URL_EXPIRES="300"))["expires_in"] == 300


def test_default_url_life_is_one_that_role_credentials_outlive():
    # 900 s is the shortest session STS issues, and the page fetches a result within seconds.
    assert Config.from_env({}).result_url_expires <= 900
