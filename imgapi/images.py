"""Decoding uploads into sRGB(A), measuring how damaged they are, and encoding results as PNG.

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

from imgapi import damage
from imgapi.errors import ApiError

try:  # the same API, faster deflate and checksums (SIMD chosen at run time); optional
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - the standard library's zlib
    _zlib = zlib

try:  # libspng: a plain 8-bit PNG faster than Pillow decodes it (SIMD unfiltering); optional
    import pyspng
except ImportError:  # pragma: no cover - Pillow decodes every PNG
    pyspng = None

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
_SRGB = ImageCms.createProfile("sRGB")


def _check_pixels(width, height, max_pixels):
    if width < 1 or height < 1:
        raise ApiError(415, "invalid_image", f"the image is {width}x{height}: it has no pixels")
    if width * height > max_pixels:
        raise ApiError(413, "too_many_pixels",
                       f"the image is {width}x{height} = {width * height} pixels; "
                       f"this route accepts at most {max_pixels} pixels")


def decode(data, max_pixels, arrays=False):
    """Bytes of an upload -> ``(rgb, alpha)``: an 8-bit sRGB ``RGB`` image and an ``L`` alpha or None.

    EXIF orientation is applied, an embedded ICC profile is converted to sRGB, and palette,
    grayscale, CMYK, 16-bit and float images are mapped to 8-bit. Only the first frame of an
    animation is used. ``arrays=True`` returns numpy arrays instead: ``(H, W, 3)`` and ``(H, W)`` uint8.

    A plain 8-bit RGB(A) PNG (:func:`_plain_png_channels`) is decoded by libspng (PyPI ``pyspng``) when
    installed, faster than by Pillow (docs/performance.md). Anything it refuses goes to Pillow, which
    decides for every other upload.
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
    pixels = _decode_plain_png(data, img.size) if img.format == "PNG" else None
    if pixels is not None:
        rgb, alpha = pixels[..., :3], (pixels[..., 3] if pixels.shape[2] == 4 else None)
        if arrays:
            return rgb, alpha
        return Image.fromarray(rgb, "RGB"), None if alpha is None else Image.fromarray(alpha, "L")
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
    if arrays:
        return np.asarray(rgb), None if alpha is None else np.asarray(alpha)
    return rgb, alpha


# The noise of an upload is measured on its centre crop of at most this side: all of a 2-Mpx photo takes 55 to
# 100 ms of CPU, a 768 x 768 crop 13 ms (docs/api.md), and a median over 590,000 pixels is as steady.
NOISE_CROP = 768


def jpeg_quality(data):
    """The IJG quality (1..100) the upload ``data`` (bytes) was saved at, from the quantisation tables of its
    JPEG header (:func:`imgapi.damage.jpeg_quality`; no pixel is decoded), or None when it is not a JPEG."""
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            return damage.jpeg_quality(img)
    except Exception:  # not a JPEG (decode has already refused what is not an image)
        return None


