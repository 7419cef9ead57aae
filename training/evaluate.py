"""``make eval``: the shipped networks measured as docs/data.md says.

SR: HR -> crop to a multiple of 4 -> LR with Pillow BICUBIC -> model (untiled) -> SR; Y-PSNR and SSIM on
the BT.601 Y channel with a 4-pixel border cropped, against Pillow BICUBIC upscaling; and the detail figure
(gradient energy of the outputs over the true images', ``training.metrics.gradient_energy``).

Styles: on held-out photos, the Gram distance of the output to the style image (relu1_2..relu4_3 of the
VGG16 loss network, each layer's squared Gram difference relative to the style's squared Gram) as a
fraction of the photo's own distance (1.0: no style taken; lower: closer to the painting), and the content
change, the relative relu3_3 difference between output and photo (0: the photo unchanged).

``--sheet PATH`` also draws the SR comparison sheet (docs/sr_comparison.png): for each photo its most
detailed crop, as bicubic, each SR model and the true image give it, side by side at 2x.

Models come through the same store as serving, so their sha256 is checked.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from imgapi import damage, engine
from imgapi.config import Config
from imgapi.store import ModelStore, conditioned
from imgapi.stylize import stylize
from training import metrics
from training.common import FEATURE_SCALE, gram, list_images, load_vgg

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_CHANGE_LAYER = "relu3_3"
SHIFT_PIXELS = 2  # half the style network's stride: where a lattice tied to its grid differs most
SHIFT_BORDER = 16  # pixels of shift_change's comparison left out at the borders (reflection padding)


def as_served(store, name):
    """SR model ``name`` as the server runs it on a clean PNG: a conditioned one (``real``) gets the damage level
    measured from the photo (``imgapi.damage``: no JPEG tables, so its noise alone) as a fourth plane."""
    module = store.get(name).module
    if not conditioned(store.entry(name)):
        return module

    def run(x):
        level = damage.level(None, damage.noise_sigma(x[0].permute(1, 2, 0).numpy() * 255))
        return module(engine.with_level(x, level))
    return run


@torch.inference_mode()
def evaluate(net, paths):
    """Per-image rows ``(name, psnr, ssim, bicubic psnr, bicubic ssim, energy, bicubic energy, true energy, grid,
    bicubic grid, true grid)`` for ``net`` on ``paths`` (grid: :func:`training.metrics.grid_amplitude`)."""
    rows = []
    for p in paths:
        hr, lr = metrics.degrade(Image.open(p).convert("RGB"))
        sr = np.asarray(engine.to_image(engine.forward_tiled(net, engine.to_tensor(lr), tile=0)))
        hr_a, bic = np.asarray(hr), np.asarray(metrics.bicubic_up(lr))
        rows.append((Path(p).name, metrics.psnr(sr, hr_a), metrics.ssim(sr, hr_a),
                     metrics.psnr(bic, hr_a), metrics.ssim(bic, hr_a), metrics.gradient_energy(sr),
                     metrics.gradient_energy(bic), metrics.gradient_energy(hr_a), metrics.grid_amplitude(sr),
                     metrics.grid_amplitude(bic), metrics.grid_amplitude(hr_a)))
    return rows


def summary(rows):
    """Means of :func:`evaluate`'s rows; ``detail`` is the summed energy over the true images'."""
    m = np.mean([r[1:5] + r[8:11] for r in rows], axis=0)
    energy = np.sum([r[5:8] for r in rows], axis=0)
    return dict(psnr_y=float(m[0]), ssim_y=float(m[1]), bicubic_psnr_y=float(m[2]),
                bicubic_ssim_y=float(m[3]), gain_db=float(m[0] - m[2]),
                detail=float(energy[0] / energy[2]), bicubic_detail=float(energy[1] / energy[2]),
                grid=float(m[4]), bicubic_grid=float(m[5]), true_grid=float(m[6]))


def busiest_crop(hr, side):
    """``(left, top)`` of the ``side`` x ``side`` window of ``hr`` (PIL RGB, at least that large) with the most
    gradient energy, on a grid of half-window steps: where a model's detail (or its lack) shows."""
    step = max(1, side // 2)
    arr = np.asarray(hr)
    boxes = [(x, y) for y in range(0, hr.height - side + 1, step) for x in range(0, hr.width - side + 1, step)]
    return max(boxes, key=lambda b: metrics.gradient_energy(arr[b[1]:b[1] + side, b[0]:b[0] + side], 0))


def sr_sheet(models, paths, crop=96, zoom=2, label_height=18):
    """Grid image: one row per photo of ``paths``, columns bicubic | each of ``models`` (``(label, module)``,
    the SR contract of ``imgapi.engine``) | the true image, each the same ``crop`` x ``crop`` window of the
    4x result (the photo's busiest) shown ``zoom`` times larger with nearest-neighbour pixels."""
    cell = crop * zoom
    labels = ["bicubic"] + [name for name, _ in models] + ["true image"]
    sheet = Image.new("RGB", (len(labels) * cell, label_height + len(paths) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels):
        draw.text((c * cell + 4, 3), label, fill="black")
    for r, p in enumerate(paths):
        hr, lr = metrics.degrade(Image.open(p).convert("RGB"))
        side = min(crop, hr.width, hr.height)
        left, top = busiest_crop(hr, side)
        outs = [metrics.bicubic_up(lr)]
        outs += [engine.to_image(engine.forward_tiled(m, engine.to_tensor(lr), tile=0)) for _, m in models]
        outs.append(hr)
        for c, im in enumerate(outs):
            piece = im.crop((left, top, left + side, top + side)).resize((side * zoom, side * zoom), Image.NEAREST)
            sheet.paste(piece, (c * cell, label_height + r * cell))
    return sheet


def as_tensor(img, device="cpu"):
    """PIL RGB -> (1, 3, H, W) float32 in [0, 1] on ``device``."""
    return engine.to_tensor(img).to(device)


@torch.inference_mode()
def style_grams(vgg, style_img, style_size):
    """The style image's Gram matrices (1, C, C), on ``vgg``'s device, its longest side resized to
    ``style_size`` (as in training)."""
    scale = style_size / max(style_img.size)
    im = style_img.resize((max(1, round(style_img.width * scale)), max(1, round(style_img.height * scale))),
                          Image.LANCZOS)
    feats = vgg(as_tensor(im, next(vgg.parameters()).device), STYLE_LAYERS)
    return {k: gram(v * FEATURE_SCALE) for k, v in feats.items()}


@torch.inference_mode()
def gram_distance(vgg, img, targets):
    """Sum over the style layers of ``||G(img) - G(style)||^2 / ||G(style)||^2``."""
    feats = vgg(as_tensor(img), STYLE_LAYERS)
    return float(sum(((gram(feats[k] * FEATURE_SCALE) - t).pow(2).sum() / t.pow(2).sum()).item()
                     for k, t in targets.items()))


@torch.inference_mode()
def content_change(vgg, out, photo):
    """``||relu3_3(out) - relu3_3(photo)|| / ||relu3_3(photo)||`` (same size images)."""
    a = vgg(as_tensor(out), (CONTENT_CHANGE_LAYER,))[CONTENT_CHANGE_LAYER]
    b = vgg(as_tensor(photo), (CONTENT_CHANGE_LAYER,))[CONTENT_CHANGE_LAYER]
    return float((a - b).norm() / b.norm())


def shift_change(module, photo, out, shift=SHIFT_PIXELS, margin=SHIFT_BORDER):
    """RMS change, in grey levels (0-255), of ``module``'s picture of ``photo`` (``out``) when the photo is
    cropped by ``shift`` pixels at the top and left, compared where both pictures show the same place, ``margin``
    pixels in from the borders. A painting's strokes move with the photo and leave this near 0; a lattice tied
    to the network's 4-pixel stride grid stays where it is and shows here in full."""
    w, h = photo.size
    moved = np.asarray(stylize(module, photo.crop((shift, shift, w, h)), max_side=max(w, h)), np.float64)
    same = np.asarray(out, np.float64)[shift:, shift:]
    m = min(margin, (min(w, h) - shift) // 4)  # small photos keep a middle to compare
    return float(np.sqrt(((moved - same)[m:-m, m:-m] ** 2).mean()))


def style_figures(module, vgg, style_img, style_size, photos):
    """``{"gram_ratio", "content_change", "shift_change", "photos"}`` of a style module (the serving contract of
    ``imgapi.stylize``) over ``photos`` (PIL RGB): means over the photos of the output's Gram distance to
    the style as a fraction of the photo's, of the relu3_3 content change, and of :func:`shift_change`."""
    targets = style_grams(vgg, style_img, style_size)
    ratios, changes, shifts = [], [], []
    for photo in photos:
        out = stylize(module, photo, max_side=max(photo.size))
        ratios.append(gram_distance(vgg, out, targets) / gram_distance(vgg, photo, targets))
        changes.append(content_change(vgg, out, photo))
        shifts.append(shift_change(module, photo, out))
    return dict(gram_ratio=round(float(np.mean(ratios)), 4), content_change=round(float(np.mean(changes)), 4),
                shift_change=round(float(np.mean(shifts)), 2), photos=len(photos))


def sr_table(store, names, paths, per_image=False):
    lines = ["| model | Y-PSNR (dB) | bicubic | gain | SSIM | bicubic SSIM | detail | bicubic detail | grid | "
             "true grid |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in names:
        rows = evaluate(as_served(store, name), paths)
        s = summary(rows)
        lines.append(f"| {name} | {s['psnr_y']:.2f} | {s['bicubic_psnr_y']:.2f} | {s['gain_db']:+.2f} | "
                     f"{s['ssim_y']:.4f} | {s['bicubic_ssim_y']:.4f} | {s['detail']:.2f} | "
                     f"{s['bicubic_detail']:.2f} | {s['grid']:.2f} | {s['true_grid']:.2f} |")
        if per_image:
            for r in rows:
                lines.append(f"|   {r[0]} | {r[1]:.2f} | {r[3]:.2f} | {r[1] - r[3]:+.2f} | {r[2]:.4f} | "
                             f"{r[4]:.4f} | {r[5] / r[7]:.2f} | {r[6] / r[7]:.2f} | {r[8]:.2f} | {r[10]:.2f} |")
    return lines


def style_table(store, manifest, styles_dir, vgg_path, paths):
    vgg = load_vgg(vgg_path, torch.device("cpu"))
    photos = [Image.open(p).convert("RGB") for p in paths]
    lines = ["| style | Gram distance to the painting (output / photo) | content change (relu3_3) | "
             "shift change (grey levels) | steps |",
             "| --- | --- | --- | --- | --- |"]
    for name, entry in manifest.items():
        if entry.get("kind") != "style":
            continue
        style = name.split("/", 1)[1]
        with Image.open(Path(styles_dir) / f"{style}.jpg") as im:
            style_img = im.convert("RGB")
        f = style_figures(store.get(name).module, vgg, style_img, entry["training"]["style_size"], photos)
        lines.append(f"| {style} | {f['gram_ratio']:.3f} | {f['content_change']:.3f} | {f['shift_change']:.1f} | "
                     f"{entry['training']['steps']} |")
    return lines


def add_model_args(p):
    """The options every ``make eval`` table takes: the photos, the weights folder, the SR models, the VGG16."""
    p.add_argument("--data", default="data/sr/val", help="folder of held-out HR photos")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights/)")
    p.add_argument("--models", nargs="*", default=None, help="SR models (default: every SR entry)")
    p.add_argument("--vgg", default="data/vgg16_hed.pt", help="the loss network (make data)")


def open_models(args):
    """``(store, manifest, SR names)`` of :func:`add_model_args`' options: the store serving reads them from."""
    config = Config(weights_dir=Path(args.weights)) if args.weights else Config.from_env()
    manifest = json.loads((config.weights_dir / "manifest.json").read_text())["models"]
    names = args.models or [n for n, e in manifest.items() if e.get("kind") == "sr"]
    return ModelStore(config), manifest, names


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--styles-dir", default="data/styles", help="the style images (make data)")
    p.add_argument("--no-styles", action="store_true", help="only the SR table")
    p.add_argument("--per-image", action="store_true")
    p.add_argument("--sheet", default=None, help="also draw the SR comparison sheet to this PNG")
    args = p.parse_args(argv)
    store, manifest, names = open_models(args)
    paths = list_images(args.data)
    print(f"{len(paths)} photos in {args.data}; Y channel, 4-px border, Pillow BICUBIC x4 LR; detail: "
          "gradient energy of the outputs / of the true images; grid: the 4-px dot grid's amplitude in Y levels "
          "(training.metrics.grid_amplitude; a true photo's is the floor)\n")
    print("\n".join(sr_table(store, names, paths, args.per_image)))
    if args.sheet:
        sr_sheet([(n, as_served(store, n)) for n in names], paths).save(args.sheet)
        print(f"\nSR comparison sheet -> {args.sheet}")
    if not args.no_styles:
        print(f"\nStyles on the same {len(paths)} photos: Gram distance to the painting over relu1_2..relu4_3, "
              "output's / photo's (lower: more of the painting); relu3_3 change from the photo; RMS change when the "
              "photo moves by 2 pixels (the stride lattice; near 0 without one)\n")
        print("\n".join(style_table(store, manifest, args.styles_dir, args.vgg, paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
