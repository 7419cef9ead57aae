"""Any painting as a style: POST /stylize with ``style_image``, presets, the statistics cache and the
whitening-colouring maths, on the tiny traced universal networks of ``tools/fixtures.py``."""
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from imgapi.styles import precision
from imgapi.universal import (LEVELS, StatsCache, covariance_stats, load_stats, save_stats, style_statistics,
                              whiten_colour)
from tests.helpers import encode, photo, png_bytes
from tools.fixtures import tiny_painting


def post(client, photo_bytes, painting=None, **fields):
    body = {"image": (io.BytesIO(photo_bytes), "photo.png"), **fields}
    if painting is not None:
        body["style_image"] = (io.BytesIO(painting), "painting.png")
    return client.post("/stylize", data=body, content_type="multipart/form-data")


def result(resp):
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    img = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    return body, np.asarray(img)


def painting_png(seed=3):
    return encode(Image.fromarray(tiny_painting(seed=seed)))


def test_style_image_round_trip(client):
    body, img = result(post(client, png_bytes(30, 20), painting_png()))
    assert img.shape == (20, 30, 3)
    assert body["model"] == "universal" and body["style_image"] == StatsCache.key(painting_png())[:12]
    assert "style" not in body
    original = np.asarray(photo(30, 20))
    assert np.abs(img.astype(int) - original).mean() > 5  # restyled, not handed back


def test_a_different_painting_gives_a_different_picture(client):
    _, a = result(post(client, png_bytes(24, 24), painting_png(3)))
    _, b = result(post(client, png_bytes(24, 24), encode(Image.fromarray(255 - tiny_painting(seed=9)))))
    assert np.abs(a.astype(int) - b).mean() > 2


@pytest.mark.parametrize("fields, painting, code", [
    ({}, False, "missing_style"),
    ({"style": "mosaic"}, True, "style_conflict"),
])
def test_exactly_one_of_style_and_style_image(client, fields, painting, code):
    resp = post(client, png_bytes(), painting_png() if painting else None, **fields)
    assert resp.status_code == 400
    err = resp.get_json()["error"]
    assert err["code"] == code and "exactly one of" in err["message"] and "style_image" in err["message"]


def test_style_image_as_text_is_refused(client):
    resp = post(client, png_bytes(), style_image="starry.jpg")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_style_image"


def test_bad_style_image_is_415_naming_the_field(client):
    resp = post(client, png_bytes(), b"this is not a picture at all")
    assert resp.status_code == 415
    assert resp.get_json()["error"]["message"].startswith("style_image: ")


def test_oversized_style_image_is_413(client, config):
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    big = encode(Image.fromarray(noise))
    assert len(big) > config.max_upload_bytes
    resp = post(client, png_bytes(), big)
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "upload_too_large"
    assert "style_image" in resp.get_json()["error"]["message"]


def test_style_image_with_too_many_pixels_is_413(client, config):
    side = int(config.max_stylize_pixels ** 0.5) + 8
    flat = encode(Image.new("RGB", (side, side), (40, 90, 160)))
    resp = post(client, png_bytes(), flat)
    assert resp.status_code == 413 and resp.get_json()["error"]["code"] == "too_many_pixels"


def test_statistics_are_cached_by_the_paintings_bytes(app, client):
    cache = app.extensions["imgapi"]["universal"].cache
    _, first = result(post(client, png_bytes(20, 20, seed=1), painting_png()))
    assert (cache.misses, cache.hits) == (1, 0)
    _, second = result(post(client, png_bytes(20, 20, seed=1), painting_png()))
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    result(post(client, png_bytes(20, 20, seed=1), painting_png(seed=5)))
    assert cache.misses == 2


def test_cache_keeps_the_most_recent():
    cache, made = StatsCache(maxsize=2), []
    for key in ("a", "b", "a", "c", "b"):
        cache.get(key, lambda k=key: made.append(k) or k)
    assert made == ["a", "b", "c", "b"]  # "b" was the least recent when "c" came


