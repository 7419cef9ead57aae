"""Model store: model name -> loaded TorchScript module, from ``weights/`` or from S3.

A TorchScript file is code, so a file is loaded only from the configured location and only
when its sha256 matches the manifest. With ``MODEL_BUCKET`` set, files are downloaded once per
container into ``MODEL_CACHE_DIR`` (temp file + rename, so a cut download never leaves a
partial file under the real name) and a cached file is reused on the next cold start when its
sha256 still matches. Each model is loaded once per process; loading is safe under concurrent
requests. Anything that keeps a model from loading becomes a 503 for that model only.

Weights updates while containers are warm: ``tools/upload_weights.py`` stores every file under a
content-addressed key (``sha256/<hex>/<path>``), never overwrites one, and publishes the manifest last.
In S3 mode the manifest is read again once it is ``MANIFEST_TTL_S`` old; a model whose sha256 changed is
loaded from its new file on its next request, while the old one keeps serving until then. A model is
always one file checked against the sha256 of the manifest that named it, so old and new never mix,
and an old manifest's files are still there for a container that has not refreshed yet.
"""
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from imgapi.errors import ApiError, unavailable

log = logging.getLogger("imgapi.store")
# What S3 answers for a key that is not there: 404 (NoSuchKey from GetObject, "404" from HeadObject), or
# 403 when the caller may not list the bucket.
MISSING_CODES = ("NoSuchKey", "404", "NotFound", "AccessDenied", "403")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def conditioned(entry):
    """Whether a manifest ``entry`` is a network conditioned on the damage level (``arch.condition`` is
    ``"damage"``: the ``real`` SR model), whose input has a fourth plane (``imgapi.engine``)."""
    arch = entry.get("arch") if isinstance(entry, dict) else None
    return isinstance(arch, dict) and arch.get("condition") == "damage"


@dataclass(frozen=True)
class Model:
    """A loaded model: its manifest ``entry``, the TorchScript ``module`` and its ``sha256``."""

    name: str
    module: object
    sha256: str
    entry: dict

    @property
    def conditioned(self):
        """True when the module takes the damage level as a fourth input plane (:func:`conditioned`)."""
        return conditioned(self.entry)


