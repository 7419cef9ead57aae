"""The batch function (batch_handler.handler, imgapi/batch.py) with real S3 event JSON (tests/events/s3_*.json)
against moto_server: the inputs are uploaded to a moto bucket, the weights are read from another by the
model store, and the results, failure files and skips are read back from S3.

The events' bucket name, eTag and size are replaced by those of the objects the tests upload (the rest,
keys included, is as S3 sends it). Tiny networks, tiny images, one thread, tiles of 8 px so that the
engine's tiling runs.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
from urllib.parse import quote_plus, unquote_plus

import numpy as np
import pytest
from PIL import Image

from imgapi.batch import (BATCH_SR_COMPUTE_BUDGET_S, Batch, BatchRefused, BatchSettings, batch_config,
                          batch_upscale_pixels, parse_key)
from imgapi.config import Config, sr_seconds
from imgapi.errors import ApiError
from tests.helpers import EVENTS, decode_png, deployed_buckets, encode, photo, png_bytes

MODELS = "imgapi-batch-models"
BUCKET = "imgapi-ci-batch-123456789012-us-east-1"


@pytest.fixture
def batch(moto_env, tiny_weights, tmp_path, monkeypatch):
    """batch_handler.handler configured like the stack's batch function, buckets in moto_server."""
    s3 = deployed_buckets(tiny_weights, MODELS, BUCKET)
    env = {
        "MODEL_BUCKET": MODELS, "MODEL_PREFIX": "weights/", "MODEL_CACHE_DIR": str(tmp_path / "models"),
        "BATCH_INPUT_PREFIX": "in/", "BATCH_OUTPUT_PREFIX": "out/", "BATCH_FAILED_PREFIX": "failed/",
        "MAX_RESPONSE_BYTES": "0", "RESULT_BUCKET": "",
        "AWS_LAMBDA_FUNCTION_NAME": "imgapi-ci-batch", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008",
        # Not from serverless.yml: one core, tiles of 8 px, nothing from local files.
        "TORCH_THREADS": "1", "TILE": "8", "TILE_OVERLAP": "2", "WEIGHTS_DIR": str(tmp_path / "none"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import batch_handler as module
    module = importlib.reload(module)
    return module, s3


def event(name, s3, bodies):
    """The event of tests/events/<name>, each record's object uploaded first with the body ``bodies[key]``."""
    doc = json.loads((EVENTS / name).read_text())
    for record in doc["Records"]:
        key = unquote_plus(record["s3"]["object"]["key"])
        put = s3.put_object(Bucket=BUCKET, Key=key, Body=bodies[key])
        record["s3"]["bucket"]["name"] = BUCKET
        record["s3"]["object"].update(eTag=put["ETag"].strip('"'), size=len(bodies[key]))
    return doc


def get(s3, key):
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    return obj["Body"].read(), obj["Metadata"], obj["ContentType"]


def keys(s3):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_one_record_upscales_into_out_under_the_same_path(batch, lambda_context):
    module, s3 = batch
    jpeg = encode(photo(24, 16), "JPEG", quality=90)
    ev = event("s3_put_one_upscale.json", s3, {"in/upscale/srgan/x4/album/photo.jpg": jpeg})

    answer = module.handler(ev, lambda_context)

    (result,) = answer["results"]
    assert result["outcome"] == "done" and result["output"] == "out/upscale/srgan/x4/album/photo.png"
    body, meta, ctype = get(s3, "out/upscale/srgan/x4/album/photo.png")
    assert ctype == "image/png" and decode_png(body).size == (96, 64)
    assert meta["input-etag"] == ev["Records"][0]["s3"]["object"]["eTag"]
    assert meta["model"] == "srgan" and meta["status"] == "200"
    assert keys(s3) == ["in/upscale/srgan/x4/album/photo.jpg", "out/upscale/srgan/x4/album/photo.png"]


def test_result_is_the_apis_own(batch, lambda_context, tiny_weights):
    """The same pixels as POST /upscale gives for the same bytes and options (one engine, one decoder)."""
    module, s3 = batch
    data = png_bytes(24, 16, "RGBA")
    key = "in/upscale/srgan/x4/album/photo.jpg"
    module.handler(event("s3_put_one_upscale.json", s3, {key: data}), lambda_context)
    from imgapi.app import create_app
    api = create_app(Config(weights_dir=tiny_weights, torch_threads=1, tile=8, tile_overlap=2)).test_client()
    resp = api.post("/upscale?model=srgan&scale=4", data=data, content_type="image/png",
                    headers={"Accept": "image/png"})
    assert resp.status_code == 200
    ours = decode_png(get(s3, "out/upscale/srgan/x4/album/photo.png")[0])
    assert ours.mode == "RGBA" and ours.tobytes() == decode_png(resp.data).tobytes()


def test_several_records_with_the_options_of_each_route(batch, lambda_context):
    module, s3 = batch
    bodies = {"in/upscale/srresnet/x2/album/a.png": png_bytes(20, 12, seed=1),
              "in/stylize/mosaic/strength=0.5/preserve_color=true/album/b.png": png_bytes(20, 12, seed=2),
              "in/stylize/mosaic/c.png": png_bytes(20, 12, seed=3)}
    answer = module.handler(event("s3_put_several.json", s3, bodies), lambda_context)

    assert [r["outcome"] for r in answer["results"]] == ["done", "done", "done"]
    a, meta_a, _ = get(s3, "out/upscale/srresnet/x2/album/a.png")
    assert decode_png(a).size == (40, 24) and meta_a["model"] == "srresnet"
    half, meta_b, _ = get(s3, "out/stylize/mosaic/strength=0.5/preserve_color=true/album/b.png")
    full, meta_c, _ = get(s3, "out/stylize/mosaic/c.png")
    assert decode_png(half).size == decode_png(full).size == (20, 12)
    assert meta_b["model"] == meta_c["model"] == "style/mosaic"


def test_url_encoded_key_with_spaces_and_unicode(batch, lambda_context):
    module, s3 = batch
    key = "in/upscale/srgan/x3/Été 2026/café au lait (1).png"
    ev = event("s3_put_unicode_key.json", s3, {key: png_bytes(10, 6)})
    assert ev["Records"][0]["s3"]["object"]["key"] != key  # as S3 sends it: URL-encoded, '+' for space

    (result,) = module.handler(ev, lambda_context)["results"]

    assert result["outcome"] == "done"
    body, meta, _ = get(s3, "out/upscale/srgan/x3/Été 2026/café au lait (1).png")
    assert decode_png(body).size == (30, 18)
    assert unquote_plus(meta["input-key"]) == key[len("in/"):]  # S3 metadata is ASCII: the key, quoted


def test_bad_image_writes_the_apis_error_json_under_failed(batch, lambda_context, client):
    module, s3 = batch
    data = b"this is not a JPEG, only text named so"
    ev = event("s3_put_not_an_image.json", s3, {"in/upscale/srgan/x4/album/notes.jpg": data})

    (result,) = module.handler(ev, lambda_context)["results"]

    assert result["outcome"] == "failed" and result["code"] == "unsupported_image"
    body, meta, ctype = get(s3, "failed/upscale/srgan/x4/album/notes.jpg.json")
    api = client.post("/upscale?model=srgan&scale=4", data=data, content_type="image/jpeg")
    assert ctype == "application/json" and json.loads(body) == api.get_json()
    assert meta["status"] == str(api.status_code) == "415"
    assert meta["input-etag"] == ev["Records"][0]["s3"]["object"]["eTag"]
    assert not [k for k in keys(s3) if k.startswith("out/")]


@pytest.mark.parametrize("key, status, code", [
    ("in/upscale/srgan/x8/p.png", 400, "invalid_scale"),
    ("in/upscale/esrgan/x4/p.png", 400, "invalid_model"),
    ("in/stylize/nope/p.png", 400, "invalid_style"),
    ("in/stylize/mosaic/strength=2/p.png", 400, "invalid_strength"),
    ("in/resize/p.png", 404, "not_found"),
    ("in/upscale/p.png", 404, "not_found"),
])
def test_bad_options_in_the_key_are_failure_files(batch, lambda_context, key, status, code):
    module, s3 = batch
    ev = event("s3_put_one_upscale.json", s3, {"in/upscale/srgan/x4/album/photo.jpg": b"unused"})
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(8, 8))
    ev["Records"][0]["s3"]["object"].update(key=key, eTag=put["ETag"].strip('"'))

    (result,) = module.handler(ev, lambda_context)["results"]

    assert result["outcome"] == "failed"
    body, meta, _ = get(s3, "failed/" + key[len("in/"):] + ".json")
    assert json.loads(body)["error"]["code"] == code and meta["status"] == str(status)


def test_redelivery_of_the_same_object_is_skipped(batch, lambda_context, monkeypatch):
    module, s3 = batch
    key = "in/upscale/srgan/x4/album/photo.jpg"
    ev = event("s3_put_one_upscale.json", s3, {key: png_bytes(12, 8)})
    module.handler(ev, lambda_context)
    first = s3.head_object(Bucket=BUCKET, Key="out/upscale/srgan/x4/album/photo.png")

    def no_work(*args):
        raise AssertionError("a re-delivered event ran the network again")
    monkeypatch.setattr(module.batch, "run", no_work)
    (result,) = module.handler(copy.deepcopy(ev), lambda_context)["results"]

    assert result["outcome"] == "skipped"
    again = s3.head_object(Bucket=BUCKET, Key="out/upscale/srgan/x4/album/photo.png")
    assert again["ETag"] == first["ETag"] and again["LastModified"] == first["LastModified"]

    # A failure file counts as done too; a new upload under the same key (new ETag) is processed.
    bad = event("s3_put_not_an_image.json", s3, {"in/upscale/srgan/x4/album/notes.jpg": b"text"})
    monkeypatch.undo()
    module.handler(bad, lambda_context)
    monkeypatch.setattr(module.batch, "run", no_work)
    assert module.handler(bad, lambda_context)["results"][0]["outcome"] == "skipped"
    monkeypatch.undo()
    newer = event("s3_put_one_upscale.json", s3, {key: png_bytes(16, 8)})
    assert module.handler(newer, lambda_context)["results"][0]["outcome"] == "done"
    body, meta, _ = get(s3, "out/upscale/srgan/x4/album/photo.png")
    assert decode_png(body).size == (64, 32) and meta["input-etag"] == newer["Records"][0]["s3"]["object"]["eTag"]


def test_an_event_for_an_older_version_is_not_processed(batch, lambda_context):
    module, s3 = batch
    key = "in/upscale/srgan/x4/album/photo.jpg"
    old = event("s3_put_one_upscale.json", s3, {key: png_bytes(12, 8)})
    s3.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(12, 8, seed=5))  # overwritten: its own event follows
    assert module.handler(old, lambda_context)["results"][0]["outcome"] == "superseded"
    assert keys(s3) == [key]


