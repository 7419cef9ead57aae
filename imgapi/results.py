"""Results too large for an inline response: stored in S3 and handed back as a presigned GET URL.

AWS Lambda caps a synchronous response at 6 MB, and base64 grows a PNG by 4/3, so a large upscale cannot
travel in the JSON body. The result bucket keeps each PNG under ``RESULT_PREFIX`` with a random key; a
lifecycle rule on that bucket (serverless.yml) deletes it after a day.

A presigned URL is only as good as the credentials that signed it: on Lambda those are the function role's
temporary credentials, and the URL stops working when they expire, whatever its own ``X-Amz-Expires`` says
(AWS: services that assume a role, the Lambda execution role among them, do not necessarily follow the
role's session duration). Hence a short default (``RESULT_URL_EXPIRES`` = 900 s: the page fetches a result
at once), and where the SDK knows when its credentials expire (role or SSO profiles, credential_process,
container and instance credentials) the URL's lifetime is cut to that and ``expires_in`` says so. Lambda's
own environment credentials carry no expiry the SDK can read: there ``expires_in`` is the setting.
"""

from __future__ import annotations

import json
import logging
import secrets
import time

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from imgapi.errors import unavailable

log = logging.getLogger("imgapi.results")

# SigV4 explicitly: it is what every region accepts for presigned URLs, and moto verifies it the same way.
_S3_CONFIG = BotoConfig(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"})
# A URL is given this much less than its credentials' remaining life (clock skew between S3 and us).
CREDENTIAL_MARGIN_S = 60
# SigV4 presigned URLs live at most 7 days.
MAX_EXPIRES_S = 7 * 24 * 3600


def _credentials_left_s(session):
    """Seconds until the session's credentials expire, or None when the SDK does not know (static keys,
    Lambda's environment credentials). Refreshes credentials that are about to expire first."""
    credentials = session.get_credentials()
    if credentials is None:
        return None
    credentials.get_frozen_credentials()  # botocore refreshes credentials close to their expiry here
    expiry = getattr(credentials, "_expiry_time", None)  # RefreshableCredentials only
    if expiry is None:
        return None
    return expiry.timestamp() - time.time()


def put_result(png: bytes, config) -> dict:
    """Store one PNG in the result bucket and return where the client can fetch it.

    ``png``: the encoded image, any size S3 accepts in one PUT (up to 5 GB).
    ``config``: the app's ``Config``; uses ``result_bucket`` (must be set), ``result_prefix`` (key prefix,
    e.g. ``results/``) and ``result_url_expires`` (seconds the URL stays valid).

    Returns ``{"url": presigned GET URL, "expires_in": seconds}``. The URL is signed with the caller's
    credentials, and a presigned URL stops working when they expire: when the SDK knows that time,
    ``expires_in`` (and the URL's X-Amz-Expires) is cut to it, so it is the URL's true lifetime.

    The S3 client honours ``AWS_ENDPOINT_URL`` (a local moto_server in tests). When S3 refuses or cannot
    be reached, raises the app's 503 ``ApiError`` (``result_store_unreachable``, retryable).
    """
    if not config.result_bucket:
        raise ValueError("put_result needs a result bucket: RESULT_BUCKET is not set")
    expires_in = max(1, min(int(config.result_url_expires), MAX_EXPIRES_S))
    # 128 random bits: keys cannot be guessed or enumerated, and two requests never collide.
    key = f"{config.result_prefix}{secrets.token_hex(16)}.png"
    try:
        session = boto3.session.Session()
        s3 = session.client("s3", config=_S3_CONFIG)
        s3.put_object(Bucket=config.result_bucket, Key=key, Body=png, ContentType="image/png")
        left = _credentials_left_s(session)
        if left is not None and left - CREDENTIAL_MARGIN_S < expires_in:
            expires_in = max(1, int(left - CREDENTIAL_MARGIN_S))
            log.info(json.dumps({"event": "result_url_cut_to_credentials", "expires_in": expires_in}))
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
