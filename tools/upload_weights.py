"""Put weights/ (traced models, style thumbnails, manifest.json) into the models bucket the function reads.

    python tools/upload_weights.py --stack imgapi-dev --region eu-west-1   # the bucket the stack created
    python tools/upload_weights.py --bucket BUCKET [--prefix weights/]      # any bucket
    python tools/upload_weights.py --stack imgapi-dev --empty-buckets       # before `sls remove`

Each file the manifest names (a model's ``file``, a style's ``thumbnail``) is stored under a content-addressed
key, PREFIX + ``sha256/<hex>/<its path under weights/>``, with its sha256 also in the object's metadata
(``x-amz-meta-sha256``). A key that is already there holds those bytes, so it is skipped: a second run
uploads nothing and a retrained model uploads only itself. No object is ever overwritten, so a warm
container still working from the previous manifest finds that manifest's files unchanged. Then the
manifest, with each path replaced by its content-addressed one, is written to PREFIX + manifest.json,
last, in one PUT: a container that reads it finds every file it names already there, and a container
that has not read it yet keeps serving the old, complete set (imgapi/store.py re-reads it every
MANIFEST_TTL_S). Before anything is sent, every model the manifest names must exist locally with the
manifest's sha256, or the function would answer 503 (checksum mismatch) later. Old versions stay in the
bucket (a few MB each); delete ``PREFIX + sha256/`` objects no current manifest names to reclaim them.

boto3 finds credentials and region the usual way (environment, profile); ``AWS_ENDPOINT_URL`` points it
at another endpoint (a moto_server in tests). Needs s3:PutObject and s3:GetObject on the prefix
(cloudformation:DescribeStacks with --stack; s3:ListBucket and s3:DeleteObject with --empty-buckets).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import mimetypes
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
CONTENT_DIR = "sha256"  # PREFIX + sha256/<hex>/<path>
FILE_KEYS = ("file", "thumbnail")  # the manifest entry fields that name a file under weights/
SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256
CHUNK = 1 << 20


class UploadError(Exception):
    """Something the user must fix before weights can be uploaded; the message says what."""


@dataclass
class UploadReport:
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_manifest(weights_dir: Path) -> dict:
    """Load weights_dir/manifest.json and check that every file it names is there with its sha256."""
    manifest_path = weights_dir / MANIFEST
    if not manifest_path.is_file():
        raise UploadError(f"{manifest_path} not found: train or export the models first")
    try:
        manifest = json.loads(manifest_path.read_text())
        models = manifest["models"]
    except (ValueError, KeyError, TypeError) as error:
        raise UploadError(f"{manifest_path} is not a manifest ({{'models': {{...}}}}): {error}") from error
    for name, entry in models.items():
        for key in ("file", "thumbnail"):
            if key not in entry:
                continue
            path = weights_dir / entry[key]
            if not path.is_file():
                raise UploadError(f"model {name!r}: {key} {entry[key]!r} not found under {weights_dir}")
        expected = entry.get("sha256")
        if "file" in entry and expected:
            actual = sha256_of(weights_dir / entry["file"])
            if actual != expected:
                raise UploadError(
                    f"model {name!r}: {entry['file']} has sha256 {actual}, the manifest says {expected}; "
                    "re-export the manifest"
                )
    return manifest


def content_key(relative: str, digest: str) -> str:
    """The content-addressed path (under PREFIX) of a file with that path under weights/ and that sha256."""
    return f"{CONTENT_DIR}/{digest}/{relative}"


def published_manifest(manifest: dict, digests: dict[str, str]) -> dict:
    """The manifest as the bucket holds it: every file path replaced by its content-addressed one."""
    published = copy.deepcopy(manifest)
    for entry in published["models"].values():
        for key in FILE_KEYS:
            if key in entry:
                entry[key] = content_key(entry[key], digests[entry[key]])
    return published


def stored_sha256(s3, bucket: str, key: str) -> str | None:
    """The sha256 recorded on an object by an earlier upload, or None if the object is not there."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get(SHA256_METADATA)


