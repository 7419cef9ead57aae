"""The HTTP contract of docs/api.md through the Flask test client, with tiny networks."""
import base64
import io

import numpy as np
import pytest
from PIL import Image

from imgapi.app import create_app
from imgapi.config import DEFAULT_SR_MODEL, Config
from tests.helpers import bomb_png, decode_png, encode, photo, png_bytes


def post_image(client, path, data, filename="photo.png", **fields):
    body = {"image": (io.BytesIO(data), filename), **fields}
    return client.post(path, data=body, content_type="multipart/form-data")


def assert_error(resp, status, code=None, says=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json
    err = resp.get_json()["error"]
    assert err["message"]
    if code:
        assert err["code"] == code
    if says:
        assert says in err["message"]
    return err


def test_upscale_returns_base64_png_four_times_larger(client):
    resp = post_image(client, "/upscale", png_bytes(24, 16))
    assert resp.status_code == 200
    body = resp.get_json()
    img = decode_png(base64.b64decode(body["image"]))
    assert img.size == (96, 64) == (body["width"], body["height"])
    assert body["model"] == DEFAULT_SR_MODEL and len(body["sha256"]) == 12 and body["elapsed_ms"] >= 0
    # the default (real) measures the damage level of an upload that names none: a PNG has no JPEG quality
    assert body["denoise_source"] == "auto" and 0.0 <= body["denoise"] <= 1.0 and body["jpeg_quality"] is None
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("model", ["srgan", "srresnet"])
@pytest.mark.parametrize("scale", ["2", "3", "4"])
def test_models_and_scales(client, model, scale):
    resp = post_image(client, "/upscale", png_bytes(10, 6), model=model, scale=scale)
    body = resp.get_json()
    assert resp.status_code == 200 and body["model"] == model
    assert decode_png(base64.b64decode(body["image"])).size == (10 * int(scale), 6 * int(scale))


def test_the_two_models_differ(client):
    a = post_image(client, "/upscale", png_bytes(12, 12), model="srgan").get_json()
    b = post_image(client, "/upscale", png_bytes(12, 12), model="srresnet").get_json()
    assert a["sha256"] != b["sha256"] and a["image"] != b["image"]


def test_accept_png_returns_the_png_itself(client):
    resp = client.post("/upscale", data={"image": (io.BytesIO(png_bytes(8, 8)), "x.png")},
                       headers={"Accept": "image/png"}, content_type="multipart/form-data")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert decode_png(resp.data).size == (32, 32)
    assert resp.headers["X-Model"] == DEFAULT_SR_MODEL
    assert resp.headers["X-Denoise-Source"] == "auto" and "X-Jpeg-Quality" not in resp.headers


def test_raw_image_body_with_query_options(client):
    resp = client.post("/upscale?model=srresnet&scale=2", data=png_bytes(9, 7), content_type="image/png")
    body = resp.get_json()
    assert resp.status_code == 200 and body["model"] == "srresnet" and (body["width"], body["height"]) == (18, 14)


def test_alpha_comes_back(client):
    img = photo(8, 8).convert("RGBA")
    img.putalpha(Image.new("L", (8, 8), 40))
    body = post_image(client, "/upscale", encode(img)).get_json()
    out = decode_png(base64.b64decode(body["image"]))
    assert out.mode == "RGBA" and abs(int(np.asarray(out)[..., 3].mean()) - 40) <= 1


@pytest.mark.parametrize("data, status, code", [
    (b"", 400, "empty_image"),
    (b"this is text, not a picture", 415, "unsupported_image"),
    (png_bytes(40, 40)[:120], 415, None),
    (bomb_png(), 413, "too_many_pixels"),
    (png_bytes(65, 64), 413, "too_many_pixels"),
])
def test_bad_images(client, data, status, code):
    assert_error(post_image(client, "/upscale", data), status, code)
    # The next good request still works.
    assert post_image(client, "/upscale", png_bytes(8, 8)).status_code == 200


def test_missing_image_field(client):
    resp = client.post("/upscale", data={"model": "srgan"}, content_type="multipart/form-data")
    assert_error(resp, 400, "missing_image", "'image'")
    resp = client.post("/upscale", data={"image": "text"}, content_type="multipart/form-data")
    assert_error(resp, 400, "missing_image")


def test_oversize_upload_says_the_limit(client):
    resp = post_image(client, "/upscale", b"\x89PNG" + b"0" * 300_000)
    assert_error(resp, 413, "upload_too_large", "200000")


@pytest.mark.parametrize("fields, code, says", [
    ({"model": "esrgan"}, "invalid_model", "srgan, srresnet"),
    ({"scale": "8"}, "invalid_scale", "2 to 4"),
    ({"scale": "four"}, "invalid_scale", None),
    ({"scale": "nan"}, "invalid_scale", None),
])
def test_bad_options(client, fields, code, says):
    assert_error(post_image(client, "/upscale", png_bytes(8, 8), **fields), 400, code, says)


def test_duplicate_field(client):
    body = {"image": (io.BytesIO(png_bytes(8, 8)), "a.png"), "scale": ["2", "3"]}
    assert_error(client.post("/upscale", data=body, content_type="multipart/form-data"), 400, "duplicate_field")


def test_wrong_content_type_and_method(client):
    assert_error(client.post("/upscale", data="{}", content_type="application/json"), 415, "unsupported_media_type")
    resp = client.get("/upscale")
    assert_error(resp, 405, says="POST")
    assert "POST" in resp.headers["Allow"]
    assert_error(client.get("/nope"), 404)


def test_health_lists_models_and_limits(client):
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert set(body["models"]) == {"srgan", "srresnet", "real", "style/mosaic", "style/stripes",
                                   "universal/encoder", "universal/decoder"}
    assert body["default_sr_model"] == DEFAULT_SR_MODEL
    assert body["models"][DEFAULT_SR_MODEL]["loaded"] is False
    post_image(client, "/upscale", png_bytes(8, 8))  # no model named: the default
    assert client.get("/health").get_json()["models"][DEFAULT_SR_MODEL]["loaded"] is True
    assert body["limits"]["max_upload_bytes"] == 200_000


def test_result_too_large_without_bucket_is_refused_before_work(tiny_weights):
    app = create_app(Config(weights_dir=tiny_weights, torch_threads=1, max_response_bytes=20_000))
    resp = post_image(app.test_client(), "/upscale", png_bytes(60, 60))
    assert_error(resp, 413, "result_too_large", "20000")
    assert app.extensions["imgapi"]["store"].status()[DEFAULT_SR_MODEL]["loaded"] is False


def test_missing_weights_file_is_a_503_for_that_model_only(tmp_path, tiny_weights):
    import shutil
    shutil.copytree(tiny_weights, tmp_path / "w")
    (tmp_path / "w" / "srgan.pt").write_bytes(b"tampered")
    client = create_app(Config(weights_dir=tmp_path / "w", torch_threads=1)).test_client()
    resp = post_image(client, "/upscale", png_bytes(8, 8), model="srgan")
    assert_error(resp, 503, "checksum_mismatch")
    assert resp.headers["Retry-After"]
    assert post_image(client, "/upscale", png_bytes(8, 8), model="srresnet").status_code == 200
    assert post_image(client, "/upscale", png_bytes(8, 8)).status_code == 200  # the default (real) too


def test_cors_only_for_configured_origins(tiny_weights):
    closed = create_app(Config(weights_dir=tiny_weights)).test_client()
    assert "Access-Control-Allow-Origin" not in closed.get("/health", headers={"Origin": "https://x.example"}).headers
    app = create_app(Config(weights_dir=tiny_weights, cors_origins=("https://x.example",))).test_client()
    resp = app.options("/upscale", headers={"Origin": "https://x.example", "Access-Control-Request-Method": "POST"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://x.example"
    assert "Access-Control-Allow-Origin" not in app.get("/health", headers={"Origin": "https://evil.example"}).headers


def test_page_is_served_with_csp(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


def test_styles_lists_manifest_styles_with_thumbnails(client):
    styles = client.get("/styles").get_json()["styles"]
    assert [s["name"] for s in styles] == ["mosaic", "stripes"]
    s = styles[0]
    assert s["title"] == "Mosaic" and s["licence"] == "CC0-1.0"
    thumb = client.get(s["thumbnail"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"


def test_stylize(client):
    resp = post_image(client, "/stylize", png_bytes(20, 12), style="mosaic", strength="0.5",
                      preserve_color="true")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["style"] == "mosaic" and body["strength"] == 0.5 and body["preserve_color"] is True
    assert decode_png(base64.b64decode(body["image"])).size == (20, 12)


def full_style(tiny_weights, img):
    """What the stand-in style network itself makes of ``img``: float RGB on 0..255, (H, W, 3)."""
    import torch
    module = torch.jit.load(str(tiny_weights / "style_mosaic.pt"))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = module(x)[0].clamp(0, 1).permute(1, 2, 0)
    return y.numpy().astype(np.float64) * 255


def stylized(client, img, **fields):
    resp = post_image(client, "/stylize", encode(img), style="mosaic", **fields)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return np.asarray(decode_png(base64.b64decode(resp.get_json()["image"])).convert("RGB"), dtype=np.float64)


def test_stylize_strength_blends_the_photo_and_the_full_style(client, tiny_weights):
    img = photo(20, 12)
    original, full = np.asarray(img, dtype=np.float64), full_style(tiny_weights, img)
    assert np.abs(full - original).mean() > 20  # the stand-in really restyles: the blends below can differ
    assert np.array_equal(stylized(client, img, strength="0"), original)
    assert np.abs(stylized(client, img, strength="1") - full).max() <= 1
    half = stylized(client, img, strength="0.5")
    assert np.abs(half - (0.5 * full + 0.5 * original)).max() <= 1
    assert np.abs(stylized(client, img) - full).max() <= 1  # the default strength is 1


def bt601_ycbcr(rgb):
    """Full-range (JFIF) ITU-R BT.601 YCbCr of RGB on 0..255, the standard's numbers written out here."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([0.299 * r + 0.587 * g + 0.114 * b,
                     128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
                     128 + 0.5 * r - 0.418688 * g - 0.081312 * b], -1)


def test_bt601_numbers_of_the_test_agree_with_pillow():
    rgb = np.asarray(photo(32, 32, seed=5))
    pillow = np.asarray(Image.fromarray(rgb).convert("YCbCr"), dtype=np.float64)
    assert np.abs(bt601_ycbcr(rgb.astype(np.float64)) - pillow).max() <= 1.5  # Pillow: 8-bit fixed point


def test_stylize_preserve_color_keeps_the_photo_colours_and_takes_the_style_luminance(client, tiny_weights):
    img = photo(24, 16, seed=2)
    original, full = np.asarray(img, dtype=np.float64), full_style(tiny_weights, img)
    out = stylized(client, img, preserve_color="true")
    # Where the recombined colour fell outside sRGB the result is clipped: compare the other pixels.
    inside = ((out > 0) & (out < 255)).all(-1)
    assert inside.mean() > 0.5
    got, photo_ycc, style_ycc = bt601_ycbcr(out)[inside], bt601_ycbcr(original)[inside], bt601_ycbcr(full)[inside]
    assert np.abs(got[:, 0] - style_ycc[:, 0]).max() <= 1  # luminance of the style
    assert np.abs(got[:, 1:] - photo_ycc[:, 1:]).max() <= 1  # chroma of the photo
    assert np.abs(style_ycc[:, 0] - photo_ycc[:, 0]).mean() > 10 and np.abs(out - full).mean() > 10


def test_stylize_max_side_keeps_aspect(client):
    body = post_image(client, "/stylize", png_bytes(40, 20), style="mosaic", max_side="20").get_json()
    assert (body["width"], body["height"]) == (20, 10)


@pytest.mark.parametrize("max_side, size", [("64", (40, 20)), ("20", (20, 10))])
def test_stylize_keeps_alpha(client, max_side, size):
    img = photo(40, 20).convert("RGBA")
    a = np.zeros((20, 40), np.uint8)
    a[:, 20:] = 255  # the right half opaque
    img.putalpha(Image.fromarray(a))
    body = post_image(client, "/stylize", encode(img), style="mosaic", max_side=max_side).get_json()
    out = decode_png(base64.b64decode(body["image"]))
    assert out.mode == "RGBA" and out.size == size
    alpha = np.asarray(out)[..., 3].astype(int)
    w = size[0]
    assert alpha[:, :w * 2 // 5].max() < 30 and alpha[:, w * 3 // 5:].min() > 225


@pytest.mark.parametrize("fields, status, says", [
    ({"style": "../weights/srgan"}, 400, "mosaic"),
    ({"style": "picasso"}, 400, "mosaic"),
    ({}, 400, "mosaic"),
    ({"style": "mosaic", "strength": "1.5"}, 400, "0.0 to 1.0"),
    ({"style": "mosaic", "preserve_color": "maybe"}, 400, "true or false"),
    ({"style": "mosaic", "max_side": "0"}, 400, None),
])
def test_stylize_bad_options(client, fields, status, says):
    assert_error(post_image(client, "/stylize", png_bytes(8, 8), **fields), status, says=says)