def damage_level(data, rgb, denoise=None):
    """``(level, jpeg_quality)`` of an upload for a network conditioned on the damage level (``real``).

    ``data``: the upload's bytes (for the JPEG quality, None for another format); ``rgb``: its decoded pixels
    (PIL RGB or ``(H, W, 3)`` uint8). ``level`` (0..1) is ``denoise`` when given, else
    :func:`imgapi.damage.level` of that quality and of the luma noise measured on the centre
    ``NOISE_CROP`` x ``NOISE_CROP`` pixels (all of a smaller image).
    """
    quality = jpeg_quality(data)
    if denoise is not None:
        return float(denoise), quality
    width, height = size_of(rgb)
    x0, y0 = max(0, (width - NOISE_CROP) // 2), max(0, (height - NOISE_CROP) // 2)
    box = (x0, y0, min(width, x0 + NOISE_CROP), min(height, y0 + NOISE_CROP))
    crop = rgb[box[1]:box[3], box[0]:box[2]] if isinstance(rgb, np.ndarray) else np.asarray(rgb.crop(box))
    return damage.level(quality, damage.noise_sigma(crop)), quality


# Ancillary chunks that change nothing in what decode returns for an 8-bit RGB(A) PNG: Pillow keeps them
# in ``info`` only. Any other chunk (iCCP, eXIf, tRNS, text that may hold EXIF, APNG frames, a palette)
# sends the file to Pillow's path, which acts on it.
_PLAIN_CHUNKS = frozenset([b"IHDR", b"IDAT", b"IEND", b"sRGB", b"gAMA", b"cHRM", b"pHYs", b"tIME", b"bKGD",
                           b"sBIT"])
_MAX_PLAIN_CHUNKS = 10000  # libpng writes 8 KB IDAT chunks: 80 MB of them; more goes to Pillow


def _plain_png_channels(data):
    """3 or 4 when ``data`` is a non-interlaced 8-bit RGB or RGBA PNG of :data:`_PLAIN_CHUNKS` only, else None."""
    if len(data) < 33 or data[:16] != b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR":
        return None
    depth, color, _, _, interlace = data[24:29]
    channels = {2: 3, 6: 4}.get(color)
    if depth != 8 or interlace != 0 or channels is None:
        return None
    pos = 8
    for _ in range(_MAX_PLAIN_CHUNKS):
        if pos + 8 > len(data):
            return None
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind not in _PLAIN_CHUNKS:
            return None
        if kind == b"IEND":
            return channels
        pos += size + 12
    return None


def _decode_plain_png(data, size):
    """``(H, W, 3 or 4)`` uint8 pixels of a plain PNG (:func:`_plain_png_channels`) by libspng, or None:
    not plain, no ``pyspng``, or refused by libspng (an undefined row filter, a cut stream, ...; Pillow
    then decides). libspng does not check zlib's Adler-32, which Pillow does (SECURITY.md)."""
    channels = _plain_png_channels(data) if pyspng is not None else None
    if channels is None:
        return None
    try:
        a = pyspng.load(data, "RGBA" if channels == 4 else "RGB")
    except Exception:  # whatever libspng refuses, Pillow's path decides, as for any other upload
        return None
    width, height = size
    return a if a.dtype == np.uint8 and a.shape == (height, width, channels) else None


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
    """PNG bytes of ``rgb`` (and ``alpha`` as its alpha channel when given): PIL images, or uint8 arrays
    ``(H, W, 3)`` and ``(H, W)``.

    By default (``compress_level=None``) the fast writer :func:`png_bytes`: every row "Up"-filtered and
    Huffman-coded without string matching, several times faster than Pillow at zlib level 1 (whose per-row
    adaptive filter search is much of its time) for a few per cent more bytes (docs/performance.md). An int
    level encodes with Pillow (adaptive filters, full deflate): 6 is worth its time only to fit a size limit.
    """
    if compress_level is None:
        a = _pixels(rgb, "RGB")
        if alpha is not None:
            a = np.dstack([a, _pixels(alpha, "L")])
        return png_bytes(a)
    img = _image(rgb, "RGB")
    if alpha is not None:
        img = img.copy() if img is rgb else img
        img.putalpha(_image(alpha, "L"))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def size_of(img):
    """``(width, height)`` of a PIL image or of an ``(H, W, ...)`` array."""
    return (img.shape[1], img.shape[0]) if isinstance(img, np.ndarray) else img.size


def _pixels(img, mode):
    if isinstance(img, np.ndarray):
        return img
    return np.asarray(img.convert(mode) if img.mode != mode else img)


def _image(img, mode):
    return Image.fromarray(np.ascontiguousarray(img), mode) if isinstance(img, np.ndarray) else img


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", _zlib.crc32(data, _zlib.crc32(kind)))


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
    return b"".join([b"\x78\x01", *body, struct.pack(">I", _zlib.adler32(data))])


def png_size_bound(width, height, channels):
    """Upper bound of a PNG's size in bytes: raw samples, filter bytes, zlib and chunk overhead."""
    raw = height * (width * channels + 1)
    return raw + raw // 1000 * 5 + 1024
