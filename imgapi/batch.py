"""Batch: photos dropped under the input prefix of a bucket, results written back to the same bucket.

The S3 notification of the batch bucket (serverless.yml) invokes ``batch_handler.handler`` for every object
created under ``in/``. The key says what to do, with the options that ``/upscale`` and ``/stylize`` take
(docs/api.md):

    in/upscale/<model>/x<scale>/<path>                      e.g. in/upscale/srgan/x4/album/photo.jpg
    in/upscale/real/x<scale>[/denoise=<value>]/<path>       e.g. in/upscale/real/x4/denoise=0.4/album/photo.jpg
    in/stylize/<style>[/<option>=<value>...]/<path>         e.g. in/stylize/starry_night/strength=0.8/photo.jpg
    in/stylize/style_image=<painting>[/<option>=<value>...]/<path>
                                                            e.g. in/stylize/style_image=9f86d0...e1.jpg/photo.jpg
    in/paintings/<painting>                                 the painting that such keys name

(``denoise`` is ``auto`` or a number from 0 to 1; ``<option>`` is ``strength``, ``preserve_color`` or ``max_side``;
``<style>`` is any named style of ``GET /styles``, a trained network or a preset.) A painting is uploaded once under
``in/paintings/`` (the function's role may read only the input prefix; its own event is answered ``painting`` and
nothing is written); each photo key names it, and the function reads it from the bucket and sends it with the photo
as ``/stylize``'s ``style_image``: the same size and pixel limits and errors, its statistics kept by the sha256 of
its bytes in the warm app. ``tools/batch.py --style-image`` names a painting by that sha256 and its extension, so a
changed painting gets new keys. The result goes to ``out/<op...>/<path>`` with the extension replaced by ``.png``; a
bad image, option or key writes ``failed/<op...>/<path>.json`` holding the API's error JSON instead. Each output
records the input's ETag in its metadata (``input-etag``): a re-delivered event whose output already exists for that
ETag is skipped. A 5xx (a model that cannot be loaded now, a bug) is raised, so that Lambda retries the event and
then hands it to the function's on-failure destination.

Each image runs through the same WSGI app as the API, in process (no HTTP): the option parsing, the
decoder and its limits, the engine, the model store and the one error mapping are the API's own; only the
limits differ (``batch_config``: sized to the 15-minute timeout and the function's memory, not to API
Gateway's 29 s and 6 MB). The app and torch are imported only when an image is processed, so the key
helpers below also serve ``tools/batch.py`` in a boto3-only environment.
"""
from __future__ import annotations

import io
import json
import logging
import posixpath
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from imgapi.config import DEFAULT_SR_MODEL, DENOISE_MODELS, SR_MODELS, Config, sr_seconds
from imgapi.errors import ApiError
from imgapi.store import MISSING_CODES

log = logging.getLogger("imgapi.batch")

OPERATIONS = ("upscale", "stylize")
UPSCALE_OPTIONS = ("denoise",)
STYLE_OPTIONS = ("strength", "preserve_color", "max_side")
STYLE_IMAGE = "style_image"
PAINTINGS = "paintings"  # in/paintings/<painting>: the paintings that stylize keys name
ETAG_METADATA = "input-etag"
LAYOUTS = (f"in/upscale/<model>/x<scale>[/denoise=<auto|0..1>]/<path> (model {', '.join(SR_MODELS)}; scale 2, 3 "
           f"or 4; denoise for {' and '.join(DENOISE_MODELS)} only), "
           "in/stylize/<style>[/strength=<0..1>][/preserve_color=true][/max_side=<16..limit>]/<path>, "
           "in/stylize/style_image=<painting>[/<option>=<value>...]/<path> (the painting at in/paintings/<painting>)")

# Limits of the batch function (15-minute Lambda timeout), estimates from config.py's SR throughput:
# the largest upscale may take this much compute, the rest of the 900 s is for the cold start, the weights,
# the S3 transfers, decoding and PNG encoding.
BATCH_SR_COMPUTE_BUDGET_S = 600.0
# Memory: ~1.5 GB for torch, the model and one 256-px tile's activations (docs/performance.md), then per
# input pixel the 4x uint8 output (48 B), its PIL copy (48 B), the PNG and its copies on the way to S3.
BATCH_BASE_MB = 1536
BATCH_BYTES_PER_INPUT_PIXEL = 256
# 4096x4096 in, 16384x16384 out: beyond that a result is past what image viewers open anyway.
BATCH_MAX_UPSCALE_PIXELS = 4096 * 4096
BATCH_MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def batch_upscale_pixels(memory_mb=None):
    """Largest upscale input (a square, side a multiple of 16) whose estimated compute fits
    ``BATCH_SR_COMPUTE_BUDGET_S`` and whose buffers fit ``memory_mb`` (None: the ceiling)."""
    if memory_mb is None:
        return BATCH_MAX_UPSCALE_PIXELS
    room = max(0, memory_mb - BATCH_BASE_MB) * 1024 * 1024

    def fits(side):
        px = side * side
        return (px <= BATCH_MAX_UPSCALE_PIXELS and px * BATCH_BYTES_PER_INPUT_PIXEL <= room
                and sr_seconds(px, memory_mb) <= BATCH_SR_COMPUTE_BUDGET_S)

    side = 16
    while fits(side + 16):
        side += 16
    return side * side


