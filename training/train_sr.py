"""Train the 4x SR generators: SRResNet with a pixel loss, then SRGAN fine-tuning from it.

``make train-gpu`` / ``make train-cpu`` run it on ``training/recipes/srresnet.toml`` and ``srgan.toml``
(``--recipe``; a flag or ``--set key=value`` overrides one key). The wall-clock budget (``--minutes``, the
whole run's, the precision's timing included) is shared by the two phases (``--gan-fraction``). It seeds
everything, shows progress, validates on a fixed held-out set with the protocol of docs/data.md, checkpoints,
and resumes with the same command; with a larger ``--minutes`` it continues the phase it was in on the new
budget's cosine. ``--init-from`` starts from a served SR file instead of from bicubic.

Everything goes into ``runs/<recipe>/`` (``runs/sr/`` without a recipe): the traced generators with their
manifest entries (the recipe as it ran, each stretch's overrides), the curves, the recipe, ``checkpoints/``.
Nothing here writes ``weights/``: ``make promote`` does (docs/training.md). The loss terms are in
``training.losses``, the patches in ``training.data``, the figures in ``training.validation``.
"""
import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from model.consistency import LRConsistency
from model.discriminator import make_discriminator
from model.vgg import layer_names
from training import degrade, distributed, recipes
from training.common import (add_machine_args, autocast, choose_precision, cosine_lr, hardware,
                             list_images, load_vgg, throwaway, update_ema)
from training.checkpoints import build_sr_state, save_sr_checkpoint
from training.data import seed_everything
from training.losses import (add_sr_loss_args, describe_sr_loss, feature_l1, percep_layers, ragan, sr_generator_loss,
                             sr_generator_terms, usm_sharpen)
from training.sheets import plot_curves
from training.sr_entry import entry_name, register, served
from training.validation import validate

PHASES = ("srresnet", "srgan")
TIMING_SHARE = 0.1  # of a phase's budget, at most (about), for timing the precisions


def train_mode(g, frozen_bn):
    """``g.train()``, keeping its BatchNorm layers in eval mode when ``frozen_bn`` (a generator rebuilt from
    a served file, whose statistics are folded: batch statistics would undo what it learned)."""
    g.train()
    if frozen_bn:
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def pixel_step(g, opt, lr_img, hr, args, precision):
    """One SRResNet step (L1); returns its log."""
    with autocast(lr_img.device, precision):
        sr = g(lr_img)
    loss = F.l1_loss(sr.float(), hr)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return dict(loss=loss.item())


def gan_step(g, d, vgg, opt, opt_d, lr_img, hr, args, precision):
    """One SRGAN step: the generator on the terms of ``training.losses.sr_generator_terms`` (ESRGAN's recipe
    and this project's additions), then the discriminator; returns the log. Under bf16 autocast every loss
    is computed in fp32."""
    dev = lr_img.device
    # where the photo is smooth (the flat term) is read from the clean shrink when the input is degraded
    clean_lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True) if args.degrade else lr_img
    target = usm_sharpen(hr, args.sharpen) if args.sharpen else hr  # the discriminator sees the true photo
    with autocast(dev, precision):
        sr = g(lr_img)
        fake_logit = d(sr).float()
        with torch.no_grad():
            real_logit = d(hr).float()
        percep = feature_l1(vgg, sr, target, args.percep_layers)
    terms = sr_generator_terms(sr, target, clean_lr, percep, real_logit, fake_logit, args)
    loss = sr_generator_loss(terms, args)
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
    return dict(loss=loss.item(), **{k: v.item() for k, v in terms.items()}, loss_d=loss_d.item())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recipes.add_recipe_args(p)
    p.add_argument("--data", default="data/sr/train", help="folder of HR training images")
    p.add_argument("--val", default="data/sr/val", help="folder of HR validation images")
    p.add_argument("--vgg", default="data/vgg16_hed.pt", help="converted VGG16 (make data)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of the whole run (both phases)")
    p.add_argument("--gan-fraction", type=float, default=0.3, help="share of the budget for SRGAN")
    p.add_argument("--init-from", default=None,
                   help="a served SR file (weights/srresnet.pt) to start from instead of bicubic; "
                        "with --gan-fraction 1 only the SRGAN phase runs")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=24, help="LR patch side (HR is 4x)")
    p.add_argument("--lr", type=float, default=2e-4, help="SRResNet's peak Adam lr (SRGAN: half of it)")
    add_sr_loss_args(p)
    degrade.add_degrade_args(p)
    p.add_argument("--blocks", type=int, default=16)
    p.add_argument("--channels", type=int, default=64)
    add_machine_args(p)
    p.add_argument("--val-every", type=float, default=60.0, help="seconds between validations")
    p.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    p.add_argument("--out", default=None, help="where traced weights and manifest go (runs/<recipe>/)")
    p.add_argument("--export-as", default=None,
                   help="the GAN's manifest name and file (NAME.pt; the pixel phase's: NAME_pixel), not srgan")
    p.add_argument("--checkpoint-dir", default=None, help="(runs/<recipe>/checkpoints)")
    p.add_argument("--keep", action="store_true",
                   help="at every validation also write the served generator, traced, with its manifest entry, "
                        "to CHECKPOINT_DIR/kept/PHASE-stepN/ (a weights folder: pick the best step afterwards)")
    p.add_argument("--docs", default=None, help="where the curves PNG goes (runs/<recipe>/)")
    args = recipes.parse_args(p, argv)
    try:  # a bad feature layer is refused now, not when the GAN phase starts after the pixel phase's hour
        args.percep_layers = percep_layers(args.percep_layer)
    except ValueError as e:
        p.error(str(e))
    run = recipes.run_folder(args, "sr")
    args.out = args.out or str(run)
    args.checkpoint_dir = args.checkpoint_dir or str(run / "checkpoints")
    args.docs = args.docs or args.out
    recipes.refuse_shipped(args.out, args.docs)
    return args


