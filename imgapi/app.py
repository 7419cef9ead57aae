"""The WSGI app: HTTP in, HTTP out. The same app runs locally and behind API Gateway.

Routes and error shapes are those of ``docs/api.md``; every failure is an ``ApiError`` mapped to a
JSON answer in one place (``_error_response``).
"""
import base64
import gc
import json
import logging
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch

# torch leaves a great many objects to the cyclic garbage collector, and every collection walks them all:
# the collections that Flask's import triggers (its typing annotations compile strings) are most of that
# import's time (docs/performance.md). Frozen, they are never walked again. Reference counting still frees
# them; only a reference cycle among frozen objects would outlive its use, and these are module-level objects.
gc.freeze()

from flask import Flask, Response, g, jsonify, request, send_file  # noqa: E402
from werkzeug.exceptions import HTTPException

from imgapi import engine, images
from imgapi.config import Config
from imgapi.errors import ApiError, bad_request, unavailable
from imgapi.store import ModelStore

log = logging.getLogger("imgapi")
STATIC = Path(__file__).resolve().parent / "static"
SR_MODELS = ("srgan", "srresnet")
# A client that sends its whole body before reading the answer (Python's urllib, for one) sees a connection
# reset instead of the 413 when the server closes with much of an over-limit body unread: up to this many
# bytes of such a body are read and discarded first (`make serve`: waitress buffers up to the upload limit
# plus this much; a body longer still gets waitress's own JSON 413 and the connection closed).
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob: https:; connect-src 'self' https: http://127.0.0.1:* "
            "http://localhost:*; style-src 'self'; script-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


def _field(name, default=None):
    """One option from the multipart form or the query string; 400 if given twice."""
    values = request.form.getlist(name) + request.args.getlist(name)
    if len(values) > 1:
        raise bad_request("duplicate_field", f"field {name!r} was given {len(values)} times; give it once")
    return values[0].strip() if values else default


def _choice(name, allowed, default):
    value = _field(name, default)
    if value not in allowed:
        raise bad_request(f"invalid_{name}", f"{name} {value!r} is not supported. "
                          f"Supported values: {', '.join(map(str, allowed))}")
    return value


