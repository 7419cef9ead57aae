"""The routes of ``docs/api.md``, one function each, in the order of its table.

Each one reads its options (:mod:`imgapi.fields`), decodes the image (:mod:`imgapi.images`), refuses a
result that could not go back before any work (:mod:`imgapi.respond`), runs the engine in an inference
slot (:mod:`imgapi.admission`) and answers (:mod:`imgapi.respond`). What every request goes through
(errors, headers, logs) is :mod:`imgapi.hooks`.
"""
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify, send_file

from imgapi import engine, fields, images, stylize as style_engine
from imgapi.config import DEFAULT_SR_MODEL, DENOISE_MODELS, SR_MODELS
from imgapi.errors import ApiError, bad_request, unavailable
from imgapi.respond import check_result_fits, respond
from imgapi.universal import UNIVERSAL_MAX_SIDE

STATIC = Path(__file__).resolve().parent / "static"

api = Blueprint("api", __name__)


@api.get("/")
def page():
    index = STATIC / "index.html"
    if not index.is_file():
        return Response("The web page is not installed.", mimetype="text/plain")
    return send_file(index, mimetype="text/html", max_age=0)


@api.post("/upscale")
def upscale():
    config = _config()
    name = fields.choice("model", SR_MODELS, DEFAULT_SR_MODEL)
    scale = fields.number("scale", 4, 2, 4, int)
    denoise = _denoise(name)
    data = fields.upload(config)
    rgb, alpha = images.decode(data, config.max_upscale_pixels)
    check_result_fits(rgb.width * scale, rgb.height * scale, _channels(alpha), config)
    m = _model(name)
    meta, level = {"model": name, "sha256": m.sha256[:12], "scale": scale}, None
    if m.conditioned:
        level, quality = images.damage_level(data, rgb, denoise)
        meta.update(denoise=round(level, 3), denoise_source="auto" if denoise is None else "request",
                    jpeg_quality=quality)
    out, out_alpha = _admission().run(lambda: engine.upscale(m.module, rgb, alpha, scale=scale, tile=config.tile,
                                                             overlap=config.tile_overlap, level=level))
    return respond(out, out_alpha, meta, config)


@api.post("/stylize")
def stylize():
    config, known = _config(), _style_names()
    style, painting = fields.field("style"), fields.file_field(config, "style_image")
    if (style is None) == (painting is None):
        given = "both were given" if style is not None else "neither was given"
        raise bad_request("missing_style" if style is None else "style_conflict",
                          f"give exactly one of field 'style' (a named style: {', '.join(known)}) and a file "
                          f"'style_image' (any painting); {given}")
    if style is not None and style not in known:
        raise bad_request("invalid_style", f"style {style[:60]!r} is not known. Styles: {', '.join(known)}")
    strength = fields.number("strength", 1.0, 0.0, 1.0)
    preserve = fields.boolean("preserve_color")
    max_side = fields.number("max_side", 1024, 16, config.max_side_limit, int)
    network = style is not None and _store().entry(f"style/{style}").get("kind") != "preset"
    if not network:  # the universal model's full-size features, float32: 2.2-2.7 GB of peak RSS at 768 px
        max_side = min(max_side, UNIVERSAL_MAX_SIDE)
    # As arrays: no copies into PIL and out.
    rgb, alpha = images.decode(fields.upload(config), config.max_stylize_pixels, arrays=True)
    width, height = images.size_of(rgb)
    k = min(1.0, max_side / max(width, height))
    check_result_fits(round(width * k), round(height * k), _channels(alpha), config)
    options = dict(strength=strength, preserve_color=preserve, max_side=max_side)
    if network:
        m = _model(f"style/{style}")
        out, out_alpha = _admission().run(lambda: style_engine.stylize_with_alpha(m.module, rgb, alpha, **options))
        return respond(out, out_alpha, {"model": f"style/{style}", "style": style, "sha256": m.sha256[:12],
                                        "strength": strength, "preserve_color": preserve}, config)
    universal = _universal()
    stats, about = universal.preset(style) if style is not None else universal.painting(painting, config)
    out, out_alpha = _admission().run(lambda: universal.stylize(rgb, alpha, stats, **options))
    return respond(out, out_alpha, dict(about, model="universal", sha256=universal.sha256[:12],
                                        strength=strength, preserve_color=preserve), config)


@api.get("/styles")
def list_styles():
    out = []
    for name in _style_names():
        e = _store().entry(f"style/{name}")
        out.append({"name": name, "title": e.get("title", name), "artist": e.get("artist", ""),
                    "licence": e.get("licence", ""), "source": e.get("source", ""),
                    "thumbnail": f"/styles/{name}/thumbnail" if e.get("thumbnail") else None})
    return jsonify(styles=out)


@api.get("/styles/<name>/thumbnail")
def thumbnail(name):
    e = _store().entry(f"style/{name}")
    if e is None or not e.get("thumbnail"):
        raise ApiError(404, "not_found", f"no thumbnail for style {name!r}")
    return send_file(_store().file(e["thumbnail"]), max_age=86400)


@api.get("/health")
def health():
    config = _config()
    return jsonify(status="ok", models=_store().status(), default_sr_model=DEFAULT_SR_MODEL, limits={
        "max_upload_bytes": config.max_upload_bytes,
        "max_upscale_pixels": config.max_upscale_pixels,
        "max_stylize_pixels": config.max_stylize_pixels,
        "max_side_limit": config.max_side_limit,
        "max_response_bytes": config.max_response_bytes,
        "result_bucket": bool(config.result_bucket),
    })


def _config():
    return current_app.extensions["imgapi"]["config"]


def _store():
    return current_app.extensions["imgapi"]["store"]


def _admission():
    return current_app.extensions["imgapi"]["admission"]


def _universal():
    """The universal stylizer (:class:`imgapi.styles.UniversalStyles`) over this app's store."""
    return current_app.extensions["imgapi"]["universal"]


def _denoise(model):
    """The ``denoise`` field: None for ``auto`` (measured from the upload) or missing, else the level 0..1 the
    request asks for; 400 ``invalid_denoise`` for another value, or for a number given to a model that takes none
    (``auto``, the default, is accepted by every model: a client may send it whatever model it picks)."""
    given = fields.field("denoise")
    if model not in DENOISE_MODELS and given is not None and given.lower() != "auto":
        raise bad_request("invalid_denoise", f"denoise applies to model {' and '.join(DENOISE_MODELS)} only; "
                          f"model {model} takes no denoise: leave the field out")
    return fields.auto_or_number("denoise", 0, 1)


def _channels(alpha):
    return 3 if alpha is None else 4


def _model(name):
    """The loaded model ``name``. An SR model the API offers that the manifest lacks is this deployment's
    fault (503 ``model_missing``); any other name it lacks is 400 ``unknown_model``."""
    try:
        return _store().get(name)
    except KeyError:
        if name in SR_MODELS:
            raise unavailable("model_missing", f"{name} is not in this deployment's weights manifest "
                                               "(its weights were not deployed).") from None
        raise bad_request("unknown_model", f"no model {name!r} in the manifest") from None


def _style_names():
    """Named styles: trained networks (kind ``style``) and universal presets (kind ``preset``)."""
    return [n.split("/", 1)[1] for n, e in sorted(_store().manifest().items())
            if n.startswith("style/") and e.get("kind") in ("style", "preset")]