def batch_config(env):
    """``Config.from_env`` with the batch function's defaults where ``env`` leaves a variable unset: no
    response limit (results go to S3), 64 MiB inputs, and the upscale limit of ``batch_upscale_pixels``
    for the memory Lambda reports. A variable that is set still wins."""
    env = dict(env)
    memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    defaults = {
        "MAX_RESPONSE_BYTES": "0",
        "MAX_UPLOAD_BYTES": str(BATCH_MAX_UPLOAD_BYTES),
        "MAX_UPSCALE_PIXELS": str(batch_upscale_pixels(int(memory) if memory else None)),
    }
    for name, value in defaults.items():
        if not env.get(name):
            env[name] = value
    return Config.from_env(env)


@dataclass(frozen=True)
class BatchSettings:
    """Where the batch bucket's inputs, results and failures live. No prefix may contain another, so that
    no key the function writes can ever match the notification's input filter."""

    input_prefix: str = "in/"
    output_prefix: str = "out/"
    failed_prefix: str = "failed/"

    def __post_init__(self):
        prefixes = (self.input_prefix, self.output_prefix, self.failed_prefix)
        for p in prefixes:
            if not p or not p.endswith("/") or p.startswith("/"):
                raise ValueError(f"batch prefix {p!r} is not valid: give a non-empty key prefix ending in '/'")
        for i, a in enumerate(prefixes):
            for j, b in enumerate(prefixes):
                if i != j and a.startswith(b):
                    raise ValueError(f"batch prefixes {a!r} and {b!r} overlap: a written key could "
                                     "trigger the function again")

    @classmethod
    def from_env(cls, env):
        d = cls()
        return cls(input_prefix=env.get("BATCH_INPUT_PREFIX") or d.input_prefix,
                   output_prefix=env.get("BATCH_OUTPUT_PREFIX") or d.output_prefix,
                   failed_prefix=env.get("BATCH_FAILED_PREFIX") or d.failed_prefix)

    def input_key(self, op, path, **options):
        """The key to upload ``path`` (relative, '/'-separated) under for ``op`` with ``options``
        (upscale: ``model``, ``scale`` and, for ``real``, ``denoise``; stylize: ``style`` or ``style_image`` (a
        painting's name under :meth:`painting_key`), and any of ``STYLE_OPTIONS``)."""
        path = path.strip("/")
        if op == "upscale":
            parts = [op, options.get("model", DEFAULT_SR_MODEL), f"x{options.get('scale', 4)}"]
            parts += [f"{k}={options[k]}" for k in UPSCALE_OPTIONS if options.get(k) is not None]
        elif op == "stylize":
            if (options.get("style") is None) == (options.get(STYLE_IMAGE) is None):
                raise ValueError("give exactly one of style and style_image")
            style = options["style"] if options.get("style") is not None else f"{STYLE_IMAGE}={options[STYLE_IMAGE]}"
            parts = [op, style] + [f"{k}={options[k]}" for k in STYLE_OPTIONS if options.get(k) is not None]
        else:
            raise ValueError(f"operation {op!r} is not supported. Supported: {', '.join(OPERATIONS)}")
        return self.input_prefix + "/".join(parts + [path])

    @property
    def painting_prefix(self):
        return f"{self.input_prefix}{PAINTINGS}/"

    def painting_key(self, name):
        """Where the painting that keys name ``style_image=<name>`` is uploaded."""
        return self.painting_prefix + name

    def result_keys(self, key):
        """``(output key, failure key)`` for an input key under the input prefix."""
        rel = key[len(self.input_prefix):]
        stem, _ = posixpath.splitext(rel)
        if not posixpath.basename(stem):  # a name that is all extension (".jpg")
            stem = rel
        return self.output_prefix + stem + ".png", self.failed_prefix + rel + ".json"


