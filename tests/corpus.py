"""A generated corpus of malformed and hostile requests, each with the answer docs/api.md promises.

Every case is built here from code (no binary blobs): the raw request body, its Content-Type,
the method, path and query, and the expected status and error code. Some cases are unusual but
valid images (animated GIF, APNG, 16-bit, float, CMYK, a corrupt ICC profile, a 1x1 image); the
contract says those succeed, so they expect 200.

    from tests.corpus import build
    for case in build(max_upload_bytes=200_000, max_upscale_pixels=64 * 64, style="mosaic"):
        ...  # send case.method case.target with case.body and case.headers()

``python -m tests.corpus`` prints the cases (name, request, expected answer).
"""
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.helpers import bomb_png, encode, photo, png_bytes
from tools.fixtures import BOUNDARY, multipart  # noqa: F401  (the tests import multipart from here)



@dataclass(frozen=True)
class Case:
    """One request and the answer it must get: ``status`` and, for errors, the error ``code``
    (None: any code, the status and a JSON error body are what is checked)."""

    name: str
    body: bytes
    content_type: str | None
    status: int
    code: str | None = None
    method: str = "POST"
    path: str = "/upscale"
    query: str = ""

    @property
    def target(self):
        return self.path + (f"?{self.query}" if self.query else "")

    def headers(self):
        h = {"Content-Type": self.content_type} if self.content_type is not None else {}
        h["Accept"] = "application/json"
        return h


# -- image makers ----------------------------------------------------------------------------
def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_chunk(data, kind, body):
    """``data`` (a PNG) with one more chunk right after IHDR."""
    at = 8 + 25  # signature + IHDR chunk
    return data[:at] + _chunk(kind, body) + data[at:]


