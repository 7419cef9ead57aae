"""Train the 4x SR generators: SRResNet with a pixel loss, then SRGAN fine-tuning from it.

``make train-gpu`` / ``make train-cpu`` call this. It takes a wall-clock budget (``--minutes``) shared by
the two phases (``--gan-fraction``), seeds everything, shows progress (steps, it/s, the latest validation
figures), validates on a fixed held-out set with the protocol of docs/data.md (Y-channel PSNR/SSIM,
4-pixel border, Pillow bicubic LR, and the detail figure), checkpoints to ``--checkpoint-dir`` and resumes
from it with the same command. A rerun with a larger ``--minutes`` continues the phase it was in (steps,
optimiser, elapsed time; the learning rate follows the cosine of the new budget). ``--init-from`` starts
from a shipped SR file instead of from bicubic. Both generators are traced to TorchScript on the CPU and
written to ``--out`` with their ``manifest.json`` entries and a PNG of the curves.
"""
import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from model.consistency import LRConsistency
from model.discriminator import Discriminator
from model.srresnet import SRResNet
from training import distributed, metrics
from training.common import (FEATURE_SCALE, add_machine_args, autocast, choose_precision, cosine_lr, hardware,
                             list_images, load_vgg, throwaway)
from training.export import export_sr, sr_from_state_dict
from training.manifest import update_manifest


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class PatchSampler:
    """Random HR patches (flips and 90-degree turns) from images held in memory as uint8.

    LR patches are made on the device with antialiased bicubic, which matches Pillow's BICUBIC
    downscale to within 2 grey levels (docs/data.md).
    """

    def __init__(self, paths, hr_size, device):
        self.images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                       for p in paths]
        self.images = [im for im in self.images if min(im.shape[1:]) >= hr_size]
        if not self.images:
            raise SystemExit(f"no training image is at least {hr_size}x{hr_size}")
        self.images = [im.to(device) for im in self.images]
        self.weights = torch.tensor([im.shape[1] * im.shape[2] for im in self.images], dtype=torch.float)
        self.hr_size, self.device = hr_size, device

    def batch(self, n, generator):
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
        s = self.hr_size
        out = []
        for i in idx:
            im = self.images[i]
            y = int(torch.randint(0, im.shape[1] - s + 1, (1,), generator=generator))
            x = int(torch.randint(0, im.shape[2] - s + 1, (1,), generator=generator))
            patch = im[:, y:y + s, x:x + s]
            k = int(torch.randint(0, 8, (1,), generator=generator))
            if k & 4:
                patch = patch.flip(2)
            patch = torch.rot90(patch, k & 3, (1, 2))
            out.append(patch)
        hr = torch.stack(out).float() / 255.0
        lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=True)
        return lr.clamp(0, 1), hr


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


def train_mode(g, frozen_bn):
    """``g.train()``, keeping its BatchNorm layers in eval mode when ``frozen_bn`` (a generator rebuilt from
    a served file, whose statistics are folded: batch statistics would undo what it learned)."""
    g.train()
    if frozen_bn:
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def ragan(real_logit, fake_logit, fake_is_real):
    """Relativistic average GAN loss (ESRGAN): with ``fake_is_real`` (the generator's loss) the fakes are
    pushed to look more real than the reals on average; without it (the discriminator's), the reverse."""
    real_target = torch.zeros_like(real_logit) if fake_is_real else torch.ones_like(real_logit)
    fake_target = torch.ones_like(fake_logit) if fake_is_real else torch.zeros_like(fake_logit)
    return (F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), real_target)
            + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), fake_target)) / 2


def pixel_step(g, opt, lr_img, hr, args, precision):
    """One SRResNet step (L1); returns its log."""
    with autocast(lr_img.device, precision):
        sr = g(lr_img)
    loss = F.l1_loss(sr.float(), hr)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return dict(loss=loss.item())


