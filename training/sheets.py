"""The pictures a run draws into its folder: the SR training curves, a style's thumbnail and the contact sheet
of every style of a weights folder on a few photos."""
import json
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from imgapi.stylize import stylize
from training.common import list_images
from training.data import load_rgb, to_pil

SHEET_PHOTOS = ("opencv_butterfly.png", "skimage_coffee.png", "plasma_Path.png")


def plot_curves(history, path):
    """Generator loss, validation Y-PSNR and validation detail against the step, per phase, to ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    for phase, color in (("srresnet", "tab:blue"), ("srgan", "tab:red")):
        tr = [h for h in history if h["phase"] == phase and "loss" in h]
        va = [h for h in history if h["phase"] == phase and "psnr_y" in h]
        if tr:
            a.plot([h["step"] for h in tr], [h["loss"] for h in tr], color=color, label=f"{phase} loss")
        if va:
            b.plot([h["step"] for h in va], [h["psnr_y"] for h in va], "o-", color=color, label=phase)
        va = [h for h in va if "detail" in h]
        if va:
            c.plot([h["step"] for h in va], [h["detail"] for h in va], "o-", color=color, label=phase)
    last = next((h for h in reversed(history) if "bicubic_psnr_y" in h), None)
    if last:
        b.axhline(last["bicubic_psnr_y"], color="gray", linestyle="--", label="bicubic")
        if "bicubic_detail" in last:
            c.axhline(last["bicubic_detail"], color="gray", linestyle="--", label="bicubic")
        c.axhline(1.0, color="black", linestyle=":", label="true images")
    a.set_xlabel("step"), a.set_ylabel("generator loss"), a.set_yscale("log"), a.legend()
    b.set_xlabel("step"), b.set_ylabel("validation Y-PSNR (dB)"), b.legend()
    c.set_xlabel("step"), c.set_ylabel("validation detail (gradient energy / true)"), c.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_thumbnail(style_img, path, side=160):
    """Save a JPEG of the style image with its longest side ``side`` pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    thumb = style_img.copy()
    thumb.thumbnail((side, side), Image.LANCZOS)
    thumb.save(path, "JPEG", quality=85, optimize=True)


def contact_sheet(photos, styles, side=256, label_height=18):
    """Grid image: one row per photo, columns content | each style.

    ``photos``: list of PIL RGB images; ``styles``: list of ``(label, module)`` with modules following the
    ``imgapi.stylize`` contract. Each photo is shown and stylized with its longest side ``side``.
    """
    cols = 1 + len(styles)
    sheet = Image.new("RGB", (cols * side, label_height + len(photos) * side), "white")
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(["content"] + [name for name, _ in styles]):
        draw.text((c * side + 4, 3), label, fill="black")
    for r, photo in enumerate(photos):
        photo = photo.copy()
        photo.thumbnail((side, side), Image.LANCZOS)
        y = label_height + r * side
        sheet.paste(photo, (0, y))
        for c, (_, module) in enumerate(styles, start=1):
            sheet.paste(stylize(module, photo, max_side=side), (c * side, y))
    return sheet


def sheet_photo_files(photos_dir, photo_names=SHEET_PHOTOS):
    """The photos named ``photo_names`` in ``photos_dir`` when present, else the first three there."""
    files = [Path(photos_dir) / n for n in photo_names if (Path(photos_dir) / n).exists()]
    return files or list_images(photos_dir)[:3]


def write_contact_sheet(weights_dir, photos_dir, out_path, photo_names=SHEET_PHOTOS, side=256):
    """Contact sheet of every ``style/*`` entry in ``<weights_dir>/manifest.json`` on a few photos.

    Photos as chosen by :func:`sheet_photo_files`.
    Returns the path written, or None when the manifest lists no style.
    """
    weights_dir = Path(weights_dir)
    manifest = json.loads((weights_dir / "manifest.json").read_text())["models"]
    styles = [(name.split("/", 1)[1], torch.jit.load(str(weights_dir / e["file"]), map_location="cpu").eval())
              for name, e in sorted(manifest.items()) if e.get("kind") == "style"]
    if not styles:
        return None
    sheet = contact_sheet([load_rgb(f) for f in sheet_photo_files(photos_dir, photo_names)], styles, side=side)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_path, optimize=True)
    return out_path


def save_preview(state, val, folder, device):
    """The style network ``state["net"]``'s pictures of the held-out photos ``val`` ((3, H, W) tensors) beside
    them, to ``<folder>/style_<name>_preview.png``."""
    if not val:
        return
    net = state["net"]
    net.eval()
    with torch.no_grad():
        outs = [net(v.unsqueeze(0).to(device))[0].cpu() for v in val]
    net.train()
    grid = torch.cat([torch.cat([v, o], 2) for v, o in zip(val, outs)], 1)
    to_pil(grid).save(Path(folder) / f"style_{state['name']}_preview.png")
