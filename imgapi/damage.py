"""How damaged an upload is: the JPEG quality it was saved at and the noise it carries, as one level.

The ``real`` SR model (docs/models.md) takes this level as a fourth input plane: 0 for a clean photo, up to 1
for one saved at JPEG quality 35 or worse, or as noisy as luma sigma 15 grey levels. Training computes the same
level from each degraded patch with these same functions (``training.degrade``), so what the network learnt
to expect is what the server measures. ``denoise`` (docs/api.md) replaces the measured level.

* JPEG quality: a JPEG carries its quantisation tables. Encoders that follow the IJG's scaling (libjpeg,
  libjpeg-turbo, Pillow, OpenCV, most cameras' and browsers' "quality") write the standard tables of Annex K
  scaled by the quality; the estimate is the quality whose scaled tables are nearest to the file's.
* Noise: Immerkaer's mask (1996, "Fast noise variance estimation"), a 3x3 difference of Laplacians that
  cancels planes and ramps, over the grey (BT.601 luma) image; the median of its absolute response (robust to
  edges and texture, which a mean counts as noise) over that of Gaussian noise. Fine texture still adds to
  it: a clean, shrunk photo measures 0.3 to 3 grey levels, a very busy one 8.
"""
import numpy as np

# ITU T.81 Annex K, natural (row-major) order, as Pillow's ``Image.quantization`` gives them.
STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
STD_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float64)

CLEAN_QUALITY = 95   # at or above it a JPEG counts as clean (level 0) ...
WORST_QUALITY = 35   # ... and at or below it as damaged as the level goes (1)
NOISE_FLOOR = 1.0    # luma sigma (grey levels) at which noise starts to count ...
NOISE_CEILING = 15.0  # ... and the sigma that is level 1


def ijg_table(std, quality):
    """``std`` scaled to ``quality`` (1..100) as libjpeg's ``jpeg_set_quality`` does (baseline: at most 255)."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # integers, as libjpeg computes it
    return np.clip(np.floor((std * scale + 50) / 100), 1, 255)


_TABLES = {q: (ijg_table(STD_LUMA, q), ijg_table(STD_CHROMA, q)) for q in range(1, 101)}


def jpeg_quality(img):
    """The IJG quality (1..100) whose tables are nearest to a decoded JPEG's (PIL image opened from the file,
    its ``quantization`` still there), or None for an image that is not a JPEG. Tables no IJG quality makes
    (a camera's own) get the quality nearest in the mean: still the right order of damage."""
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables:
        return None
    luma = np.asarray(tables[0], dtype=np.float64)
    chroma = np.asarray(tables[1], dtype=np.float64) if 1 in tables else None
    if luma.size != 64 or (luma < 1).any() or (chroma is not None and (chroma < 1).any()):
        return None  # not a baseline table (a hostile or broken file): no JPEG quality to read

    def error(q):
        lt, ct = _TABLES[q]
        e = np.abs(np.log(luma) - np.log(lt)).mean()
        return e + (np.abs(np.log(chroma) - np.log(ct)).mean() if chroma is not None and chroma.size == 64 else 0)

    return min(range(1, 101), key=lambda q: (error(q), -q))


def noise_sigma(rgb):
    """The estimated standard deviation of the noise in the luma of ``rgb`` (uint8 or float 0..255
    ``(H, W, 3)`` array, or ``(H, W)`` grey), in grey levels; 0 for an image smaller than 3x3."""
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114])
    h, w = a.shape
    if h < 3 or w < 3:
        return 0.0
    # [[1, -2, 1], [-2, 4, -2], [1, -2, 1]], written out as nine shifted views of the grey image
    c = lambda dy, dx: a[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx]  # noqa: E731
    r = (c(-1, -1) + c(-1, 1) + c(1, -1) + c(1, 1) - 2 * (c(-1, 0) + c(1, 0) + c(0, -1) + c(0, 1)) + 4 * c(0, 0))
    # Gaussian noise of sigma s gives a response of sigma 6 s (the mask's norm), whose median magnitude is
    # 0.6745 of that
    return float(np.median(np.abs(r)) / (0.6745 * 6))


def level(quality=None, sigma=0.0):
    """The damage level in [0, 1]: the larger of the JPEG's (``quality`` None: not a JPEG) and the noise's."""
    from_jpeg = 0.0 if quality is None else (CLEAN_QUALITY - quality) / (CLEAN_QUALITY - WORST_QUALITY)
    from_noise = (sigma - NOISE_FLOOR) / (NOISE_CEILING - NOISE_FLOOR)
    return float(min(1.0, max(0.0, from_jpeg, from_noise)))