def phase_setup(phase, args, state, device, budget_s):
    """The precision and layout of ``phase``: chosen once by timing steps (``training.common``), then kept
    in the checkpoint so that a resumed run trains as it began. The timing takes about ``TIMING_SHARE`` of
    ``budget_s`` at most."""
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

    t0 = time.time()
    setup = choose_precision(make_step, device, args.precision, args.channels_last,
                             budget_s=TIMING_SHARE * budget_s)
    setup["hardware"] = hardware(device)
    setup = state["job"].broadcast(setup)  # every rank trains as rank 0 timed
    state["job"].say(f"{phase}: {setup['precision']}{', channels_last' if setup['channels_last'] else ''} "
                     f"(step seconds: {setup['seconds'] or 'not timed'}; {setup['note'] or 'bf16 timed'})")
    state["setup"][phase] = setup
    # The timing is part of the run (a budget is the whole run's), on rank 0's clock as every step.
    (state["elapsed"][phase],) = state["job"].share(state["elapsed"].get(phase, 0.0) + time.time() - t0)
    return setup


def start_phase(phase, args, state, device, budget_s):
    """Set ``phase`` up for its loop: its precision and layout, the networks in that layout and wrapped for
    the ranks, the loss segment it trains in. Returns ``(setup, fmt, g_step, d_step)``."""
    setup = phase_setup(phase, args, state, device, budget_s)
    fmt = torch.channels_last if setup["channels_last"] else torch.contiguous_format
    state["g"].to(memory_format=fmt)
    d = state.get("d")
    if d is not None:
        d.to(memory_format=fmt)
        state["vgg"].to(memory_format=fmt)
    job = state["job"]
    segments = state["loss_segments"].setdefault(phase, [])
    if not segments or segments[-1]["loss"] != describe_sr_loss(phase, args):
        segments.append(dict(from_step=state["step"].get(phase, 0), loss=describe_sr_loss(phase, args)))
    return setup, fmt, job.wrap(state["g"]), (job.wrap(d) if d is not None else None)


def train_step(phase, args, state, nets, fmt, precision, lr_now):
    """One step of ``phase`` at learning rate ``lr_now``; returns its log."""
    opt, opt_d = state[f"opt_{phase}"], state.get("opt_d")
    for o in (opt, opt_d):
        for group in (o.param_groups if o is not None else []):
            group["lr"] = lr_now
    lr_img, hr = state["sampler"].batch(args.batch, state["gen"])
    lr_img, hr = lr_img.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)
    g_step, d_step = nets
    if phase == "srresnet":
        return pixel_step(g_step, opt, lr_img, hr, args, precision)
    log = gan_step(g_step, d_step, state["vgg"], opt, opt_d, lr_img, hr, args, precision)
    if state.get("ema") is not None:
        update_ema(state["ema"], state["g"], args.ema)
    return log


