"""``make blend-sr``: the served SRGAN as a network interpolation of the GAN and SRResNet generators.

ESRGAN's network interpolation (Wang et al. 2018, section 3.4): a GAN generator fine-tuned from a PSNR
generator shares its layout and most of its weights, and ``alpha * gan + (1 - alpha) * psnr``, weight by
weight, is a generator between the two: one knob from the GAN's detail (and its noise) to SRResNet's
fidelity, set after training instead of by the loss weights of a new run. An alpha above 1 goes on past
the GAN along the same line (``1.05 * gan - 0.05 * psnr``): a little more of what the GAN learnt over
SRResNet, for a GAN that stopped short of the detail asked for.

The two served files are turned back into the trainable network (``training.export.sr_from_state_dict``;
the factored tail is not linear in the 9x9 one, so it is mixed unfactored), mixed, and exported again. The
mixing weight is given (``--alpha``) or chosen on the centre crops of the *training* photos, never on the
validation set the manifest reports: the smallest alpha (the most of SRResNet's fidelity) whose detail
figure there (gradient energy of the outputs over the true crops') still reaches ``--detail``. Detail
carries over from one set of photos to another far better than the PSNR gap to bicubic does (the first
GAN: 0.73 on the training crops, 0.75 on the validation set; 0.2 dB and 1.2 dB under bicubic). The result
is written as ``srgan.pt`` into the GAN's run folder (``runs/srgan/``; the GAN itself moves to
``unblended/`` there) with a manifest entry that keeps the GAN's training record and adds ``blend``: alpha,
both parents' sha256 and steps, the rule and the sweep. ``--recipe training/recipes/srgan.toml`` takes
alpha and the PSNR parent from the recipe's ``[blend]`` table; ``make promote`` ships the result. ``--name real``
(``training/recipes/real.toml``'s ``[blend]``) mixes the ``real`` GAN, which takes the damage level as a fourth
plane, with ``srresnet.pt`` given that plane at zero weight, into ``real.pt``.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from PIL import Image

from training import recipes
from training.common import list_images
from training.export import export_damage_blend, export_sr, mixed, sr_from_state_dict
from training.manifest import sha256_file, update_manifest
from training.prepare_data import centre_crop
from training.validation import measure, validate

DEFAULT_ALPHAS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def load_entry(path):
    """``(name, entry)`` of the served SR file ``path`` in the ``manifest.json`` beside it, checked against
    the file's sha256; SystemExit when there is none or it does not match."""
    path = Path(path)
    manifest_path = path.parent / "manifest.json"
    if not manifest_path.exists():
        raise SystemExit(f"{path}: no manifest.json beside it")
    models = json.loads(manifest_path.read_text())["models"]
    found = [(n, e) for n, e in models.items() if e.get("file") == path.name and e.get("kind") == "sr"]
    if not found:
        raise SystemExit(f"{path}: no SR entry for {path.name} in {manifest_path}")
    name, entry = found[0]
    if sha256_file(path) != entry["sha256"]:
        raise SystemExit(f"{path}: sha256 differs from its manifest entry (a file from another run?)")
    return name, entry


def lineage(entry):
    """The sha256 prefixes (12 hex digits) of a served SR file and of the file it was initialised from."""
    own = {entry["sha256"][:12]}
    origin = entry.get("training", {}).get("initialised_from") or ""
    if "sha256 " in origin:
        own.add(origin.split("sha256 ", 1)[1][:12])
    return own


def trainable(path, entry=None, condition=None):
    """The trainable ``SRResNet`` holding the weights of the served SR file at ``path`` (manifest ``entry``),
    with the LR back-projection its ``arch`` names; ``condition`` True gives a file without the damage plane
    one with zero weights (``real`` mixed with ``srresnet.pt``)."""
    return sr_from_state_dict(torch.jit.load(str(path), map_location="cpu").state_dict(),
                              consistency=(entry or {}).get("arch", {}).get("lr_consistency", 0), condition=condition)


def mix(gan, psnr, alpha):
    """A new network: ``alpha * gan + (1 - alpha) * psnr`` for every floating-point parameter and buffer
    (both trainable ``SRResNet`` of one layout; integer buffers and the LR back-projection are the GAN's)."""
    try:
        return mixed(gan, psnr, alpha)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def centre_crops(paths, size):
    """``size`` x ``size`` centre crops (PIL RGB) of the images at ``paths`` that are at least that large."""
    crops = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
        if min(im.size) >= size:
            crops.append(centre_crop(im, size))
    if not crops:
        raise SystemExit(f"no selection image is at least {size}x{size}")
    return crops


