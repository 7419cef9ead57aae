"""Train the 4x SR generators: SRResNet with a pixel loss, then SRGAN fine-tuning from it.

``make train-gpu`` / ``make train-cpu`` call this. It takes a wall-clock budget (``--minutes``)
shared by the two phases, seeds everything, shows progress with tqdm, validates on a fixed
held-out set with the DATA.md protocol (Y-channel PSNR/SSIM, 4-pixel border, Pillow bicubic
LR), resumes from ``--checkpoint-dir``, traces both generators to TorchScript on the CPU and
writes them to ``--out`` with their ``manifest.json`` entries and a PNG of the curves.
"""
import argparse
import json
import math
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from model.discriminator import Discriminator
from model.rewrites import factor_conv, fold_shuffle_into_conv
from model.srresnet import SRResNet
from model.vgg import VGG16Features
from training import metrics
from training.manifest import update_manifest

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder):
    """Sorted image paths in ``folder`` (not recursive)."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise SystemExit(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {folder}")
    return paths


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class PatchSampler:
    """Random HR patches (flips and 90-degree turns) from images held in memory as uint8.

    LR patches are made on the device with antialiased bicubic, which matches Pillow's BICUBIC
    downscale to within 2 grey levels (DATA.md).
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


@torch.inference_mode()
def validate(net, val_paths, device):
    """Mean Y-PSNR/SSIM of ``net`` and of bicubic on the validation images (DATA.md protocol)."""
    was_training = net.training
    net.eval()
    rows = []
    for p in val_paths:
        hr, lr = metrics.degrade(Image.open(p).convert("RGB"))
        x = torch.from_numpy(np.asarray(lr)).permute(2, 0, 1)[None].float().div(255).to(device)
        y = net(x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
        hr_a, bic = np.asarray(hr), np.asarray(metrics.bicubic_up(lr))
        rows.append((metrics.psnr(y, hr_a), metrics.ssim(y, hr_a),
                     metrics.psnr(bic, hr_a), metrics.ssim(bic, hr_a)))
    net.train(was_training)
    m = np.mean(rows, axis=0)
    return dict(psnr_y=round(float(m[0]), 3), ssim_y=round(float(m[1]), 4),
                bicubic_psnr_y=round(float(m[2]), 3), bicubic_ssim_y=round(float(m[3]), 4))


def cosine_lr(base, frac):
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def hardware(device):
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def export(net, path):
    """Trace ``net`` on the CPU in eval mode to TorchScript at ``path``, for fast CPU inference.

    The traced copy has BatchNorm folded into the convolutions and its weights in channels_last, so
    oneDNN runs every convolution in NHWC without reorders (about 2x faster on 2 cores). Its last pixel
    shuffle moves behind the 9x9 tail (``model.rewrites.fold_shuffle_into_conv``: the PReLU before it
    takes each channel's slope four times), and the tail is factored into 1xk and kx1 convolutions
    (``model.rewrites.factor_conv``): the tail took a quarter of the time at 40 GFLOP/s, and the shuffle
    was a memory-bound copy of the largest tensor; docs/performance.md. ``net`` itself is left as it
    was (training goes on with it).
    """
    from torch.fx.experimental.optimization import fuse
    net = net.eval().cpu()
    fast = fuse(net)  # a folded copy
    last = fast.get_submodule(f"upsample.{len(net.upsample) - 1}")
    act = nn.PReLU(last.act.weight.numel() * 4)
    with torch.no_grad():
        act.weight.copy_(last.act.weight.detach().repeat_interleave(4))
    last.shuffle, last.act = nn.Identity(), act
    fast.tail = nn.Sequential(factor_conv(fold_shuffle_into_conv(fast.tail)), nn.PixelShuffle(2))
    fast = fast.to(memory_format=torch.channels_last)
    probe = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        traced = torch.jit.trace(fast, probe, check_trace=False)
        diff = (traced(probe) - net(probe)).abs().max().item()
    if diff > 1 / 255:
        raise RuntimeError(f"the folded network differs from the trained one by {diff:.3g} (> 1/255)")
    torch.jit.save(traced, str(path))


def plot_curves(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for phase, color in (("srresnet", "tab:blue"), ("srgan", "tab:red")):
        tr = [h for h in history if h["phase"] == phase and "loss" in h]
        va = [h for h in history if h["phase"] == phase and "psnr_y" in h]
        if tr:
            a.plot([h["step"] for h in tr], [h["loss"] for h in tr], color=color, label=f"{phase} loss")
        if va:
            b.plot([h["step"] for h in va], [h["psnr_y"] for h in va], "o-", color=color, label=phase)
    bic = [h["bicubic_psnr_y"] for h in history if "bicubic_psnr_y" in h]
    if bic:
        b.axhline(bic[0], color="gray", linestyle="--", label="bicubic")
    a.set_xlabel("step"), a.set_ylabel("generator loss"), a.set_yscale("log"), a.legend()
    b.set_xlabel("step"), b.set_ylabel("validation Y-PSNR (dB)"), b.legend()
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
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=24, help="LR patch side (HR is 4x)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--percep-weight", type=float, default=1.0, help="SRGAN: VGG feature loss weight")
    p.add_argument("--adv-weight", type=float, default=5e-3, help="SRGAN: adversarial loss weight")
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-every", type=float, default=60.0, help="seconds between validations")
    p.add_argument("--out", default="weights", help="where traced weights and manifest go")
    p.add_argument("--checkpoint-dir", default="checkpoints/sr")
    p.add_argument("--docs", default="docs", help="where the curves PNG goes")
    return p.parse_args(argv)


def run_phase(phase, args, state, sampler, val_paths, device, budget_s, losses):
    """Train one phase for ``budget_s`` seconds of wall clock (resumed time included)."""
    g, gen = state["g"], state["gen"]
    opt = state[f"opt_{phase}"]
    d, opt_d = state.get("d"), state.get("opt_d")
    elapsed = state["elapsed"].get(phase, 0.0)
    step = state["step"].get(phase, 0)
    bar = tqdm(total=round(budget_s), initial=round(min(elapsed, budget_s)), unit="s",
               desc=phase, dynamic_ncols=True)
    start, last_val, last_ckpt = time.time() - elapsed, time.time(), time.time()
    g.train()
    while elapsed < budget_s:
        lr_now = cosine_lr(args.lr if phase == "srresnet" else args.lr / 2, elapsed / budget_s)
        for group in opt.param_groups:
            group["lr"] = lr_now
        lr_img, hr = sampler.batch(args.batch, gen)
        sr = g(lr_img)
        log = {}
        if phase == "srresnet":
            loss = F.l1_loss(sr, hr)
        else:
            for group in opt_d.param_groups:
                group["lr"] = lr_now
            fake_logit = d(sr)
            real_logit = d(hr).detach()
            # Relativistic average GAN (ESRGAN): the generator makes fakes look more real than reals.
            adv = (F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), torch.zeros_like(real_logit))
                   + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), torch.ones_like(fake_logit))) / 2
            feats = losses["vgg"](torch.cat([sr, hr]), ["relu4_3"])["relu4_3"] / 58.0
            f_sr, f_hr = feats.chunk(2)
            percep = F.mse_loss(f_sr, f_hr.detach())
            pixel = F.l1_loss(sr, hr)
            loss = args.percep_weight * percep + pixel + args.adv_weight * adv
            log.update(percep=percep.item(), adv=adv.item(), pixel=pixel.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if phase == "srgan":
            real_logit = d(hr)
            fake_logit = d(sr.detach())
            loss_d = (F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), torch.ones_like(real_logit))
                      + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), torch.zeros_like(fake_logit))) / 2
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            log["loss_d"] = loss_d.item()
        step += 1
        now = time.time()
        elapsed = now - start
        bar.update(round(min(elapsed, budget_s)) - bar.n)
        if step % 10 == 0:
            state["history"].append(dict(phase=phase, step=step, loss=loss.item(), lr=lr_now, **log))
            bar.set_postfix(loss=f"{loss.item():.4f}", step=step)
        if now - last_val >= args.val_every or elapsed >= budget_s:
            v = validate(g, val_paths, device)
            state["history"].append(dict(phase=phase, step=step, **v))
            tqdm.write(f"{phase} step {step}: val Y-PSNR {v['psnr_y']:.2f} dB "
                       f"(bicubic {v['bicubic_psnr_y']:.2f}), SSIM {v['ssim_y']:.4f}")
            last_val = time.time()
        state["elapsed"][phase], state["step"][phase] = elapsed, step
        if time.time() - last_ckpt >= 120:
            save_checkpoint(state, args)
            last_ckpt = time.time()
    bar.close()
    state["elapsed"][phase], state["step"][phase] = elapsed, step
    state["done"].append(phase)
    save_checkpoint(state, args)


