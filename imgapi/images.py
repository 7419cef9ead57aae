"""Decoding uploads into sRGB(A) and encoding results as PNG.

Every way an upload can be wrong ends here as an ``ApiError`` (413 for too many pixels, read
from the header before any pixel is decoded; 415 for anything that is not a decodable image of
an accepted format), so the engine only ever sees an 8-bit RGB image and an optional alpha.
"""
import io
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from imgapi.errors import ApiError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
_SRGB = ImageCms.createProfile("sRGB")


def _check_pixels(width, height, max_pixels):
    if width < 1 or height < 1:
        raise ApiError(415, "invalid_image", f"the image is {width}x{height}: it has no pixels")
    if width * height > max_pixels:
        raise ApiError(413, "too_many_pixels",
                       f"the image is {width}x{height} = {width * height} pixels; "
                       f"this route accepts at most {max_pixels} pixels")


def decode(data, max_pixels):
    """Bytes of an upload -> ``(rgb, alpha)``: an 8-bit sRGB ``RGB`` image and an ``L`` alpha or None.

    EXIF orientation is applied, an embedded ICC profile is converted to sRGB, and palette,
    grayscale, CMYK, 16-bit and float images are mapped to 8-bit. Only the first frame of an
    animation is used.
    """
    if not data:
        raise ApiError(400, "empty_image", "the uploaded image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "too_many_pixels",
                       f"the image declares far more pixels than the {max_pixels} allowed") from None
    except UnidentifiedImageError:
        raise ApiError(415, "unsupported_image",
                       "the upload is not an image in an accepted format "
                       f"({', '.join(ACCEPTED_FORMATS)})") from None
    except Exception as exc:  # Pillow raises many types on hostile headers
        raise ApiError(415, "invalid_image", f"the image header could not be read ({type(exc).__name__})") from None
    _check_pixels(img.width, img.height, max_pixels)
    try:
        img.seek(0)
        img.load()
        img = _orient(img)
        rgb, alpha = _to_srgb(img)
    except ApiError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data: never a 500
        raise ApiError(415, "invalid_image",
                       f"the {img.format} image could not be decoded ({type(exc).__name__}: "
                       f"{str(exc)[:120]})") from None
    return rgb, alpha


def _orient(img):
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        return img


def _to_8bit(img):
    """16-bit and float single-channel modes -> ``L``."""
    a = np.asarray(img)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
    elif a.dtype != np.uint8:
        a = a.astype(np.float64) / (257.0 if a.size and a.max() > 255 or img.mode.startswith("I;16") else 1.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _to_srgb(img):
    icc = img.info.get("icc_profile")
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        img, mode = _to_8bit(img), "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    alpha = None
    if has_alpha:
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        base = rgba.convert("RGB") if mode != "LA" else img.convert("L")
    else:
        base = img
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if base.mode not in ("RGB", "L", "CMYK"):
                base = base.convert("RGB")
            base = ImageCms.profileToProfile(base, src, _SRGB, outputMode="RGB")
        except Exception:  # a corrupt or mismatched profile: assume the pixels are sRGB
            pass
    return base.convert("RGB"), alpha


def encode_png(rgb, alpha=None, compress_level=1):
    """PNG bytes of ``rgb`` (and ``alpha`` as its alpha channel when given).

    zlib level 1 by default: on a 4x upscale it encodes about 3x faster than Pillow's default 6 for
    about 15-25 % more bytes (docs/performance.md); 6 is worth its time only to fit a size limit.
    """
    img = rgb
    if alpha is not None:
        img = rgb.copy()
        img.putalpha(alpha)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def png_size_bound(width, height, channels):
    """Upper bound of a PNG's size in bytes: raw samples, filter bytes, zlib and chunk overhead."""
    raw = height * (width * channels + 1)
    return raw + raw // 1000 * 5 + 1024
