"""training/metrics.py against an independent implementation: scikit-image's PSNR and SSIM, computed on
scikit-image's own BT.601 Y channel (16..235) with the same 4-pixel border cropped (docs/data.md)."""
import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.helpers import photo
from training import metrics

BORDER = 4


def pair(noise, seed=0, size=(40, 32)):
    """An RGB photo and a copy with Gaussian noise of ``noise`` grey levels, both ``HxWx3`` uint8."""
    clean = np.asarray(photo(*size, seed=seed))
    rng = np.random.default_rng(seed + 1)
    noisy = np.clip(np.rint(clean + rng.normal(0, noise, clean.shape)), 0, 255).astype(np.uint8)
    return clean, noisy


def y_cropped(img):
    return rgb2ycbcr(img)[..., 0][BORDER:-BORDER, BORDER:-BORDER]


@pytest.mark.parametrize("noise, seed", [(1, 0), (5, 1), (20, 2), (60, 3)])
def test_psnr_on_y_matches_scikit_image(noise, seed):
    a, b = pair(noise, seed)
    expected = peak_signal_noise_ratio(y_cropped(a), y_cropped(b), data_range=255)
    assert metrics.psnr(a, b, crop_border=BORDER, test_y_channel=True) == pytest.approx(expected, abs=1e-9)


def test_psnr_on_rgb_without_border_matches_scikit_image():
    a, b = pair(10)
    expected = peak_signal_noise_ratio(a, b, data_range=255)
    assert metrics.psnr(a, b, crop_border=0, test_y_channel=False) == pytest.approx(expected, abs=1e-9)
    assert metrics.psnr(a, a) == float("inf")


@pytest.mark.parametrize("noise, seed", [(1, 0), (5, 1), (20, 2), (60, 3)])
def test_ssim_on_y_matches_scikit_image(noise, seed):
    a, b = pair(noise, seed)
    # Wang et al.'s settings: 11x11 Gaussian window of sigma 1.5 (scikit-image truncates at 3.5 sigma:
    # radius 5), population covariances, K1 = 0.01, K2 = 0.03, the mean over the valid part of the map.
    expected = structural_similarity(y_cropped(a), y_cropped(b), data_range=255, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(a, b, crop_border=BORDER, test_y_channel=True) == pytest.approx(expected, abs=1e-6)
    assert metrics.ssim(a, a) == pytest.approx(1.0)


def _smooth_photo(side=128, seed=0):
    """A photo-like picture without a grid: the test photo, blurred."""
    from PIL import ImageFilter
    return np.asarray(photo(side, side, seed).filter(ImageFilter.GaussianBlur(2)))


@pytest.mark.parametrize("shift", [(0, 0), (1, 2), (3, 1)])
def test_the_grid_figure_finds_a_dot_grid_of_4px_blocks_wherever_the_picture_starts(shift):
    clean = _smooth_photo()
    checker = np.where((np.add.outer(np.arange(128), np.arange(128)) // 2) % 2 == 0, 2.0, -2.0)  # period 4, +-2
    gridded = np.clip(clean + np.roll(checker, shift, (0, 1))[..., None], 0, 255).astype(np.uint8)
    assert metrics.grid_amplitude(clean) < 0.1
    assert metrics.grid_amplitude(gridded) == pytest.approx(2.0 * 219 / 255, rel=0.1)  # +-2 on RGB is +-1.72 on Y


def test_the_grid_figure_tells_a_nearest_neighbour_upscale_from_a_bicubic_one():
    from PIL import Image
    small = Image.fromarray(_smooth_photo(32, seed=1))
    blocky = np.asarray(small.resize((128, 128), Image.NEAREST))
    smooth = np.asarray(small.resize((128, 128), Image.BICUBIC))
    assert metrics.grid_amplitude(blocky) > 5 * metrics.grid_amplitude(smooth)
    with pytest.raises(ValueError, match="too small"):
        metrics.grid_amplitude(blocky[:10, :10])