def local_detail(img, window=8):
    """The amplitude of the luminance gradients of ``img`` (N, 3, H, W) averaged over ``window`` x ``window``
    squares at half-window steps: where a photo has texture and how much, with no say about its phase.
    The same gradient energy as the detail figure (``training.metrics.gradient_energy``), made local; its
    floor, 0.003 (under one grey level a pixel), is the rounding of an 8-bit photo's smoothest areas."""
    y = (img * img.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    gx, gy = y[..., :-1, 1:] - y[..., :-1, :-1], y[..., 1:, :-1] - y[..., :-1, :-1]
    return F.avg_pool2d(gx * gx + gy * gy, window, stride=window // 2).add(1e-5).sqrt()


def flat_mask(lr_img, size, low=0.0032, high=0.006):
    """Where the LR photo is smooth, at the HR ``size``: 1 where the bicubic upscale's local gradient amplitude
    (``local_detail``) is at its floor, 0 from ``high`` up (a smooth sky's grain is under it; wood, foliage
    and edges are over it). Computed from what the generator sees, so it can learn where the mask is."""
    up = F.interpolate(lr_img.float(), scale_factor=4.0, mode="bicubic", align_corners=False)
    w = ((high - local_detail(up)) / (high - low)).clamp(0, 1)
    return F.interpolate(w, size=size, mode="bilinear", align_corners=False)


def gan_step(g, d, vgg, opt, opt_d, lr_img, hr, args, precision):
    """One SRGAN step: the generator on VGG feature L1 + pixel L1 + RaGAN (ESRGAN's recipe), then the
    discriminator; returns the log. Under bf16 autocast every loss is computed in fp32."""
    dev = lr_img.device
    with autocast(dev, precision):
        sr = g(lr_img)
        fake_logit = d(sr).float()
        real_logit = d(hr).float().detach()
        feats = vgg(torch.cat([sr, hr]), [args.percep_layer])[args.percep_layer].float() * FEATURE_SCALE
    f_sr, f_hr = feats.chunk(2)
    percep = F.l1_loss(f_sr, f_hr.detach())
    pixel = F.l1_loss(sr.float(), hr)
    # The colours of each 4x4 block (the LR pixel it came from): holds the GAN to the photo's tones and
    # colours, which the feature loss lets drift, without asking for smoothness inside the block.
    lowpass = F.l1_loss(F.avg_pool2d(sr.float(), 4), F.avg_pool2d(hr, 4))
    # How much texture each 8x8 square has, as a ratio to the photo's (log): grain at 1.5x the little a
    # smooth sky or skin has costs as much as half the texture of foliage, and neither asks where the
    # texture's edges fall. (On an amplitude scale, the first would cost almost nothing.)
    texture = (F.l1_loss(local_detail(sr.float()).log(), local_detail(hr).log()) if args.texture_weight
               else sr.new_zeros(()))
    # Pixel L1 where the LR photo is smooth: no grain on a smooth sky, wall or skin, where the photo's own
    # grain cannot be told from the photo and a painted one only adds its error.
    flat = ((flat_mask(lr_img, hr.shape[-2:]) * (sr.float() - hr).abs()).mean() if args.flat_weight
            else sr.new_zeros(()))
    adv = ragan(real_logit, fake_logit, fake_is_real=True)
    loss = (args.percep_weight * percep + args.pixel_weight * pixel + args.lowpass_weight * lowpass
            + args.texture_weight * texture + args.flat_weight * flat + args.adv_weight * adv)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with autocast(dev, precision):
        real_logit = d(hr).float()
        fake_logit = d(sr.detach()).float()
    loss_d = ragan(real_logit, fake_logit, fake_is_real=False)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return dict(loss=loss.item(), percep=percep.item(), pixel=pixel.item(), lowpass=lowpass.item(),
                texture=texture.item(), flat=flat.item(), adv=adv.item(), loss_d=loss_d.item())


@torch.no_grad()
def update_ema(ema, g, decay):
    """Move ``ema``'s weights a ``1 - decay`` step towards ``g``'s (its buffers are copied)."""
    for e, w in zip(ema.parameters(), g.parameters()):
        e.lerp_(w.detach().float(), 1 - decay)
    for e, b in zip(ema.buffers(), g.buffers()):
        e.copy_(b)


def served(phase, state):
    """The generator that ``phase`` validates and exports: SRGAN's moving average when it keeps one."""
    return state["ema"] if phase == "srgan" and state.get("ema") is not None else state["g"]


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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/sr/train", help="folder of HR training images")
    p.add_argument("--val", default="data/sr/val", help="folder of HR validation images")
    p.add_argument("--vgg", default="data/vgg16_hed.pt", help="converted VGG16 (make data)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget for both phases")
    p.add_argument("--gan-fraction", type=float, default=0.3, help="share of the budget for SRGAN")
    p.add_argument("--init-from", default=None,
                   help="a served SR file (weights/srresnet.pt) to start from instead of bicubic; "
                        "with --gan-fraction 1 only the SRGAN phase runs")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=24, help="LR patch side (HR is 4x)")
    p.add_argument("--lr", type=float, default=2e-4, help="SRResNet's peak Adam lr (SRGAN: half of it)")
    # ESRGAN's recipe (Wang et al. 2018): the feature loss before the ReLU leads and the pixel loss only
    # anchors the colours (a pixel loss at the feature loss's weight holds the GAN at the PSNR model's
    # smoothness). Its weights (1, 0.01, 0.005) assume VGG19 features ~40x larger than these HED VGG16 conv4_3
    # features / 58: with them the adversarial term was a fifth of the loss and drew a grid and a colour
    # shift within 300 steps. These keep ESRGAN's balance between the terms' sizes.
    p.add_argument("--percep-layer", default="conv4_3", help="VGG16 layer of the feature loss (before its ReLU)")
    p.add_argument("--percep-weight", type=float, default=1.0, help="SRGAN: VGG feature L1 weight")
    # The defaults below are the shipped srgan.pt's recipe (README, "Measured quality"), moved from that
    # balance (pixel 0.1, adversarial 1e-3) by the runs behind it: a pixel L1 at a tenth, the adversarial
    # term at 10x, the flat term and 3 back-projection iterations.
    # From the shipped srresnet.pt, 2,399 steps of them reached 35.29 dB / detail 0.75 on the validation set,
    # where 2,263 steps of pixel 0.01 and adversarial 0.005 without the flat term had reached 34.57 / 0.68.
    p.add_argument("--pixel-weight", type=float, default=0.01, help="SRGAN: pixel L1 weight")
    p.add_argument("--lowpass-weight", type=float, default=1.0,
                   help="SRGAN: L1 weight of the 4x4 block means (the tones and colours at the LR scale)")
    p.add_argument("--texture-weight", type=float, default=0.0,
                   help="SRGAN: L1 weight of the log local gradient amplitude (8x8 squares): texture where the "
                        "photo has it, in its amount, and no grain where it is smooth (~0.003: its gradients "
                        "are ~500x the feature loss's)")
    p.add_argument("--flat-weight", type=float, default=10.0,
                   help="SRGAN: pixel L1 weight where the LR photo is smooth (flat_mask): no painted grain there")
    p.add_argument("--adv-weight", type=float, default=0.01, help="SRGAN: adversarial loss weight")
    p.add_argument("--ema", type=float, default=0.995,
                   help="SRGAN: decay of the moving average of the generator's weights that is validated and "
                        "exported (0: the raw weights, whose look swings from step to step under the GAN)")
    p.add_argument("--consistency", type=int, default=3,
                   help="SRGAN: iterations of LR back-projection at the generator's end, trained through and "
                        "exported (model.consistency; 0: none). It holds a GAN's tones and colours to the "
                        "photo's. SRResNet has none; a resumed run keeps the number it began with")
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    add_machine_args(p)
    p.add_argument("--val-every", type=float, default=60.0, help="seconds between validations")
    p.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--out", default="weights", help="where traced weights and manifest go")
    p.add_argument("--checkpoint-dir", default="checkpoints/sr")
    p.add_argument("--keep", action="store_true",
                   help="at every validation also write the served generator, traced, with its manifest entry, "
                        "to CHECKPOINT_DIR/kept/PHASE-stepN/ (a weights folder: pick the best step afterwards)")
    p.add_argument("--docs", default="docs", help="where the curves PNG goes")
    return p.parse_args(argv)


def phase_setup(phase, args, state, device):
    """The precision and layout of ``phase``: chosen once by timing steps (``training.common``), then kept
    in the checkpoint so that a resumed run trains as it began."""
    if phase in state["setup"]:
        return state["setup"][phase]
    g, gen = state["g"], torch.Generator().manual_seed(args.seed + 7)
    lr_img, hr = state["sampler"].batch(args.batch, gen)

    def make_step(precision, channels_last):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x, y = lr_img.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)
        if phase == "srresnet":
            (g2,) = throwaway(g)
            g2 = g2.to(memory_format=fmt)
            train_mode(g2, state["frozen_bn"])
            opt = torch.optim.Adam(g2.parameters(), 0.0)
            return lambda: pixel_step(g2, opt, x, y, args, precision)
        g2, d2, v2 = (m.to(memory_format=fmt) for m in throwaway(g, state["d"], state["vgg"]))
        train_mode(g2, state["frozen_bn"])
        opt, opt_d = torch.optim.Adam(g2.parameters(), 0.0), torch.optim.Adam(d2.parameters(), 0.0)
        return lambda: gan_step(g2, d2, v2, opt, opt_d, x, y, args, precision)

    setup = choose_precision(make_step, device, args.precision, args.channels_last)
    setup["hardware"] = hardware(device)
    setup = state["job"].broadcast(setup)  # every rank trains as rank 0 timed
    state["job"].say(f"{phase}: {setup['precision']}{', channels_last' if setup['channels_last'] else ''} "
                     f"(step seconds: {setup['seconds'] or 'not timed'}; {setup['note'] or 'bf16 timed'})")
    state["setup"][phase] = setup
    return setup