def sweep(gan, psnr, crops, alphas, detail):
    """Measure every alpha on ``crops``; return ``(chosen alpha, rows)``: the smallest alpha whose detail
    figure reaches ``detail`` (the largest alpha tried when none does: the GAN has no detail to spare)."""
    rows = []
    for alpha in sorted(set(alphas), reverse=True):
        rows.append(dict(alpha=alpha, **measure(mix(gan, psnr, alpha), crops, torch.device("cpu"))))
        print(f"alpha {alpha:.2f}: Y-PSNR {rows[-1]['psnr_y']:.2f} dB (bicubic {rows[-1]['bicubic_psnr_y']:.2f}), "
              f"detail {rows[-1]['detail']:.2f}", flush=True)
    ok = [r for r in rows if r["detail"] >= detail]
    return (ok[-1] if ok else rows[0])["alpha"], rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=None,
                   help="a recipe whose [blend] table sets alpha, psnr, detail (training/recipes/srgan.toml)")
    p.add_argument("--gan", default="runs/srgan/srgan.pt", help="the GAN generator (served file, manifest beside it)")
    p.add_argument("--name", default="srgan", help="the blend's manifest name and file (NAME.pt): srgan, or real")
    p.add_argument("--psnr", default="weights/srresnet.pt", help="the PSNR generator it was fine-tuned from")
    p.add_argument("--select-on", default="data/sr/train", help="photos that choose alpha (not the validation set)")
    p.add_argument("--crop", type=int, default=256, help="side of the centre crop of each selection photo")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS), help="weights of the GAN tried")
    p.add_argument("--alpha", type=float, default=None, help="this weight of the GAN, without a sweep")
    p.add_argument("--alpha-clean", type=float, default=None,
                   help="with --name real: the GAN's weight at damage level 0, --alpha being its weight at level 1; "
                        "the file then mixes the two per request at the level it is given (model.damage_blend)")
    p.add_argument("--via", default=None,
                   help="the served file the GAN started from when that was itself fine-tuned from --psnr "
                        "(a GAN-only run from an earlier run's pixel phase: runs/real_v1/real_pixel.pt)")
    p.add_argument("--detail", type=float, default=0.9,
                   help="the detail figure to keep (1: the true images' gradient energy; bicubic's is ~0.2)")
    p.add_argument("--val", default="data/sr/val", help="the validation photos the manifest reports")
    p.add_argument("--out", default=None,
                   help="where srgan.pt and its manifest entry go (the GAN's run folder; never weights/)")
    p.add_argument("--keep-gan", default=None,
                   help="where the GAN parent is kept when it is the file being replaced (OUT/unblended/srgan.pt)")
    p.add_argument("--skip-blended", action="store_true",
                   help="when --gan is already the blend the recipe asks for, say so and stop (a rerun of make train-*)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: every core)")
    known, _ = p.parse_known_args(argv)
    if known.recipe:
        try:
            recipes.apply_recipe(p, recipes.load_recipe(known.recipe).get("blend", {}), f"{known.recipe} [blend]")
        except (OSError, ValueError) as e:
            p.error(str(e))
    args = p.parse_args(argv)
    if args.alpha_clean is not None and (args.alpha is None or not 0 <= args.alpha_clean <= 1):
        p.error(f"--alpha-clean {args.alpha_clean} needs --alpha (its weight at damage level 1) and a value "
                "from 0 to 1")
    args.out = args.out or str(Path(args.gan).parent)
    args.keep_gan = args.keep_gan or str(Path(args.out) / "unblended" / f"{args.name}.pt")
    recipes.refuse_shipped(args.out)
    return args


def parents(args):
    """``(gan_entry, psnr_entry)`` of the two files to mix, checked to be one lineage and the GAN not a blend;
    None when ``--skip-blended`` finds nothing to do."""
    if args.skip_blended and not Path(args.gan).exists():
        print(f"no {args.gan} (the GAN run exported nothing yet): nothing to blend")
        return None
    _, gan_entry = load_entry(args.gan)
    _, psnr_entry = load_entry(args.psnr)
    if "blend" in gan_entry and args.skip_blended and gan_entry["blend"]["alpha"] == args.alpha:
        print(f"{args.gan} is already {args.alpha:g} x its GAN (kept at {gan_entry['blend']['gan']['kept_at']}): "
              "nothing to blend")
        return None
    if "blend" in gan_entry:
        raise SystemExit(f"{args.gan} is already a blend (alpha {gan_entry['blend']['alpha']}); "
                         f"give the GAN itself (--gan {gan_entry['blend']['gan']['kept_at']})")
    chain = lineage(gan_entry)
    if args.via:  # the GAN started from an earlier run's file, itself fine-tuned from the PSNR generator
        _, via_entry = load_entry(args.via)
        if via_entry["sha256"][:12] not in chain:
            raise SystemExit(f"{args.gan} did not start from {args.via}")
        chain |= lineage(via_entry)
    if not chain & lineage(psnr_entry):
        raise SystemExit("the GAN was not fine-tuned from the PSNR generator or from the file it started from "
                         f"(sha256 {sorted(lineage(gan_entry))} against {sorted(lineage(psnr_entry))})")
    return gan_entry, psnr_entry