def test_preset_is_listed_and_served_as_its_painting(client):
    styles = {s["name"]: s for s in client.get("/styles").get_json()["styles"]}
    assert styles["stripes"]["title"] == "Stripes" and styles["stripes"]["thumbnail"]
    body, preset = result(post(client, png_bytes(24, 16), style="stripes"))
    assert body["model"] == "universal" and body["style"] == "stripes"
    _, uploaded = result(post(client, png_bytes(24, 16), painting_png()))
    np.testing.assert_array_equal(preset, uploaded)


def test_strength_zero_is_the_photo_and_preserve_color_keeps_its_chroma(client):
    _, same = result(post(client, png_bytes(24, 16), painting_png(), strength="0"))
    np.testing.assert_array_equal(same, np.asarray(photo(24, 16)))
    _, kept = result(post(client, png_bytes(24, 16), painting_png(), preserve_color="true"))
    _, free = result(post(client, png_bytes(24, 16), painting_png()))

    def chroma_error(img):
        a, b = img.astype(float), np.asarray(photo(24, 16)).astype(float)
        return np.abs((a - a.mean(2, keepdims=True)) - (b - b.mean(2, keepdims=True))).mean()
    assert chroma_error(kept) < chroma_error(free)


def test_max_side_shrinks_the_result(client):
    _, img = result(post(client, png_bytes(40, 20), painting_png(), max_side="20"))
    assert img.shape == (10, 20, 3)


def test_missing_universal_model_is_503(tiny_weights, tmp_path):
    import json
    import shutil

    from imgapi.app import create_app
    from imgapi.config import Config
    shutil.copytree(tiny_weights, tmp_path / "w")
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    del manifest["models"]["universal/decoder"]
    (tmp_path / "w" / "manifest.json").write_text(json.dumps(manifest))
    client = create_app(Config(weights_dir=tmp_path / "w", torch_threads=1)).test_client()
    resp = post(client, png_bytes(), painting_png())
    assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "model_missing"


def test_whitening_and_colouring_give_the_paintings_mean_and_covariance():
    gen = torch.Generator().manual_seed(0)
    content = torch.randn(1, 6, 20, 20, generator=gen) * 3 + 1
    mixing = torch.randn(6, 6, generator=gen)
    painting = (mixing @ torch.randn(6, 900, generator=gen)).reshape(1, 6, 30, 30) + 5
    mean, vals, vecs = covariance_stats(painting)
    colouring = (vecs @ torch.diag(vals.sqrt()) @ vecs.T).float().numpy()
    out = whiten_colour(content, mean.float().numpy(), colouring, 1.0)
    out_mean, out_vals, out_vecs = covariance_stats(out)
    np.testing.assert_allclose(out_mean.numpy(), mean.numpy(), atol=1e-3)
    cov = lambda v, e: (e @ torch.diag(v) @ e.T).numpy()  # noqa: E731
    np.testing.assert_allclose(cov(out_vals, out_vecs), cov(vals, vecs), rtol=1e-3, atol=1e-3)
    half = whiten_colour(content, mean.float().numpy(), colouring, 0.5)
    torch.testing.assert_close(half, 0.5 * out + 0.5 * content)


def test_statistics_file_round_trip(tiny_weights, tmp_path):
    encoder = torch.jit.load(str(tiny_weights / "universal_encoder.pt"))
    stats = style_statistics(encoder, tiny_painting())
    save_stats(stats, tmp_path / "s.npz")
    back = load_stats(tmp_path / "s.npz")
    assert set(back) == set(LEVELS)
    for name in LEVELS:
        np.testing.assert_array_equal(back[name][1], stats[name][1])
    np.savez(tmp_path / "bad.npz", relu1_1_mean=np.zeros(3))
    with pytest.raises(ValueError, match="lack"):
        load_stats(tmp_path / "bad.npz")


@pytest.mark.parametrize("size", [(1, 1), (4, 4), (8, 20), (20, 8), (9, 17)])
def test_tiny_photos_are_stylized_at_their_size(client, size):
    w, h = size
    _, img = result(post(client, png_bytes(w, h), painting_png()))
    assert img.shape == (h, w, 3)


