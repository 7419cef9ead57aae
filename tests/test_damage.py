"""imgapi/damage.py: the JPEG quality read from a file's quantisation tables, the noise measured from its
pixels, and the damage level the ``real`` model takes, from them."""
import io

import numpy as np
import pytest
from PIL import Image

from imgapi import damage
from tests.helpers import encode, photo

QUALITIES = range(30, 96, 5)


def opened(data):
    """The PIL image of ``data`` as an upload is opened: its header read, no pixel decoded."""
    return Image.open(io.BytesIO(data))


def gradient(side=256):
    """A smooth grey ramp from 40 to 200 (far from clipping), uint8 ``(side, side, 3)``."""
    y, x = np.mgrid[0:side, 0:side]
    g = 40 + 160 * (x + y) / (2 * (side - 1))
    return np.repeat(g[..., None], 3, axis=2)


@pytest.mark.parametrize("quality", QUALITIES)
def test_the_quality_pillow_saved_at_is_read_back_from_the_tables(quality):
    assert abs(damage.jpeg_quality(opened(encode(photo(64, 48), "JPEG", quality=quality))) - quality) <= 5


def test_the_quality_of_a_greyscale_or_progressive_jpeg_is_read_too():
    data = encode(photo(64, 48).convert("L"), "JPEG", quality=50)  # one table
    assert abs(damage.jpeg_quality(opened(data)) - 50) <= 5
    data = encode(photo(64, 48), "JPEG", quality=65, progressive=True)
    assert abs(damage.jpeg_quality(opened(data)) - 65) <= 5


@pytest.mark.parametrize("quality", QUALITIES)
def test_the_quality_opencv_saved_at_is_read_back_from_the_tables(quality):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    ok, buf = cv2.imencode(".jpg", np.asarray(photo(64, 48))[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    assert abs(damage.jpeg_quality(opened(buf.tobytes())) - quality) <= 5


def test_an_image_that_is_not_a_jpeg_has_no_quality():
    assert damage.jpeg_quality(opened(encode(photo(16, 16), "PNG"))) is None
    assert damage.jpeg_quality(opened(encode(photo(16, 16), "WEBP", quality=30))) is None
    assert damage.jpeg_quality(photo(16, 16)) is None  # pixels made in memory


@pytest.mark.parametrize("sigma", [5.0, 10.0])
def test_the_noise_added_to_a_smooth_image_is_measured_within_15_percent(sigma):
    rng = np.random.default_rng(int(sigma))
    noise = rng.normal(0, sigma, (256, 256, 1))  # grey: the same on every channel, so the luma's sigma
    noisy = np.clip(np.rint(gradient() + noise), 0, 255).astype(np.uint8)
    assert damage.noise_sigma(noisy) == pytest.approx(sigma, rel=0.15)
    assert damage.noise_sigma(noisy[..., 0]) == pytest.approx(sigma, rel=0.15)  # a grey (H, W) array alike


def test_a_clean_smooth_image_measures_almost_no_noise():
    assert damage.noise_sigma(np.rint(gradient()).astype(np.uint8)) < 1.0
    assert damage.noise_sigma(np.zeros((2, 50, 3), np.uint8)) == 0.0  # too small to measure


def test_the_level_grows_with_the_damage_and_stays_from_0_to_1():
    by_quality = [damage.level(q, 0.0) for q in range(1, 101)]
    assert all(a >= b for a, b in zip(by_quality, by_quality[1:]))  # worse quality, higher level
    by_noise = [damage.level(None, s) for s in np.linspace(-5, 60, 131)]
    assert all(a <= b for a, b in zip(by_noise, by_noise[1:]))  # more noise, higher level
    assert all(0.0 <= v <= 1.0 for v in by_quality + by_noise)
    assert damage.level(None, 0.0) == damage.level(100, 0.0) == damage.level(damage.CLEAN_QUALITY, 0.0) == 0.0
    assert damage.level(damage.WORST_QUALITY) == damage.level(5) == damage.level(None, 200.0) == 1.0
    assert 0.0 < damage.level(70) < 1.0 and 0.0 < damage.level(None, 8.0) < 1.0
    assert damage.level(70, 200.0) == 1.0 and damage.level(20, 0.0) == 1.0  # the larger of the two counts
