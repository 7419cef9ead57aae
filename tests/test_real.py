"""The ``real`` SR model (docs/api.md): ``POST /upscale`` with ``model=real`` and ``denoise``, the level plane
through the engine's tiles, the store's warm-up of a conditioned network, the command line and the batch keys.
On the tiny conditioned network of ``tools.fixtures.add_real`` (in every test weights folder)."""
import base64
import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from imgapi import engine
from imgapi.__main__ import main as cli
from imgapi.app import create_app
from imgapi.batch import Batch, BatchSettings, parse_key
from imgapi.config import DEFAULT_SR_MODEL, Config
from imgapi.store import ModelStore
from tests.helpers import encode

LIMITS = dict(torch_threads=1, tile=64, max_upscale_pixels=64 * 64, max_upload_bytes=200_000)


@pytest.fixture
def real(real_weights):
    return create_app(Config(weights_dir=real_weights, **LIMITS)).test_client()


def picture(w=48, h=40):
    """A clean picture: smooth colour ramps and a few flat shapes, no noise (its own noise level is ~0)."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([60 + 3 * x, 50 + 4 * y, 200 - 2 * (x + y)], -1).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(a, "RGB")
    d = ImageDraw.Draw(img)
    d.rectangle([8, 8, 20, 24], fill=(220, 40, 40))
    d.ellipse([26, 10, 42, 30], fill=(250, 230, 90))
    return img


def upscale(client, data, filename="photo.png", **fields):
    return client.post("/upscale", data={"image": (io.BytesIO(data), filename), **fields},
                       content_type="multipart/form-data")


def ok(resp):
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    body = resp.get_json()
    return body, np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))), dtype=int)


def assert_error(resp, status, code, says=None):
    assert resp.status_code == status, resp.get_data(as_text=True)[:500]
    err = resp.get_json()["error"]
    assert err["code"] == code, err
    assert says is None or says in err["message"], err


# ---------------------------------------------------------------- POST /upscale, model=real

def test_auto_gives_a_low_quality_jpeg_a_higher_level_than_a_png_of_the_same_picture(real):
    png, png_out = ok(upscale(real, encode(picture()), model="real"))
    jpeg, _ = ok(upscale(real, encode(picture(), "JPEG", quality=40), "photo.jpg", model="real"))
    assert png["denoise_source"] == jpeg["denoise_source"] == "auto"
    assert png["jpeg_quality"] is None and abs(jpeg["jpeg_quality"] - 40) <= 5
    assert 0.0 <= png["denoise"] < 0.2 < jpeg["denoise"] <= 1.0
    assert png["model"] == "real" and png["scale"] == 4 and png_out.shape == (160, 192, 3)


@pytest.mark.parametrize("quality", [60, 90])
def test_the_jpeg_quality_reported_is_the_one_the_file_was_saved_at(real, quality):
    body, _ = ok(upscale(real, encode(picture(), "JPEG", quality=quality), "photo.jpg", model="real"))
    assert abs(body["jpeg_quality"] - quality) <= 5
    assert body["denoise"] == round(body["denoise"], 3)  # rounded to 3 decimals


def test_denoise_0_and_1_give_different_results_and_are_echoed(real):
    data = encode(picture(), "JPEG", quality=50)
    low, low_out = ok(upscale(real, data, "photo.jpg", model="real", denoise="0"))
    high, high_out = ok(upscale(real, data, "photo.jpg", model="real", denoise="1"))
    assert (low["denoise"], high["denoise"]) == (0.0, 1.0)
    assert low["denoise_source"] == high["denoise_source"] == "request"
    assert abs(low["jpeg_quality"] - 50) <= 5  # still read, though not used for the level
    assert np.abs(low_out - high_out).mean() > 1.0
    auto, auto_out = ok(upscale(real, data, "photo.jpg", model="real", denoise="AUTO"))
    asked, asked_out = ok(upscale(real, data, "photo.jpg", model="real", denoise=str(auto["denoise"])))
    assert auto["denoise_source"] == "auto" and asked["denoise"] == auto["denoise"]
    assert np.abs(auto_out - asked_out).max() <= 1  # the same level, measured or asked for


def test_denoise_in_the_query_string_and_the_png_answers_headers(real):
    resp = real.post("/upscale?model=real&denoise=0.25", data=encode(picture()), content_type="image/png",
                     headers={"Accept": "image/png"})
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert (resp.headers["X-Denoise"], resp.headers["X-Denoise-Source"]) == ("0.25", "request")
    assert "X-Jpeg-Quality" not in resp.headers  # null: left out, not "None"
    resp = real.post("/upscale?model=real", data=encode(picture(), "JPEG", quality=70), content_type="image/jpeg",
                     headers={"Accept": "image/png"})
    assert abs(int(resp.headers["X-Jpeg-Quality"]) - 70) <= 5 and resp.headers["X-Denoise-Source"] == "auto"


@pytest.mark.parametrize("value", ["-0.1", "1.5", "2", "abc", "nan", "inf", "", "0.5.1", "1e400"])
def test_a_denoise_that_is_not_auto_or_0_to_1_is_a_400(real, value):
    assert_error(upscale(real, encode(picture()), model="real", denoise=value), 400, "invalid_denoise",
                 "give auto or a number from 0 to 1")


# Every SR model but real, named explicitly: a request that names none gets the default, which is real and takes
# denoise (test_the_default_model_is_one_constant_that_health_reports).
@pytest.mark.parametrize("model", ["srgan", "srresnet"])
@pytest.mark.parametrize("value", ["0.5", "0"])
def test_a_denoise_level_with_another_model_is_a_400_and_auto_is_accepted(real, model, value):
    assert_error(upscale(real, encode(picture()), model=model, denoise=value), 400, "invalid_denoise",
                 "applies to model real only")
    body, _ = ok(upscale(real, encode(picture()), model=model, denoise="auto"))  # the default, for any model
    assert body["model"] == model and "denoise" not in body


def test_denoise_given_twice_is_a_400(real):
    resp = real.post("/upscale?denoise=0.2", data={"image": (io.BytesIO(encode(picture())), "p.png"),
                                                   "model": "real", "denoise": "0.3"})
    assert_error(resp, 400, "duplicate_field")


def test_the_other_models_answer_without_the_denoise_fields(real):
    body, _ = ok(upscale(real, encode(picture(), "JPEG", quality=40), "photo.jpg", model="srresnet"))
    assert not {"denoise", "denoise_source", "jpeg_quality"} & set(body)


def test_real_missing_from_the_manifest_is_a_503_model_missing(weights_without_real):
    client = create_app(Config(weights_dir=weights_without_real, **LIMITS)).test_client()
    for fields in ({"model": "real"}, {"model": "real", "denoise": "0.5"}):
        resp = upscale(client, encode(picture()), **fields)
        assert_error(resp, 503, "model_missing", "real is not in this deployment's weights manifest")
        assert resp.headers["Retry-After"]
    assert_error(upscale(client, encode(picture()), model="real", denoise="7"), 400, "invalid_denoise")
    assert upscale(client, encode(picture()), model="srgan").status_code == 200  # the others still serve


def test_the_default_model_is_one_constant_that_health_reports(real):
    assert real.get("/health").get_json()["default_sr_model"] == DEFAULT_SR_MODEL
    assert ok(upscale(real, encode(picture())))[0]["model"] == DEFAULT_SR_MODEL
    # the default takes denoise, so a request may give one without naming the model
    assert ok(upscale(real, encode(picture()), denoise="0.5"))[0]["denoise"] == 0.5


# ---------------------------------------------------------------- engine and store

def test_the_level_plane_is_tiled_with_the_picture_and_the_output_has_3_planes(real_weights):
    net = ModelStore(Config(weights_dir=real_weights)).get("real").module
    x = engine.with_level(engine.to_tensor(picture(70, 45)), 0.7)
    assert x.shape == (1, 4, 45, 70) and torch.all(x[:, 3] == 0.7)
    with torch.inference_mode(), engine.plain_execution():
        whole = engine.forward_tiled(net, x, tile=0)
        tiled = engine.forward_tiled(net, x, tile=24, overlap=16)
    assert tiled.shape == whole.shape == (1, 3, 180, 280)
    assert (tiled.clamp(0, 1) - whole.clamp(0, 1)).abs().max().item() <= 1 / 255
    a, _ = engine.upscale(net, picture(70, 45), level=0.7, tile=0)
    b, _ = engine.upscale(net, picture(70, 45), level=0.7, tile=24, overlap=16)
    assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    with pytest.raises(ValueError, match="level 1.5 is not supported"):
        engine.upscale(net, picture(8, 8), level=1.5)


def test_the_store_warms_a_conditioned_model_up_with_4_planes(real_weights, caplog):
    store = ModelStore(Config(weights_dir=real_weights))
    with caplog.at_level(logging.INFO, logger="imgapi"):
        model = store.get("real")
    loaded = [json.loads(r.getMessage()) for r in caplog.records if "model_loaded" in r.getMessage()]
    assert loaded == [dict(loaded[0], model="real", warmed_up=True)]
    assert model.conditioned and not store.get("srgan").conditioned


# ---------------------------------------------------------------- command line and batch

@pytest.fixture
def env(real_weights, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(real_weights))
    monkeypatch.setenv("TORCH_THREADS", "1")
    monkeypatch.delenv("MODEL_BUCKET", raising=False)


@pytest.mark.parametrize("denoise", [None, "0.4"])
def test_the_cli_gives_the_routes_pixels(env, real, tmp_path, capsys, denoise):
    data = encode(picture(), "JPEG", quality=45)
    (tmp_path / "a.jpg").write_bytes(data)
    extra = [] if denoise is None else ["--denoise", denoise]
    assert cli(["upscale", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--model", "real", *extra]) == 0
    printed = capsys.readouterr().out
    body, expected = ok(upscale(real, data, "a.jpg", model="real", **({} if denoise is None else {"denoise": denoise})))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a_x4_real.png"), dtype=int), expected)
    assert f"denoise {body['denoise']:.3f} {'auto' if denoise is None else 'as asked'}" in printed
    assert f"JPEG quality {body['jpeg_quality']}" in printed


@pytest.mark.parametrize("args, says", [(["--model", "srgan", "--denoise", "0.4"], "applies to --model real only"),
                                        (["--model", "real", "--denoise", "2"], "give auto or a number from 0 to 1"),
                                        (["--model", "real", "--denoise", "nan"], "give auto or a number")])
def test_the_cli_refuses_a_denoise_it_cannot_use(env, tmp_path, capsys, args, says):
    (tmp_path / "a.png").write_bytes(encode(picture()))
    with pytest.raises(SystemExit) as exit_:
        cli(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *args])
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_batch_keys_carry_denoise_and_the_app_uses_it(real_weights):
    settings = BatchSettings()
    key = settings.input_key("upscale", "album/denoise=1.jpg", model="real", scale=4, denoise=0.4)
    assert key == "in/upscale/real/x4/denoise=0.4/album/denoise=1.jpg"
    assert parse_key(key, settings) == ("/upscale", {"model": "real", "scale": "4", "denoise": "0.4"})
    # a file (the last part) named like the option is a path, not an option
    assert parse_key("in/upscale/real/x4/denoise=1.jpg", settings) == ("/upscale", {"model": "real", "scale": "4"})
    assert settings.input_key("upscale", "a.jpg", model="srgan", scale=2) == "in/upscale/srgan/x2/a.jpg"
    with pytest.raises(Exception, match="given twice"):
        parse_key("in/upscale/real/x4/denoise=0.1/denoise=0.2/a.jpg", settings)

    batch = Batch(settings, config=Config(weights_dir=real_weights, **LIMITS), s3=object())
    status, body, headers = batch.run(*parse_key(key, settings), encode(picture(), "JPEG", quality=50))
    assert status == 200 and headers["X-Denoise"] == "0.4" and headers["X-Denoise-Source"] == "request"
    status, body, _ = batch.run("/upscale", {"model": "srgan", "scale": "4", "denoise": "0.4"}, encode(picture()))
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_denoise"
