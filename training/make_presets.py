"""Named styles for the universal model: each gallery painting reduced to its statistics (a preset).

``python -m training.make_presets [--encoder runs/decoders/universal_encoder.pt] [--out runs/decoders]``
reads the paintings of ``data/styles/`` (``make data``; their titles, artists and licences in its
``styles.json``), computes each one's statistics with the universal encoder exactly as the server does for an
uploaded painting (``imgapi.universal.style_statistics``: shrunk to 512 px, float64 eigendecomposition),
and writes ``presets/<name>.npz``, ``thumbs/<name>.jpg`` and their manifest entries (kind ``preset``) into
``--out``. Nothing is trained and nothing is written to ``weights/``. A preset depends on the encoder only,
so its entry records the digest of the encoder's weights (``model.universal.weights_digest``).
"""
import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from imgapi.universal import save_stats, style_statistics
from model.universal import weights_digest
from training.manifest import update_manifest

THUMB_SIDE = 160


def gallery(styles_dir, names=None):
    """``{name: metadata}`` of the public-domain paintings in ``styles_dir/styles.json`` (or ``names``)."""
    meta = json.loads((Path(styles_dir) / "styles.json").read_text())
    if names:
        unknown = sorted(set(names) - set(meta))
        if unknown:
            raise ValueError(f"styles {', '.join(unknown)} are not in {styles_dir}/styles.json. "
                             f"Known: {', '.join(sorted(meta))}")
        return {n: meta[n] for n in names}
    return {n: m for n, m in meta.items() if m.get("licence") == "Public domain"}


def write_thumbnail(painting, path, side=THUMB_SIDE):
    """A ``side``-px (longest side) JPEG of the painting for the gallery."""
    thumb = painting.copy()
    thumb.thumbnail((side, side), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    thumb.save(path, quality=88)


def make_preset(name, meta, encoder, encoder_weights, styles_dir, out):
    """Statistics, thumbnail and manifest entry of one painting; returns the entry."""
    with Image.open(Path(styles_dir) / f"{name}.jpg") as im:
        painting = im.convert("RGB")
    (out / "presets").mkdir(parents=True, exist_ok=True)
    save_stats(style_statistics(encoder, painting), out / "presets" / f"{name}.npz")
    write_thumbnail(painting, out / "thumbs" / f"{name}.jpg")
    entry = {"file": f"presets/{name}.npz", "kind": "preset", "title": meta["title"], "artist": meta["artist"],
             "source": meta.get("source", ""), "licence": meta["licence"], "thumbnail": f"thumbs/{name}.jpg",
             "encoder_weights": encoder_weights, "painting_side": 512}
    return update_manifest(out, f"style/{name}", entry)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="runs/decoders/universal_encoder.pt", help="the traced encoder")
    p.add_argument("--styles-dir", default="data/styles")
    p.add_argument("--out", default="runs/decoders", help="the run folder the presets join (the decoders' run)")
    p.add_argument("--style", nargs="*", default=None, help="these paintings (default: every public-domain one)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = torch.jit.load(args.encoder, map_location="cpu").eval()
    digest = weights_digest(encoder)
    for name, meta in gallery(args.styles_dir, args.style).items():
        make_preset(name, meta, encoder, digest, args.styles_dir, out)
        print(f"style/{name}: presets/{name}.npz", flush=True)
    return 0


if __name__ == "__main__":
    main()