def validate_now(phase, state, val_paths, device, on_validation):
    """Validate ``phase``'s served generator (rank 0), log it in the history and call ``on_validation``."""
    val = validate(served(phase, state), val_paths, device)
    train_mode(state["g"], state["frozen_bn"])
    step, elapsed = state["step"][phase], state["elapsed"][phase]
    state["history"].append(dict(phase=phase, step=step, **val))
    tqdm.write(f"{phase} step {step} ({elapsed / 60:.1f} min): val Y-PSNR {val['psnr_y']:.2f} dB "
               f"(bicubic {val['bicubic_psnr_y']:.2f}), SSIM {val['ssim_y']:.4f}, "
               f"detail {val['detail']:.2f} (bicubic {val['bicubic_detail']:.2f})")
    if on_validation is not None:
        on_validation(phase, val)
        train_mode(state["g"], state["frozen_bn"])
    return val


def run_phase(phase, args, state, val_paths, device, budget_s, on_validation=None):
    """Train one phase until its elapsed time (resumed time included) reaches ``budget_s`` seconds. Under
    torchrun the networks train wrapped in DistributedDataParallel, and rank 0's clock rules every rank.
    ``on_validation(phase, figures)`` runs on rank 0 after each validation."""
    job = state["job"]
    if state["elapsed"].get(phase, 0.0) >= budget_s:
        return
    setup, fmt, *nets = start_phase(phase, args, state, device, budget_s)
    elapsed, step = state["elapsed"].get(phase, 0.0), state["step"].get(phase, 0)
    base_lr = args.lr if phase == "srresnet" else args.lr / 2
    bar = tqdm(total=round(budget_s), initial=round(min(elapsed, budget_s)), unit="s",
               desc=phase, dynamic_ncols=True, disable=not job.main)
    start, last_val, last_ckpt = time.time() - elapsed, time.time(), time.time()
    val = next((h for h in reversed(state["history"]) if h["phase"] == phase and "psnr_y" in h), None)
    rate = None
    train_mode(state["g"], state["frozen_bn"])
    while elapsed < budget_s:
        t0 = time.time()
        lr_now = cosine_lr(base_lr, elapsed / budget_s, floor=0.02)
        log = train_step(phase, args, state, nets, fmt, setup["precision"], lr_now)
        step += 1
        now = time.time()
        rate = 1 / (now - t0) if rate is None else 0.9 * rate + 0.1 / (now - t0)
        elapsed, checkpoint_now = job.share(now - start, float(now - last_ckpt >= args.checkpoint_every))
        bar.update(round(min(elapsed, budget_s)) - bar.n)
        if step % 10 == 0:
            state["history"].append(dict(phase=phase, step=step, lr=lr_now, **log))
        state["elapsed"][phase], state["step"][phase] = elapsed, step
        if job.main and (now - last_val >= args.val_every or elapsed >= budget_s):
            val = validate_now(phase, state, val_paths, device, on_validation)
            last_val = time.time()
        bar.set_postfix_str(f"step {step}, {rate:.2f} it/s, loss {log['loss']:.4f}"
                            + (f", val {val['psnr_y']:.2f} dB detail {val['detail']:.2f}" if val else ""))
        if checkpoint_now:
            save_sr_checkpoint(state, args)
            last_ckpt = time.time()
    bar.close()
    state["g"].to(memory_format=torch.contiguous_format)
    job.share_buffers(state["g"])
    save_sr_checkpoint(state, args)


