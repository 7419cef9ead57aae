"""The figures a run measures while it trains and records in its manifest entries, with the protocol of
docs/data.md (the same as ``make eval``'s, ``training.evaluate``): SR Y-PSNR/SSIM and detail against
bicubic, a style's Gram ratio and content change on held-out photos."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from imgapi import engine
from training import metrics
from training.common import list_images, load_vgg
from training.data import load_rgb
from training.evaluate import style_figures


def validate(net, val_paths, device):
    """Mean Y-PSNR/SSIM of ``net`` and of bicubic on the validation images, and the detail figure of both
    (docs/data.md: gradient energy of the outputs over the true images')."""
    return measure(net, (Image.open(p).convert("RGB") for p in val_paths), device)


@torch.inference_mode()
def measure(net, images, device):
    """:func:`validate`'s figures on ``images`` (PIL RGB, the true HR images)."""
    was_training = net.training
    net.eval()
    rows, energy = [], np.zeros(3)
    for img in images:
        hr, lr = metrics.degrade(img)
        x = torch.from_numpy(np.array(lr)).permute(2, 0, 1)[None].float().div(255).to(device)
        if getattr(net, "condition", False):  # a clean shrink: damage level 0
            x = engine.with_level(x, 0.0)
        y = net(x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
        hr_a, bic = np.asarray(hr), np.asarray(metrics.bicubic_up(lr))
        rows.append((metrics.psnr(y, hr_a), metrics.ssim(y, hr_a),
                     metrics.psnr(bic, hr_a), metrics.ssim(bic, hr_a)))
        energy += [metrics.gradient_energy(y), metrics.gradient_energy(bic), metrics.gradient_energy(hr_a)]
    net.train(was_training)
    m = np.mean(rows, axis=0)
    return dict(psnr_y=round(float(m[0]), 3), ssim_y=round(float(m[1]), 4),
                bicubic_psnr_y=round(float(m[2]), 3), bicubic_ssim_y=round(float(m[3]), 4),
                detail=round(float(energy[0] / energy[2]), 3),
                bicubic_detail=round(float(energy[1] / energy[2]), 3))


def held_out_figures(path, style_img, args, vgg):
    """``training.evaluate.style_figures`` of the exported file on every photo of ``--val-dir`` (none: None),
    with the run's loss network ``vgg`` (a CPU copy of it when it is on a GPU)."""
    files = list_images(args.val_dir) if args.val_dir and Path(args.val_dir).is_dir() else []
    if not files:
        return None
    module = torch.jit.load(str(path), map_location="cpu").eval()
    if next(vgg.parameters()).device.type != "cpu":
        vgg = load_vgg(args.vgg, torch.device("cpu"))
    figures = style_figures(module, vgg, style_img, args.style_size, [load_rgb(f) for f in files])
    tqdm.write(f"[{path.stem}] held-out: Gram distance ratio {figures['gram_ratio']:.3f}, "
               f"content change {figures['content_change']:.3f} ({figures['photos']} photos)")
    return figures
