"""How a result goes back: inline (JSON with the base64 PNG, or the PNG itself), as a presigned URL of the
result bucket, or not at all (413 ``result_too_large``).

:func:`delivery` makes that decision, for the size check before any work (:func:`check_result_fits`) and
for the encoded result (:func:`respond`) alike (``docs/api.md``, "Results too large to send inline").
"""
import base64
import json
import time

from flask import Response, g, jsonify, request

from imgapi import images
from imgapi.errors import ApiError

INLINE, STORED, REFUSED = "inline", "stored", "refused"


def inline_size(png_size):
    """Bytes of a response carrying a ``png_size``-byte PNG inline: base64, plus room for the JSON fields."""
    return png_size * 4 // 3 + 1024


def delivery(png_size, config):
    """How a ``png_size``-byte PNG goes back: ``INLINE``, ``STORED`` (result bucket, presigned URL) or
    ``REFUSED`` (over ``MAX_RESPONSE_BYTES`` and no result bucket)."""
    limit = config.max_response_bytes
    if not limit or inline_size(png_size) <= limit:
        return INLINE
    return STORED if config.result_bucket else REFUSED


def check_result_fits(width, height, channels, config):
    """413 before any work when even the largest PNG of a ``width`` x ``height`` result would be refused."""
    if delivery(images.png_size_bound(width, height, channels), config) == REFUSED:
        raise ApiError(413, "result_too_large",
                       f"a {width}x{height} result may exceed the {config.max_response_bytes}-byte response "
                       "limit and no result bucket is configured; send a smaller image or a smaller scale")


def respond(rgb, alpha, meta, config):
    """The success answer for a result image and its ``meta`` fields (``width``, ``height`` and
    ``elapsed_ms`` are added here)."""
    png = images.encode_png(rgb, alpha)
    if delivery(len(png), config) != INLINE:
        png = images.encode_png(rgb, alpha, compress_level=6)  # slower, smaller: may still fit inline
    g.bytes_out = len(png)
    width, height = images.size_of(rgb)
    meta = dict(meta, width=width, height=height, elapsed_ms=round((time.perf_counter() - g.t0) * 1000))
    how = delivery(len(png), config)
    if how == REFUSED:
        raise ApiError(413, "result_too_large",
                       f"the result is {len(png)} bytes, over the {config.max_response_bytes}-byte "
                       "response limit, and no result bucket is configured")
    if how == STORED:
        from imgapi.results import put_result
        return jsonify(dict(meta, **put_result(png, config)))
    if _wants_png():
        # a null field (``jpeg_quality`` of a PNG) is left out rather than sent as "None"
        headers = {f"X-{k.replace('_', '-').title()}": str(v) for k, v in meta.items() if v is not None}
        return Response(png, mimetype="image/png", headers=headers)
    # json.dumps would scan the megabytes of base64 for characters to escape; it has none.
    head = json.dumps(meta, separators=(",", ":"))
    body = b"".join([head[:-1].encode(), b',"image":"' if meta else b'"image":"', base64.b64encode(png), b'"}'])
    return Response(body, mimetype="application/json")


def _wants_png():
    """``Accept: image/png`` preferred over JSON and named explicitly (``*/*`` and ``image/*`` get JSON)."""
    accept = request.accept_mimetypes
    return accept.best_match(["application/json", "image/png"]) == "image/png" and "image/png" in accept.values()