def start_gan(args, state, device, resumed):
    """Add SRGAN's discriminator, loss network, optimisers and moving average to ``state`` (resumed ones from
    the checkpoint); the generator gains its back-projection."""
    g = state["g"]
    if args.consistency:  # SRGAN's generator ends in the back-projection (weightless); SRResNet's does not
        g.consistency = LRConsistency(args.consistency).to(device)
    d = make_discriminator(args.disc).to(device)
    deepest = max(args.percep_layers, key=layer_names().index)
    state.update(d=d, vgg=load_vgg(args.vgg, device, last=deepest),
                 opt_srgan=torch.optim.Adam(g.parameters(), args.lr / 2, betas=(0.9, 0.99)),
                 opt_d=torch.optim.Adam(d.parameters(), args.lr / 2, betas=(0.9, 0.99)))
    if resumed is not None and "d" in resumed:
        try:
            d.load_state_dict(resumed["d"], strict=True)
        except RuntimeError:
            raise SystemExit(f"the checkpoint in {args.checkpoint_dir} was trained with another discriminator than "
                             f"--disc {args.disc}: resume it with that one, or start the run in its own folder "
                             "(--out and --checkpoint-dir)") from None
        state["opt_srgan"].load_state_dict(resumed["opt_srgan"])
        state["opt_d"].load_state_dict(resumed["opt_d"])
    if args.ema:
        # Starts from the generator as it is (a run resumed from a checkpoint without one included).
        state["ema"] = copy.deepcopy(g).eval().requires_grad_(False)
        if resumed is not None and resumed.get("ema") is not None:
            state["ema"].load_state_dict(resumed["ema"], strict=True)


def train_phases(args, state, resumed, device, paths, budgets):
    """Run SRResNet then SRGAN to their budgets, exporting each phase's generator when it has new steps."""
    train_paths, val_paths = paths
    keep = None
    if args.keep:
        def keep(phase, val):
            kept = Path(args.checkpoint_dir) / "kept" / f"{phase}-step{state['step'][phase]}"
            kept.mkdir(parents=True, exist_ok=True)
            register(phase, args, state, val_paths, device, train_paths, budgets[phase], out=kept, figures=val)
    if budgets["srresnet"] > 0 and not state["step"].get("srgan", 0) > 0:
        run_phase("srresnet", args, state, val_paths, device, budgets["srresnet"], keep)
    for phase in PHASES:
        if phase == "srgan":
            if budgets["srgan"] <= 0:
                break
            start_gan(args, state, device, resumed)
            run_phase("srgan", args, state, val_paths, device, budgets["srgan"], keep)
        if state["step"].get(phase, 0) and state["exported"].get(phase) != state["step"][phase]:
            finish(phase, args, state, val_paths, device, train_paths, budgets[phase])


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
    state, resumed = build_sr_state(args, job, device, train_paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_phases(args, state, resumed, device, (train_paths, val_paths), budgets)
    if job.distributed:
        digest = job.check_same_weights(state["g"])
        job.say(f"all {job.world} ranks hold the same generator (sha256 {digest[:12]})")
    job.close()
    if job.main:
        report(args, state, out)


def report(args, state, out):
    """Write the curves, the history and the recipe as it ran into the run's folder; print each phase's
    figures."""
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    if state["history"]:
        plot_curves(state["history"], Path(args.docs) / "sr_training_curves.png")
    (Path(args.checkpoint_dir) / "history.json").write_text(json.dumps(state["history"]))
    name = recipes.recipe_name(args.recipe) if args.recipe else "sr"
    (out / f"{name}.toml").write_text(recipes.dump_toml(args.recipe_record["values"], header=(
        f"The recipe as {name}'s last stretch ran it (python -m training.train_sr --recipe {out / name}.toml)")))
    if not state["exported"]:
        print(f"no step was trained within the budget ({args.minutes:g} minutes; the timing of the precision "
              f"counts in it): {out}/ has no generator")
        return
    manifest = json.loads((out / "manifest.json").read_text())["models"]
    for phase in state["exported"]:
        e = manifest[entry_name(phase, args)]
        print(f"{phase}: Y-PSNR {e['psnr_y']:.2f} dB, bicubic {e['bicubic_psnr_y']:.2f} dB, "
              f"gain {e['gain_db']:+.2f} dB, SSIM {e['ssim_y']:.4f} (bicubic {e['bicubic_ssim_y']:.4f}), "
              f"detail {e['detail']:.2f} (bicubic {e['bicubic_detail']:.2f})")
    print(f"the run is in {out}/; `make promote RUN={out}` ships it if it measures at least as well")


def finish(phase, args, state, val_paths, device, train_paths, budget_s):
    """Validate, trace and register ``phase``'s generator (rank 0; every rank calls it) and checkpoint;
    return its manifest entry (None on the other ranks)."""
    entry = None
    if state["job"].main:
        entry = register(phase, args, state, val_paths, device, train_paths, budget_s)
    state["exported"][phase] = state["step"].get(phase, 0)
    save_sr_checkpoint(state, args)
    return entry


if __name__ == "__main__":
    main()
