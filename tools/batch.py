"""Send a folder of photos through the stack's batch function and collect the results (make batch).

    python -m tools.batch photos/ --op upscale [--model real] [--scale 4] [--denoise 0.5] --stack imgapi-dev --region eu-west-1
    python -m tools.batch photos/ --op stylize --style starry_night [--strength 0.8] [--preserve-color] --bucket B
    python -m tools.batch photos/ --op stylize --style-image painting.jpg [--strength 0.8] --stack imgapi-dev

``--style`` is any named style (a trained network or a preset); ``--style-image`` is any painting: it is
uploaded first, once, to ``in/paintings/<sha256>.<ext>`` and the photos go to
``in/stylize/style_image=<sha256>.<ext>/<options>/<name>/<path>`` (imgapi/batch.py reads it from there).

Uploads every file of the folder (hidden ones left out) to ``in/<op>/<options>/<name>/<path>`` of the batch
bucket with a progress bar, waits until each has its result (``out/...png``) or failure file
(``failed/...json``) for the very object it uploaded (the ``input-etag`` metadata the function writes),
downloads them into ``-o`` (results as ``<path>.png``, failures under ``failed/``) and prints a summary.
Exit status 0 when every image succeeded.

``--invoke-locally`` runs the batch handler in this process after each upload, with the S3 event the
bucket's notification would send, instead of waiting for the deployed function: for tests against
moto_server and for trying the layout without a stack (needs the serving requirements and weights, as
``make serve`` does). Needs only boto3 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import posixpath
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from imgapi.batch import ETAG_METADATA, BatchSettings
from imgapi.config import DEFAULT_SR_MODEL, SR_MODELS


@dataclass
class Job:
    rel: str  # path in the folder, '/'-separated
    source: Path
    key: str
    out_key: str
    failed_key: str
    etag: str = ""
    outcome: str = "pending"  # done, failed, error, timeout
    detail: str = ""
    local: Path | None = None


@dataclass
class Progress:
    """A one-line text progress bar on a stream (no dependency)."""

    total: float
    label: str
    stream: object = None  # sys.stderr at the time of writing
    done: float = 0
    _last: float = field(default=0.0, repr=False)

    def __post_init__(self):
        self.stream = self.stream or sys.stderr

    def advance(self, amount, note=""):
        self.done += amount
        now = time.monotonic()
        if now - self._last >= 0.1 or self.done >= self.total:
            self._last = now
            share = self.done / self.total if self.total else 1.0
            bar = "#" * int(share * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {share * 100:5.1f}% {note}".rstrip() + " ")
            self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


def collect(folder: Path) -> list[tuple[str, Path]]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append((rel.as_posix(), path))
    return files


def plan(folder: Path, settings: BatchSettings, op: str, name: str, options: dict) -> list[Job]:
    """One job per file; refuses two files whose results would share a key (photo.jpg and photo.png)."""
    jobs, seen = [], {}
    for rel, path in collect(folder):
        key = settings.input_key(op, posixpath.join(name, rel) if name else rel, **options)
        out_key, failed_key = settings.result_keys(key)
        if out_key in seen:
            raise SystemExit(f"{seen[out_key]} and {rel} would have the same result {out_key}: rename one")
        seen[out_key] = rel
        jobs.append(Job(rel, path, key, out_key, failed_key))
    return jobs


def s3_event_record(bucket: str, key: str, etag: str, size: int) -> dict:
    """The record of an S3 ObjectCreated:Put notification for an object (keys URL-encoded as S3 does)."""
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}}}


def painting_name(path: Path) -> str:
    """The name a painting is uploaded under: the sha256 of its bytes and its extension (``<hex>.jpg``), so
    that a changed painting never takes an earlier one's results."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ext = path.suffix.lower()
    return digest + (ext if re.fullmatch(r"\.[a-z0-9]{1,8}", ext) else "")


def upload_painting(s3, bucket: str, settings: BatchSettings, path: Path, name: str, notify=None) -> str:
    """Upload the painting before the photos that name it; returns its key."""
    key = settings.painting_key(name)
    s3.upload_file(str(path), bucket, key)
    if notify is not None:  # the bucket notifies the function of it too: it answers "painting", writes nothing
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        notify(s3_event_record(bucket, key, etag, path.stat().st_size))
    print(f"painting {path.name} -> {key}", file=sys.stderr)
    return key