def png_header_only(width, height, depth=8, color=2):
    """A PNG whose IHDR says ``width`` x ``height`` with a few bytes of IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + _chunk(b"IEND", b""))


def jpeg_with_size(width, height):
    """A small JPEG whose SOF0 marker is patched to declare ``width`` x ``height``."""
    data = bytearray(encode(photo(16, 16), "JPEG", quality=80))
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, height, width)
    return bytes(data)


def gif_with_screen(width, height):
    """A 1x1 GIF whose logical screen declares ``width`` x ``height``."""
    data = bytearray(encode(Image.new("P", (1, 1)), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def tiff_with_size(width, height):
    """A hand-made little-endian TIFF IFD declaring ``width`` x ``height`` 8-bit gray, 16 bytes of data."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHII", tag, typ, count, value) if typ == 4 else \
            struct.pack("<HHIHH", tag, typ, count, value, 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + b"\x80" * 16


def bmp_with_size(width, height):
    data = bytearray(encode(photo(4, 4), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def webp_with_size(width, height):
    """A lossy WebP whose VP8 frame header is patched to ``width`` x ``height`` (14 bits each)."""
    data = bytearray(encode(photo(16, 16), "WEBP", quality=50))
    i = data.index(b"\x9d\x01\x2a")
    struct.pack_into("<HH", data, i + 3, width & 0x3FFF, height & 0x3FFF)
    return bytes(data)


def animated_gif():
    frames = [photo(12, 10, seed=s).convert("P") for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buf.getvalue()


def apng():
    frames = [photo(12, 10, seed=s) for s in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=50)
    assert b"acTL" in buf.getvalue()
    return buf.getvalue()


def png16():
    a = (np.linspace(0, 65535, 12 * 10).reshape(10, 12)).astype(np.uint16)
    return encode(Image.fromarray(a))  # mode I;16


def tiff_float(special=False):
    a = np.linspace(0, 1, 12 * 10, dtype=np.float32).reshape(10, 12)
    if special:
        a[0, 0], a[0, 1], a[0, 2] = np.nan, np.inf, -np.inf
    return encode(Image.fromarray(a), "TIFF")  # mode F


def tiff16():
    a = (np.linspace(0, 65535, 12 * 10).reshape(10, 12)).astype(np.uint16)
    return encode(Image.fromarray(a), "TIFF")  # mode I;16


def exif_jpeg(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(12, 10), "JPEG", exif=exif.tobytes())


def corrupt_exif_jpeg():
    data = encode(photo(12, 10), "JPEG")
    app1 = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 20  # 65535 IFD entries, 20 bytes
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def corrupt_icc_png():
    garbage = b"acsp" * 40
    return _png_with_chunk(png_bytes(12, 10), b"iCCP", b"broken\x00\x00" + zlib.compress(garbage))


def corrupt_icc_jpeg():
    return encode(photo(12, 10), "JPEG", icc_profile=b"\x00\x00\x01\x00not an icc profile" * 8)


def png_chunk_bomb(kind):
    """A small PNG with a ``zTXt`` or ``iCCP`` chunk that inflates to 64 MiB (about 64 KB compressed)."""
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)
    return _png_with_chunk(png_bytes(12, 10), kind, b"bomb\x00\x00" + bomb)


def bad_crc_png():
    data = bytearray(png_bytes(12, 10))
    data[8 + 8 + 13] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def truncated(data, keep):
    return data[:keep]


# -- the corpus ------------------------------------------------------------------------------
def build(max_upload_bytes=200_000, max_upscale_pixels=64 * 64, style="mosaic"):
    """The corpus for a server with these limits and a style called ``style``. Returns a list of Case."""
    good_png = png_bytes(12, 10)
    side = int(max_upscale_pixels ** 0.5)
    cases = []

    def upload(name, data, status, code=None, filename="photo.png", ctype="image/png", path="/upscale",
               extra=()):
        body, mp = multipart([("image", (filename, data, ctype)), *extra])
        cases.append(Case(name, body, mp, status, code, path=path))

    def fields(name, items, status, code=None, path="/upscale"):
        body, mp = multipart(items)
        cases.append(Case(name, body, mp, status, code, path=path))

    # Not images, or broken ones: 400 empty, 415 otherwise.
    upload("empty_file", b"", 400, "empty_image")
    upload("text_named_png", b"hello, this is a text file and not a picture\n" * 4, 415, "unsupported_image")
    upload("truncated_png_signature", good_png[:6], 415)
    upload("truncated_png_after_header", good_png[:40], 415)
    upload("truncated_png_half", good_png[: len(good_png) // 2], 415, "invalid_image")
    jpg = encode(photo(32, 32), "JPEG", quality=90)
    upload("truncated_jpeg_half", jpg[: len(jpg) // 2], 415, "invalid_image", "photo.jpg", "image/jpeg")
    upload("truncated_jpeg_soi_only", jpg[:4], 415, None, "photo.jpg", "image/jpeg")
    webp = encode(photo(32, 32), "WEBP", quality=80)
    upload("truncated_webp_half", webp[: len(webp) // 2], 415, None, "photo.webp", "image/webp")
    upload("wrong_magic_png_flipped", b"\x88" + good_png[1:], 415, "unsupported_image")
    upload("wrong_magic_jpeg_body_png_magic", b"\x89PNG\r\n\x1a\n" + jpg[2:], 415)
    upload("png_bad_ihdr_crc", bad_crc_png(), 415)
    upload("svg_document", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', 415,
           "unsupported_image", "x.svg", "image/svg+xml")
    upload("pdf_document", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", 415, "unsupported_image",
           "x.pdf", "application/pdf")
    upload("ppm_not_accepted", encode(photo(8, 8), "PPM"), 415, "unsupported_image", "x.ppm")
    upload("ico_not_accepted", encode(photo(16, 16), "ICO"), 415, "unsupported_image", "x.ico")
    upload("tiff_garbage_ifd", b"II*\x00\xff\xff\xff\x7f" + b"\x00" * 32, 415, None, "x.tif", "image/tiff")
    upload("gif_header_only", b"GIF89a\x10\x00\x10\x00\x00\x00\x00", 415, None, "x.gif", "image/gif")
    upload("zero_height_png", png_header_only(16, 0), 415)
    upload("zero_width_bmp", bmp_with_size(0, 4), 415, None, "x.bmp", "image/bmp")

    # Decompression bombs: a tiny file declaring huge dimensions, refused from the header.
    upload("bomb_png_100k_square", bomb_png(), 413, "too_many_pixels")
    upload("bomb_png_max_width", png_header_only(2**31 - 1, 1), 413, "too_many_pixels")
    upload("bomb_jpeg_65500_square", jpeg_with_size(65500, 65500), 413, "too_many_pixels", "b.jpg", "image/jpeg")
    upload("bomb_gif_screen", gif_with_screen(65535, 65535), 413, "too_many_pixels", "b.gif", "image/gif")
    upload("bomb_tiff", tiff_with_size(100_000, 100_000), 413, "too_many_pixels", "b.tif", "image/tiff")
    upload("bomb_bmp", bmp_with_size(100_000, 100_000), 413, "too_many_pixels", "b.bmp", "image/bmp")
    upload("bomb_webp_16383_square", webp_with_size(16383, 16383), 413, "too_many_pixels", "b.webp",
           "image/webp")
    upload("png_ztxt_bomb", png_chunk_bomb(b"zTXt"), 415, "invalid_image")
    upload("png_iccp_bomb", png_chunk_bomb(b"iCCP"), 415, "invalid_image")
    upload("over_route_pixel_limit", png_header_only(side + 1, side), 413, "too_many_pixels")

    # Unusual but valid images: the contract says they succeed.
    upload("animated_gif_first_frame", animated_gif(), 200, None, "a.gif", "image/gif")
    upload("apng_first_frame", apng(), 200)
    upload("one_by_one", png_bytes(1, 1), 200)
    upload("extreme_aspect_wide", png_bytes(max_upscale_pixels // 2, 2), 200)
    upload("extreme_aspect_tall", png_bytes(1, max_upscale_pixels), 200)
    upload("png_16bit_gray", png16(), 200)
    upload("tiff_16bit_gray", tiff16(), 200, None, "x.tif", "image/tiff")
    upload("tiff_float", tiff_float(), 200, None, "x.tif", "image/tiff")
    upload("tiff_float_nan_inf", tiff_float(special=True), 200, None, "x.tif", "image/tiff")
    upload("cmyk_jpeg", encode(photo(12, 10).convert("CMYK"), "JPEG"), 200, None, "c.jpg", "image/jpeg")
    upload("cmyk_tiff", encode(photo(12, 10).convert("CMYK"), "TIFF"), 200, None, "c.tif", "image/tiff")
    upload("corrupt_icc_png", corrupt_icc_png(), 200)
    upload("corrupt_icc_jpeg", corrupt_icc_jpeg(), 200, None, "c.jpg", "image/jpeg")
    upload("exif_orientation_9", exif_jpeg(9), 200, None, "e.jpg", "image/jpeg")
    upload("exif_orientation_65535", exif_jpeg(65535), 200, None, "e.jpg", "image/jpeg")
    upload("exif_block_corrupt", corrupt_exif_jpeg(), 200, None, "e.jpg", "image/jpeg")
    upload("palette_png_with_transparency", encode(photo(12, 10).convert("P"), "PNG", transparency=0), 200)
    upload("gray_alpha_png", encode(photo(12, 10).convert("LA")), 200)
    upload("png_named_jpg", good_png, 200, None, "photo.jpg", "image/jpeg")

    # Multipart structure.
    body, _ = multipart([("image", ("p.png", good_png, "image/png"))], boundary="the-real-one")
    cases.append(Case("wrong_multipart_boundary", body, f"multipart/form-data; boundary={BOUNDARY}",
                      400, "missing_image"))
    cases.append(Case("multipart_without_boundary", body, "multipart/form-data", 400, "missing_image"))
    cases.append(Case("multipart_unterminated", body[: len(body) // 2], "multipart/form-data; boundary=the-real-one",
                      400))
    fields("too_many_form_fields", [("image", ("p.png", good_png, "image/png"))]
           + [(f"f{i}", "x") for i in range(1500)], 413, "form_too_large")
    fields("missing_image_field", [("model", "srgan")], 400, "missing_image")
    fields("image_field_as_text", [("image", "iVBORw0KGgo=")], 400, "missing_image")
    fields("duplicate_image_field", [("image", ("a.png", good_png, "image/png")),
                                     ("image", ("b.png", good_png, "image/png"))], 400, "duplicate_field")
    upload("duplicate_scale_field", good_png, 400, "duplicate_field", extra=[("scale", "2"), ("scale", "3")])
    body, mp = multipart([("image", ("p.png", good_png, "image/png"))])
    cases.append(Case("scale_in_form_and_query", multipart([("image", ("p.png", good_png, "image/png")),
                                                            ("scale", "2")])[0], mp, 400, "duplicate_field",
                      query="scale=3"))

    # Option values.
    for value in ("four", "", "8", "1", "-4", "4.0", "1e9", "nan", "inf", "4\x00", "9" * 5000):
        upload(f"scale_{value[:12]!r}", good_png, 400, "invalid_scale", extra=[("scale", value)])
    for value in ("esrgan", "../srgan", "SRGAN", "style/" + style, "/etc/passwd"):
        upload(f"model_{value!r}", good_png, 400, "invalid_model", extra=[("model", value)])
    # denoise is refused before the model is looked up: the same 400 whether or not the weights have real.
    for value in ("strong", "1.5", "-0.1", "nan", "inf", "", "0,5"):
        upload(f"denoise_{value!r}", good_png, 400, "invalid_denoise", extra=[("model", "real"), ("denoise", value)])
    for model in ("srgan", "srresnet"):
        upload(f"denoise_with_{model}", good_png, 400, "invalid_denoise", extra=[("model", model), ("denoise", "0.5")])
    upload("stylize_missing_style", good_png, 400, "missing_style", path="/stylize")
    for value in ("picasso", "../x", "../../etc/passwd", "/etc/passwd", f"{style}/../../srgan",
                  f"../{style}", f"{style}\x00", "style/" + style, "%2e%2e%2fx", "", f" {style}/.."):
        upload(f"style_{value[:24]!r}", good_png, 400, "invalid_style", path="/stylize",
               extra=[("style", value)])
    for value in ("strong", "1.5", "-0.1", "nan", "inf", "1e400"):
        upload(f"strength_{value!r}", good_png, 400, "invalid_strength", path="/stylize",
               extra=[("style", style), ("strength", value)])
    upload("preserve_color_maybe", good_png, 400, "invalid_preserve_color", path="/stylize",
           extra=[("style", style), ("preserve_color", "maybe")])
    for value in ("0", "999999", "big"):
        upload(f"max_side_{value!r}", good_png, 400, "invalid_max_side", path="/stylize",
               extra=[("style", style), ("max_side", value)])
    cases.append(Case("raw_body_bad_query_scale", good_png, "image/png", 400, "invalid_scale", query="scale=x"))
    cases.append(Case("raw_body_unknown_style", good_png, "image/png", 400, "invalid_style", path="/stylize",
                      query="style=..%2Fsrgan"))

    # Sizes.
    upload("upload_just_over_limit", b"\x89PNG" + b"\x00" * (max_upload_bytes + 100), 413, "upload_too_large")
    upload("body_far_over_limit", b"\x00" * (max_upload_bytes + 200_000), 413, "upload_too_large")
    cases.append(Case("raw_body_over_limit", b"\x00" * (max_upload_bytes + 100), "image/png", 413,
                      "upload_too_large"))
    cases.append(Case("raw_body_empty", b"", "image/png", 400, "empty_image"))

    # Content types and methods.
    cases.append(Case("json_body", b'{"image": "iVBORw0KGgo="}', "application/json", 415,
                      "unsupported_media_type"))
    cases.append(Case("form_urlencoded", b"image=abc&scale=2", "application/x-www-form-urlencoded", 415,
                      "unsupported_media_type"))
    cases.append(Case("text_plain", b"hello", "text/plain", 415, "unsupported_media_type"))
    cases.append(Case("no_content_type", good_png, None, 415, "unsupported_media_type"))
    cases.append(Case("raw_garbage_as_png", b"not a png at all", "image/png", 415, "unsupported_image"))
    cases.append(Case("get_upscale", b"", None, 405, method="GET"))
    cases.append(Case("put_upscale", good_png, "image/png", 405, method="PUT"))
    cases.append(Case("delete_stylize", b"", None, 405, method="DELETE", path="/stylize"))
    cases.append(Case("patch_stylize", good_png, "image/png", 405, method="PATCH", path="/stylize"))
    cases.append(Case("post_health", b"", None, 405, path="/health"))
    cases.append(Case("post_styles", b"{}", "application/json", 405, path="/styles"))
    cases.append(Case("unknown_route", b"", None, 404, path="/upscale/../../etc/passwd"))
    cases.append(Case("unknown_thumbnail", b"", None, 404, method="GET", path="/styles/..%2f..%2fx/thumbnail"))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def good_request(path="/upscale", style="mosaic"):
    """A normal request, sent after each case: ``(path, body, content_type)``; expects 200."""
    extra = [("style", style)] if path == "/stylize" else []
    body, ctype = multipart([("image", ("ok.png", png_bytes(8, 8), "image/png")), *extra])
    return path, body, ctype


if __name__ == "__main__":
    corpus = build()
    for c in corpus:
        print(f"{c.name:40} {c.method:6} {c.target[:40]:40} {len(c.body):>8} B -> {c.status} {c.code or ''}")
    print(f"{len(corpus)} cases")