def parse_key(key, settings):
    """``(route, options)`` for an input key: the API route (``/upscale``, ``/stylize``) and the fields to
    give it. A key that follows neither layout is a 404 ``not_found`` naming the layouts."""
    rel = key[len(settings.input_prefix):]
    parts = rel.split("/")
    op = parts[0]
    if op == "upscale" and len(parts) >= 4:
        scale = parts[2][1:] if parts[2][:1] in ("x", "X") else parts[2]
        options, rest = {"model": parts[1], "scale": scale}, parts[3:]
        while len(rest) > 1 and rest[0].split("=", 1)[0] in UPSCALE_OPTIONS and "=" in rest[0]:
            name, value = rest.pop(0).split("=", 1)
            if name in options:
                raise ApiError(400, "duplicate_field", f"field {name!r} was given twice in the key; give it once")
            options[name] = value
        return "/upscale", options
    if op == "stylize" and len(parts) >= 3:
        options, rest = _style_of(parts[1]), parts[2:]
        while len(rest) > 1 and "=" in rest[0] and rest[0].split("=", 1)[0] in STYLE_OPTIONS + (STYLE_IMAGE,):
            name, value = rest.pop(0).split("=", 1)
            if name == STYLE_IMAGE and "style" in options:
                raise _which_style("both were given")
            if name in options:
                raise ApiError(400, "duplicate_field", f"field {name!r} was given twice in the key; give it once")
            options[name] = value
        return "/stylize", options
    what = f"operation {op[:40]!r}" if op not in OPERATIONS else f"key of operation {op!r}"
    raise ApiError(404, "not_found", f"{what} does not follow a batch layout; layouts: {LAYOUTS}")


def _style_of(part):
    """``{"style": name}`` or ``{"style_image": painting}`` from the part of a key after ``stylize/``."""
    name, _, value = part.partition("=")
    if not _:
        return {"style": part}
    if name == STYLE_IMAGE and value and value not in (".", ".."):
        return {STYLE_IMAGE: value}
    if name == STYLE_IMAGE:
        raise ApiError(400, f"invalid_{STYLE_IMAGE}", f"{part[:80]!r} names no painting: give "
                       f"{STYLE_IMAGE}=<painting>, the name of a file under {PAINTINGS}/ of the input prefix")
    raise _which_style("neither was given")


def _which_style(given):
    """The 400 of a stylize key with both or neither of a style and a painting (as the route's)."""
    return ApiError(400, "missing_style" if given.startswith("neither") else "style_conflict",
                    "give exactly one of a named style (stylize/<style>/...) and a painting "
                    f"(stylize/{STYLE_IMAGE}=<painting>/..., the painting uploaded under {PAINTINGS}/ of the "
                    f"input prefix) right after stylize/; {given}")


def _code(error):
    return error.response.get("Error", {}).get("Code")


class BatchRefused(RuntimeError):
    """The function was asked to write where it must not (under its input prefix)."""