def upload(s3, bucket: str, jobs: list[Job], notify=None, stream=None) -> None:
    progress = Progress(sum(j.source.stat().st_size for j in jobs) or 1, "upload  ", stream)
    for n, job in enumerate(jobs, 1):
        s3.upload_file(str(job.source), bucket, job.key,
                       Callback=lambda sent, n=n: progress.advance(sent, f"{n}/{len(jobs)} files"))
        job.etag = s3.head_object(Bucket=bucket, Key=job.key)["ETag"].strip('"')
        if notify is not None:
            try:
                notify(s3_event_record(bucket, job.key, job.etag, job.source.stat().st_size))
            except Exception as error:  # the handler raised: what Lambda would retry, then queue
                job.outcome, job.detail = "error", f"{type(error).__name__}: {error}"
    progress.close()


def _etag_on(s3, bucket: str, key: str) -> str | None:
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(ETAG_METADATA)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "403"):
            return None
        raise


def wait(s3, bucket: str, jobs: list[Job], timeout_s: float, poll_s: float, stream=None) -> None:
    pending = [j for j in jobs if j.outcome == "pending"]
    progress = Progress(len(pending) or 1, "process ", stream)
    deadline = time.monotonic() + timeout_s
    while pending:
        for job in list(pending):
            if _etag_on(s3, bucket, job.out_key) == job.etag:
                job.outcome = "done"
            elif _etag_on(s3, bucket, job.failed_key) == job.etag:
                job.outcome = "failed"
            else:
                continue
            pending.remove(job)
            progress.advance(1, f"{len(jobs) - len(pending)}/{len(jobs)} results")
        if pending and time.monotonic() >= deadline:
            for job in pending:
                job.outcome = "timeout"
            break
        if pending:
            time.sleep(poll_s)
    progress.close()


def download(s3, bucket: str, jobs: list[Job], out_dir: Path) -> None:
    import json
    for job in jobs:
        if job.outcome == "done":
            job.local = out_dir / (posixpath.splitext(job.rel)[0] + ".png")
            key = job.out_key
        elif job.outcome == "failed":
            job.local = out_dir / "failed" / (job.rel + ".json")
            key = job.failed_key
        else:
            continue
        job.local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(job.local))
        if job.outcome == "failed":
            error = json.loads(job.local.read_text()).get("error", {})
            job.detail = f"{error.get('code')}: {error.get('message')}"


def summary(jobs: list[Job], out_dir: Path, seconds: float) -> str:
    counts = {k: sum(j.outcome == k for j in jobs) for k in ("done", "failed", "error", "timeout")}
    lines = [f"{len(jobs)} files in {seconds:.0f} s: {counts['done']} done, {counts['failed']} failed, "
             f"{counts['error']} errors, {counts['timeout']} without an answer; results in {out_dir}/"]
    for job in jobs:
        if job.outcome != "done":
            lines.append(f"  {job.outcome:8} {job.rel}: {job.detail or 'no result or failure file in time'}")
    return "\n".join(lines)