def choose_alpha(args, gan, psnr):
    """``(alpha, sweep rows, how it was chosen)``: ``--alpha``, or :func:`sweep`'s on the selection photos."""
    if args.alpha is not None:
        return args.alpha, [], "given (--alpha)"
    paths = list_images(args.select_on)
    crops = centre_crops(paths, args.crop)
    print(f"choosing alpha on {len(crops)} {args.crop}x{args.crop} centre crops of {args.select_on}")
    alpha, rows = sweep(gan, psnr, crops, args.alphas, args.detail)
    return alpha, rows, (f"the smallest alpha of {sorted(set(args.alphas))} whose detail reaches {args.detail:g} "
                         f"on {len(crops)} {args.crop}x{args.crop} centre crops of {args.select_on}")


def keep_gan(args, gan_entry, target):
    """Where the GAN parent stays: ``--gan`` itself, or a copy at ``--keep-gan`` (with its manifest entry)
    when ``--gan`` is the file the blend replaces."""
    kept = Path(args.gan)
    if target.exists() and target.resolve() == kept.resolve():
        kept = Path(args.keep_gan)
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.gan, kept)
        (kept.parent / "manifest.json").write_text(
            json.dumps({"models": {args.name: dict(gan_entry, file=kept.name)}}, indent=2) + "\n")
    return kept


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    found = parents(args)
    if found is None:
        return 0
    gan_entry, psnr_entry = found
    gan = trainable(args.gan, gan_entry)
    psnr = trainable(args.psnr, psnr_entry, condition=gan.condition or None)
    alpha, rows, chosen_on = choose_alpha(args, gan, psnr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{args.name}.pt"
    kept = keep_gan(args, gan_entry, target)
    if args.alpha_clean is None:
        net = mix(gan, psnr, alpha)
        export_sr(net, target)
        share, rest = f"{alpha:g}", f"{abs(1 - alpha):g}"
    else:  # the validation photos are clean shrinks: they get the blend at damage level 0
        net = mix(gan, psnr, args.alpha_clean)
        export_damage_blend(psnr, gan, args.alpha_clean, alpha, target)
        share, rest = f"({args.alpha_clean:g} at damage 0 to {alpha:g} at damage 1)", "the rest"
    sign = "-" if alpha > 1 else "+"
    val_paths = list_images(args.val)
    v = validate(net, val_paths, torch.device("cpu"))
    entry = dict(gan_entry, file=target.name,
                 loss=f"{share} x [{gan_entry['loss']}] {sign} {rest} x [srresnet, "
                      f"{psnr_entry['loss']}] (network {'extrapolation' if alpha > 1 else 'interpolation'})",
                 blend=dict(alpha=alpha, **({} if args.alpha_clean is None else {"alpha_clean": args.alpha_clean}),
                            chosen=chosen_on, sweep=rows,
                            gan=dict(sha256=gan_entry["sha256"], steps=gan_entry["training"]["steps"],
                                     kept_at=str(kept)),
                            psnr=dict(file=Path(args.psnr).name, sha256=psnr_entry["sha256"],
                                      steps=psnr_entry["training"]["steps"]),
                            **({"recipe": args.recipe} if args.recipe else {})),
                 validation=dict(gan_entry["validation"], images=[p.name for p in val_paths]),
                 **v, gain_db=round(v["psnr_y"] - v["bicubic_psnr_y"], 3))
    entry = update_manifest(out, args.name, entry)
    print(f"{args.name} = {share} x GAN {sign} {rest} x SRResNet -> {target}: validation Y-PSNR "
          f"{entry['psnr_y']:.2f} dB (bicubic {entry['bicubic_psnr_y']:.2f}, gain {entry['gain_db']:+.2f}), "
          f"detail {entry['detail']:.2f} (bicubic {entry['bicubic_detail']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
