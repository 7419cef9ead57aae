"""What every request goes through, whatever its route: a request id and a start time; every failure
mapped to the API's JSON error shape in one place (:func:`error_response`); the security and CORS
headers; one JSON log line (``docs/api.md``, "Errors" and "Headers on every answer")."""
import json
import logging
import time
import uuid

from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from imgapi.errors import ApiError

log = logging.getLogger("imgapi")
# A client that sends its whole body before reading the answer (Python's urllib, for one) sees a connection
# reset instead of the 413 when the server closes with much of an over-limit body unread: up to this many
# bytes of such a body are read and discarded first (`make serve`: waitress buffers up to the upload limit
# plus this much; a body longer still gets waitress's own JSON 413 and the connection closed).
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob: https:; connect-src 'self' https: http://127.0.0.1:* "
            "http://localhost:*; style-src 'self'; script-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
ROUTES = "GET /, POST /upscale, POST /stylize, GET /styles, GET /health"


def install(app):
    """Register this module's hooks and error handlers on ``app``."""
    app.before_request(start)
    app.errorhandler(ApiError)(error_response)
    app.errorhandler(HTTPException)(http_error)
    app.errorhandler(Exception)(unexpected_error)
    app.after_request(finish)


def start():
    g.t0 = time.perf_counter()
    # A client's id is logged, so it is bounded; json.dumps keeps it on one line.
    g.request_id = (request.headers.get("X-Request-Id") or _lambda_request_id() or uuid.uuid4().hex)[:128]
    g.bytes_out = 0


def error_response(err):
    """The JSON answer of an ``ApiError``: its status, ``{"error": {"code", "message"}}`` and its headers."""
    resp = jsonify(err.body())
    resp.status_code = err.status
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


def http_error(err):
    """An error raised by Flask or werkzeug (no route, wrong method, a body over the limit), in the same shape."""
    code = (err.name or "error").lower().replace(" ", "_")
    msg = err.description or err.name
    limits = current_app.config
    if err.code == 405:
        allowed = ", ".join(sorted(m for m in (err.valid_methods or []) if m not in ("HEAD", "OPTIONS")))
        msg = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif err.code == 413 and (request.content_length or 1 << 62) > limits["MAX_CONTENT_LENGTH"]:
        cfg = current_app.extensions["imgapi"]["config"]
        code, msg = "upload_too_large", (f"the request body is over the limit of {cfg.max_body_bytes} bytes "
                                         f"(at most {cfg.max_upload_bytes} bytes a file)")
        _drain(request.environ)
    elif err.code == 413:  # werkzeug's multipart limits, on a body of an allowed size
        code, msg = "form_too_large", (f"the form has too many fields (at most {limits['MAX_FORM_PARTS']}) "
                                       f"or a text field over {limits['MAX_FORM_MEMORY_SIZE']} bytes")
    elif err.code == 404:
        msg = f"no route {request.path}; routes: {ROUTES}"
    resp = error_response(ApiError(err.code, code, msg))
    if err.code == 405 and err.valid_methods:
        resp.headers["Allow"] = ", ".join(err.valid_methods)
    return resp


def unexpected_error(err):
    log.exception("unhandled error")
    return error_response(ApiError(500, "internal_error", "an unexpected error occurred; it was logged"))


def finish(resp):
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if resp.mimetype == "text/html":
        resp.headers["Content-Security-Policy"] = PAGE_CSP
    _cors(resp, current_app.extensions["imgapi"]["config"].cors_origins)
    log.info(json.dumps({
        "request_id": g.get("request_id"), "method": request.method, "route": request.path,
        "status": resp.status_code, "bytes_in": request.content_length or 0,
        "bytes_out": g.get("bytes_out") or resp.calculate_content_length() or 0,
        "ms": round((time.perf_counter() - g.get("t0", time.perf_counter())) * 1000, 1),
    }))
    return resp


def _cors(resp, origins):
    """CORS headers for a request whose ``Origin`` is allowed; none for any other."""
    origin = request.headers.get("Origin")
    if origin and ("*" in origins or origin in origins):
        resp.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        resp.headers["Access-Control-Allow-Headers"] = "Content-Type, Accept"
        resp.headers["Access-Control-Max-Age"] = "600"
        resp.headers["Vary"] = "Origin"


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
