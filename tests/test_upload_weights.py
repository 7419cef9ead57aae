"""`make upload-weights` against a moto_server: uploads, skips what is unchanged, re-uploads what changed."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from tools import upload_weights as tool

BUCKET = "imgapi-test-models"
PREFIX = "weights/"


def _write_weights(folder, srgan=b"srgan weights v1", style=b"candy weights v1"):
    """A weights/ folder shaped like the real one: two models, a thumbnail, the manifest."""
    (folder / "style").mkdir(parents=True, exist_ok=True)
    (folder / "thumbs").mkdir(exist_ok=True)
    (folder / "srgan.pt").write_bytes(srgan)
    (folder / "style" / "candy.pt").write_bytes(style)
    (folder / "thumbs" / "candy.jpg").write_bytes(b"\xff\xd8\xff jpeg")
    manifest = {
        "models": {
            "srgan": {"file": "srgan.pt", "sha256": hashlib.sha256(srgan).hexdigest(), "kind": "sr", "scale": 4},
            "style/candy": {
                "file": "style/candy.pt",
                "sha256": hashlib.sha256(style).hexdigest(),
                "kind": "style",
                "thumbnail": "thumbs/candy.jpg",
            },
        }
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _content_key(weights, relative):
    return tool.content_key(relative, hashlib.sha256((weights / relative).read_bytes()).hexdigest())


@pytest.fixture
def s3(moto_env):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def _stored(s3):
    listing = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=BUCKET, Key=item["Key"]) for item in listing}


def test_first_run_uploads_every_file_with_its_sha256_and_the_manifest_last(s3, tmp_path):
    weights = _write_weights(tmp_path / "weights")
    lines = []

    report = tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lines.append)

    assert sorted(report.uploaded) == ["manifest.json", "srgan.pt", "style/candy.pt", "thumbs/candy.jpg"]
    assert report.unchanged == []
    assert lines[-1].startswith("uploaded   s3://imgapi-test-models/weights/manifest.json")
    stored = _stored(s3)
    files = [name for name in report.uploaded if name != "manifest.json"]
    assert set(stored) == {PREFIX + _content_key(weights, name) for name in files} | {PREFIX + "manifest.json"}
    for name in files:
        local = (weights / name).read_bytes()
        obj = stored[PREFIX + _content_key(weights, name)]
        assert obj["Body"].read() == local
        assert obj["Metadata"]["sha256"] == hashlib.sha256(local).hexdigest()
    # The published manifest names the content-addressed keys; everything else is the local manifest's.
    published = json.loads(stored[PREFIX + "manifest.json"]["Body"].read())
    local = json.loads((weights / "manifest.json").read_text())
    assert published["models"]["srgan"]["file"] == _content_key(weights, "srgan.pt")
    assert published["models"]["style/candy"]["thumbnail"] == _content_key(weights, "thumbs/candy.jpg")
    assert published["models"]["srgan"]["sha256"] == local["models"]["srgan"]["sha256"]
    assert stored[PREFIX + "manifest.json"]["ContentType"] == "application/json"
    assert stored[PREFIX + _content_key(weights, "thumbs/candy.jpg")]["ContentType"] == "image/jpeg"


def test_second_run_uploads_nothing(s3, tmp_path):
    weights = _write_weights(tmp_path / "weights")
    tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lambda line: None)
    before = {key: obj["ETag"] for key, obj in _stored(s3).items()}

    report = tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lambda line: None)

    assert report.uploaded == []
    assert len(report.unchanged) == 4
    assert {key: obj["ETag"] for key, obj in _stored(s3).items()} == before


def test_changed_model_is_uploaded_again_with_the_new_manifest(s3, tmp_path):
    weights = _write_weights(tmp_path / "weights")
    tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lambda line: None)
    _write_weights(weights, srgan=b"srgan weights v2, retrained")

    report = tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lambda line: None)

    assert report.uploaded == ["srgan.pt", "manifest.json"]
    assert sorted(report.unchanged) == ["style/candy.pt", "thumbs/candy.jpg"]
    stored = s3.get_object(Bucket=BUCKET, Key=PREFIX + _content_key(weights, "srgan.pt"))
    assert stored["Body"].read() == b"srgan weights v2, retrained"
    # Nothing is overwritten: the previous manifest's file is still there for warm containers.
    old_key = PREFIX + tool.content_key("srgan.pt", hashlib.sha256(b"srgan weights v1").hexdigest())
    assert s3.get_object(Bucket=BUCKET, Key=old_key)["Body"].read() == b"srgan weights v1"


def test_file_not_matching_the_manifest_is_refused_before_any_upload(s3, tmp_path):
    weights = _write_weights(tmp_path / "weights")
    (weights / "srgan.pt").write_bytes(b"a different file")

    with pytest.raises(tool.UploadError, match="srgan.pt has sha256"):
        tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lambda line: None)
    assert _stored(s3) == {}


def test_missing_manifest_is_refused(s3, tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(tool.UploadError, match="manifest.json not found"):
        tool.upload_weights(s3, BUCKET, PREFIX, tmp_path / "weights", log=lambda line: None)


STACK_TEMPLATE = {
    "Resources": {
        "ModelsBucket": {"Type": "AWS::S3::Bucket"},
        "ResultsBucket": {"Type": "AWS::S3::Bucket"},
        "BatchBucket": {"Type": "AWS::S3::Bucket"},
    },
    "Outputs": {
        "ModelBucketName": {"Value": {"Ref": "ModelsBucket"}},
        "ModelPrefix": {"Value": "models/"},
        "ResultBucketName": {"Value": {"Ref": "ResultsBucket"}},
        "BatchBucketName": {"Value": {"Ref": "BatchBucket"}},
    },
}


def test_cli_finds_the_bucket_and_prefix_from_the_stack_then_empties_it(moto_env, tmp_path, capsys):
    weights = _write_weights(tmp_path / "weights")
    boto3.client("cloudformation").create_stack(StackName="imgapi-test", TemplateBody=json.dumps(STACK_TEMPLATE))
    outputs = tool.stack_outputs(boto3.client("cloudformation"), "imgapi-test")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=outputs["ResultBucketName"], Key="results/old.png", Body=b"png")
    s3.put_object(Bucket=outputs["BatchBucketName"], Key="out/upscale/srgan/x4/a.png", Body=b"png")

    assert tool.main(["--stack", "imgapi-test", "--weights-dir", str(weights)]) == 0
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=outputs["ModelBucketName"])["Contents"]]
    assert sorted(keys) == sorted(["models/manifest.json"] + [
        "models/" + _content_key(weights, name) for name in ("srgan.pt", "style/candy.pt", "thumbs/candy.jpg")])
    assert "4 uploaded, 0 unchanged" in capsys.readouterr().out

    assert tool.main(["--stack", "imgapi-test", "--empty-buckets"]) == 0
    for bucket in (outputs["ModelBucketName"], outputs["ResultBucketName"], outputs["BatchBucketName"]):
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_cli_reports_a_missing_bucket_without_a_traceback(moto_env, tmp_path, capsys):
    weights = _write_weights(tmp_path / "weights")

    assert tool.main(["--bucket", "no-such-bucket-here", "--weights-dir", str(weights)]) == 1
    assert "upload_weights:" in capsys.readouterr().err


def test_cli_reports_a_missing_stack(moto_env, capsys):
    assert tool.main(["--stack", "imgapi-nowhere"]) == 1
    assert "deploy first" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_the_function_loads_what_was_uploaded(s3, tmp_path):
    """The key layout the tool writes (PREFIX + path under weights/) is the one the model store reads."""
    torch = pytest.importorskip("torch")
    from imgapi.config import Config
    from imgapi.store import ModelStore

    weights = _write_weights(tmp_path / "weights")
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), str(weights / "srgan.pt"))
    manifest = json.loads((weights / "manifest.json").read_text())
    manifest["models"]["srgan"]["sha256"] = tool.sha256_of(weights / "srgan.pt")
    (weights / "manifest.json").write_text(json.dumps(manifest))
    tool.upload_weights(s3, BUCKET, PREFIX, weights, log=lambda line: None)

    config = Config.from_env({
        "MODEL_BUCKET": BUCKET, "MODEL_PREFIX": PREFIX, "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "WEIGHTS_DIR": str(tmp_path / "nowhere"),
    })
    model = ModelStore(config).get("srgan")

    assert model.sha256 == manifest["models"]["srgan"]["sha256"]
    assert tuple(model.module(torch.zeros(1, 3, 4, 4)).shape) == (1, 3, 4, 4)


# -- a weights update while containers are warm (issue 14, item 4) -----------------------------------

def _retrained(tiny_weights, folder):
    """A copy of the tiny weights in which both SR models and the style were retrained (new bytes)."""
    import shutil

    import torch

    from tools.fixtures import TinyStyle, tiny_sr
    shutil.copytree(tiny_weights, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    torch.manual_seed(9)
    for name, net in (("srgan", tiny_sr(7)), ("srresnet", tiny_sr(8)), ("style/mosaic", TinyStyle())):
        with torch.inference_mode():
            traced = torch.jit.trace(net.eval(), torch.rand(1, 3, 16, 16), check_trace=False)
        path = folder / manifest["models"][name]["file"]
        torch.jit.save(traced, str(path))
        manifest["models"][name]["sha256"] = tool.sha256_of(path)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _ask_every_model(client, models=("srgan", "srresnet")):
    import io

    from tests.helpers import png_bytes
    answers = {}
    for model in models:
        resp = client.post("/upscale", data={"image": (io.BytesIO(png_bytes(8, 8)), "a.png"), "model": model},
                           content_type="multipart/form-data")
        answers[model] = (resp.status_code, (resp.get_json() or {}).get("sha256") or resp.get_json())
    if models != ("srgan",):
        resp = client.post("/stylize", data={"image": (io.BytesIO(png_bytes(8, 8)), "a.png"), "style": "mosaic"},
                           content_type="multipart/form-data")
        answers["style/mosaic"] = (resp.status_code, (resp.get_json() or {}).get("sha256") or resp.get_json())
        resp = client.get("/styles/mosaic/thumbnail")
        answers["thumbnail"] = (resp.status_code, None)
    return answers


def _shas(folder):
    return {name: entry["sha256"][:12] for name, entry in
            json.loads((folder / "manifest.json").read_text())["models"].items()}


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("ttl", [3600, 0])
def test_weights_update_while_warm_never_gives_a_503(s3, tmp_path, tiny_weights, ttl):
    """Upload new weights while a server is warm (one model loaded): every model answers 200, with the old
    weights until the container re-reads the manifest (ttl 3600) or with the new ones (ttl 0)."""
    from imgapi.app import create_app
    from imgapi.config import Config

    old, new = _shas(tiny_weights), _shas(_retrained(tiny_weights, tmp_path / "v2"))
    tool.upload_weights(s3, BUCKET, PREFIX, tiny_weights, log=lambda line: None)
    config = Config(model_bucket=BUCKET, model_prefix=PREFIX, model_cache_dir=tmp_path / "cache",
                    weights_dir=tmp_path / "none", torch_threads=1, manifest_ttl_s=ttl)
    client = create_app(config).test_client()
    assert _ask_every_model(client, ("srgan",)) == {"srgan": (200, old["srgan"])}  # warm, only srgan loaded

    tool.upload_weights(s3, BUCKET, PREFIX, tmp_path / "v2", log=lambda line: None)

    answers = _ask_every_model(client)
    assert {k: status for k, (status, _) in answers.items()} == dict.fromkeys(answers, 200), answers
    expected = old if ttl else new
    assert {k: sha for k, (_, sha) in answers.items() if k != "thumbnail"} == {
        k: expected[k] for k in ("srgan", "srresnet", "style/mosaic")}
    health = client.get("/health").get_json()["models"]
    assert all(health[k]["loaded"] for k in ("srgan", "srresnet", "style/mosaic"))
    if not ttl:  # the replaced srgan's old download is gone from /tmp; the new one is there
        cached = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*.pt"))
        served = {new[k] for k in ("srgan", "srresnet", "style/mosaic")}
        assert {p.split("/")[1][:12] for p in cached} == served and len(cached) == 3


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_requests_during_an_update_all_succeed(s3, tmp_path, tiny_weights):
    """A client keeps asking every model while the new weights are uploaded: no answer is a 503."""
    import threading

    from imgapi.app import create_app
    from imgapi.config import Config

    _retrained(tiny_weights, tmp_path / "v2")
    tool.upload_weights(s3, BUCKET, PREFIX, tiny_weights, log=lambda line: None)
    config = Config(model_bucket=BUCKET, model_prefix=PREFIX, model_cache_dir=tmp_path / "cache",
                    weights_dir=tmp_path / "none", torch_threads=1, manifest_ttl_s=0)
    app = create_app(config)
    _ask_every_model(app.test_client(), ("srgan",))  # warm, only srgan loaded
    statuses, done = [], threading.Event()

    def keep_asking():
        client = app.test_client()
        while not done.is_set():
            statuses.extend(status for status, _ in _ask_every_model(client).values())

    worker = threading.Thread(target=keep_asking)
    worker.start()
    try:
        tool.upload_weights(s3, BUCKET, PREFIX, tmp_path / "v2", log=lambda line: None)
    finally:
        done.set()
        worker.join(60)
    statuses.extend(status for status, _ in _ask_every_model(app.test_client()).values())
    assert statuses and set(statuses) == {200}
