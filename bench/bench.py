"""``make bench``: how fast the served networks run on this machine, against its limit and a peer.

One run measures, at the thread count the server uses (``Config().torch_threads``):

* the attainable peak: float32 matmul GFLOP/s over a few square sizes (medians and the fastest repeat,
  timed before and after the networks), and a 2048x2048 matmul timed in every round of the networks;
* the SR network at 64, 128, 256 px inputs and the style network at 256, 512 px: latency, GFLOP/s with the
  FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions; norms, activations and the
  bicubic skip count as zero), and the share of the peak (paired with that matmul; and of its fastest repeat);
* the same networks exported to ONNX inside the benchmark (a temp dir, never shipped) and run by ONNX
  Runtime, timed interleaved with ours on the same input: ours/theirs time ratio;
* end to end through the app (Flask test client, multipart in, base64 PNG out) against the bare forward on
  the same image, interleaved: the serving overhead;
* cold start in a fresh interpreter: ``import torch``, importing and creating the app, loading the model
  from the local folder and from a ``moto_server`` S3, the first and second inference;
* peak RSS (``VmHWM``, a fresh interpreter per size) of an upscale through the tiled engine.

Timings are medians over repeats after warm-up. The shipped weights (``weights/manifest.json``) are used
when present; otherwise freshly built networks of the shipped shapes, traced the way the training pipeline
traces them. The output says which. Writes ``bench/results/bench.json`` and ``docs/bench.md``.

    python -m bench.bench            # the full run, about 3-5 minutes on 2 cores
    python -m bench.bench --quick    # one repeat, small memory cases: checks that everything runs
"""
import argparse
import base64
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import imgapi  # noqa: F401,I001 - first: the server's OpenMP setting (GOMP_SPINCOUNT) before torch loads OpenMP
import numpy as np
import torch
from PIL import Image

from imgapi.config import Config

ROOT = Path(__file__).resolve().parent.parent
SR_CASES = ((64, 15), (128, 7), (256, 3))  # (input side, repeats)
STYLE_CASES = ((256, 15), (512, 9))
RSS_SIZES = (256, 512, 1024)
PHOTO = ROOT / "tests" / "data" / "sr_val" / "opencv_butterfly.png"


# -- helpers ------------------------------------------------------------------------------------
def median_ms(times):
    return round(statistics.median(times) * 1000, 2)


SETTLE_S = 0.05


def paired_ratio(a, b):
    """Median of ``a[i] / b[i]`` over the rounds of :func:`interleaved`: each pair ran back to back, so a
    change in machine load between rounds cancels out (this VM's speed drifts 10-30 % within minutes)."""
    return round(statistics.median(x / y for x, y in zip(a, b)), 3)


def interleaved(fns, reps, warmup=1, settle_s=SETTLE_S):
    """Run each callable of ``fns`` ``warmup`` times, then ``reps`` rounds of all of them in turn, so
    that a change in machine load hits every contender alike. Returns ``{name: [seconds]}``.

    Each run starts ``settle_s`` after the previous one ended (untimed): the thread pools of both
    torch (OpenMP) and ONNX Runtime spin-wait after a run, and without the pause they take the cores
    from the next contender (the style network at 256 px: 67 ms alone, 115 ms right after ONNX Runtime).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            time.sleep(settle_s)
            t = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t)
    return out


def status(key):
    """A ``/proc/self/status`` memory figure (``"VmRSS:"``, ``"VmHWM:"``) of this process, in bytes: the child
    interpreters' peak-RSS reading."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


def photo(side):
    """A ``side`` x ``side`` RGB photo (a validation image resized), or a smooth synthetic one."""
    if PHOTO.is_file():
        with Image.open(PHOTO) as im:
            im = im.convert("RGB")
        s = min(im.size)
        return im.crop((0, 0, s, s)).resize((side, side), Image.LANCZOS)
    y, x = np.mgrid[0:side, 0:side] / side
    a = np.stack([x, y, (x + y) / 2], -1) * 200 + np.random.default_rng(0).normal(0, 8, (side, side, 3))
    return Image.fromarray(np.clip(a + 20, 0, 255).astype(np.uint8), "RGB")