def test_a_server_side_error_escapes_after_the_other_records(batch, lambda_context):
    """A 503 (here: the weights gone from the models bucket) is not the input's fault: no failure file, the
    error is raised for Lambda's retries and on-failure destination; the other records are still done."""
    module, s3 = batch
    listing = s3.list_objects_v2(Bucket=MODELS)["Contents"]
    s3.delete_objects(Bucket=MODELS, Delete={"Objects": [{"Key": o["Key"]} for o in listing
                                                         if o["Key"].endswith("srresnet.pt")]})
    bodies = {"in/upscale/srresnet/x2/album/a.png": png_bytes(8, 8),
              "in/stylize/mosaic/strength=0.5/preserve_color=true/album/b.png": png_bytes(8, 8),
              "in/stylize/mosaic/c.png": png_bytes(8, 8)}
    with pytest.raises(RuntimeError, match="503.*weights_missing"):
        module.handler(event("s3_put_several.json", s3, bodies), lambda_context)
    assert [k for k in keys(s3) if not k.startswith("in/")] == [
        "out/stylize/mosaic/c.png", "out/stylize/mosaic/strength=0.5/preserve_color=true/album/b.png"]


def test_keys_outside_the_input_prefix_and_folder_markers_are_ignored(batch, lambda_context):
    module, s3 = batch
    ev = json.loads((EVENTS / "s3_put_one_upscale.json").read_text())
    for key in ("out/upscale/srgan/x4/album/photo.png", "in/upscale/srgan/x4/album/"):
        ev["Records"][0]["s3"]["object"]["key"] = key
        assert module.handler(ev, lambda_context)["results"][0]["outcome"] == "ignored"
    assert keys(s3) == []


