"""The fast PNG writer: exact pixels back in any decoder mode, sizes close to Pillow's."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgapi.images import encode_png, png_bytes

VAL = Path(__file__).resolve().parent / "data" / "sr_val"


def decode(data):
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.mode, np.asarray(im)


@pytest.mark.parametrize("shape, mode", [((1, 1, 3), "RGB"), ((5, 7, 3), "RGB"), ((37, 64, 4), "RGBA"),
                                         ((20, 30), "L"), ((64, 1, 3), "RGB"), ((1, 90, 4), "RGBA")])
def test_every_pixel_comes_back_exactly(shape, mode):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got_mode, got = decode(png_bytes(a))
    assert got_mode == mode
    np.testing.assert_array_equal(got, a)


def test_wraparound_differences_between_rows_decode_exactly():
    a = np.zeros((4, 3, 3), np.uint8)
    a[1::2] = 255  # every difference to the row above is +-255, i.e. wraps modulo 256
    np.testing.assert_array_equal(decode(png_bytes(a))[1], a)


def test_encode_png_keeps_the_alpha_channel():
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8), "RGB")
    alpha = Image.fromarray(np.tile(np.arange(11, dtype=np.uint8) * 20, (9, 1)), "L")
    mode, got = decode(encode_png(rgb, alpha))
    assert mode == "RGBA"
    np.testing.assert_array_equal(got[..., :3], np.asarray(rgb))
    np.testing.assert_array_equal(got[..., 3], np.asarray(alpha))


def test_photos_stay_within_a_tenth_of_pillows_level_1_size():
    for path in sorted(VAL.glob("*.png"))[:4]:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        ours, pillow = len(encode_png(rgb)), len(encode_png(rgb, compress_level=1))
        assert ours <= 1.1 * pillow, (path.name, ours, pillow)
        np.testing.assert_array_equal(decode(encode_png(rgb))[1], np.asarray(rgb))


@pytest.mark.parametrize("shape", [(0, 4, 3), (4, 4, 2), (4, 4, 5)])
def test_impossible_shapes_are_refused(shape):
    with pytest.raises(ValueError):
        png_bytes(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("use_zlib_ng", [True, False])
def test_large_images_compressed_in_parallel_parts_decode_exactly(monkeypatch, use_zlib_ng):
    import zlib

    from imgapi import images
    if not use_zlib_ng:
        monkeypatch.setattr(images, "_zlib", zlib)  # the standard library's deflate, where zlib-ng is missing
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:401, 0:333]  # > 256 kB, odd row count: a smooth gradient with a little noise
    a = ((yy + xx)[..., None] // 3 + rng.integers(0, 2, (401, 333, 3))).astype(np.uint8)
    assert a.size + len(a) >= images._PARALLEL_MIN_BYTES
    data = png_bytes(a)
    np.testing.assert_array_equal(decode(data)[1], a)
    assert len(data) < a.size / 2  # photo-like rows compress