def save_checkpoint(state, args):
    ckpt = Path(args.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    blob = {k: (v.state_dict() if hasattr(v, "state_dict") and not isinstance(v, torch.Generator) else v)
            for k, v in state.items() if k != "gen"}
    blob["gen"] = state["gen"].get_state()
    blob["args"] = vars(args)
    tmp = ckpt / "last.pt.tmp"
    torch.save(blob, tmp)
    tmp.replace(ckpt / "last.pt")


def main(argv=None):
    args = parse_args(argv)
    seed_everything(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_paths, val_paths = list_images(args.data), list_images(args.val)
    sampler = PatchSampler(train_paths, args.patch * 4, device)
    budget = args.minutes * 60
    budgets = {"srresnet": budget * (1 - args.gan_fraction), "srgan": budget * args.gan_fraction}

    g = SRResNet(channels=args.channels, blocks=args.blocks).to(device)
    gen = torch.Generator().manual_seed(args.seed)
    state = dict(g=g, gen=gen, opt_srresnet=torch.optim.Adam(g.parameters(), args.lr),
                 elapsed={}, step={}, history=[], done=[], exported=[])
    ckpt = Path(args.checkpoint_dir) / "last.pt"
    resumed = None
    if ckpt.exists():
        resumed = torch.load(ckpt, map_location=device, weights_only=False)
        for key in ("elapsed", "step", "history", "done", "exported"):
            state[key] = resumed[key]
        g.load_state_dict(resumed["g"], strict=True)
        state["opt_srresnet"].load_state_dict(resumed["opt_srresnet"])
        gen.set_state(resumed["gen"])
        print(f"resumed from {ckpt}: {state['step']} steps, phases done {state['done']}")

    losses = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "srresnet" not in state["done"]:
        run_phase("srresnet", args, state, sampler, val_paths, device, budgets["srresnet"], losses)
    if "srresnet" not in state["exported"]:
        finish("srresnet", g, args, state, val_paths, device, train_paths, budgets["srresnet"])

    if args.gan_fraction > 0:
        vgg = VGG16Features("relu4_3").to(device).eval()
        vgg.load_state_dict({k: v.float() for k, v in torch.load(args.vgg, map_location=device).items()},
                            strict=True)
        losses["vgg"] = vgg
        d = Discriminator().to(device)
        state.update(d=d, opt_srgan=torch.optim.Adam(g.parameters(), args.lr / 2, betas=(0.9, 0.99)),
                     opt_d=torch.optim.Adam(d.parameters(), args.lr / 2, betas=(0.9, 0.99)))
        if resumed is not None and "d" in resumed:
            d.load_state_dict(resumed["d"], strict=True)
            state["opt_srgan"].load_state_dict(resumed["opt_srgan"])
            state["opt_d"].load_state_dict(resumed["opt_d"])
        if "srgan" not in state["done"]:
            run_phase("srgan", args, state, sampler, val_paths, device, budgets["srgan"], losses)
        if "srgan" not in state["exported"]:
            finish("srgan", g, args, state, val_paths, device, train_paths, budgets["srgan"])
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    plot_curves(state["history"], Path(args.docs) / "sr_training_curves.png")
    (Path(args.checkpoint_dir) / "history.json").write_text(json.dumps(state["history"]))
    manifest = json.loads((out / "manifest.json").read_text())["models"]
    for name in state["exported"]:
        e = manifest[name]
        print(f"{name}: Y-PSNR {e['psnr_y']:.2f} dB, bicubic {e['bicubic_psnr_y']:.2f} dB, "
              f"gain {e['gain_db']:+.2f} dB, SSIM {e['ssim_y']:.4f} (bicubic {e['bicubic_ssim_y']:.4f})")


def finish(phase, g, args, state, val_paths, device, train_paths, budget_s):
    """Validate, trace and register ``phase``'s generator; return its manifest entry."""
    v = validate(g, val_paths, device)
    path = Path(args.out) / f"{phase}.pt"
    export(g, path)
    g.to(device).train()
    entry = dict(
        file=path.name, kind="sr", scale=4,
        arch=dict(net="SRResNet", channels=args.channels, blocks=args.blocks, bicubic_skip=True),
        loss="L1" if phase == "srresnet" else (
            f"{args.percep_weight:g} x VGG16 relu4_3 MSE + L1 + {args.adv_weight:g} x RaGAN, from srresnet"),
        training=dict(data=str(args.data), images=len(train_paths), steps=state["step"].get(phase, 0),
                      minutes=round(state["elapsed"].get(phase, 0.0) / 60, 2),
                      budget_minutes=round(budget_s / 60, 2), batch=args.batch,
                      lr_patch=args.patch, seed=args.seed, hardware=hardware(device),
                      torch=torch.__version__),
        validation=dict(images=[p.name for p in val_paths],
                        protocol="Y (BT.601), 4px border, Pillow BICUBIC x4 LR"),
        **v, gain_db=round(v["psnr_y"] - v["bicubic_psnr_y"], 3),
    )
    entry = update_manifest(args.out, phase, entry)
    state["exported"].append(phase)
    save_checkpoint(state, args)
    return entry


if __name__ == "__main__":
    main()