def run_phase(phase, args, state, val_paths, device, budget_s, on_validation=None):
    """Train one phase until its elapsed time (resumed time included) reaches ``budget_s`` seconds. Under
    torchrun the networks train wrapped in DistributedDataParallel, and rank 0's clock rules every rank.
    ``on_validation(phase, figures)`` runs on rank 0 after each validation."""
    g, gen, job = state["g"], state["gen"], state["job"]
    opt, d, opt_d = state[f"opt_{phase}"], state.get("d"), state.get("opt_d")
    elapsed = state["elapsed"].get(phase, 0.0)
    step = state["step"].get(phase, 0)
    if elapsed >= budget_s:
        return
    setup = phase_setup(phase, args, state, device)
    fmt = torch.channels_last if setup["channels_last"] else torch.contiguous_format
    g.to(memory_format=fmt)
    if d is not None:
        d.to(memory_format=fmt)
        state["vgg"].to(memory_format=fmt)
    g_step, d_step = job.wrap(g), (job.wrap(d) if d is not None else None)
    base_lr = args.lr if phase == "srresnet" else args.lr / 2
    segments = state["loss_segments"].setdefault(phase, [])
    if not segments or segments[-1]["loss"] != describe_loss(phase, args):
        segments.append(dict(from_step=step, loss=describe_loss(phase, args)))
    bar = tqdm(total=round(budget_s), initial=round(min(elapsed, budget_s)), unit="s",
               desc=phase, dynamic_ncols=True, disable=not job.main)
    start, last_val, last_ckpt = time.time() - elapsed, time.time(), time.time()
    val = next((h for h in reversed(state["history"]) if h["phase"] == phase and "psnr_y" in h), None)
    rate = None
    train_mode(g, state["frozen_bn"])
    while elapsed < budget_s:
        t0 = time.time()
        lr_now = cosine_lr(base_lr, elapsed / budget_s, floor=0.02)
        for o in (opt, opt_d):
            for group in (o.param_groups if o is not None else []):
                group["lr"] = lr_now
        lr_img, hr = state["sampler"].batch(args.batch, gen)
        lr_img, hr = lr_img.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)
        if phase == "srresnet":
            log = pixel_step(g_step, opt, lr_img, hr, args, setup["precision"])
        else:
            log = gan_step(g_step, d_step, state["vgg"], opt, opt_d, lr_img, hr, args, setup["precision"])
            if state.get("ema") is not None:
                update_ema(state["ema"], g, args.ema)
        step += 1
        now = time.time()
        rate = 1 / (now - t0) if rate is None else 0.9 * rate + 0.1 / (now - t0)
        elapsed, checkpoint_now = job.share(now - start, float(now - last_ckpt >= args.checkpoint_every))
        bar.update(round(min(elapsed, budget_s)) - bar.n)
        if step % 10 == 0:
            state["history"].append(dict(phase=phase, step=step, lr=lr_now, **log))
        state["elapsed"][phase], state["step"][phase] = elapsed, step
        if job.main and (now - last_val >= args.val_every or elapsed >= budget_s):
            val = validate(served(phase, state), val_paths, device)
            train_mode(g, state["frozen_bn"])
            state["history"].append(dict(phase=phase, step=step, **val))
            tqdm.write(f"{phase} step {step} ({elapsed / 60:.1f} min): val Y-PSNR {val['psnr_y']:.2f} dB "
                       f"(bicubic {val['bicubic_psnr_y']:.2f}), SSIM {val['ssim_y']:.4f}, "
                       f"detail {val['detail']:.2f} (bicubic {val['bicubic_detail']:.2f})")
            if on_validation is not None:
                on_validation(phase, val)
                train_mode(g, state["frozen_bn"])
            last_val = time.time()
        bar.set_postfix_str(f"step {step}, {rate:.2f} it/s, loss {log['loss']:.4f}"
                            + (f", val {val['psnr_y']:.2f} dB detail {val['detail']:.2f}" if val else ""))
        if checkpoint_now:
            save_checkpoint(state, args)
            last_ckpt = time.time()
    bar.close()
    g.to(memory_format=torch.contiguous_format)
    job.share_buffers(g)
    save_checkpoint(state, args)


