"""Decoding uploads into sRGB(A) and encoding results as PNG.

Every way an upload can be wrong ends here as an ``ApiError`` (413 for too many pixels, read
from the header before any pixel is decoded; 415 for anything that is not a decodable image of
an accepted format), so the engine only ever sees an 8-bit RGB image and an optional alpha.
"""
import io
import struct
import threading
import warnings
import zlib

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from imgapi.errors import ApiError

try:  # the same API, 2-3x faster deflate (SIMD chosen at run time); optional
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - the standard library's zlib
    _zlib = zlib

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
        if img.getexif().get(0x0112, 1) == 1:  # no rotation or mirroring: no copy
            return img
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


def encode_png(rgb, alpha=None, compress_level=None):
    """PNG bytes of ``rgb`` (and ``alpha`` as its alpha channel when given).

    By default (``compress_level=None``) the fast writer :func:`png_bytes`: every row "Up"-filtered and
    Huffman-coded without string matching. On a 512x512 stylized photo that is 10 ms for 380 kB against
    Pillow's 30 ms for 364 kB at zlib level 1 (its per-row adaptive filter search is half of its time);
    docs/performance.md. An int level encodes with Pillow (adaptive filters, full deflate): 6 is worth its
    time only to fit a size limit.
    """
    if compress_level is None:
        a = np.asarray(rgb.convert("RGB") if rgb.mode != "RGB" else rgb)
        if alpha is not None:
            a = np.dstack([a, np.asarray(alpha.convert("L") if alpha.mode != "L" else alpha)])
        return png_bytes(a)
    img = rgb
    if alpha is not None:
        img = rgb.copy()
        img.putalpha(alpha)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def png_bytes(a):
    """PNG bytes of an 8-bit image array ``a``: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA.

    Each row is stored with PNG's "Up" filter (the byte-wise difference to the row above, which leaves
    small numbers on photos) and compressed with zlib's Huffman-only strategy: no search for repeated
    strings, which photos hardly have, so it runs at several times Pillow's speed for a few per cent more
    bytes. Without string matching no part of the stream refers to another, so the rows are compressed in
    :data:`DEFLATE_THREADS` parts at once (zlib releases the GIL) and joined: one valid zlib stream.
    zlib-ng (PyPI ``zlib-ng``, SIMD chosen at run time) is used when installed, else the standard zlib.
    """
    a = np.ascontiguousarray(a, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    h, w, c = a.shape
    if h < 1 or w < 1 or c not in (1, 3, 4):
        raise ValueError(f"cannot write a PNG of shape {a.shape}")
    flat = a.reshape(h, w * c)
    rows = np.empty((h, w * c + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up
    rows[0, 1:] = flat[0]  # the row above the first is zeros
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's does
    color_type = {1: 0, 3: 2, 4: 6}[c]
    return b"".join([b"\x89PNG\r\n\x1a\n",
                     _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)),
                     _chunk(b"IDAT", _huffman_zlib(rows)), _chunk(b"IEND", b"")])


DEFLATE_THREADS = 2
_PARALLEL_MIN_BYTES = 1 << 18
_pool = None
_pool_lock = threading.Lock()


def _deflate_raw(buf, last):
    z = _zlib.compressobj(1, zlib.DEFLATED, -15, 8, zlib.Z_HUFFMAN_ONLY)
    # A sync flush ends a part on a byte boundary with no final-block flag, so the next part follows it.
    return z.compress(buf) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _huffman_zlib(rows):
    """A zlib stream (RFC 1950) of ``rows`` (2-D uint8), Huffman-only, its row ranges compressed in parallel."""
    global _pool
    data = memoryview(rows).cast("B")
    parts = DEFLATE_THREADS if rows.nbytes >= _PARALLEL_MIN_BYTES else 1
    bounds = [len(rows) * i // parts * rows.shape[1] for i in range(parts + 1)]
    pieces = [data[b:e] for b, e in zip(bounds, bounds[1:])]
    if parts == 1:
        body = [_deflate_raw(pieces[0], True)]
    else:
        with _pool_lock:
            if _pool is None:
                from concurrent.futures import ThreadPoolExecutor
                _pool = ThreadPoolExecutor(DEFLATE_THREADS, thread_name_prefix="png")
        futures = [_pool.submit(_deflate_raw, p, i == parts - 1) for i, p in enumerate(pieces)]
        body = [f.result() for f in futures]
    return b"".join([b"\x78\x01", *body, struct.pack(">I", zlib.adler32(data))])


def png_size_bound(width, height, channels):
    """Upper bound of a PNG's size in bytes: raw samples, filter bytes, zlib and chunk overhead."""
    raw = height * (width * channels + 1)
    return raw + raw // 1000 * 5 + 1024
