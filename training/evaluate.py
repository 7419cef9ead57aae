"""``make eval``: Y-PSNR/SSIM of the shipped SR models against bicubic, DATA.md's protocol.

HR -> crop to a multiple of 4 -> LR with Pillow BICUBIC -> model (untiled) -> SR; PSNR and SSIM
on the BT.601 Y channel with a 4-pixel border cropped; the baseline is Pillow BICUBIC upscaling.
Models come through the same store as serving, so their sha256 is checked.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imgapi import engine
from imgapi.config import Config
from imgapi.store import ModelStore
from training import metrics
from training.train_sr import list_images


@torch.inference_mode()
def evaluate(net, paths):
    """Per-image rows ``(name, psnr, ssim, bicubic psnr, bicubic ssim)`` for ``net`` on ``paths``."""
    rows = []
    for p in paths:
        hr, lr = metrics.degrade(Image.open(p).convert("RGB"))
        sr = np.asarray(engine.to_image(engine.forward_tiled(net, engine.to_tensor(lr), tile=0)))
        hr_a, bic = np.asarray(hr), np.asarray(metrics.bicubic_up(lr))
        rows.append((Path(p).name, metrics.psnr(sr, hr_a), metrics.ssim(sr, hr_a),
                     metrics.psnr(bic, hr_a), metrics.ssim(bic, hr_a)))
    return rows


def summary(rows):
    m = np.mean([r[1:] for r in rows], axis=0)
    return dict(psnr_y=float(m[0]), ssim_y=float(m[1]), bicubic_psnr_y=float(m[2]),
                bicubic_ssim_y=float(m[3]), gain_db=float(m[0] - m[2]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/sr/val", help="folder of HR images")
    p.add_argument("--weights", default=None, help="weights folder (default: the shipped weights/)")
    p.add_argument("--models", nargs="*", default=["srresnet", "srgan"])
    p.add_argument("--per-image", action="store_true")
    args = p.parse_args(argv)
    config = Config.from_env()
    if args.weights:
        config = Config(weights_dir=Path(args.weights))
    store = ModelStore(config)
    paths = list_images(args.data)
    print(f"{len(paths)} images in {args.data}; Y channel, 4-px border, Pillow BICUBIC x4 LR\n")
    print("| model | Y-PSNR (dB) | bicubic | gain | SSIM | bicubic SSIM |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        rows = evaluate(store.get(name).module, paths)
        s = summary(rows)
        print(f"| {name} | {s['psnr_y']:.2f} | {s['bicubic_psnr_y']:.2f} | {s['gain_db']:+.2f} | "
              f"{s['ssim_y']:.4f} | {s['bicubic_ssim_y']:.4f} |")
        if args.per_image:
            for r in rows:
                print(f"|   {r[0]} | {r[1]:.2f} | {r[3]:.2f} | {r[1] - r[3]:+.2f} | {r[2]:.4f} | {r[4]:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