def to_input(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the models under test ----------------------------------------------------------------------
def prepare_weights(src_dir, dest):
    """A weights folder in ``dest`` with one SR model (``srgan``) and one style (``style/bench``).

    Each comes from the shipped files in ``src_dir`` when the manifest lists them, else is a fresh
    network of the shipped shape traced as the training pipeline does. Returns ``{role: description}``.
    """
    from training.manifest import update_manifest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        shipped = json.loads((src_dir / "manifest.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        shipped = {}
    sources = {}

    def copy_shipped(role, names, target, entry_extra):
        for name in names:
            e = shipped.get(name)
            if e and (src_dir / e["file"]).is_file():
                shutil.copyfile(src_dir / e["file"], dest / target)
                update_manifest(dest, role, dict(e, file=target, **entry_extra))
                sources[role] = f"shipped {name} ({e['file']}, sha256 {e.get('sha256', '?')[:12]})"
                return True
        return False

    sr_names = ["srgan", "srresnet"]
    if not copy_shipped("srgan", sr_names, "srgan.pt", {}):
        from model.srresnet import SRResNet
        from training.export import export_sr
        torch.manual_seed(0)
        export_sr(SRResNet(), dest / "srgan.pt")
        update_manifest(dest, "srgan", dict(file="srgan.pt", kind="sr", scale=4))
        sources["srgan"] = ("fresh SRResNet() (no shipped SR weights yet), traced by "
                            "training.export.export_sr()")
    style_names = sorted(n for n, e in shipped.items() if n.startswith("style/") and e.get("kind") == "style")
    if not copy_shipped("style/bench", style_names, "style_bench.pt", {}):
        from model.transformer_net import TransformerNet
        from training.export import export_style
        torch.manual_seed(0)
        export_style(TransformerNet(), dest / "style_bench.pt")
        update_manifest(dest, "style/bench", dict(file="style_bench.pt", kind="style", title="bench"))
        sources["style/bench"] = ("fresh TransformerNet() (no shipped style weights yet), traced by "
                                  "training.export.export_style()")
    return sources


def count_flops(module, x, eager_factory=None):
    """FLOPs of one forward of ``module`` on ``x``, counted by FlopCounterMode (convolutions, matmuls).

    Some traced graphs (the style network's scripted padding helpers) do not run under the counting
    mode; ``eager_factory()`` then gives the same network in eager form to count on.
    """
    from torch.utils.flop_counter import FlopCounterMode
    for candidate in (lambda: module, eager_factory):
        if candidate is None:
            continue
        try:
            counter = FlopCounterMode(display=False)
            with counter, torch.inference_mode():
                candidate()(x)
            return int(counter.get_total_flops())
        except RuntimeError:
            continue
    raise RuntimeError("could not count the FLOPs of the network")


def eager_style(module):
    """``TransformerNet`` with the shapes (and weights) of a traced style module, in its textbook form."""
    from training.export import style_from_state_dict
    return style_from_state_dict(module.state_dict())


def served(module, x):
    """``module(x)`` as the server runs it (``engine.plain_execution``: no TorchScript profiling executor)."""
    from imgapi.engine import plain_execution
    with plain_execution():
        return module(x)


def eager_sr(module):
    """The trainable ``SRResNet`` holding a served SR module's weights (``training.export``), on which FLOPs
    are counted as trained (the export's rewrites add zero taps that are no work)."""
    from training.export import sr_from_state_dict
    return sr_from_state_dict(module.state_dict())


def onnx_session(module, path, threads, sample):
    """Export ``module`` to ONNX at ``path`` (H, W dynamic) and open it in ONNX Runtime."""
    import warnings

    import onnxruntime as ort
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample,), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# -- sections -----------------------------------------------------------------------------------
def bench_peak(quick, earlier=None):
    """float32 matmul GFLOP/s over a few square sizes, timed back to back after warm-up: medians and the
    fastest repeat. ``make bench`` times it before and after the networks and pools the repeats
    (``earlier``: the first result). The networks' share of the peak is paired with a matmul timed in the
    same rounds instead (``bench_networks``): a peak timed in another minute of this drifting VM has come
    out both below the SR network's own rate (a slow minute) and, as a fastest repeat, 30 % above its
    usual (a fast one). The fastest repeat gives the conservative share beside it."""
    rows = []
    for i, n in enumerate((1024, 2048) if quick else (1024, 2048, 3072)):
        a, b, c = torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)
        t = interleaved({"mm": lambda: torch.mm(a, b, out=c)}, 3 if quick else 10, warmup=2, settle_s=0)["mm"]
        t = (earlier["sizes"][i]["times_s"] if earlier else []) + t
        rows.append({"n": n, "ms": median_ms(t), "gflops": round(2 * n ** 3 / statistics.median(t) / 1e9, 1),
                     "best_gflops": round(2 * n ** 3 / min(t) / 1e9, 1), "repeats": len(t), "times_s": t})
    return {"sizes": rows, "gflops": max(r["gflops"] for r in rows),
            "best_gflops": max(r["best_gflops"] for r in rows)}


def peer_forms(module, kind):
    """The forms of a served network that ONNX Runtime is given; the bench compares ours with its fastest.

    SR: the traced file as exported (its rewrites make ONNX Runtime faster too). Style: the textbook
    network (``nn.InstanceNorm2d`` on NCHW: ONNX InstanceNormalization, what ONNX Runtime optimises; our
    NHWC batch-norm trace would not be fair to it), with and without the export's exact convolution
    rewrites (``training.export.rewritten``), so that ours is not credited with a rewrite that
    ONNX Runtime could have had.
    """
    if kind != "style":
        return {"exported": module}
    from training.export import rewritten
    textbook = eager_style(module)
    textbook.fused_norm = False
    return {"textbook": textbook, "rewritten": rewritten(textbook)}


PAIRED_MATMUL = 2048


def bench_networks(modules, threads, tmp, quick):
    """Each network, ONNX Runtime's forms of it and a 2048x2048 float32 matmul, timed interleaved per input size.

    The share of the peak is paired like every other ratio here: the median over rounds of the network's
    GFLOP/s over the matmul's in the same round. The matmul is run once untimed right before its timed
    run, so that it is timed hot, as back to back in the peak section (timed cold, right after a forward,
    it ran 10-20 % slower). ``main`` adds the share of the fastest repeat of the peak sections beside it.
    """
    n = PAIRED_MATMUL
    ma, mb, mc = torch.rand(n, n), torch.rand(n, n), torch.empty(n, n)
    rows = []
    for role, kind, cases in (("srgan", "sr", SR_CASES), ("style/bench", "style", STYLE_CASES)):
        module = modules[role]
        sessions = {form: onnx_session(peer, tmp / f"{kind}_{form}.onnx", threads, torch.rand(1, 3, 64, 64))
                    for form, peer in peer_forms(module, kind).items()}
        for side, reps in cases:
            x = to_input(photo(side))
            # Counted on the network as trained, in eager form: the export's rewrites (the SR tail's zero
            # taps) add no counted work, and a traced module first run under the counting mode stays slow.
            counted = eager_style(module) if kind == "style" else eager_sr(module)
            flops = count_flops(counted, x)
            with torch.inference_mode():
                ours_y = module(x)
            diffs = {form: float(np.abs(ours_y.numpy() - sess.run(None, {"x": x.numpy()})[0]).max())
                     for form, sess in sessions.items()}
            hot = []

            def matmul():
                torch.mm(ma, mb, out=mc)  # untimed: the inputs back in cache
                t0 = time.perf_counter()
                torch.mm(ma, mb, out=mc)
                hot.append(time.perf_counter() - t0)

            fns = {"ours": lambda: served(module, x), "matmul": matmul}
            fns.update({form: (lambda s=sess: s.run(None, {"x": x.numpy()})) for form, sess in sessions.items()})
            with torch.inference_mode():
                t = interleaved(fns, 1 if quick else reps, warmup=1 if side >= 256 else 2)
            mm = hot[-len(t["ours"]):]  # the timed rounds, not the warm-up
            form = min(sessions, key=lambda f: statistics.median(t[f]))  # ONNX Runtime's fastest form
            ours, ort = statistics.median(t["ours"]), statistics.median(t[form])
            rows.append({
                "network": kind, "input": side, "gflop": round(flops / 1e9, 2),
                "ms": median_ms(t["ours"]), "gflops": round(flops / ours / 1e9, 1),
                "matmul_gflops": round(2 * n ** 3 / statistics.median(mm) / 1e9, 1),
                "of_peak": round(statistics.median((flops / o) / (2 * n ** 3 / m) for o, m in zip(t["ours"], mm)), 3),
                "ort_form": form, "ort_ms": median_ms(t[form]), "ort_gflops": round(flops / ort / 1e9, 1),
                "ort_forms_ms": {f: median_ms(t[f]) for f in sessions},
                "ours_over_ort": paired_ratio(t["ours"], t[form]),
                "max_abs_diff_vs_ort": diffs[form],
                "repeats": len(t["ours"]),
            })
            print(f"  {kind} {side}px: {rows[-1]['ms']} ms, {rows[-1]['gflops']} GFLOP/s; "
                  f"ORT {rows[-1]['ort_forms_ms']} ms "
                  f"(ours/ORT {form} {rows[-1]['ours_over_ort']})", flush=True)
    return rows


def add_peak_shares(rows, peak):
    """Each network's GFLOP/s as a share of the fastest matmul repeat of the peak sections (beside the paired
    share ``of_peak``)."""
    for r in rows:
        r["of_best_peak"] = round(r["gflops"] / peak["best_gflops"], 3)
    return rows


def bench_serving(weights, modules, threads, quick):
    """Through the app (multipart in, JSON with base64 PNG out) vs the bare forward on the same image."""
    import uuid

    from imgapi.app import create_app
    from tools.fixtures import multipart
    cfg = Config(weights_dir=weights, torch_threads=threads)
    client = create_app(cfg).test_client()
    rows = []
    for route, side, reps, role, fields in (("/upscale", 128, 9, "srgan", {"model": "srgan"}),
                                            ("/upscale", 256, 5, "srgan", {"model": "srgan"}),
                                            ("/stylize", 512, 21, "style/bench", {"style": "bench"})):
        img = photo(side)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        body = buf.getvalue()
        x = to_input(img)
        module = modules[role]

        def request():
            # A fresh boundary per request, as browsers send uploads: the server's parser compiles its
            # patterns for each one. The body is joined from bytes, so that the client's own work (the
            # test client's form encoder took ~1 ms) is not counted as serving overhead.
            form, ctype = multipart([*fields.items(), ("image", ("in.png", body, "image/png"))],
                                    boundary=uuid.uuid4().hex)
            r = client.post(route, data=form, content_type=ctype)
            if r.status_code != 200:
                raise RuntimeError(f"{route} answered {r.status_code}: {r.get_data(as_text=True)[:200]}")
            return r

        def bare():
            with torch.inference_mode():
                served(module, x)

        out = Image.open(io.BytesIO(base64.b64decode(request().get_json()["image"])))
        t = interleaved({"e2e": request, "bare": bare}, 1 if quick else reps, warmup=1)
        rows.append({"route": route, "input": side, "output": list(out.size), "e2e_ms": median_ms(t["e2e"]),
                     "forward_ms": median_ms(t["bare"]), "overhead": round(paired_ratio(t["e2e"], t["bare"]) - 1, 3),
                     "response_png_bytes": len(base64.b64decode(request().get_json()["image"])),
                     "tile": cfg.tile, "overlap": cfg.tile_overlap, "repeats": len(t["e2e"])})
        print(f"  {route} {side}px: e2e {rows[-1]['e2e_ms']} ms vs forward {rows[-1]['forward_ms']} ms "
              f"(overhead {rows[-1]['overhead']:+.1%})", flush=True)
    return rows


def bench_png(module, quick):
    """Encode time and size of a real 4x output (256x256 in, 1024x1024 out) at a few zlib levels."""
    from imgapi import engine, images
    out, _ = engine.upscale(module, photo(256), None, scale=4, tile=0)
    rows = []
    for level in (None, 1, 3, 6):
        t = interleaved({"png": lambda: images.encode_png(out, compress_level=level)}, 1 if quick else 3)["png"]
        rows.append({"level": level, "ms": median_ms(t), "bytes": len(images.encode_png(out, compress_level=level)),
                     "default": level == images.encode_png.__defaults__[-1]})
        print(f"  PNG {png_writer(level)}: {rows[-1]['ms']} ms, {rows[-1]['bytes']} bytes", flush=True)
    return rows


def png_writer(level):
    return "Up filter + Huffman only (images.png_bytes)" if level is None else f"Pillow, zlib level {level}"


COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from imgapi.app import create_app
from imgapi.config import Config
t2 = time.perf_counter()
app = create_app(Config.from_env())
t3 = time.perf_counter()
m = app.extensions["imgapi"]["store"].get("srgan")
t4 = time.perf_counter()
from PIL import Image
from imgapi import engine
img = Image.fromarray((torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy(), "RGB")
engine.upscale(m.module, img)  # as the server runs it
t5 = time.perf_counter()
engine.upscale(m.module, img)
t6 = time.perf_counter()
print(json.dumps({"import_torch": t1 - t0, "import_app": t2 - t1, "create_app": t3 - t2, "load": t4 - t3,
                  "first_inference": t5 - t4, "second_inference": t6 - t5}))
"""


def run_child(code, env):
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"child failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def base_env(threads, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODEL_", "WEIGHTS_"))}
    env.update(PYTHONPATH=str(ROOT), TORCH_THREADS=str(threads), **extra)
    return env


def bench_cold(weights, threads, tmp, quick):
    """Fresh interpreters: local weights, then a moto_server S3 with an empty cache each time."""
    reps = 1 if quick else 3
    runs = {"local": [run_child(COLD, base_env(threads, WEIGHTS_DIR=str(weights))) for _ in range(reps)]}
    moto = Path(sys.executable).parent / "moto_server"
    if moto.exists():
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("moto_server did not start")
                    time.sleep(0.1)
            creds = dict(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                         AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/nonexistent",
                         AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
            import boto3
            s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
            s3.create_bucket(Bucket="bench-models")
            for f in weights.iterdir():
                if f.is_file():
                    s3.upload_file(str(f), "bench-models", "weights/" + f.name)
            runs["s3"] = []
            for i in range(reps):
                cache = tmp / f"cache{i}"
                runs["s3"].append(run_child(COLD, base_env(threads, MODEL_BUCKET="bench-models",
                                                           MODEL_PREFIX="weights/", MODEL_CACHE_DIR=str(cache),
                                                           **creds)))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    out = {}
    for source, rs in runs.items():
        med = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        med["setup_beyond_torch"] = round(med["import_app"] + med["create_app"] + med["load"], 3)
        # Paired within each process, as the other ratios are: a slow minute slows both of its inferences.
        med["first_inference_extra"] = round(statistics.median(r["first_inference"] - r["second_inference"]
                                                               for r in rs), 3)
        med["beyond_torch"] = round(med["setup_beyond_torch"] + max(0.0, med["first_inference_extra"]), 3)
        med["repeats"] = len(rs)
        out[source] = med
        print(f"  cold start ({source}): import torch {med['import_torch']} s, beyond it {med['beyond_torch']} s "
              f"(app {med['import_app'] + med['create_app']:.3f}, load {med['load']}, first-inference extra "
              f"{med['first_inference_extra']})", flush=True)
    return out


RSS = r"""
import json, sys
import numpy as np
import torch
from PIL import Image
from imgapi import engine
from imgapi.config import Config
from imgapi.store import ModelStore
from bench.bench import photo, status

cfg = Config.from_env()
torch.set_num_threads(cfg.torch_threads)
engine.keep_freed_memory()  # as create_app does
m = ModelStore(cfg).get("srgan")
img = photo(int(sys.argv[1]))
before = status("VmRSS:")
out, _ = engine.upscale(m.module, img, None, scale=4, tile=cfg.tile, overlap=cfg.tile_overlap)
first = status("VmHWM:")
del out
out, _ = engine.upscale(m.module, img, None, scale=4, tile=cfg.tile, overlap=cfg.tile_overlap)  # warm
print(json.dumps({"rss_before": before, "first": first, "peak": status("VmHWM:"), "output": list(out.size),
                  "tile": cfg.tile, "overlap": cfg.tile_overlap}))
"""


def bench_rss(weights, threads, quick):
    rows = []
    for side in (64, 128, 256) if quick else RSS_SIZES:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", RSS, str(side)], cwd=ROOT, capture_output=True, text=True,
                           env=base_env(threads, WEIGHTS_DIR=str(weights)), timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"RSS child failed: {r.stderr[-2000:]}")
        d = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append({"input": side, "output": d["output"], "peak_rss_mb": round(d["peak"] / 2 ** 20, 1),
                     "first_request_peak_rss_mb": round(d["first"] / 2 ** 20, 1),
                     "rss_after_load_mb": round(d["rss_before"] / 2 ** 20, 1), "tile": d["tile"],
                     "overlap": d["overlap"], "seconds": round(time.perf_counter() - t, 1)})
        print(f"  upscale {side}px: peak RSS {rows[-1]['first_request_peak_rss_mb']} MB on the first request, "
              f"{rows[-1]['peak_rss_mb']} MB over two", flush=True)
    for r in rows:
        r["ratio_to_first"] = round(r["peak_rss_mb"] / rows[0]["peak_rss_mb"], 2)
        r["first_request_ratio"] = round(r["first_request_peak_rss_mb"] / rows[0]["first_request_peak_rss_mb"], 2)
    return rows


# -- report -------------------------------------------------------------------------------------
def targets(res):
    nets, serve = res["networks"], res["serving"]
    sr = [r for r in nets if r["network"] == "sr"]
    rss = res["rss"]
    t = [
        ("SR forward >= 75% of the matmul peak (each input size; paired with a hot 2048x2048 matmul in each round)",
         min(r["of_peak"] for r in sr),
         f"{min(r['of_peak'] for r in sr):.0%} .. {max(r['of_peak'] for r in sr):.0%} (of the fastest matmul repeat: "
         f"{min(r['of_best_peak'] for r in sr):.0%} .. {max(r['of_best_peak'] for r in sr):.0%})",
         min(r["of_peak"] for r in sr) >= 0.75),
        ("ours no slower than ONNX Runtime (time ours/ORT <= 1, every case)", max(r["ours_over_ort"] for r in nets),
         f"worst {max(r['ours_over_ort'] for r in nets):.2f}", max(r["ours_over_ort"] for r in nets) <= 1.0),
        ("serving overhead <= 10% (every route)", max(r["overhead"] for r in serve),
         ", ".join(f"{r['route']} {r['input']}px {r['overhead']:+.1%}" for r in serve),
         max(r["overhead"] for r in serve) <= 0.10),
        (f"peak RSS at {rss[-1]['input']}px <= 1.5x that at {rss[0]['input']}px (warm: peak over two requests)",
         rss[-1]["ratio_to_first"], f"{rss[-1]['ratio_to_first']:.2f}x (first request alone: "
         f"{rss[-1]['first_request_ratio']:.2f}x)", rss[-1]["ratio_to_first"] <= 1.5),
        ("cold start beyond import torch < 0.5 s (local weights)", res["cold_start"]["local"]["beyond_torch"],
         f"{res['cold_start']['local']['beyond_torch']:.3f} s", res["cold_start"]["local"]["beyond_torch"] < 0.5),
    ]
    out = [{"target": a, "value": b, "measured": c, "met": d} for a, b, c, d in t]
    if "universal" in res:
        from bench import universal
        out += universal.targets(res["universal"])
    if "real" in res:
        from bench import real
        out += real.targets(res["real"])
    return out


def markdown(res):
    m = res["meta"]
    lines = [
        "# Benchmark (`make bench`)",
        "",
        f"Run {m['date']} with `{m['command']}` in {m['seconds']:.0f} s on {m['cpu']} "
        f"({m['cores']} cores, {m['isa']}), {m['threads']} torch threads (the server's `Config().torch_threads`), "
        f"torch {m['torch']}, ONNX Runtime {m['onnxruntime']}, glibc heap kept between forwards "
        f"(`engine.keep_freed_memory`, as the server does): {'yes' if m['keep_freed_memory'] else 'no'}. "
        "Medians over repeats after warm-up; "
        "ratios compare contenders timed interleaved in this same run, each the median of the ratios of "
        "back-to-back pairs, every run starting 50 ms after the last ended (spinning thread pools settle).",
        "",
        "Models: " + "; ".join(f"`{k}` = {v}" for k, v in m["sources"].items()) + ".",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |" for t in res["targets"]]
    lines += [
        "",
        f"## Networks (float32 matmul, timed back to back before and after them: fastest repeat "
        f"{res['peak']['best_gflops']} GFLOP/s; medians "
        + ", ".join(f"{s['n']}x{s['n']} {s['gflops']}" for s in res["peak"]["sizes"]) + ")",
        "",
        "FLOPs are counted (FlopCounterMode: 2 per multiply-add of the convolutions), not estimated. \"Of peak\": "
        "a 2048x2048 matmul is timed hot (right after an untimed one) in every round of each case, and the share "
        "is the median over rounds of the network's GFLOP/s over the matmul's, paired as every ratio here "
        "(this VM's speed drifts between minutes). torch's matmul (MKL sgemm) is not the hardware's limit: "
        "oneDNN's convolutions can match it. \"Of best\": the share of the fastest matmul repeat of the peak "
        "sections (before and after the networks), a lower bound.",
        "",
        "ONNX Runtime gets the SR network as exported, and the style network in textbook form (NCHW, "
        "InstanceNormalization) both with and without the export's convolution rewrites; ours is compared "
        "with its faster form (`bench.bench.peer_forms`).",
        "",
        "| network | input | GFLOP | ours ms | ours GFLOP/s | matmul GFLOP/s, same rounds | of peak | of best "
        "| ORT ms (each form) | ORT GFLOP/s (fastest) | ours/ORT time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['network']} | {r['input']}x{r['input']} | {r['gflop']} | {r['ms']} | {r['gflops']} | "
              f"{r['matmul_gflops']} | {r['of_peak']:.0%} | {r['of_best_peak']:.0%} | "
              f"{', '.join(f'{f} {ms}' for f, ms in r['ort_forms_ms'].items())} | "
              f"{r['ort_gflops']} ({r['ort_form']}) | {r['ours_over_ort']:.2f} |"
              for r in res["networks"]]
    lines += [
        "",
        "## Serving overhead (app end to end vs bare forward, same image)",
        "",
        "End to end: Flask test client, multipart PNG in (a fresh boundary per request, the form built by "
        "joining bytes so that only the server's work counts), JSON with the base64 PNG out (decode, tiling at the "
        "configured tile size, 8-bit rounding, PNG encoding, base64). Bare forward: the network on the whole image.",
        "",
        "| route | input | output | end to end ms | forward ms | overhead | PNG bytes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['route']} | {r['input']}x{r['input']} | {r['output'][0]}x{r['output'][1]} | {r['e2e_ms']} | "
              f"{r['forward_ms']} | {r['overhead']:+.1%} | {r['response_png_bytes']} |" for r in res["serving"]]
    lines += [
        "",
        "PNG encoding of a 1024x1024 upscale (the app uses the default, then Pillow at level 6 only if the "
        "result would not fit the response limit):",
        "",
        "| writer | encode ms | bytes |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {png_writer(r['level'])}{' (default)' if r['default'] else ''} | {r['ms']} | {r['bytes']} |"
              for r in res["png"]]
    lines += [
        "",
        "## Cold start (fresh interpreter, seconds)",
        "",
        "\"Beyond import torch\" = import and create the app + load the model + the first 64x64 inference's "
        "extra time over the second (the median over the fresh processes of that difference in each).",
        "",
        "| weights from | import torch | import app | create app | load model | first inference | "
        "second inference | beyond import torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {k} | {v['import_torch']} | {v['import_app']} | {v['create_app']} | {v['load']} | "
              f"{v['first_inference']} | {v['second_inference']} | {v['beyond_torch']} |"
              for k, v in res["cold_start"].items()]
    lines += [
        "",
        f"## Peak memory of an upscale through the tiled engine (tile {res['rss'][0]['tile']}, "
        f"overlap {res['rss'][0]['overlap']})",
        "",
        "A fresh process per input size loads the model, upscales the image, then upscales it again (a warm "
        "server). The kept glibc heap (`engine.keep_freed_memory`) grows on the second forward as it "
        "fragments, then stays: the warm peak is what a server holds.",
        "",
        "| input | output | peak RSS, first request MB | peak RSS, warm MB | RSS after model load MB "
        "| ratio warm | ratio first request |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['input']}x{r['input']} | {r['output'][0]}x{r['output'][1]} | "
              f"{r['first_request_peak_rss_mb']} | {r['peak_rss_mb']} | {r['rss_after_load_mb']} | "
              f"{r['ratio_to_first']:.2f} | {r['first_request_ratio']:.2f} |" for r in res["rss"]]
    if "universal" in res:
        from bench import universal
        lines += universal.markdown(res["universal"])
    if "real" in res:
        from bench import real
        lines += real.markdown(res["real"])
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one repeat and small memory cases (a smoke run)")
    p.add_argument("--weights", default=str(ROOT / "weights"), help="folder with the shipped manifest.json")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "bench.json"))
    p.add_argument("--md", default=str(ROOT / "docs" / "bench.md"))
    args = p.parse_args(argv)
    start = time.perf_counter()
    threads = Config().torch_threads
    torch.set_num_threads(threads)
    from imgapi import engine
    heap = engine.keep_freed_memory()  # what create_app does in the server: both runtimes get it
    import onnxruntime
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        tmp = Path(tmp)
        weights = tmp / "weights"
        sources = prepare_weights(Path(args.weights), weights)
        for k, v in sources.items():
            print(f"{k}: {v}", flush=True)
        modules = {k: torch.jit.load(str(weights / f), map_location="cpu").eval()
                   for k, f in (("srgan", "srgan.pt"), ("style/bench", "style_bench.pt"))}
        current = {"srgan": "tail.0.0.weight", "style/bench": "deconv3.conv.0.weight"}
        for role, key in current.items():
            if key not in modules[role].state_dict():
                raise SystemExit(f"{role}: not in the form training.export writes; retrain or re-export it")
        print("matmul peak", flush=True)
        res["peak"] = bench_peak(args.quick)
        print(f"  {res['peak']['gflops']} GFLOP/s (median at the best size), fastest repeat "
              f"{res['peak']['best_gflops']}", flush=True)
        print("networks (ours vs ONNX Runtime)", flush=True)
        networks = bench_networks(modules, threads, tmp, args.quick)
        print("matmul peak, second half", flush=True)
        res["peak"] = bench_peak(args.quick, earlier=res["peak"])
        print(f"  {res['peak']['gflops']} GFLOP/s (median of both halves at the best size), fastest repeat "
              f"{res['peak']['best_gflops']}", flush=True)
        res["networks"] = add_peak_shares(networks, res["peak"])
        for r in res["networks"]:
            print(f"  {r['network']} {r['input']}px: {r['of_peak']:.0%} of the matmul in the same rounds, "
                  f"{r['of_best_peak']:.0%} of the fastest matmul repeat", flush=True)
        print("serving overhead", flush=True)
        res["serving"] = bench_serving(weights, modules, threads, args.quick)
        res["png"] = bench_png(modules["srgan"], args.quick)
        print("cold start", flush=True)
        res["cold_start"] = bench_cold(weights, threads, tmp, args.quick)
        print("peak RSS", flush=True)
        res["rss"] = bench_rss(weights, threads, args.quick)
        print("universal style (any painting)", flush=True)
        from bench.universal import bench_universal
        res["universal"] = bench_universal(Path(args.weights), weights, threads, args.quick)
        print("real-world uploads (model=real vs Real-ESRGAN x4plus)", flush=True)
        from bench.real import bench_real
        res["real"] = bench_real(Path(args.weights), weights, threads, args.quick)
    res["targets"] = targets(res)
    res["meta"] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m bench.bench"] + (sys.argv[1:] if argv is None else list(argv))),
        "seconds": time.perf_counter() - start, "cpu": cpu_name(), "cores": os.cpu_count(),
        "isa": torch.backends.cpu.get_cpu_capability(), "threads": threads, "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "sources": sources, "quick": args.quick,
        "keep_freed_memory": heap,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(markdown(res))
    for t in res["targets"]:
        print(f"{'MET ' if t['met'] else 'MISS'} {t['target']}: {t['measured']}")
    print(f"wrote {args.json} and {args.md} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
