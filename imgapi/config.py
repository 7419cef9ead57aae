"""Configuration: read once from the environment into one frozen object.

Nothing else in the package reads ``os.environ`` (boto3 reads its own ``AWS_*`` variables).
Defaults come from the AWS limits the API lives under: API Gateway's 29 s integration timeout
and Lambda's 6 MB synchronous payload, which base64 (4/3) shrinks to about 4.5 MB of bytes.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpus():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# The SR models ``POST /upscale`` offers (docs/api.md; ``real`` takes the damage level, docs/models.md), and the
# one it runs when a request names none: the command line's default too, and the page's (``/health`` reports it).
SR_MODELS = ("srgan", "srresnet", "real")
DEFAULT_SR_MODEL = "real"
DENOISE_MODELS = ("real",)  # those that take ``denoise``

# Lambda gives CPU in proportion to memory: one vCPU per 1769 MB, up to 6 vCPUs at 10240 MB.
LAMBDA_MB_PER_VCPU = 1769
# The SR network's throughput on one x86 core, from this project's inference (docs/bench.md: 2.96 s for a
# 256x256 input on 2 cores; ~4.5 MFLOP per input pixel at ~50 GFLOP/s a core). Each vCPU beyond the
# first adds ~80 % of one (torch's threads do not scale perfectly).
SR_PIXELS_PER_S_PER_VCPU = 11_000
EXTRA_VCPU_EFFICIENCY = 0.8
# Of API Gateway's 29 s, the largest upscale may take this much compute: the rest is for a cold start
# (image, init, weights download and load), decoding, PNG encoding and a slower-than-measured CPU.
SR_COMPUTE_BUDGET_S = 12.0
# Below this much memory the SR tiles are halved: a 256-px tile peaks at ~1.1-1.3 GB of RSS.
FULL_TILE_MIN_MB = 2048


def lambda_vcpus(memory_mb):
    """The vCPUs Lambda gives a function of ``memory_mb`` MB (fractional below 1769 MB, at most 6)."""
    return min(6.0, memory_mb / LAMBDA_MB_PER_VCPU)


def sr_seconds(pixels, memory_mb):
    """Estimated compute seconds of a 4x upscale of ``pixels`` input pixels at ``memory_mb`` on Lambda."""
    vcpus = lambda_vcpus(memory_mb)
    effective = min(vcpus, 1.0) + EXTRA_VCPU_EFFICIENCY * max(vcpus - 1.0, 0.0)
    return pixels / (SR_PIXELS_PER_S_PER_VCPU * effective)


def limits_for_memory(memory_mb, ceiling=512 * 512):
    """``{"max_upscale_pixels", "tile"}`` that keep the largest upscale inside the 29 s timeout and the
    tiles inside the memory of a Lambda function with ``memory_mb`` MB. The pixel limit is a square whose
    side is a multiple of 16 (what the page's "smaller copy" offer and the error message can state),
    at most ``ceiling`` (512x512: its 2048x2048 result is what a 6 MB response can carry)."""
    side = 16
    while (side + 16) ** 2 <= ceiling and sr_seconds((side + 16) ** 2, memory_mb) <= SR_COMPUTE_BUDGET_S:
        side += 16
    return {"max_upscale_pixels": side * side, "tile": 256 if memory_mb >= FULL_TILE_MIN_MB else 128}


@dataclass(frozen=True)
class Config:
    """Every setting of the service. See README "Configuration" for the variables."""

    weights_dir: Path = ROOT / "weights"
    model_bucket: str = ""
    model_prefix: str = "weights/"
    model_cache_dir: Path = Path("/tmp/models")  # Lambda's only writable folder, see SECURITY.md  # nosec B108
    # With MODEL_BUCKET: how old the manifest may get before a request reads it again (weights updates
    # reach warm containers within this; one small GET each time).
    manifest_ttl_s: float = 60.0
    result_bucket: str = ""
    result_prefix: str = "results/"
    # A presigned URL dies with the credentials that signed it (on Lambda the role's temporary ones, whose
    # remaining life the function cannot read): short, since the page fetches a result at once (results.py).
    result_url_expires: int = 900
    # Request limits. 4 MiB of upload is 5.6 MB once API Gateway base64-encodes it: under 6 MB.
    max_upload_bytes: int = 4 * 1024 * 1024
    # 512x512 in -> 2048x2048 out, within the 29 s timeout on 2 cores (docs/performance.md). On Lambda
    # the default follows the function's memory (limits_for_memory): 448x448 at 3008 MB, 512x512 from
    # ~4000 MB.
    max_upscale_pixels: int = 512 * 512
    # Decoded before the shrink to max_side; 16.7 MP is 67 MB of RGBA.
    max_stylize_pixels: int = 4096 * 4096
    max_side_limit: int = 2048
    # Largest response body in bytes (Lambda: 6 MB); 0 means no limit (local server).
    max_response_bytes: int = 0
    # 256: a 256x256 input runs untiled and 512x512 in 4 tiles (half the recomputed overlap of 192-px tiles),
    # and peak RSS is bounded by the tile whatever the input size (docs/performance.md). On Lambda, 128 below
    # 2048 MB (limits_for_memory).
    tile: int = 256
    tile_overlap: int = 16
    torch_threads: int = field(default_factory=_cpus)
    max_concurrent: int = 1
    queue_timeout_s: float = 20.0
    # Requests that may wait for a slot at once; more get a quick 503 (waitress has 8 threads by default).
    max_queue: int = 4
    cors_origins: tuple = ()
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def max_body_bytes(self):
        """The largest request body read: two files (a photo and, for /stylize, a painting) of at most
        ``max_upload_bytes`` each, and the multipart overhead."""
        return 2 * self.max_upload_bytes + 64 * 1024

    @classmethod
    def from_env(cls, env=None):
        """Build the config from ``env`` (default ``os.environ``); unset variables keep defaults."""
        env = os.environ if env is None else env
        on_lambda = bool(env.get("AWS_LAMBDA_FUNCTION_NAME"))
        d = cls()
        sized = {}
        if on_lambda and env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"):
            # Lambda sets this to the deployed memory (serverless.yml's `memory` parameter).
            sized = limits_for_memory(int(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]))

        def get(name, default, cast=str):
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return cast(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {cast.__name__}") from None

        return cls(
            weights_dir=Path(get("WEIGHTS_DIR", d.weights_dir)),
            model_bucket=get("MODEL_BUCKET", ""),
            model_prefix=get("MODEL_PREFIX", d.model_prefix),
            model_cache_dir=Path(get("MODEL_CACHE_DIR", d.model_cache_dir)),
            manifest_ttl_s=get("MANIFEST_TTL_S", d.manifest_ttl_s, float),
            result_bucket=get("RESULT_BUCKET", ""),
            result_prefix=get("RESULT_PREFIX", d.result_prefix),
            result_url_expires=get("RESULT_URL_EXPIRES", d.result_url_expires, int),
            max_upload_bytes=get("MAX_UPLOAD_BYTES", d.max_upload_bytes, int),
            max_upscale_pixels=get("MAX_UPSCALE_PIXELS", sized.get("max_upscale_pixels", d.max_upscale_pixels), int),
            max_stylize_pixels=get("MAX_STYLIZE_PIXELS", d.max_stylize_pixels, int),
            max_side_limit=get("MAX_SIDE_LIMIT", d.max_side_limit, int),
            max_response_bytes=get("MAX_RESPONSE_BYTES", 6_000_000 if on_lambda else 0, int),
            tile=get("TILE", sized.get("tile", d.tile), int),
            tile_overlap=get("TILE_OVERLAP", d.tile_overlap, int),
            torch_threads=get("TORCH_THREADS", d.torch_threads, int),
            max_concurrent=get("MAX_CONCURRENT", d.max_concurrent, int),
            queue_timeout_s=get("QUEUE_TIMEOUT_S", d.queue_timeout_s, float),
            max_queue=get("MAX_QUEUE", d.max_queue, int),
            cors_origins=tuple(o.strip() for o in get("CORS_ORIGINS", "").split(",") if o.strip()),
            host=get("HOST", d.host),
            port=get("PORT", d.port, int),
        )
