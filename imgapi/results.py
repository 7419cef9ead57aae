"""Results too large for an inline response: stored in S3 and handed back as a presigned GET URL.

AWS Lambda caps a synchronous response at 6 MB, and base64 grows a PNG by 4/3, so a large upscale cannot
travel in the JSON body. The result bucket keeps each PNG under ``RESULT_PREFIX`` with a random key; a
lifecycle rule on that bucket (serverless.yml) deletes it after a day.
"""

from __future__ import annotations

import json
import logging
import secrets

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from imgapi.errors import unavailable

log = logging.getLogger("imgapi.results")

# SigV4 explicitly: it is what every region accepts for presigned URLs, and moto verifies it the same way.
_S3_CONFIG = BotoConfig(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"})


def put_result(png: bytes, config) -> dict:
    """Store one PNG in the result bucket and return where the client can fetch it.

    ``png``: the encoded image, any size S3 accepts in one PUT (up to 5 GB).
    ``config``: the app's ``Config``; uses ``result_bucket`` (must be set), ``result_prefix`` (key prefix,
    e.g. ``results/``) and ``result_url_expires`` (seconds the URL stays valid).

    Returns ``{"url": presigned GET URL, "expires_in": seconds}``. The URL is signed with the caller's
    credentials: on Lambda those are the function role's, and a presigned URL stops working when they
    expire, which can be sooner than ``expires_in``.

    The S3 client honours ``AWS_ENDPOINT_URL`` (a local moto_server in tests). When S3 refuses or cannot
    be reached, raises the app's 503 ``ApiError`` (``result_store_unreachable``, retryable).
    """
    if not config.result_bucket:
        raise ValueError("put_result needs a result bucket: RESULT_BUCKET is not set")
    expires_in = int(config.result_url_expires)
    # 128 random bits: keys cannot be guessed or enumerated, and two requests never collide.
    key = f"{config.result_prefix}{secrets.token_hex(16)}.png"
    try:
        s3 = boto3.client("s3", config=_S3_CONFIG)
        s3.put_object(Bucket=config.result_bucket, Key=key, Body=png, ContentType="image/png")
        url = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": config.result_bucket, "Key": key},
            ExpiresIn=expires_in,
        )
    except (BotoCoreError, ClientError) as exc:
        log.warning(json.dumps({"event": "result_put_failed", "key": key, "error": type(exc).__name__}))
        raise unavailable(
            "result_store_unreachable",
            f"the result could not be stored in s3://{config.result_bucket} ({type(exc).__name__}).",
        ) from None
    return {"url": url, "expires_in": expires_in}