def save_checkpoint(state, args):
    """Write ``last.pt`` (rank 0), with every rank's patch generator state; every rank calls it at the same
    step."""
    gens = state["job"].gather(state["gen"].get_state())
    if not state["job"].main:
        return
    ckpt = Path(args.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    skip = {"gen", "sampler", "vgg", "job"}
    blob = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in state.items() if k not in skip}
    blob["gens"] = gens
    blob["args"] = vars(args)
    tmp = ckpt / "last.pt.tmp"
    torch.save(blob, tmp)
    tmp.replace(ckpt / "last.pt")


def init_generator(args, device):
    """A new generator (bicubic skip, zero tail: it starts at bicubic quality), or the one of a served file
    (``--init-from``, whose widths and depth replace ``--channels`` and ``--blocks``). Returns
    ``(g, frozen_bn, init_from)``."""
    if not args.init_from:
        g = SRResNet(channels=args.channels, blocks=args.blocks)
        return g.to(device), False, None
    from training.manifest import sha256_file
    g = sr_from_state_dict(torch.jit.load(args.init_from, map_location="cpu").state_dict())
    args.channels, args.blocks = g.head[0].out_channels, len(g.body)  # the file's shapes win
    return g.to(device), True, f"{Path(args.init_from).name} (sha256 {sha256_file(args.init_from)[:12]})"


