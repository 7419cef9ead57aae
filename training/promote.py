"""``make promote RUN=runs/<recipe>``: ship a training run, when it measures at least as well as what ships.

A run's folder is a weights folder of its own (its ``manifest.json`` and the files its entries name). For each
entry this measures the run's file and the shipped file of the same name with ``make eval``'s protocol
(``training.evaluate``, through the serving store, so every sha256 is checked) and applies the rule of the
entry's kind (docs/training.md, "Promotion"):

- ``sr``: the Y-PSNR gain over bicubic at least the shipped file's, and the detail figure at least as close
  to the true images' (1.0), both at ``make eval``'s two decimals;
- ``sr`` with a damage input (``real``): on ``make eval``'s real-world table (``training.realworld``), the
  deep-feature distance not higher (three decimals) and the Y-PSNR at most 0.1 dB lower;
- ``style``: the Gram ratio to the painting not higher (three decimals), and the content change at most
  ``CONTENT_SLACK`` (5 %) above the shipped file's.

An entry marked ``intermediate`` (the pixel phase a GAN started from) is left in the run unless ``--only``
names it. An entry with no shipped file of its name has nothing to fall short of and is promoted; a kind with no rule
here is refused unless forced. Only when every entry passes (or ``--force``) are the files copied into the
weights folder (``file``, ``thumbnail`` and any ``files`` an entry lists, paths relative to the run folder)
and the entries merged into its manifest, each with the entry it replaces as ``parent`` and a ``promoted``
record; then what changed is printed. Exit status: 0 promoted, 1 refused.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

from training.manifest import sha256_file, update_manifest

CONTENT_SLACK = 0.05  # a style's content change may grow by this share of the shipped one's


def sr_rule(new, old):
    """``(passed, reasons)`` for SR figures ``new`` against ``old`` (dicts with ``gain_db`` and ``detail``)."""
    reasons = []
    if round(new["gain_db"], 2) < round(old["gain_db"], 2):
        reasons.append(f"Y-PSNR gain {new['gain_db']:+.2f} dB is under the shipped {old['gain_db']:+.2f} dB")
    if round(abs(1 - new["detail"]), 2) > round(abs(1 - old["detail"]), 2):
        reasons.append(f"detail {new['detail']:.2f} is further from the true images' 1.00 than the shipped "
                       f"{old['detail']:.2f}")
    return not reasons, reasons


def real_rule(new, old):
    """``(passed, reasons)`` for the ``real`` model on the real-world table (``training.realworld``): the
    deep-feature distance not higher (three decimals), the Y-PSNR at most 0.1 dB lower."""
    reasons = []
    if round(new["feature_distance"], 3) > round(old["feature_distance"], 3):
        reasons.append(f"real-world deep-feature distance {new['feature_distance']:.3f} is higher than the shipped "
                       f"{old['feature_distance']:.3f}")
    if new["psnr_y"] < old["psnr_y"] - 0.1:
        reasons.append(f"real-world Y-PSNR {new['psnr_y']:.2f} dB is more than 0.1 dB under the shipped "
                       f"{old['psnr_y']:.2f} dB")
    return not reasons, reasons


def style_rule(new, old):
    """``(passed, reasons)`` for style figures ``new`` against ``old`` (``gram_ratio``, ``content_change``)."""
    reasons = []
    if round(new["gram_ratio"], 3) > round(old["gram_ratio"], 3):
        reasons.append(f"Gram ratio {new['gram_ratio']:.3f} is higher than the shipped {old['gram_ratio']:.3f} "
                       "(further from the painting)")
    if new["content_change"] > old["content_change"] * (1 + CONTENT_SLACK):
        reasons.append(f"content change {new['content_change']:.3f} is more than {CONTENT_SLACK:.0%} above the "
                       f"shipped {old['content_change']:.3f}")
    return not reasons, reasons


def universal_rule(new, old):
    """``(passed, reasons)`` for the universal model: the decoder's reconstruction Y-PSNR at its served depth
    not lower (two decimals); the encoder the same weights (every preset's statistics are made with them)."""
    if "weights" in new:
        same = new["weights"] == old["weights"]
        return same, [] if same else ["the encoder's weights differ from the shipped one's: every preset would need "
                                      "making again with it (training.make_presets)"]
    level = f"relu{new['depth']}_1"
    if round(new[level], 2) < round(old.get(level, float("-inf")), 2):
        return False, [f"reconstruction from {level} {new[level]:.2f} dB is under the shipped {old[level]:.2f} dB"]
    return True, []


def preset_rule(new, old):
    """``(passed, reasons)`` for a preset replacing a shipped one: it must be made with the encoder weights that
    will ship. A preset replacing a trained network (kind ``style``) has no figures rule: the side-by-side sheet
    of ``training.style_sheet`` decides, and ``--force`` ships it."""
    if old.get("kind") != "preset":
        return False, ["it replaces a trained network: compare them on the sheet of training.style_sheet"]
    same = new["weights"] == new["shipping_encoder"]
    return same, [] if same else ["made with other encoder weights than those that will ship"]


RULES = {"sr": sr_rule, "style": style_rule, "universal": universal_rule, "preset": preset_rule}


def entry_files(entry):
    """The files of a manifest entry, relative to its folder: ``file``, ``thumbnail`` and ``files``."""
    files = [entry["file"]] + ([entry["thumbnail"]] if entry.get("thumbnail") else []) + list(entry.get("files", []))
    for f in files:
        if Path(f).is_absolute() or ".." in Path(f).parts:
            raise SystemExit(f"the run's manifest names a file outside its folder: {f}")
    return files


def read_models(folder):
    """``{name: entry}`` of ``<folder>/manifest.json`` ({} when there is none)."""
    path = Path(folder) / "manifest.json"
    return json.loads(path.read_text())["models"] if path.exists() else {}


def figures(store, name, entry, args, cache):
    """``make eval``'s figures of the model ``name`` in ``store``: SR ``gain_db``/``detail``/..., style
    ``gram_ratio``/``content_change``/...; None for a kind ``training.evaluate`` does not measure."""
    import torch
    from PIL import Image

    from imgapi.store import conditioned
    from training.common import list_images, load_vgg
    from training.evaluate import evaluate, style_figures, summary
    if entry.get("kind") in ("universal", "preset"):
        return universal_figures(store, name, entry, args)
    module = store.get(name).module
    if entry.get("kind") == "sr" and conditioned(entry):
        from training import realworld
        if "vgg" not in cache:
            cache["vgg"] = load_vgg(args.vgg, torch.device("cpu"))
        means, _, _ = realworld.measure([(name, realworld.sr_runner(module, True))], list_images(args.data),
                                        cache["vgg"])
        return dict(means[name], real_world=True)
    if entry.get("kind") == "sr":
        return summary(evaluate(module, list_images(args.data)))
    if entry.get("kind") == "style":
        if "vgg" not in cache:
            cache["vgg"] = load_vgg(args.vgg, torch.device("cpu"))
            cache["photos"] = [Image.open(p).convert("RGB") for p in list_images(args.data)]
        with Image.open(Path(args.styles_dir) / f"{name.split('/', 1)[1]}.jpg") as im:
            painting = im.convert("RGB")
        return style_figures(module, cache["vgg"], painting, entry["training"]["style_size"], cache["photos"])
    return None


def universal_figures(store, name, entry, args):
    """The encoder's weights digest; the decoder's reconstruction figures (``training.train_decoders.validate``,
    float32) and depth; a preset's encoder weights and those that ship after this promotion (the run's encoder
    when it has one)."""
    from model.universal import weights_digest
    if name == "universal/encoder":
        return {"weights": weights_digest(store.get(name).module)}
    if entry.get("kind") == "preset":
        from imgapi.config import Config
        from imgapi.store import ModelStore
        folder = Path(args.run) if "universal/encoder" in read_models(args.run) else Path(args.weights)
        encoder = ModelStore(Config(weights_dir=folder)).get("universal/encoder").module
        return {"kind": "preset", "weights": entry.get("encoder_weights"), "shipping_encoder": weights_digest(encoder)}
    from training.train_decoders import centre_crops, validate
    scores, _ = validate(store.get("universal/encoder").module, store.get(name).module, centre_crops(args.data),
                         "fp32")
    return dict(scores, depth=int(entry.get("depth", 4)))


def judge(run, weights, args):
    """One row per entry of the run: ``(name, entry, new figures, old figures, passed, reasons)``."""
    from imgapi.config import Config
    from imgapi.store import ModelStore
    run_store, shipped_store = ModelStore(Config(weights_dir=run)), ModelStore(Config(weights_dir=weights))
    shipped, cache, rows = read_models(weights), {}, []
    for name, entry in sorted(read_models(run).items()):
        if (args.only and name not in args.only) or (entry.get("intermediate") and name not in args.only):
            continue  # a run's intermediate (the real model's pixel phase) ships only when --only names it
        for f in entry_files(entry):
            if not (run / f).is_file():
                raise SystemExit(f"{run / f} is missing: the run's manifest names it ({name})")
        new = figures(run_store, name, entry, args, cache)
        if name not in shipped:
            rows.append((name, entry, new, None, True, ["nothing of this name ships yet"]))
            continue
        old = figures(shipped_store, name, shipped[name], args, cache)
        if entry.get("kind") == "preset":
            old = dict(old or {}, kind=shipped[name].get("kind"))
        rule = RULES.get(entry.get("kind"))
        if rule is None or new is None or old is None:
            rows.append((name, entry, new, old, False, [f"no promotion rule for kind {entry.get('kind')!r} "
                                                        f"(rules: {', '.join(RULES)}); --force ships it"]))
            continue
        if new and new.get("real_world"):
            rule = real_rule
        rows.append((name, entry, new, old, *rule(new, old)))
    if not rows:
        raise SystemExit(f"{run}/manifest.json has no entry to promote" + (f" named {args.only}" if args.only else ""))
    return rows


def show(figs):
    """The figures of a row, as ``make eval`` prints them."""
    if not figs:
        return "-"
    if "weights" in figs:
        return f"encoder weights {(figs['weights'] or '?')[:12]}"
    if "relu4_1" in figs:
        return "reconstruction " + ", ".join(f"{k} {v:.2f} dB" for k, v in figs.items() if k.startswith("relu"))
    if "feature_distance" in figs:
        return f"real-world Y-PSNR {figs['psnr_y']:.2f} dB, deep-feature distance {figs['feature_distance']:.3f}"
    if "gain_db" in figs:
        return f"Y-PSNR {figs['psnr_y']:.2f} dB (gain {figs['gain_db']:+.2f}), detail {figs['detail']:.2f}"
    return f"Gram ratio {figs['gram_ratio']:.3f}, content change {figs['content_change']:.3f}"


def ship(run, weights, rows, forced):
    """Copy each row's files into ``weights`` and merge its entry into the manifest there; print the changes."""
    shipped = read_models(weights)
    for name, entry, new, old, passed, _ in rows:
        for f in entry_files(entry):
            (weights / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / f, weights / f)
        merged = dict(entry, promoted=dict(run=str(run), forced=forced and not passed,
                                           figures={k: v for k, v in (new or {}).items()}))
        if name in shipped:
            merged["parent"] = shipped[name]
        merged = update_manifest(weights, name, merged)
        before = shipped.get(name, {}).get("sha256", "")[:12] or "(none)"
        print(f"  {name}: {entry['file']} {before} -> {merged['sha256'][:12]}; {show(old)} -> {show(new)}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="the run's folder (runs/<recipe>), with its manifest.json")
    p.add_argument("--weights", default="weights", help="the weights folder to promote into")
    p.add_argument("--data", default="data/sr/val", help="held-out photos (make eval's)")
    p.add_argument("--styles-dir", default="data/styles", help="the style images (make data)")
    p.add_argument("--vgg", default="data/vgg16_hed.pt", help="the loss network (make data)")
    p.add_argument("--only", action="append", default=[], help="promote only this entry (repeat it)")
    p.add_argument("--force", action="store_true", help="promote even what measures worse (recorded as forced)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run, weights = Path(args.run), Path(args.weights)
    if not (run / "manifest.json").exists():
        raise SystemExit(f"{run}: no manifest.json (a run's folder is runs/<recipe>/ once it has exported)")
    if run.resolve() == weights.resolve():
        raise SystemExit(f"{run} is the weights folder itself")
    rows = judge(run, weights, args)
    for name, _, new, old, passed, reasons in rows:
        print(f"{name}: {'at least as good' if passed else 'worse'}: shipped {show(old)}; run {show(new)}"
              + "".join(f"\n  - {r}" for r in reasons))
    if not all(r[4] for r in rows) and not args.force:
        print(f"not promoted: {weights}/ is unchanged (--force, or FORCE=1 with make, ships it anyway)")
        return 1
    print(f"promoting {run} into {weights}/" + (" (forced)" if not all(r[4] for r in rows) else "") + ":")
    ship(run, weights, rows, args.force)
    print("docs/ is not touched: `make eval` prints what ships now; docs/training.md says how to redraw its sheets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