def run(s3, bucket: str, folder: Path, out_dir: Path, op: str, options: dict, *, settings: BatchSettings,
        name: str, timeout_s: float = 1800, poll_s: float = 5, notify=None, stream=None,
        painting: Path | None = None) -> list[Job]:
    """``painting``: the file that ``options["style_image"]`` names, uploaded before the photos."""
    t0 = time.monotonic()
    jobs = plan(folder, settings, op, name, options)
    if not jobs:
        raise SystemExit(f"no files in {folder}")
    if painting is not None:
        upload_painting(s3, bucket, settings, painting, options["style_image"], notify)
    upload(s3, bucket, jobs, notify, stream)
    wait(s3, bucket, jobs, timeout_s, poll_s, stream)
    download(s3, bucket, jobs, out_dir)
    print(summary(jobs, out_dir, time.monotonic() - t0))
    return jobs


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.batch", description=__doc__.split("\n", 1)[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--op", choices=("upscale", "stylize"), required=True)
    p.add_argument("--model", default=DEFAULT_SR_MODEL,
                   help=f"upscale: {', '.join(SR_MODELS)} (default {DEFAULT_SR_MODEL})")
    p.add_argument("--denoise", help="upscale with real: auto or 0 to 1 (default auto: measured from each photo)")
    p.add_argument("--scale", default="4", help="upscale: 2, 3 or 4 (default 4)")
    p.add_argument("--style", help="stylize: a style name (GET /styles): a trained network or a preset")
    p.add_argument("--style-image", type=Path, metavar="PAINTING",
                   help="stylize: any painting (an image file) as the style, instead of --style")
    p.add_argument("--strength", help="stylize: 0 to 1 (default 1)")
    p.add_argument("--preserve-color", action="store_true", help="stylize: keep the photo's colours")
    p.add_argument("--max-side", help="stylize: longest side it is stylized at (default 1024)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="the stack made by make deploy (imgapi-STAGE): its BatchBucketName")
    where.add_argument("--bucket", help="the batch bucket, with the default prefixes in/, out/, failed/")
    p.add_argument("--region", help="AWS region (default: boto3's)")
    p.add_argument("--name", help="folder name in the keys (default: the folder's own name)")
    p.add_argument("-o", "--out", type=Path, help="where results go (default: FOLDER_<op>)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the last result (1800)")
    p.add_argument("--poll", type=float, default=5, help="seconds between checks (5)")
    p.add_argument("--invoke-locally", action="store_true",
                   help="run the batch handler in this process instead of the deployed function (tests)")
    args = p.parse_args(argv)
    if args.op == "stylize" and bool(args.style) == bool(args.style_image):
        given = "both were given" if args.style else "neither was given"
        p.error("--op stylize needs exactly one of --style NAME (a named style) and --style-image PAINTING "
                f"(any painting); {given}")
    if args.op != "stylize" and (args.style or args.style_image):
        p.error("--style and --style-image are options of --op stylize")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    session = boto3.session.Session(region_name=args.region)
    s3 = session.client("s3")
    settings, bucket = BatchSettings(), args.bucket
    try:
        if args.stack:
            from tools.upload_weights import UploadError, stack_outputs
            try:
                outputs = stack_outputs(session.client("cloudformation"), args.stack)
            except UploadError as error:
                print(f"batch: {error}", file=sys.stderr)
                return 1
            if "BatchBucketName" not in outputs:
                print(f"batch: stack {args.stack!r} has no BatchBucketName output: deploy this version first",
                      file=sys.stderr)
                return 1
            bucket = outputs["BatchBucketName"]
            settings = BatchSettings(outputs.get("BatchInputPrefix") or "in/",
                                     outputs.get("BatchOutputPrefix") or "out/",
                                     outputs.get("BatchFailedPrefix") or "failed/")
        if args.op == "upscale":
            options = {"model": args.model, "scale": args.scale, "denoise": args.denoise}
        else:
            options = {"style": args.style, "strength": args.strength,
                       "preserve_color": "true" if args.preserve_color else None, "max_side": args.max_side}
        if args.style_image is not None:
            try:
                options["style_image"] = painting_name(args.style_image)
            except OSError as error:
                print(f"batch: the painting {args.style_image} could not be read ({error.strerror or error})",
                      file=sys.stderr)
                return 1
        notify = None
        if args.invoke_locally:
            import batch_handler
            batch_handler.batch.settings = settings
            notify = lambda record: batch_handler.handler({"Records": [record]}, None)  # noqa: E731
        folder = args.folder.resolve()
        out_dir = args.out or folder.parent / f"{folder.name}_{args.op}"
        jobs = run(s3, bucket, folder, out_dir, args.op, options, settings=settings,
                   name=args.name if args.name is not None else folder.name,
                   timeout_s=args.timeout, poll_s=args.poll, notify=notify, painting=args.style_image)
    except (ClientError, BotoCoreError) as error:
        print(f"batch: AWS refused or could not be reached: {error}", file=sys.stderr)
        return 1
    return 0 if all(j.outcome == "done" for j in jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