def _number(name, default, lo, hi, cast=float):
    raw = _field(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value is None or value != value or not lo <= value <= hi:
        kind = "an integer" if cast is int else "a number"
        raise bad_request(f"invalid_{name}", f"{name} {raw[:40]!r} is not valid: give {kind} from {lo} to {hi}")
    return value


def _bool(name, default=False):
    raw = _field(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off", ""):
        return False
    raise bad_request(f"invalid_{name}", f"{name} {raw[:40]!r} is not valid: give true or false")


def _upload(config):
    """The uploaded image's bytes: multipart field ``image`` or a raw ``image/*`` body."""
    ctype = request.mimetype or ""
    if ctype == "multipart/form-data":
        files = request.files.getlist("image")
        if not files:
            if "image" in request.form:
                raise bad_request("missing_image", "field 'image' must be a file upload, not text")
            raise bad_request("missing_image", "no file in field 'image' of the multipart body")
        if len(files) > 1:
            raise bad_request("duplicate_field", f"field 'image' was given {len(files)} times; send one image")
        data = files[0].read(config.max_upload_bytes + 1)
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = request.get_data(cache=False)
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {ctype or '(none)'!r} is not accepted: send multipart/form-data "
                       "with the file in field 'image', or the image itself as image/*")
    if len(data) > config.max_upload_bytes:
        raise ApiError(413, "upload_too_large",
                       f"the upload is over the limit of {config.max_upload_bytes} bytes")
    return data


def create_app(config=None, store=None):
    """The Flask app. ``config`` defaults to ``Config.from_env()``; ``store`` to a ``ModelStore``."""
    config = config or Config.from_env()
    store = store or ModelStore(config)
    torch.set_num_threads(config.torch_threads)
    engine.keep_freed_memory()
    slots = threading.BoundedSemaphore(config.max_concurrent)
    waiting, waiting_lock = [0], threading.Lock()  # requests waiting for a slot

    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_upload_bytes + 64 * 1024  # multipart overhead
    app.extensions["imgapi"] = {"config": config, "store": store}

    def model(name):
        try:
            return store.get(name)
        except KeyError:
            raise bad_request("unknown_model", f"no model {name!r} in the manifest") from None

    def check_result_fits(width, height, channels):
        """413 before any work when the result cannot be returned inline and there is no bucket."""
        limit = config.max_response_bytes
        if not limit or config.result_bucket:
            return
        bound = images.png_size_bound(width, height, channels) * 4 // 3 + 1024
        if bound > limit:
            raise ApiError(413, "result_too_large",
                           f"a {width}x{height} result may exceed the {limit}-byte response limit and no "
                           "result bucket is configured; send a smaller image or a smaller scale")

    def run(fn):
        # At most max_queue requests wait for a slot, each at most queue_timeout_s: beyond that a burst
        # gets a quick 503 and leaves the server's threads free for cheap requests (/health, errors).
        if not slots.acquire(blocking=False):
            with waiting_lock:
                full = waiting[0] >= config.max_queue
                waiting[0] += 0 if full else 1
            if full:
                raise unavailable("busy", f"all {config.max_concurrent} inference slots are busy and "
                                          f"{config.max_queue} requests are already waiting.", retry_after=2)
            try:
                got = slots.acquire(timeout=config.queue_timeout_s)
            finally:
                with waiting_lock:
                    waiting[0] -= 1
            if not got:
                raise unavailable("busy", f"all {config.max_concurrent} inference slots stayed busy for "
                                          f"{config.queue_timeout_s:g} s.", retry_after=2)
        try:
            return fn()
        finally:
            slots.release()

    def respond(rgb, alpha, meta):
        png = images.encode_png(rgb, alpha)
        if config.max_response_bytes and len(png) * 4 // 3 + 1024 > config.max_response_bytes:
            png = images.encode_png(rgb, alpha, compress_level=6)  # slower, smaller: may still fit inline
        g.bytes_out = len(png)
        width, height = images.size_of(rgb)
        meta = dict(meta, width=width, height=height,
                    elapsed_ms=round((time.perf_counter() - g.t0) * 1000))
        inline = len(png) * 4 // 3 + 1024
        if config.max_response_bytes and inline > config.max_response_bytes:
            if not config.result_bucket:
                raise ApiError(413, "result_too_large",
                               f"the result is {len(png)} bytes, over the {config.max_response_bytes}-byte "
                               "response limit, and no result bucket is configured")
            from imgapi.results import put_result
            return jsonify(dict(meta, **put_result(png, config)))
        if request.accept_mimetypes.best_match(["application/json", "image/png"]) == "image/png" \
                and "image/png" in request.accept_mimetypes.values():
            headers = {f"X-{k.replace('_', '-').title()}": str(v) for k, v in meta.items()}
            return Response(png, mimetype="image/png", headers=headers)
        # json.dumps would scan the megabytes of base64 for characters to escape; it has none.
        head = json.dumps(meta, separators=(",", ":"))
        body = b"".join([head[:-1].encode(), b',"image":"' if meta else b'"image":"', base64.b64encode(png), b'"}'])
        return Response(body, mimetype="application/json")

    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        # A client's id is logged, so it is bounded; json.dumps keeps it on one line.
        g.request_id = (request.headers.get("X-Request-Id") or _lambda_request_id() or uuid.uuid4().hex)[:128]
        g.bytes_out = 0

    @app.get("/")
    def page():
        index = STATIC / "index.html"
        if not index.is_file():
            return Response("The web page is not installed.", mimetype="text/plain")
        return send_file(index, mimetype="text/html", max_age=0)

    @app.get("/health")
    def health():
        return jsonify(status="ok", models=store.status(), limits={
            "max_upload_bytes": config.max_upload_bytes,
            "max_upscale_pixels": config.max_upscale_pixels,
            "max_stylize_pixels": config.max_stylize_pixels,
            "max_side_limit": config.max_side_limit,
            "max_response_bytes": config.max_response_bytes,
            "result_bucket": bool(config.result_bucket),
        })

    @app.post("/upscale")
    def upscale():
        name = _choice("model", SR_MODELS, "srgan")
        scale = _number("scale", 4, 2, 4, int)
        data = _upload(config)
        rgb, alpha = images.decode(data, config.max_upscale_pixels)
        check_result_fits(rgb.width * scale, rgb.height * scale, 3 if alpha is None else 4)
        m = model(name)
        out, out_alpha = run(lambda: engine.upscale(m.module, rgb, alpha, scale=scale, tile=config.tile,
                                                    overlap=config.tile_overlap))
        return respond(out, out_alpha, {"model": name, "sha256": m.sha256[:12], "scale": scale})

    def style_names():
        return [n.split("/", 1)[1] for n in store.names("style") if n.startswith("style/")]

    @app.get("/styles")
    def styles():
        out = []
        for name in style_names():
            e = store.entry(f"style/{name}")
            out.append({"name": name, "title": e.get("title", name), "artist": e.get("artist", ""),
                        "licence": e.get("licence", ""), "source": e.get("source", ""),
                        "thumbnail": f"/styles/{name}/thumbnail" if e.get("thumbnail") else None})
        return jsonify(styles=out)

    @app.get("/styles/<name>/thumbnail")
    def thumbnail(name):
        e = store.entry(f"style/{name}")
        if e is None or not e.get("thumbnail"):
            raise ApiError(404, "not_found", f"no thumbnail for style {name!r}")
        path = store.file(e["thumbnail"])
        return send_file(path, max_age=86400)

    @app.post("/stylize")
    def stylize():
        from imgapi.stylize import stylize as run_style
        known = style_names()
        raw = _field("style")
        if raw is None:
            raise bad_request("missing_style", f"field 'style' is required. Styles: {', '.join(known)}")
        if raw not in known:
            raise bad_request("invalid_style", f"style {raw[:60]!r} is not known. Styles: {', '.join(known)}")
        strength = _number("strength", 1.0, 0.0, 1.0)
        preserve = _bool("preserve_color")
        max_side = _number("max_side", 1024, 16, config.max_side_limit, int)
        data = _upload(config)
        rgb, alpha = images.decode(data, config.max_stylize_pixels, arrays=True)  # no copies into PIL and out
        width, height = images.size_of(rgb)
        k = min(1.0, max_side / max(width, height))
        check_result_fits(round(width * k), round(height * k), 3 if alpha is None else 4)
        m = model(f"style/{raw}")
        out = run(lambda: run_style(m.module, rgb, strength=strength, preserve_color=preserve,
                                    max_side=max_side))
        if alpha is not None and alpha.shape != out.shape[:2]:
            alpha = np.asarray(images.Image.fromarray(alpha, "L").resize(images.size_of(out), images.Image.LANCZOS))
        return respond(out, alpha, {"model": f"style/{raw}", "style": raw, "sha256": m.sha256[:12],
                                    "strength": strength, "preserve_color": preserve})

    @app.errorhandler(ApiError)
    def _api_error(err):
        return _error_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(err):
        code = (err.name or "error").lower().replace(" ", "_")
        msg = err.description or err.name
        if err.code == 405:
            allowed = ", ".join(sorted(m for m in (err.valid_methods or []) if m not in ("HEAD", "OPTIONS")))
            msg = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
        elif err.code == 413 and (request.content_length or 1 << 62) > app.config["MAX_CONTENT_LENGTH"]:
            code, msg = "upload_too_large", f"the request body is over the limit of {config.max_upload_bytes} bytes"
            _drain(request.environ)
        elif err.code == 413:  # werkzeug's multipart limits, on a body of an allowed size
            code, msg = "form_too_large", (f"the form has too many fields (at most {app.config['MAX_FORM_PARTS']}) "
                                           f"or a text field over {app.config['MAX_FORM_MEMORY_SIZE']} bytes")
        elif err.code == 404:
            msg = f"no route {request.path}; routes: GET /, POST /upscale, POST /stylize, GET /styles, GET /health"
        resp = _error_response(ApiError(err.code, code, msg))
        if err.code == 405 and err.valid_methods:
            resp.headers["Allow"] = ", ".join(err.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err):
        log.exception("unhandled error")
        return _error_response(ApiError(500, "internal_error", "an unexpected error occurred; it was logged"))

    @app.after_request
    def _finish(resp):
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if resp.mimetype == "text/html":
            resp.headers["Content-Security-Policy"] = PAGE_CSP
        origin = request.headers.get("Origin")
        if origin and ("*" in config.cors_origins or origin in config.cors_origins):
            resp.headers["Access-Control-Allow-Origin"] = "*" if "*" in config.cors_origins else origin
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
            resp.headers["Access-Control-Max-Age"] = "600"
            resp.headers["Vary"] = "Origin"
        log.info(json.dumps({
            "request_id": g.get("request_id"), "method": request.method, "route": request.path,
            "status": resp.status_code, "bytes_in": request.content_length or 0,
            "bytes_out": g.get("bytes_out") or resp.calculate_content_length() or 0,
            "ms": round((time.perf_counter() - g.get("t0", time.perf_counter())) * 1000, 1),
        }))
        return resp

    gc.freeze()  # the app's own long-lived objects too: collections during requests skip them
    return app


def _error_response(err):
    resp = jsonify(err.body())
    resp.status_code = err.status
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


def _drain(environ):
    """Read and discard what is left of a refused body, at most ``DRAIN_LIMIT_BYTES``."""
    stream = environ.get("wsgi.input")
    try:
        left = min(int(environ.get("CONTENT_LENGTH") or 0), DRAIN_LIMIT_BYTES)
        while stream is not None and left > 0:
            chunk = stream.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)
    except (OSError, ValueError):  # a client gone away, a closed stream: nothing left to spare it
        pass


def _lambda_request_id():
    ctx = request.environ.get("serverless.context")
    return getattr(ctx, "aws_request_id", None) if ctx is not None else None