def test_the_function_refuses_to_write_under_its_input_prefix():
    batch = Batch(BatchSettings(), config=Config(), s3=object())
    with pytest.raises(BatchRefused):
        batch.put("bucket", "in/upscale/srgan/x4/a.png", b"png", "image/png", {})
    for prefixes in (("in/", "in/out/", "failed/"), ("in/out/", "in/", "failed/"), ("in/", "out/", "in/f/"),
                     ("in/", "out/", "out/"), ("", "out/", "failed/"), ("in", "out/", "failed/")):
        with pytest.raises(ValueError):
            BatchSettings(*prefixes)


def test_keys_round_trip_between_the_cli_and_the_handler():
    settings = BatchSettings()
    key = settings.input_key("stylize", "album/b.jpg", style="mosaic", strength=0.5, preserve_color="true")
    assert key == "in/stylize/mosaic/strength=0.5/preserve_color=true/album/b.jpg"
    assert parse_key(key, settings) == ("/stylize", {"style": "mosaic", "strength": "0.5",
                                                      "preserve_color": "true"})
    key = settings.input_key("upscale", "a/b.c.jpeg", model="srresnet", scale=3)
    assert parse_key(key, settings) == ("/upscale", {"model": "srresnet", "scale": "3"})
    assert settings.result_keys(key) == ("out/upscale/srresnet/x3/a/b.c.png", "failed/upscale/srresnet/x3/a/b.c.jpeg.json")
    assert settings.result_keys("in/stylize/mosaic/.jpg")[0] == "out/stylize/mosaic/.jpg.png"
    with pytest.raises(ApiError) as info:
        parse_key("in/stylize/mosaic/strength=1/strength=0/p.png", settings)
    assert info.value.code == "duplicate_field"


