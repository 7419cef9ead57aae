"""What a request carries: its options (form field or query string, each at most once) and its image.

Every value that is missing, repeated or out of range is a 400 whose message says what is allowed
(``docs/api.md``, "Sending an image").
"""
from flask import request

from imgapi.errors import ApiError, bad_request


def field(name, default=None):
    """One option from the multipart form or the query string; 400 if given twice."""
    values = request.form.getlist(name) + request.args.getlist(name)
    if len(values) > 1:
        raise bad_request("duplicate_field", f"field {name!r} was given {len(values)} times; give it once")
    return values[0].strip() if values else default


def choice(name, allowed, default):
    """An option that must be one of ``allowed``."""
    value = field(name, default)
    if value not in allowed:
        raise bad_request(f"invalid_{name}", f"{name} {value!r} is not supported. "
                          f"Supported values: {', '.join(map(str, allowed))}")
    return value


def number(name, default, lo, hi, cast=float, also=""):
    """A number from ``lo`` to ``hi`` (an integer when ``cast`` is ``int``); ``also`` names what else the
    field takes, for the error ("auto or ")."""
    raw = field(name)
    if raw is None:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value is None or value != value or not lo <= value <= hi:
        kind = "an integer" if cast is int else "a number"
        raise bad_request(f"invalid_{name}", f"{name} {raw[:40]!r} is not valid: give {also}{kind} from {lo} to {hi}")
    return value


def auto_or_number(name, lo, hi):
    """None for a missing field or ``auto`` (any case), else a number from ``lo`` to ``hi``."""
    raw = field(name)
    if raw is None or raw.lower() == "auto":
        return None
    return number(name, None, lo, hi, also="auto or ")


def boolean(name, default=False):
    """true/1/yes/on or false/0/no/off/empty, in any case."""
    raw = field(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes", "on"):
        return True
    if raw.lower() in ("false", "0", "no", "off", ""):
        return False
    raise bad_request(f"invalid_{name}", f"{name} {raw[:40]!r} is not valid: give true or false")


def upload(config):
    """The uploaded image's bytes: multipart field ``image`` or a raw ``image/*`` body."""
    ctype = request.mimetype or ""
    if ctype == "multipart/form-data":
        data = file_field(config, "image")
        if data is None:
            if "image" in request.form:
                raise bad_request("missing_image", "field 'image' must be a file upload, not text")
            raise bad_request("missing_image", "no file in field 'image' of the multipart body")
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        data = request.get_data(cache=False)
        _check_size(data, config, "image")
    else:
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {ctype or '(none)'!r} is not accepted: send multipart/form-data "
                       "with the file in field 'image', or the image itself as image/*")
    return data


def file_field(config, name):
    """The bytes of the multipart file ``name``, or None when the request has none (or is not multipart);
    400 when it is given twice or as text, 413 over ``MAX_UPLOAD_BYTES``."""
    files = request.files.getlist(name) if request.mimetype == "multipart/form-data" else []
    if not files:
        if name != "image" and name in request.form:
            raise bad_request(f"invalid_{name}", f"field {name!r} must be a file upload, not text")
        return None
    if len(files) > 1:
        raise bad_request("duplicate_field", f"field {name!r} was given {len(files)} times; send one image")
    data = files[0].read(config.max_upload_bytes + 1)
    _check_size(data, config, name)
    return data


def _check_size(data, config, name):
    if len(data) > config.max_upload_bytes:
        which = "upload" if name == "image" else f"file {name!r}"
        raise ApiError(413, "upload_too_large",
                       f"the {which} is over the limit of {config.max_upload_bytes} bytes")
