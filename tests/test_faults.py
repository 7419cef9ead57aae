"""Faults of the model store: S3 gone and back (a moto_server stopped mid-test and restarted on the
same port), a corrupt cache, a download cut half-way, a full disk, a model that does not load, an SR
model the manifest leaves out. Each ends in a retryable 503 for the models concerned only, no bad file
where a later start would load it, and recovery without a restart."""
import errno
import importlib
import io
import json
import shutil
import subprocess
import uuid

import pytest

from imgapi.__main__ import main
from imgapi.app import create_app
from imgapi.config import DEFAULT_SR_MODEL, Config
from imgapi.store import ModelStore, sha256_file
from tests.corpus import multipart
from tests.helpers import MODEL_BUCKET as BUCKET
from tests.helpers import EVENTS, png_bytes, s3_config
from tests.helpers import seed_model_bucket as seed
from tests.moto_fixture import REGION, _free_port, _moto_server_executable, _stop, _wait_until_up



class Moto:
    """A moto_server of this test only, on a fixed port, that can be stopped and started again."""

    def __init__(self):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([_moto_server_executable(), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until_up(self.endpoint, self.proc, 30)

    def stop(self):
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@pytest.fixture
def moto(monkeypatch):
    """A started per-test moto_server with boto3 pointed at it (fake credentials, no ~/.aws)."""
    server = Moto()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}.items():
        monkeypatch.setenv(name, value)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def upscale(client, model="srgan"):
    """POST /upscale of a small PNG with ``model`` (None: the field left out, the default model)."""
    body, ctype = multipart([("image", ("a.png", png_bytes(8, 8), "image/png"))]
                            + ([("model", model)] if model is not None else []))
    return client.post("/upscale", data=body, content_type=ctype)


def stylize(client):
    body, ctype = multipart([("image", ("a.png", png_bytes(8, 8), "image/png")), ("style", "mosaic")])
    return client.post("/stylize", data=body, content_type=ctype)


def assert_503(resp, code):
    assert resp.status_code == 503, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] == code and "retry" in err["message"].lower()
    assert int(resp.headers["Retry-After"]) > 0


def leftovers(cache):
    return sorted(p.name for p in cache.rglob(".part-*")) if cache.exists() else []


# -- S3 gone and back --------------------------------------------------------------------------
def test_s3_down_at_cold_start_is_a_503_then_recovers_by_itself(moto, tiny_weights, tmp_path):
    seed(tiny_weights)
    moto.stop()
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    assert_503(upscale(client), "model_store_unreachable")
    assert_503(stylize(client), "model_store_unreachable")
    assert client.get("/health").status_code == 503  # the manifest itself is out of reach
    moto.start()  # a fresh, empty server on the same port: the weights are uploaded again
    seed(tiny_weights)
    assert upscale(client).status_code == 200  # same app, no restart
    assert stylize(client).status_code == 200
    assert client.get("/health").get_json()["models"]["srgan"]["loaded"] is True


def test_s3_stopped_mid_run_only_hits_models_not_loaded_yet(moto, tiny_weights, tmp_path):
    seed(tiny_weights)
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    assert upscale(client, "srgan").status_code == 200
    moto.stop()
    assert_503(upscale(client, "srresnet"), "model_store_unreachable")
    assert upscale(client, "srgan").status_code == 200  # loaded before: unaffected
    assert client.get("/health").status_code == 200
    assert client.get("/styles").status_code == 200
    moto.start()
    seed(tiny_weights)
    assert upscale(client, "srresnet").status_code == 200


