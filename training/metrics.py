"""Image quality metrics, as in BasicSR's ``psnr_ssim.py`` (the evaluation protocol of docs/data.md).

Inputs are ``HxWx3`` uint8 RGB arrays (values 0..255). With ``test_y_channel`` the Y channel of
ITU-R BT.601 (16..235) is compared, after cropping ``crop_border`` pixels from every side.
"""
import numpy as np
from PIL import Image


def rgb_to_y(img):
    """BT.601 luma of an ``HxWx3`` RGB array in 0..255, as float64 in 16..235."""
    img = img.astype(np.float64)
    return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def _prepare(img1, img2, crop_border, test_y_channel):
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")
    if test_y_channel:
        img1, img2 = rgb_to_y(img1), rgb_to_y(img2)
    else:
        img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    if crop_border:
        img1 = img1[crop_border:-crop_border, crop_border:-crop_border]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border]
    return img1, img2


def psnr(img1, img2, crop_border=4, test_y_channel=True):
    """PSNR in dB between two uint8 RGB arrays (peak 255); ``inf`` when identical."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def _gaussian_window(size=11, sigma=1.5):
    x = np.arange(size) - size // 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(img, window):
    from numpy.lib.stride_tricks import sliding_window_view
    return np.einsum("ijkl,kl->ij", sliding_window_view(img, window.shape), window)


def _ssim_channel(a, b):
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = _gaussian_window()
    mu1, mu2 = _filter_valid(a, w), _filter_valid(b, w)
    s11 = _filter_valid(a * a, w) - mu1 ** 2
    s22 = _filter_valid(b * b, w) - mu2 ** 2
    s12 = _filter_valid(a * b, w) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s11 + s22 + c2))
    return ssim_map.mean()


def ssim(img1, img2, crop_border=4, test_y_channel=True):
    """SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5) in [-1, 1], 1 when identical."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel)
    if a.ndim == 2:
        return float(_ssim_channel(a, b))
    return float(np.mean([_ssim_channel(a[..., i], b[..., i]) for i in range(a.shape[2])]))


def degrade(hr, scale=4):
    """The protocol's degradation: crop HR (PIL RGB) to a multiple of ``scale``, Pillow BICUBIC down.

    Returns ``(hr_cropped, lr)`` as PIL images.
    """
    w, h = hr.width - hr.width % scale, hr.height - hr.height % scale
    hr = hr.crop((0, 0, w, h))
    return hr, hr.resize((w // scale, h // scale), Image.BICUBIC)


def bicubic_up(lr, scale=4):
    """The protocol's baseline: Pillow BICUBIC upscale of a PIL image by ``scale``."""
    return lr.resize((lr.width * scale, lr.height * scale), Image.BICUBIC)


def gradient_energy(img, crop_border=4):
    """Mean squared horizontal plus vertical neighbour difference of the BT.601 Y channel of an ``HxWx3``
    uint8 RGB array (units: Y levels squared), after cropping ``crop_border`` pixels from every side.

    The detail figure of docs/data.md is the summed energy of a model's outputs over that of the true
    images: bicubic's is well under 1 (blur), a GAN's near 1; over 1 means added noise or ringing."""
    y = rgb_to_y(img)
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return float(np.mean(np.diff(y, axis=1) ** 2) + np.mean(np.diff(y, axis=0) ** 2))


def grid_amplitude(img, period=4, crop_border=4):
    """How strongly an ``HxWx3`` uint8 RGB picture repeats a pattern tied to a ``period``-px grid, in Y levels.

    A 4x network that ends in sub-pixel convolutions can draw the same small offset at each of the 16 positions
    of every 4x4 output block: a dot grid over skies and grass (the checkerboard of Aitken et al. 2017). Each
    pixel's high-frequency part (Y minus the mean of the ``period`` x ``period`` box around it, which removes
    any pattern of that period exactly) is averaged over all pixels at the same position in the grid; the
    figure is the RMS of those ``period ** 2`` means about their mean. Image content averages out, a grid does
    not: a true photo scores a few tenths of a level at most (more where it was itself saved as JPEG), and a
    grid of amplitude ``a`` adds about ``a``."""
    y = rgb_to_y(img)
    c = np.pad(np.cumsum(np.cumsum(y, 0), 1), ((1, 0), (1, 0)))
    p, half = period, period // 2
    box = (c[p:, p:] - c[:-p, p:] - c[p:, :-p] + c[:-p, :-p]) / p ** 2  # box[i, j]: mean of y[i:i+p, j:j+p]
    high = y[half:half + box.shape[0], half:half + box.shape[1]] - box  # high[i, j] belongs to y[i+half, j+half]
    start = max(crop_border - half, 0)
    start += (-(start + half)) % p  # the first row and column at grid position 0 of the picture
    high = high[start:, start:]
    rows, cols = high.shape[0] // p * p, high.shape[1] // p * p
    if rows < 2 * p or cols < 2 * p:
        raise ValueError(f"a picture of {img.shape[1]}x{img.shape[0]} is too small for a {p}-px grid figure")
    means = high[:rows, :cols].reshape(rows // p, p, cols // p, p).mean(axis=(0, 2))
    return float(np.sqrt(np.mean((means - means.mean()) ** 2)))