def test_batch_limits_fit_the_15_minute_timeout_and_the_memory():
    for memory in (1769, 3008, 10240):
        pixels = batch_upscale_pixels(memory)
        assert sr_seconds(pixels, memory) <= BATCH_SR_COMPUTE_BUDGET_S < 900
        assert pixels > 512 * 512  # far beyond the API's limit
    assert batch_upscale_pixels(3008) < batch_upscale_pixels(10240)
    config = batch_config({"AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"})
    assert config.max_upscale_pixels == batch_upscale_pixels(3008) and config.max_response_bytes == 0
    assert config.tile == 256  # the engine's tiles, sized to the memory as for the API
    set_by_hand = batch_config({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008", "MAX_UPSCALE_PIXELS": "1000"})
    assert set_by_hand.max_upscale_pixels == 1000


def test_over_the_pixel_limit_is_a_413_failure_file(batch, lambda_context, monkeypatch):
    monkeypatch.setenv("MAX_UPSCALE_PIXELS", str(16 * 16))
    module, s3 = batch
    module = importlib.reload(module)
    key = "in/upscale/srgan/x4/album/photo.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "PNG")
    (result,) = module.handler(event("s3_put_one_upscale.json", s3, {key: buf.getvalue()}), lambda_context)["results"]
    assert result["outcome"] == "failed" and result["code"] == "too_many_pixels" and result["status"] == 413


# -- any painting as the style: in/paintings/<painting> and in/stylize/style_image=<painting>/... --------------
def painting_png(seed=3):
    from tools.fixtures import tiny_painting
    return encode(Image.fromarray(tiny_painting(seed=seed)))


def put_event(s3, key, body):
    """An S3 event (tests/events/s3_put_one_upscale.json) for ``body`` uploaded under ``key``, the key
    URL-encoded as S3 sends it."""
    doc = json.loads((EVENTS / "s3_put_one_upscale.json").read_text())
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    doc["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    doc["Records"][0]["s3"]["object"].update(key=quote_plus(key, safe="/"), eTag=put["ETag"].strip('"'),
                                             size=len(body))
    return doc


def api_result(tiny_weights, photo_bytes, painting=None, **fields):
    """POST /stylize's PNG for the same bytes and options, from the API's own app on the same weights."""
    from imgapi.app import create_app
    api = create_app(Config(weights_dir=tiny_weights, torch_threads=1)).test_client()
    body = {"image": (io.BytesIO(photo_bytes), "p.png"), **fields}
    if painting is not None:
        body["style_image"] = (io.BytesIO(painting), "painting.png")
    return api.post("/stylize", data=body, headers={"Accept": "image/png"})


def test_a_painting_in_the_bucket_styles_the_photos_that_name_it(batch, lambda_context, tiny_weights):
    module, s3 = batch
    painting = painting_png()
    name = hashlib.sha256(painting).hexdigest() + ".png"
    (own,) = module.handler(put_event(s3, f"in/paintings/{name}", painting), lambda_context)["results"]
    assert own["outcome"] == "painting" and keys(s3) == [f"in/paintings/{name}"]  # nothing written for it
    photo_bytes = png_bytes(30, 20, "RGBA", seed=4)
    key = f"in/stylize/style_image={name}/strength=0.7/preserve_color=true/album/p.png"

    (result,) = module.handler(put_event(s3, key, photo_bytes), lambda_context)["results"]

    assert result["outcome"] == "done"
    body, meta, ctype = get(s3, f"out/stylize/style_image={name}/strength=0.7/preserve_color=true/album/p.png")
    assert ctype == "image/png" and meta["model"] == "universal" and meta["style-image"] == name[:12]
    api = api_result(tiny_weights, photo_bytes, painting, strength="0.7", preserve_color="true")
    assert api.status_code == 200
    ours, theirs = decode_png(body), decode_png(api.data)
    assert ours.mode == theirs.mode == "RGBA" and ours.tobytes() == theirs.tobytes()  # the API's own pixels


def test_a_paintings_statistics_are_kept_for_the_next_photo(batch, lambda_context):
    module, s3 = batch
    s3.put_object(Bucket=BUCKET, Key="in/paintings/wave.png", Body=painting_png())
    for n in range(2):
        ev = put_event(s3, f"in/stylize/style_image=wave.png/p{n}.png", png_bytes(16, 12, seed=n))
        assert module.handler(ev, lambda_context)["results"][0]["outcome"] == "done"
    cache = module.batch.app.extensions["imgapi"]["universal"].cache  # the app's, by the painting's sha256
    assert (cache.misses, cache.hits) == (1, 1)


def test_a_preset_by_name(batch, lambda_context, tiny_weights):
    module, s3 = batch
    photo_bytes = png_bytes(24, 16, seed=2)
    (result,) = module.handler(put_event(s3, "in/stylize/stripes/p.png", photo_bytes), lambda_context)["results"]
    assert result["outcome"] == "done"
    body, meta, _ = get(s3, "out/stylize/stripes/p.png")
    assert meta["model"] == "universal"
    assert decode_png(body).tobytes() == decode_png(api_result(tiny_weights, photo_bytes, style="stripes").data).tobytes()


@pytest.mark.parametrize("painting, status, code", [
    (None, 404, "style_image_not_found"),  # the photo came before its painting, or names another
    (b"this is not a painting, only text named so", 415, "unsupported_image"),
    ("empty", 400, "empty_image"),
])
def test_a_missing_or_bad_painting_is_a_failure_file(batch, lambda_context, tiny_weights, painting, status, code):
    module, s3 = batch
    if painting is not None:
        s3.put_object(Bucket=BUCKET, Key="in/paintings/wave.jpg", Body=b"" if painting == "empty" else painting)
    key = "in/stylize/style_image=wave.jpg/album/p.png"

    (result,) = module.handler(put_event(s3, key, png_bytes(16, 12)), lambda_context)["results"]

    assert result["outcome"] == "failed" and (result["status"], result["code"]) == (status, code)
    body, meta, ctype = get(s3, "failed/stylize/style_image=wave.jpg/album/p.png.json")
    error = json.loads(body)["error"]
    assert ctype == "application/json" and meta["status"] == str(status) and error["code"] == code
    if painting is None:
        assert "in/paintings/wave.jpg" in error["message"] and "tools/batch.py --style-image" in error["message"]
    elif painting != "empty":  # the API's own answer for the same painting
        assert json.loads(body) == api_result(tiny_weights, png_bytes(16, 12), painting).get_json()
        assert error["message"].startswith("style_image: ")
    assert not [k for k in keys(s3) if k.startswith("out/")]


def test_a_painting_over_the_limits_is_a_413_failure_file(batch, lambda_context, monkeypatch):
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "3000")
    monkeypatch.setenv("MAX_STYLIZE_PIXELS", str(48 * 48))
    module, s3 = batch
    module = importlib.reload(module)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    assert len(encode(noise)) > 3000
    s3.put_object(Bucket=BUCKET, Key="in/paintings/heavy.png", Body=encode(noise))
    s3.put_object(Bucket=BUCKET, Key="in/paintings/large.png", Body=encode(Image.new("RGB", (64, 64))))
    for name, code in (("heavy.png", "upload_too_large"), ("large.png", "too_many_pixels")):
        ev = put_event(s3, f"in/stylize/style_image={name}/p.png", png_bytes(16, 12))
        (result,) = module.handler(ev, lambda_context)["results"]
        assert (result["outcome"], result["status"], result["code"]) == ("failed", 413, code)
        error = json.loads(get(s3, f"failed/stylize/style_image={name}/p.png.json")[0])["error"]
        assert "style_image" in error["message"]


@pytest.mark.parametrize("key, code", [
    ("in/stylize/strength=0.5/p.png", "missing_style"),
    ("in/stylize/mosaic/style_image=wave.png/p.png", "style_conflict"),
    ("in/stylize/style_image=wave.png/style_image=wave.png/p.png", "duplicate_field"),
    ("in/stylize/style_image=/p.png", "invalid_style_image"),
])
def test_both_or_neither_style_in_the_key_is_a_failure_file(batch, lambda_context, key, code):
    module, s3 = batch
    s3.put_object(Bucket=BUCKET, Key="in/paintings/wave.png", Body=painting_png())
    (result,) = module.handler(put_event(s3, key, png_bytes(16, 12)), lambda_context)["results"]
    assert result["outcome"] == "failed" and result["status"] == 400 and result["code"] == code
    error = json.loads(get(s3, "failed/" + key[len("in/"):] + ".json")[0])["error"]
    if code in ("missing_style", "style_conflict"):
        assert "exactly one of a named style" in error["message"] and "style_image=<painting>" in error["message"]


def test_painting_keys_round_trip_between_the_cli_and_the_handler():
    settings = BatchSettings()
    key = settings.input_key("stylize", "album/b.jpg", style_image="ab12.jpg", max_side=512)
    assert key == "in/stylize/style_image=ab12.jpg/max_side=512/album/b.jpg"
    assert parse_key(key, settings) == ("/stylize", {"style_image": "ab12.jpg", "max_side": "512"})
    assert settings.painting_key("ab12.jpg") == "in/paintings/ab12.jpg"
    assert settings.result_keys(key)[0] == "out/stylize/style_image=ab12.jpg/max_side=512/album/b.png"
    for both_or_neither in ({}, {"style": "mosaic", "style_image": "ab12.jpg"}):
        with pytest.raises(ValueError, match="exactly one"):
            settings.input_key("stylize", "b.jpg", **both_or_neither)
