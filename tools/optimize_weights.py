"""Re-export already traced weights the way the training scripts' ``export()`` now does, in place.

For files traced before the exports were made fast (docs/performance.md): SR files before
``training.train_sr.export()`` folded BatchNorm and stored channels_last weights, style files before
``training.train_style.export()`` ran channels_last with the layout-keeping instance norm and computed
its decoder layers at the low resolution. Each entry of
the manifest is loaded, its state rebuilt into ``SRResNet`` or ``TransformerNet`` (strictly, so a wrong
file fails), re-exported, and kept only if, on random and real images, its outputs stay within 1/255 of
the original trace's (``--tolerance``) and, for SR when the validation images are there, its Y-PSNR is
the manifest's within 0.05 dB. The file is then replaced and the manifest entry's ``sha256`` rewritten by
``training.manifest.update_manifest``; every other field is kept. Files already in the new form are
skipped, so running it twice is harmless.

    .venv/bin/python -m tools.optimize_weights                 # weights/, every SR and style entry
    .venv/bin/python -m tools.optimize_weights --models srgan  # only some
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.srresnet import SRResNet
from model.transformer_net import from_state_dict
from training import train_sr, train_style
from training.manifest import sha256_file, update_manifest

ROOT = Path(__file__).resolve().parent.parent
VAL = ROOT / "tests" / "data" / "sr_val"


KINDS = ("sr", "style")


def rebuild_style(traced):
    """The eager ``TransformerNet`` holding a traced module's weights, or None if it is already in the
    current export's form (its decoder layers at the low resolution: ``deconv1.conv.weight``)."""
    sd = traced.state_dict()
    if "deconv1.conv.weight" in sd:
        return None
    return from_state_dict(sd)


def rebuild(traced, bicubic_skip=True):
    """The eager ``SRResNet`` holding a traced module's weights, or None if it is already in the current
    form (BatchNorm folded, the tail moved behind the last shuffle and factored: ``tail.0.0.weight``).

    A file with BatchNorm folded but the old 9x9 tail gets identity BatchNorm layers, which the
    re-export folds away again."""
    sd = traced.state_dict()
    if "tail.0.0.weight" in sd:
        return None
    channels = sd["head.0.weight"].shape[0]
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    net = SRResNet(channels=channels, blocks=blocks, bicubic_skip=bicubic_skip)
    if not any(".bn1." in k for k in sd):  # folded: BatchNorm that computes y = x
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(1.0 - m.eps)
        own = net.state_dict()
        missing = sorted(set(own) - set(sd))
        if any(".bn" not in k and "body_tail.1." not in k for k in missing) or set(sd) - set(own):
            raise SystemExit("the traced SR file does not have SRResNet's layout")
        sd = dict(sd, **{k: own[k] for k in missing})
    net.load_state_dict(sd, strict=True)
    return net.eval()


def probes(seed=0):
    """Inputs ``(1, 3, H, W)`` in [0, 1]: uniform noise of odd sizes and crops of real photos."""
    g = torch.Generator().manual_seed(seed)
    xs = [torch.rand(1, 3, h, w, generator=g) for h, w in ((32, 32), (37, 53), (64, 48))]
    for p in sorted(VAL.glob("*.png"))[:3]:
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32)[:72, :96] / 255.0
        xs.append(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous())
    return xs


@torch.inference_mode()
def max_diff(a, b, xs):
    """Largest absolute difference of the clamped outputs of modules ``a`` and ``b`` over ``xs``."""
    return max((a(x).clamp(0, 1) - b(x).clamp(0, 1)).abs().max().item() for x in xs)


def optimize(weights_dir, name, entry, tolerance):
    """Re-export one manifest entry; returns a line saying what happened. Raises if it would not match."""
    path = weights_dir / entry["file"]
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise SystemExit(f"{name}: {entry['file']} does not match its sha256 in the manifest; not touched")
    old = torch.jit.load(str(path), map_location="cpu").eval()
    style = entry.get("kind") == "style"
    if style:
        net, export = rebuild_style(old), train_style.export
        done = "channels_last, layout-keeping instance norm, output conv factored, decoder at low resolution"
    else:
        net = rebuild(old, entry.get("arch", {}).get("bicubic_skip", True))
        export, done = train_sr.export, "BatchNorm folded, channels_last, shuffle folded into a factored tail"
    if net is None:
        return f"{name}: {entry['file']} is already optimized ({done}), kept as is"
    tmp = path.with_name(path.name + ".optimized.tmp")
    try:
        export(net, tmp)
        new = torch.jit.load(str(tmp), map_location="cpu").eval()
        diff = max_diff(old, new, probes())
        if diff > tolerance:
            raise SystemExit(f"{name}: re-exported outputs differ by {diff:.3g} > {tolerance:.3g}; "
                             f"{entry['file']} left unchanged")
        psnr = ""
        if not style and "psnr_y" in entry and sorted(p.name for p in VAL.glob("*.png")) == sorted(
                entry.get("validation", {}).get("images", [])):
            from training.evaluate import evaluate, summary
            s = summary(evaluate(new, sorted(VAL.glob("*.png"))))
            if abs(s["psnr_y"] - entry["psnr_y"]) > 0.05:
                raise SystemExit(f"{name}: Y-PSNR {s['psnr_y']:.3f} dB after re-export, manifest says "
                                 f"{entry['psnr_y']:.3f}; {entry['file']} left unchanged")
            psnr = f", validation Y-PSNR {s['psnr_y']:.3f} dB (manifest {entry['psnr_y']:.3f})"
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    old_sha = entry.get("sha256", "")
    new_entry = update_manifest(weights_dir, name, {k: v for k, v in entry.items() if k != "sha256"})
    return (f"{name}: {entry['file']} re-exported ({done}), max abs diff {diff:.2e} "
            f"(limit {tolerance:.2e}){psnr}; sha256 {old_sha[:12]} -> {new_entry['sha256'][:12]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(ROOT / "weights"), help="folder with manifest.json")
    p.add_argument("--models", nargs="*", help="manifest names (default: every SR and style entry)")
    p.add_argument("--tolerance", type=float, default=1 / 255, help="largest allowed output difference")
    args = p.parse_args(argv)
    weights_dir = Path(args.weights)
    models = json.loads((weights_dir / "manifest.json").read_text())["models"]
    known = sorted(n for n, e in models.items() if e.get("kind") in KINDS)
    names = args.models or known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"not SR or style entries of the manifest: {', '.join(unknown)}. "
                         f"Entries: {', '.join(known)}")
    for name in names:
        print(optimize(weights_dir, name, models[name], args.tolerance), flush=True)


if __name__ == "__main__":
    sys.exit(main())