class ModelStore:
    """Resolve names of the manifest to loaded modules. Thread-safe."""

    def __init__(self, config):
        self.config = config
        self._lock = threading.Lock()
        self._name_locks = {}
        self._models = {}
        self._manifest = None
        self._manifest_at = time.monotonic()
        self._s3 = None

    # -- manifest -------------------------------------------------------------------------
    def manifest(self):
        """``{name: entry}`` of the manifest: fetched once (retried after a failure), and in S3 mode
        fetched again once it is ``manifest_ttl_s`` old (the last good one is kept if that fails)."""
        with self._lock:
            if self._manifest is None:
                self._manifest = self._read_manifest()
                self._manifest_at = time.monotonic()
            elif self.config.model_bucket and \
                    time.monotonic() - self._manifest_at >= getattr(self.config, "manifest_ttl_s", 60.0):
                self._manifest_at = time.monotonic()
                try:
                    fresh = self._read_manifest()
                except ApiError as exc:
                    log.warning(json.dumps({"event": "manifest_refresh_failed", "error": exc.code}))
                else:
                    if fresh != self._manifest:
                        log.info(json.dumps({"event": "manifest_changed"}))
                    self._manifest = fresh
            return self._manifest

    def _read_manifest(self):
        try:
            if self.config.model_bucket:
                raw = self._s3_get(self.config.model_prefix + "manifest.json")
            else:
                raw = (Path(self.config.weights_dir) / "manifest.json").read_bytes()
        except ApiError:
            raise
        except FileNotFoundError:
            raise unavailable("manifest_missing",
                              f"no manifest.json in {self.config.weights_dir}.") from None
        try:
            models = json.loads(raw)["models"]
            if not isinstance(models, dict):
                raise TypeError("models is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise unavailable("manifest_invalid", f"the weights manifest is invalid ({exc}).") from None
        return models

    def entry(self, name):
        """The manifest entry of ``name``, or None if there is none."""
        return self.manifest().get(name)

    def names(self, kind=None):
        return sorted(n for n, e in self.manifest().items() if kind is None or e.get("kind") == kind)

    # -- files ----------------------------------------------------------------------------
    def _client(self):
        if self._s3 is None:
            import boto3
            from botocore.config import Config as BotoConfig
            self._s3 = boto3.client("s3", config=BotoConfig(
                connect_timeout=2, read_timeout=20, retries={"max_attempts": 2, "mode": "standard"}))
        return self._s3

    def _missing(self, key, exc):
        """The ``weights_missing`` 503 when S3 says ``key`` is not there, else None.

        The function's role may not list the bucket (no s3:ListBucket), and then S3 answers a missing key
        with 403 AccessDenied instead of 404: both mean "not uploaded" here (a role that truly may not
        read the prefix is a deployment error the same command does not fix, so the message says both)."""
        from botocore.exceptions import ClientError
        if not isinstance(exc, ClientError):
            return None
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in MISSING_CODES:
            return None
        log.warning(json.dumps({"event": "weights_missing", "key": key, "error": code}))
        return ApiError(503, "weights_missing",
                        f"s3://{self.config.model_bucket}/{key} is not in the models bucket (S3 answered "
                        f"{code}), or this function may not read it. Upload the weights: `make upload-weights "
                        "STAGE=<stage> REGION=<region>` (python -m tools.upload_weights --stack imgapi-<stage>); "
                        "`make deploy` does it after `sls deploy`. Retry once they are uploaded.",
                        {"Retry-After": "60"})

    def _s3_get(self, key):
        try:
            obj = self._client().get_object(Bucket=self.config.model_bucket, Key=key)
            return obj["Body"].read()
        except Exception as exc:
            missing = self._missing(key, exc)
            if missing is not None:
                raise missing from None
            log.warning(json.dumps({"event": "s3_get_failed", "key": key, "error": type(exc).__name__}))
            raise unavailable("model_store_unreachable",
                              f"the model store s3://{self.config.model_bucket}/{key} could not be "
                              f"read ({type(exc).__name__}).") from None

    def _download(self, key, dest):
        """Download ``key`` to ``dest`` atomically: a temp file in the same folder, then rename."""
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                self._client().download_fileobj(self.config.model_bucket, key, f)
            os.replace(tmp, dest)
        except (ConnectionError, TimeoutError) as exc:  # OSErrors of the network, not of the disk
            raise unavailable("model_store_unreachable",
                              f"s3://{self.config.model_bucket}/{key} could not be downloaded "
                              f"({type(exc).__name__}).") from None
        except OSError as exc:
            raise unavailable("model_cache_unwritable",
                              f"the model cache {dest.parent} could not be written ({exc.strerror}).") from None
        except Exception as exc:
            missing = self._missing(key, exc)
            if missing is not None:
                raise missing from None
            raise unavailable("model_store_unreachable",
                              f"s3://{self.config.model_bucket}/{key} could not be downloaded "
                              f"({type(exc).__name__}).") from None
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)

    def file(self, relpath, sha256=None):
        """Local path of the weights file ``relpath`` (downloaded in S3 mode), checked if ``sha256``."""
        if Path(relpath).is_absolute() or ".." in Path(relpath).parts:
            raise unavailable("manifest_invalid", f"the manifest names a file outside the store: {relpath}.")
        if not self.config.model_bucket:
            path = Path(self.config.weights_dir) / relpath
            if not path.is_file():
                raise unavailable("model_missing", f"the weights file {relpath} is missing.")
            if sha256 and sha256_file(path) != sha256:
                raise unavailable("checksum_mismatch",
                                  f"{relpath} does not match its sha256 in the manifest.")
            return path
        path = Path(self.config.model_cache_dir) / relpath
        if path.is_file() and (not sha256 or sha256_file(path) == sha256):
            return path
        if path.is_file():
            log.warning(json.dumps({"event": "cache_corrupt", "file": relpath}))
        self._download(self.config.model_prefix + relpath, path)
        if sha256 and sha256_file(path) != sha256:
            path.unlink(missing_ok=True)
            raise unavailable("checksum_mismatch",
                              f"{relpath} downloaded from s3://{self.config.model_bucket} does not "
                              "match its sha256 in the manifest.")
        return path

    # -- models ---------------------------------------------------------------------------
    def get(self, name):
        """The loaded ``Model`` called ``name`` in the current manifest; loads it on first use and again
        when the manifest names a new sha256 for it. KeyError if unknown, 503 if broken."""
        entry = self.entry(name)
        if entry is None:
            raise KeyError(name)
        model = self._models.get(name)
        if model is not None and model.sha256 == entry.get("sha256"):
            return model
        with self._lock:
            name_lock = self._name_locks.setdefault(name, threading.Lock())
        with name_lock:
            model = self._models.get(name)
            if model is None or model.sha256 != entry.get("sha256"):
                old = model
                model = self._load(name, entry)
                self._models[name] = model
                if old is not None:  # requests still running with the old module keep their reference
                    log.info(json.dumps({"event": "model_replaced", "model": name,
                                         "old": old.sha256[:12], "new": model.sha256[:12]}))
                    self._forget_cached(old.entry.get("file"), model.entry.get("file"))
        return model

    def _forget_cached(self, old_file, new_file):
        """Delete a replaced model's downloaded file, so /tmp does not fill up with old versions."""
        if not self.config.model_bucket or not old_file or old_file == new_file:
            return
        try:
            (Path(self.config.model_cache_dir) / old_file).unlink(missing_ok=True)
        except OSError:
            pass

    def _load(self, name, entry):
        import torch
        if "file" not in entry or "sha256" not in entry:
            raise unavailable("manifest_invalid", f"the manifest entry of {name} lacks file or sha256.")
        path = self.file(entry["file"], entry["sha256"])
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:
            raise unavailable("model_load_failed", f"{name} could not be loaded ({type(exc).__name__}).") from None
        from imgapi.engine import warm_up
        # keeps small the heap its first real forward would grow (engine.warm_up); a conditioned network
        # refuses a 3-plane probe
        warmed = warm_up(module, planes=4 if conditioned(entry) else 3)
        log.info(json.dumps({"event": "model_loaded", "model": name, "sha256": entry["sha256"][:12],
                             "warmed_up": warmed}))
        return Model(name, module, entry["sha256"], entry)

    def status(self):
        """``{name: {"sha256", "kind", "loaded"}}`` for /health; does not load anything."""
        return {n: {"sha256": e.get("sha256"), "kind": e.get("kind"),
                    "loaded": n in self._models and self._models[n].sha256 == e.get("sha256")}
                for n, e in self.manifest().items()}