def main(argv=None):
    args = parse_args(argv)
    seed_everything(args.seed)  # the same initial weights on every rank
    job = distributed.start(args)
    device = job.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_paths, val_paths = list_images(args.data), list_images(args.val)
    budget = args.minutes * 60
    budgets = {"srresnet": budget * (1 - args.gan_fraction), "srgan": budget * args.gan_fraction}

    ckpt = Path(args.checkpoint_dir) / "last.pt"
    # On the CPU: the random states must stay there; the networks and optimisers copy the rest to the device.
    resumed = torch.load(ckpt, map_location="cpu", weights_only=False) if ckpt.exists() else None
    if resumed is not None:
        args.init_from = resumed["args"].get("init_from")  # the generator's origin is the first run's
        args.consistency = resumed["args"].get("consistency", 0)  # and so is its back-projection
    g, frozen_bn, init_from = init_generator(args, device)
    gen = torch.Generator().manual_seed(job.seed(args.seed))
    state = dict(job=job, g=g, gen=gen, opt_srresnet=torch.optim.Adam(g.parameters(), args.lr),
                 elapsed={}, step={}, history=[], exported={}, setup={}, frozen_bn=frozen_bn, loss_segments={},
                 init_from=init_from, sampler=PatchSampler(train_paths, args.patch * 4, device))
    if resumed is not None:
        for key in ("elapsed", "step", "history", "exported", "setup", "frozen_bn", "init_from", "loss_segments"):
            state[key] = resumed.get(key, state[key])
        g.load_state_dict(resumed["g"], strict=True)
        state["opt_srresnet"].load_state_dict(resumed["opt_srresnet"])
        job.restore_random_states(resumed, gen=gen.set_state)
        job.say(f"resumed from {ckpt}: steps {state['step']}, minutes "
                f"{ {k: round(v / 60, 1) for k, v in state['elapsed'].items()} }"
                + (f", {job.world} ranks" if job.distributed else ""))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep = None
    if args.keep:
        def keep(phase, val):
            kept = Path(args.checkpoint_dir) / "kept" / f"{phase}-step{state['step'][phase]}"
            kept.mkdir(parents=True, exist_ok=True)
            register(phase, args, state, val_paths, device, train_paths, budgets[phase], out=kept, figures=val)
    gan_started = state["step"].get("srgan", 0) > 0
    if budgets["srresnet"] > 0 and not gan_started:
        run_phase("srresnet", args, state, val_paths, device, budgets["srresnet"], keep)
    if state["step"].get("srresnet", 0) and state["exported"].get("srresnet") != state["step"]["srresnet"]:
        finish("srresnet", args, state, val_paths, device, train_paths, budgets["srresnet"])

    if budgets["srgan"] > 0:
        if args.consistency:  # SRGAN's generator ends in the back-projection (weightless); SRResNet's does not
            g.consistency = LRConsistency(args.consistency).to(device)
        d = Discriminator().to(device)
        state.update(d=d, vgg=load_vgg(args.vgg, device, last=args.percep_layer),
                     opt_srgan=torch.optim.Adam(g.parameters(), args.lr / 2, betas=(0.9, 0.99)),
                     opt_d=torch.optim.Adam(d.parameters(), args.lr / 2, betas=(0.9, 0.99)))
        if resumed is not None and "d" in resumed:
            d.load_state_dict(resumed["d"], strict=True)
            state["opt_srgan"].load_state_dict(resumed["opt_srgan"])
            state["opt_d"].load_state_dict(resumed["opt_d"])
        if args.ema:
            # Starts from the generator as it is (a run resumed from a checkpoint without one included).
            state["ema"] = copy.deepcopy(g).eval().requires_grad_(False)
            if resumed is not None and resumed.get("ema") is not None:
                state["ema"].load_state_dict(resumed["ema"], strict=True)
        run_phase("srgan", args, state, val_paths, device, budgets["srgan"], keep)
        if state["step"].get("srgan", 0) and state["exported"].get("srgan") != state["step"]["srgan"]:
            finish("srgan", args, state, val_paths, device, train_paths, budgets["srgan"])
    if job.distributed:
        digest = job.check_same_weights(g)
        job.say(f"all {job.world} ranks hold the same generator (sha256 {digest[:12]})")
    job.close()
    if not job.main:
        return
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    plot_curves(state["history"], Path(args.docs) / "sr_training_curves.png")
    (Path(args.checkpoint_dir) / "history.json").write_text(json.dumps(state["history"]))
    manifest = json.loads((out / "manifest.json").read_text())["models"]
    for name in state["exported"]:
        e = manifest[name]
        print(f"{name}: Y-PSNR {e['psnr_y']:.2f} dB, bicubic {e['bicubic_psnr_y']:.2f} dB, "
              f"gain {e['gain_db']:+.2f} dB, SSIM {e['ssim_y']:.4f} (bicubic {e['bicubic_ssim_y']:.4f}), "
              f"detail {e['detail']:.2f} (bicubic {e['bicubic_detail']:.2f})")