def test_the_universal_model_has_a_largest_working_size(client, config, monkeypatch):
    import imgapi.routes
    monkeypatch.setattr(imgapi.routes, "UNIVERSAL_MAX_SIDE", 24)
    _, img = result(post(client, png_bytes(40, 30), painting_png(), max_side="32"))
    assert img.shape == (18, 24, 3)
    body, network = result(post(client, png_bytes(40, 30), style="mosaic", max_side="32"))
    assert network.shape == (24, 32, 3) and body["model"] == "style/mosaic"


def test_depth_is_the_deepest_level_restyled_and_the_manifest_chooses_it(tiny_weights, tmp_path):
    import json
    import shutil

    from imgapi.app import create_app
    from imgapi.config import Config
    from imgapi.universal import stylize_universal
    encoder = torch.jit.load(str(tiny_weights / "universal_encoder.pt"))
    decoder = torch.jit.load(str(tiny_weights / "universal_decoder.pt"))
    stats = style_statistics(encoder, tiny_painting())
    rgb = np.asarray(photo(32, 24))
    # The server's precision (bf16 where the CPU has bf16 units), which the served picture is compared with.
    outs = [stylize_universal(encoder, decoder, rgb, stats, depth=d, precision=precision()) for d in (1, 2, 3, 4)]
    assert all(o.shape == rgb.shape for o in outs)
    assert all(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(outs, outs[1:]))
    shutil.copytree(tiny_weights, tmp_path / "w")
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    manifest["models"]["universal/decoder"]["depth"] = 2
    (tmp_path / "w" / "manifest.json").write_text(json.dumps(manifest))
    client = create_app(Config(weights_dir=tmp_path / "w", torch_threads=1)).test_client()
    _, served = result(post(client, encode(photo(32, 24)), painting_png()))
    np.testing.assert_array_equal(served, outs[1])


def test_detail_brings_back_the_photos_finest_features_and_the_manifest_chooses_it(tiny_weights, tmp_path):
    import json
    import shutil

    from imgapi.app import create_app
    from imgapi.config import Config
    from imgapi.universal import stylize_universal
    encoder = torch.jit.load(str(tiny_weights / "universal_encoder.pt"))
    decoder = torch.jit.load(str(tiny_weights / "universal_decoder.pt"))
    stats = style_statistics(encoder, tiny_painting())
    rgb = np.asarray(photo(32, 24))
    none, half, full = (stylize_universal(encoder, decoder, rgb, stats, depth=3, detail=d, precision=precision())
                        for d in (0.0, 0.5, 1.0))
    # All of the photo's relu1_1: what is decoded from the deeper levels is dropped, as when restyling relu1_1 only.
    only_fine = stylize_universal(encoder, decoder, rgb, stats, depth=1, precision=precision())
    assert np.abs(full.astype(int) - only_fine).max() <= 1
    assert np.abs(half.astype(int) - none).mean() > 0.5 and np.abs(half.astype(int) - full).mean() > 0.5
    shutil.copytree(tiny_weights, tmp_path / "w")
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
    manifest["models"]["universal/decoder"].update(depth=3, detail=0.5)
    (tmp_path / "w" / "manifest.json").write_text(json.dumps(manifest))
    client = create_app(Config(weights_dir=tmp_path / "w", torch_threads=1)).test_client()
    _, served = result(post(client, encode(photo(32, 24)), painting_png()))
    np.testing.assert_array_equal(served, half)


def test_decoding_in_strips_gives_the_same_picture_as_one_call(tiny_weights):
    from imgapi.universal import decode_in_strips
    decoder = torch.jit.load(str(tiny_weights / "universal_decoder.pt"))
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for block, scale, width in ((decoder.block2, 2, 8), (decoder.block1, 1, 4), (decoder.block4, 2, 8)):
            f = torch.rand(1, width, 23, 19, generator=gen)
            whole = block(f)
            strips = decode_in_strips(block, f, scale, pixels=19 * 5)  # strips of 5 rows, 4 of context
            assert strips.shape == whole.shape
            torch.testing.assert_close(strips, whole, atol=1e-5, rtol=0)
            # Without the context rows, each strip's padding shows at the seams.
            assert (decode_in_strips(block, f, scale, pixels=19 * 5, halo=0) - whole).abs().max() > 1e-3
