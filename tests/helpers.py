"""Helpers shared by the tests: small deterministic images made in memory, and a models bucket
seeded with a weights folder for the S3 tests."""
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(w=24, h=16, seed=0):
    """A smooth-ish RGB test image with some texture (PIL)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), (x + y) / max(w + h - 2, 1)], -1) * 200
    noise = rng.normal(0, 12, (h, w, 3))
    return Image.fromarray(np.clip(base + noise + 20, 0, 255).astype(np.uint8), "RGB")


def run_manifest(folder):
    """The ``models`` of the ``manifest.json`` a training run wrote into ``folder`` (its ``--out``)."""
    return json.loads((Path(folder) / "manifest.json").read_text())["models"]


def encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bytes(w=24, h=16, mode="RGB", seed=0):
    img = photo(w, h, seed)
    if mode != "RGB":
        img = img.convert(mode)
    return encode(img)


def decode_png(data):
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    img.load()
    return img


def bomb_png(width=100_000, height=100_000):
    """A ~100-byte PNG whose header declares ``width`` x ``height`` pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


MODEL_BUCKET = "imgapi-models-test"
# Real API Gateway and S3 event JSON, one file an event.
EVENTS = Path(__file__).parent / "events"


def seed_model_bucket(weights, bucket=MODEL_BUCKET):
    """Create ``bucket`` and upload the weights folder (manifest included) under ``weights/``.

    boto3 goes wherever ``AWS_ENDPOINT_URL`` points (the ``moto_env`` fixture). Returns the client.
    """
    import boto3
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for path in weights.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, "weights/" + path.relative_to(weights).as_posix())
    return s3


def deployed_buckets(weights, models, *others):
    """Create ``models`` and ``others`` in moto_server and publish ``weights`` into ``models`` under
    ``weights/`` the way ``make upload-weights`` does (content-addressed, manifest last). Returns the client."""
    import boto3

    from tools.upload_weights import upload_weights
    s3 = boto3.client("s3")
    for bucket in (models, *others):
        s3.create_bucket(Bucket=bucket)
    upload_weights(s3, models, "weights/", weights, log=lambda line: None)
    return s3


def s3_config(cache, bucket=MODEL_BUCKET):
    """A one-thread ``Config`` reading models from ``bucket`` into the ``cache`` folder."""
    from imgapi.config import Config
    return Config(model_bucket=bucket, model_cache_dir=cache, torch_threads=1, weights_dir=cache / "none")