def describe_loss(phase, args):
    """The loss of ``phase`` with ``args``' weights, in words (the manifest's ``loss``)."""
    if phase == "srresnet":
        return "L1"
    return (f"{args.percep_weight:g} x VGG16 {args.percep_layer} L1 + {args.pixel_weight:g} x pixel L1 + "
            + (f"{args.lowpass_weight:g} x 4x4-mean L1 + " if args.lowpass_weight else "")
            + (f"{args.texture_weight:g} x 8x8 log gradient-amplitude L1 + " if args.texture_weight else "")
            + (f"{args.flat_weight:g} x pixel L1 where the LR is smooth + " if args.flat_weight else "")
            + f"{args.adv_weight:g} x RaGAN, from srresnet"
            + (f"; the weights' moving average (decay {args.ema:g})" if args.ema else ""))


def finish(phase, args, state, val_paths, device, train_paths, budget_s):
    """Validate, trace and register ``phase``'s generator (rank 0; every rank calls it) and checkpoint;
    return its manifest entry (None on the other ranks)."""
    entry = None
    if state["job"].main:
        entry = register(phase, args, state, val_paths, device, train_paths, budget_s)
    state["exported"][phase] = state["step"].get(phase, 0)
    save_checkpoint(state, args)
    return entry


def register(phase, args, state, val_paths, device, train_paths, budget_s, out=None, figures=None):
    """Validate (unless ``figures`` are this generator's), trace and write ``phase``'s generator with its
    manifest entry to ``out`` (``--out``)."""
    g = served(phase, state)
    projection = g.consistency.iterations if g.consistency is not None else 0
    out = Path(out or args.out)
    v = figures or validate(g, val_paths, device)
    path = out / f"{phase}.pt"
    export_sr(g, path)
    setup = state["setup"].get(phase, {})
    entry = dict(
        file=path.name, kind="sr", scale=4,
        arch=dict(net="SRResNet", channels=args.channels, blocks=args.blocks, bicubic_skip=True,
                  **({"lr_consistency": projection} if projection else {})),
        loss=describe_loss(phase, args),
        loss_segments=state["loss_segments"].get(phase, []),
        training=dict(data=str(args.data), images=len(train_paths), steps=state["step"].get(phase, 0),
                      minutes=round(state["elapsed"].get(phase, 0.0) / 60, 2),
                      budget_minutes=round(budget_s / 60, 2), batch=args.batch,
                      lr_patch=args.patch, seed=args.seed, ranks=state["job"].world,
                      initialised_from=state["init_from"],
                      hardware=setup.get("hardware", hardware(device)),
                      precision=setup.get("precision", "fp32"), channels_last=setup.get("channels_last", False),
                      step_seconds=setup.get("seconds", {}), torch=torch.__version__),
        validation=dict(images=[p.name for p in val_paths],
                        protocol="Y (BT.601), 4px border, Pillow BICUBIC x4 LR; detail: gradient energy "
                                 "of the outputs / of the true images"),
        **v, gain_db=round(v["psnr_y"] - v["bicubic_psnr_y"], 3),
    )
    return update_manifest(out, phase, entry)


if __name__ == "__main__":
    main()