def upload_weights(
    s3, bucket: str, prefix: str, weights_dir: Path, log: Callable[[str], None] = print
) -> UploadReport:
    """Upload the files weights_dir/manifest.json names to content-addressed keys under s3://bucket/prefix,
    skipping those already there, then publish the manifest (rewritten to those keys) last.

    ``prefix`` ends with "/" (or is empty). Returns the relative paths uploaded and left unchanged
    (``manifest.json`` last among them).
    """
    manifest = check_manifest(weights_dir)
    report = UploadReport()
    files = sorted({entry[key] for entry in manifest["models"].values() for key in FILE_KEYS if key in entry})
    digests = {}
    for relative in files:
        path = weights_dir / relative
        digests[relative] = digest = sha256_of(path)
        key = prefix + content_key(relative, digest)
        if stored_sha256(s3, bucket, key) == digest:
            report.unchanged.append(relative)
            log(f"unchanged  s3://{bucket}/{key}")
            continue
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        s3.upload_file(
            str(path),
            bucket,
            key,
            ExtraArgs={"Metadata": {SHA256_METADATA: digest}, "ContentType": content_type},
        )
        report.uploaded.append(relative)
        log(f"uploaded   s3://{bucket}/{key} ({path.stat().st_size / 1e6:.1f} MB)")
    # Last, in one PUT: every file it names is already in the bucket.
    body = (json.dumps(published_manifest(manifest, digests), indent=1, sort_keys=True) + "\n").encode()
    digest = hashlib.sha256(body).hexdigest()
    key = prefix + MANIFEST
    if stored_sha256(s3, bucket, key) == digest:
        report.unchanged.append(MANIFEST)
        log(f"unchanged  s3://{bucket}/{key}")
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                      Metadata={SHA256_METADATA: digest})
        report.uploaded.append(MANIFEST)
        log(f"uploaded   s3://{bucket}/{key} (manifest, published last)")
    return report


def empty_bucket(s3, bucket: str, log: Callable[[str], None] = print) -> int:
    """Delete every object in a bucket (CloudFormation cannot delete a bucket that has any). Returns the count."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    log(f"emptied    s3://{bucket} ({deleted} objects)")
    return deleted


def stack_outputs(cloudformation, stack: str) -> dict[str, str]:
    """The Outputs of a deployed stack (serverless.yml: ModelBucketName, ModelPrefix, ResultBucketName)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        raise UploadError(f"stack {stack!r}: {error}; deploy first (make deploy) or pass --bucket") from error
    return {item["OutputKey"]: item["OutputValue"] for item in stacks[0].get("Outputs", [])}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="CloudFormation stack made by `sls deploy` (imgapi-STAGE)")
    where.add_argument("--bucket", help="models bucket name")
    parser.add_argument("--prefix", help="key prefix (default: the stack's ModelPrefix, else weights/)")
    parser.add_argument("--region", help="AWS region (default: boto3's, from the environment or profile)")
    parser.add_argument(
        "--weights-dir", type=Path, default=REPO_ROOT / "weights", help="local folder (default: weights/)"
    )
    parser.add_argument(
        "--empty-buckets",
        action="store_true",
        help="delete every object in the models bucket (and the stack's result and batch buckets) instead of uploading",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    s3 = session.client("s3")
    try:
        buckets = [args.bucket]
        prefix = args.prefix
        if args.stack:
            outputs = stack_outputs(session.client("cloudformation"), args.stack)
            if "ModelBucketName" not in outputs:
                raise UploadError(f"stack {args.stack!r} has no ModelBucketName output")
            buckets = [outputs["ModelBucketName"]] + [
                outputs[name] for name in ("ResultBucketName", "BatchBucketName") if name in outputs
            ]
            prefix = prefix if prefix is not None else outputs.get("ModelPrefix")
        if args.empty_buckets:
            for bucket in buckets:
                empty_bucket(s3, bucket)
            return 0
        prefix = "weights/" if prefix is None else prefix
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        report = upload_weights(s3, buckets[0], prefix, args.weights_dir)
        print(f"{len(report.uploaded)} uploaded, {len(report.unchanged)} unchanged")
        return 0
    except UploadError as error:
        print(f"upload_weights: {error}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError, S3UploadFailedError) as error:
        print(f"upload_weights: AWS refused or could not be reached: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