class Batch:
    """Processes S3 ObjectCreated records. ``app``: the API's WSGI app (built from ``config`` if not
    given); ``s3``: a boto3 client (default: a new one)."""

    def __init__(self, settings=None, config=None, app=None, s3=None):
        self.settings = settings or BatchSettings()
        self.config = config if config is not None else batch_config({})
        self._app = app
        self._s3 = s3

    @property
    def s3(self):
        if self._s3 is None:
            import boto3
            self._s3 = boto3.client("s3")
        return self._s3

    @property
    def app(self):
        if self._app is None:
            from imgapi.app import create_app
            self._app = create_app(self.config)
        return self._app

    # -- S3 -------------------------------------------------------------------------------
    def put(self, bucket, key, body, content_type, metadata):
        if key.startswith(self.settings.input_prefix):
            raise BatchRefused(f"refusing to write {key!r}: it is under the input prefix "
                               f"{self.settings.input_prefix!r} and would trigger the function again")
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, Metadata=metadata)

    def _etag_of(self, bucket, key):
        """The input ETag recorded on an existing output, or None when there is no such object."""
        from botocore.exceptions import ClientError
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in MISSING_CODES:  # 403 too: the role may not list the bucket
                return None
            raise
        return head.get("Metadata", {}).get(ETAG_METADATA)

    # -- work -----------------------------------------------------------------------------
    def run(self, route, options, data, painting=None):
        """One image through the app: ``(status, body bytes, headers)``. With ``painting`` (bytes), a multipart
        request with the image and the painting as ``style_image``, as a client of ``/stylize`` sends it."""
        client = self.app.test_client()
        if painting is None:
            resp = client.post(route, query_string=options, data=data, content_type="application/octet-stream",
                               headers={"Accept": "image/png"})
        else:
            form = {"image": (io.BytesIO(data), "image"), STYLE_IMAGE: (io.BytesIO(painting), STYLE_IMAGE)}
            resp = client.post(route, query_string=options, data=form, content_type="multipart/form-data",
                               headers={"Accept": "image/png"})
        return resp.status_code, resp.get_data(), resp.headers

    def painting(self, bucket, name):
        """The bytes of the painting ``name`` (at most one byte over the upload limit: the app answers 413,
        naming ``style_image``); 404 ``style_image_not_found`` when the bucket has none by that name."""
        from botocore.exceptions import ClientError
        key = self.settings.painting_key(name)
        try:
            obj = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _code(error) in MISSING_CODES:  # 403 too: the role may not list the bucket
                raise ApiError(404, f"{STYLE_IMAGE}_not_found",
                               f"no painting at {key} in bucket {bucket}: upload it there before the photos that "
                               "name it (tools/batch.py --style-image does), then upload the photo again") from None
            raise
        with obj["Body"] as stream:
            return stream.read(self.config.max_upload_bytes + 1)

    def _process(self, bucket, key, data):
        """``(status, body, headers)`` of the app for the input ``key`` with the bytes ``data``; an error of
        the key or of the painting it names is answered like the app's."""
        try:
            route, options = parse_key(key, self.settings)
            name = options.pop(STYLE_IMAGE, None)
            painting = None if name is None else self.painting(bucket, name)
        except ApiError as error:
            return error.status, json.dumps(error.body()).encode(), {}
        return self.run(route, options, data, painting)

    def handle_record(self, record):
        """One record of an S3 event: returns ``{"key", "outcome", ...}``; raises on a 5xx or an S3 error."""
        from botocore.exceptions import ClientError
        t0 = time.perf_counter()
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])  # S3 event keys are URL-encoded, '+' for space
        etag = (record["s3"]["object"].get("eTag") or "").strip('"')
        result = {"key": key}
        if not key.startswith(self.settings.input_prefix) or key.endswith("/"):
            return dict(result, outcome="ignored")  # not an input (or a console "folder" marker)
        if key.startswith(self.settings.painting_prefix):
            return dict(result, outcome="painting")  # read when a photo names it
        out_key, failed_key = self.settings.result_keys(key)
        if etag and etag in (self._etag_of(bucket, out_key), self._etag_of(bucket, failed_key)):
            return dict(result, outcome="skipped")  # re-delivery: already done for this very object
        try:
            extra = {"IfMatch": f'"{etag}"'} if etag else {}
            obj = self.s3.get_object(Bucket=bucket, Key=key, **extra)
        except ClientError as error:
            if _code(error) in ("PreconditionFailed", "412"):
                return dict(result, outcome="superseded")  # overwritten since: its own event follows
            if _code(error) in ("NoSuchKey", "404", "NotFound"):
                return dict(result, outcome="gone")
            raise
        etag = obj["ETag"].strip('"')
        with obj["Body"] as stream:  # at most one byte over the limit: the app answers 413 upload_too_large
            data = stream.read(self.config.max_upload_bytes + 1)
        status, body, headers = self._process(bucket, key, data)
        meta = {ETAG_METADATA: etag, "status": str(status),
                "input-key": quote(key[len(self.settings.input_prefix):], safe="/")}
        if status == 200:
            meta.update({name: headers[h] for name, h in (("model", "X-Model"), ("sha256", "X-Sha256"),
                                                          ("style-image", "X-Style-Image"), ("denoise", "X-Denoise"),
                                                          ("jpeg-quality", "X-Jpeg-Quality")) if h in headers})
            self.put(bucket, out_key, body, "image/png", meta)
            result.update(outcome="done", output=out_key)
        elif status < 500:
            self.put(bucket, failed_key, body, "application/json", meta)
            result.update(outcome="failed", output=failed_key, status=status,
                          code=json.loads(body)["error"]["code"])
        else:  # not the input's fault: let Lambda retry, then the on-failure destination
            raise RuntimeError(f"{key}: {status} {body[:500].decode(errors='replace')}")
        result["ms"] = round((time.perf_counter() - t0) * 1000)
        return result

    def handle(self, event):
        """Every record of an S3 event. A record that raises does not stop the others; the first such error
        is raised at the end (the retry skips the records already done)."""
        results, errors = [], []
        for record in event.get("Records", []):
            try:
                result = self.handle_record(record)
            except Exception as error:  # reported below and raised: Lambda retries, then the destination
                errors.append(error)
                log.exception(json.dumps({"event": "batch_error", "key": record.get("s3", {}).get(
                    "object", {}).get("key")}))
                continue
            log.info(json.dumps(dict(result, event="batch")))
            results.append(result)
        if errors:
            raise errors[0]
        return {"results": results}