# -- the cache ---------------------------------------------------------------------------------
def test_cached_file_with_a_flipped_byte_is_fetched_again(moto, tiny_weights, tmp_path):
    """Same size, one byte changed (the truncated case is in test_store_s3.py)."""
    seed(tiny_weights)
    cache = tmp_path / "cache"
    ModelStore(s3_config(cache)).get("srgan")
    data = bytearray((cache / "srgan.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (cache / "srgan.pt").write_bytes(bytes(data))
    model = ModelStore(s3_config(cache)).get("srgan")
    assert sha256_file(cache / "srgan.pt") == model.sha256


def store_over_s3(weights, cache):
    """A store reading ``weights`` seeded in moto, its S3 client and that client's real download method
    (for a test to replace with a faulty one)."""
    seed(weights)
    store = ModelStore(s3_config(cache))
    client = store._client()
    return store, client, client.download_fileobj


def test_download_cut_half_way_leaves_no_partial_file(moto, tiny_weights, tmp_path):
    cache = tmp_path / "cache"
    store, client, real = store_over_s3(tiny_weights, cache)

    def cut(bucket, key, fileobj, *a, **kw):
        buf = io.BytesIO()
        real(bucket, key, buf, *a, **kw)
        fileobj.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")

    client.download_fileobj = cut
    app = create_app(s3_config(cache), store)
    assert_503(upscale(app.test_client()), "model_store_unreachable")
    assert not (cache / "srgan.pt").exists() and leftovers(cache) == []
    # A later start (a new store, a working network) downloads the whole file and loads it.
    model = ModelStore(s3_config(cache)).get("srgan")
    assert sha256_file(cache / "srgan.pt") == model.sha256


def test_partial_file_of_a_killed_process_is_never_loaded(moto, tiny_weights, tmp_path):
    """A process killed mid-download cannot clean up: its temp file stays, under a name no start reads."""
    seed(tiny_weights)
    cache = tmp_path / "cache"
    cache.mkdir()
    half = (tiny_weights / "srgan.pt").read_bytes()
    (cache / ".part-killed").write_bytes(half[: len(half) // 2])
    model = ModelStore(s3_config(cache)).get("srgan")
    assert sha256_file(cache / "srgan.pt") == model.sha256


def test_disk_full_while_downloading_is_a_503_and_no_file(moto, tiny_weights, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    store, client, real = store_over_s3(tiny_weights, cache)

    def full(bucket, key, fileobj, *a, **kw):
        class Full(io.RawIOBase):
            written = 0

            def writable(self):
                return True

            def write(self, b):
                if self.written + len(b) > 1000:
                    raise OSError(errno.ENOSPC, "No space left on device")
                fileobj.write(b)
                self.written += len(b)
                return len(b)
        real(bucket, key, Full(), *a, **kw)

    client.download_fileobj = full
    app_client = create_app(s3_config(cache), store).test_client()
    assert_503(upscale(app_client), "model_cache_unwritable")
    assert not (cache / "srgan.pt").exists() and leftovers(cache) == []
    client.download_fileobj = real  # space is freed: the next request loads the model
    assert upscale(app_client).status_code == 200


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (needs root and mount rights; skipped otherwise)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_tmpfs_is_a_503_and_not_a_corrupt_cache(moto, tiny_weights, tiny_tmpfs):
    """srgan.pt (~100 KB) does not fit in 64 KiB; the small style model does."""
    seed(tiny_weights)
    cache = tiny_tmpfs / "models"
    client = create_app(s3_config(cache)).test_client()
    assert_503(upscale(client), "model_cache_unwritable")
    assert not (cache / "srgan.pt").exists() and leftovers(cache) == []
    assert stylize(client).status_code == 200  # other models still load
    subprocess.run(["mount", "-o", "remount,size=1m", str(tiny_tmpfs)], check=True)
    assert upscale(client).status_code == 200  # space came back: no restart needed
    assert sha256_file(cache / "srgan.pt") == json.loads(
        (tiny_weights / "manifest.json").read_text())["models"]["srgan"]["sha256"]


def test_unwritable_cache_folder_is_a_503(moto, tiny_weights, tmp_path):
    seed(tiny_weights)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    client = create_app(s3_config(blocker / "models")).test_client()
    assert_503(upscale(client), "model_cache_unwritable")
    assert stylize(client).status_code == 503  # same cache: same answer, not a 500


# -- one model broken, the others serve ----------------------------------------------------------
def _broken_copy(tiny_weights, tmp_path, name, data):
    """A copy of the weights where model ``name``'s file is ``data``, with the manifest's sha256
    updated so the file passes the checksum and fails only when loaded."""
    folder = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    shutil.copytree(tiny_weights, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["models"][name]
    (folder / entry["file"]).write_bytes(data)
    entry["sha256"] = sha256_file(folder / entry["file"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("data", [b"PK\x03\x04 not a torchscript zip", b""], ids=["garbage", "empty"])
def test_model_that_fails_to_load_does_not_take_down_the_others(tiny_weights, tmp_path, data):
    folder = _broken_copy(tiny_weights, tmp_path, "srgan", data)
    client = create_app(Config(weights_dir=folder, torch_threads=1)).test_client()
    assert_503(upscale(client, "srgan"), "model_load_failed")
    assert upscale(client, "srresnet").status_code == 200
    assert stylize(client).status_code == 200
    assert client.get("/health").get_json()["models"]["srgan"]["loaded"] is False
    assert client.get("/styles").status_code == 200
    assert_503(upscale(client, "srgan"), "model_load_failed")  # still refused, still not a 500


def test_model_missing_from_s3_only_hits_that_model(moto, tiny_weights, tmp_path):
    s3 = seed(tiny_weights)
    s3.delete_object(Bucket=BUCKET, Key="weights/srgan.pt")
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    assert_503(upscale(client, "srgan"), "weights_missing")  # names the key and `make upload-weights`
    assert upscale(client, "srresnet").status_code == 200
    assert stylize(client).status_code == 200


# -- an SR model the manifest does not list: the deployment's fault, not the client's -------------
def _without(tiny_weights, tmp_path, *names):
    """A copy of the weights whose manifest has no entry for any of ``names``."""
    folder = tmp_path / f"w-{uuid.uuid4().hex[:6]}"
    shutil.copytree(tiny_weights, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in names:
        del manifest["models"][name]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("missing, other", [("srgan", "srresnet"), ("srresnet", "srgan"), ("real", "srgan")])
def test_sr_model_missing_from_the_manifest_is_a_503_for_that_model(tiny_weights, tmp_path, missing, other):
    client = create_app(Config(weights_dir=_without(tiny_weights, tmp_path, missing),
                               torch_threads=1)).test_client()
    resp = upscale(client, missing)
    assert_503(resp, "model_missing")
    assert missing in resp.get_json()["error"]["message"]
    if missing == DEFAULT_SR_MODEL:
        assert_503(upscale(client, None), "model_missing")  # a request that names no model gets the default
    else:
        assert upscale(client, None).status_code == 200  # the default model still serves
    assert upscale(client, other).status_code == 200
    assert stylize(client).status_code == 200
    assert upscale(client, "foo").get_json()["error"]["code"] == "invalid_model"  # still the client's fault
    health = client.get("/health")
    assert health.status_code == 200 and missing not in health.get_json()["models"]


def test_s3_manifest_of_styles_only_is_a_503_for_upscale(moto, tiny_weights, tmp_path):
    seed(_without(tiny_weights, tmp_path, "srgan", "srresnet", "real"))
    client = create_app(s3_config(tmp_path / "cache")).test_client()
    assert_503(upscale(client, "srgan"), "model_missing")
    assert_503(upscale(client, "srresnet"), "model_missing")
    assert_503(upscale(client, "real"), "model_missing")
    assert_503(upscale(client, None), "model_missing")  # the default model
    assert stylize(client).status_code == 200


def test_sr_model_missing_from_the_manifest_on_lambda_and_the_cli(tiny_weights, tmp_path, monkeypatch,
                                                                    lambda_context):
    import handler as module
    # the default model left out: http_v2_upscale_multipart.json names no model, so it asks for the default
    monkeypatch.setenv("WEIGHTS_DIR", str(_without(tiny_weights, tmp_path, DEFAULT_SR_MODEL)))
    monkeypatch.setenv("TORCH_THREADS", "1")
    monkeypatch.delenv("MODEL_BUCKET", raising=False)
    handler = importlib.reload(module).handler
    for name, status, code in (("http_v2_upscale_multipart.json", 503, "model_missing"),  # the default
                               ("rest_v1_upscale_multipart.json", 200, None)):  # srresnet
        resp = handler(json.loads((EVENTS / name).read_text()), lambda_context)
        assert resp["statusCode"] == status, resp["body"][:300]
        assert code is None or json.loads(resp["body"])["error"]["code"] == code
    (tmp_path / "a.png").write_bytes(png_bytes(8, 8))
    with pytest.raises(SystemExit, match=f"{DEFAULT_SR_MODEL} is not in the weights manifest"):  # no KeyError
        main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--model", DEFAULT_SR_MODEL])
