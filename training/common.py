"""What the SR and style trainers share: image listing, the learning-rate schedule, the VGG loss network,
the hardware string of the manifest, and the choice of precision and memory layout on the machine at hand."""
import argparse
import contextlib
import copy
import math
import os
import platform
import time
from pathlib import Path

import torch

from imgapi.universal import bf16_units, cpu_flags  # noqa: F401 (cpu_flags: read here, replaced in tests)
from model.vgg import VGG16Features

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# The HED VGG works on Caffe's 0..255 scale; dividing its features by this brings relu1_2 to torchvision's.
FEATURE_SCALE = 1.0 / 58.0


def list_images(folder):
    """Image files directly inside ``folder``, sorted by name; ValueError when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    return files


def cosine_lr(base, fraction, floor=0.1):
    """Cosine decay from ``base`` at ``fraction`` 0 to ``floor * base`` at 1 (``fraction`` is clamped)."""
    fraction = min(max(fraction, 0.0), 1.0)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction)))


def load_vgg(path, device, last="relu4_3"):
    """VGG16 trunk to ``last`` with the converted HED weights (fp16 file), strictly loaded, frozen, eval."""
    net = VGG16Features(last=last)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval().to(device)


def gram(f):
    """Gram matrix of (N, C, H, W) features, normalised by C * H * W -> (N, C, C)."""
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16(flags=None):
    """:func:`imgapi.universal.bf16_units` on ``flags``, by default this module's ``cpu_flags()`` (which the
    tests replace to stand for another CPU)."""
    return bf16_units(cpu_flags() if flags is None else flags)


def hardware(device):
    """What trained a file, for the manifest: the GPU's name, or the CPU's name and torch's thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({platform.machine()}), {threads} thread{'s' if threads != 1 else ''}"


def autocast(device, precision):
    """The autocast context of ``precision`` ('bf16' or 'fp32', a no-op) on ``device``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def candidates(device, flags=None):
    """The (precision, channels_last) pairs worth timing on ``device``, likeliest fastest first, and why others
    are left out."""
    if device.type == "cuda" or cpu_has_bf16(flags):
        return [("bf16", True), ("bf16", False), ("fp32", True), ("fp32", False)], None
    return [("fp32", True), ("fp32", False)], "no bf16 units on this CPU (no avx512_bf16/amx_bf16 flag): bf16 not tried"


def _label(pair):
    return f"{pair[0]}{' channels_last' if pair[1] else ''}"


def _median_step(step, device, trials):
    """The median seconds of ``trials`` calls of ``step`` after an untimed one."""
    step()
    times = []
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[len(times) // 2], 3)


def choose_precision(make_step, device, precision="auto", channels_last="auto", trials=2, budget_s=None):
    """Pick the fastest (precision, channels_last) by timing ``trials`` training steps of each, after one
    untimed step; what is given explicitly ('fp32'/'bf16', 'on'/'off') is not timed. With ``budget_s``, no
    further pair is timed once the timing has taken that many seconds: a short run keeps its budget (which
    the timing counts in) for training.

    ``make_step(precision, channels_last)`` returns a function doing one whole training step on throwaway
    copies (so timing moves no real weight). Returns a dict with ``precision``, ``channels_last``,
    ``seconds`` (each timed pair's median step) and ``note``.
    """
    pairs, note = candidates(device)
    if precision != "auto":
        pairs = [p for p in pairs if p[0] == precision] or [(precision, True), (precision, False)]
    if channels_last != "auto":
        pairs = [p for p in pairs if p[1] == (channels_last == "on")]
    seconds = {}
    if len(pairs) == 1:
        return dict(precision=pairs[0][0], channels_last=pairs[0][1], seconds=seconds, note=note)
    start = time.perf_counter()
    for pair in pairs:
        if budget_s is not None and seconds and time.perf_counter() - start >= budget_s:
            note = "; ".join(filter(None, [note, f"timing stopped after {len(seconds)} of {len(pairs)} at its "
                                                 f"{budget_s:.0f}-s share of the budget"]))
            break
        seconds[_label(pair)] = _median_step(make_step(*pair), device, trials)
    best = min((p for p in pairs if _label(p) in seconds), key=lambda p: seconds[_label(p)])
    return dict(precision=best[0], channels_last=best[1], seconds=seconds, note=note)


@torch.no_grad()
def update_ema(ema, g, decay):
    """Move ``ema``'s weights a ``1 - decay`` step towards ``g``'s (its buffers are copied)."""
    for e, w in zip(ema.parameters(), g.parameters()):
        e.lerp_(w.detach().float(), 1 - decay)
    for e, b in zip(ema.buffers(), g.buffers()):
        e.copy_(b)


def throwaway(*modules):
    """Deep copies of ``modules`` (for timing steps without touching the real ones)."""
    return [copy.deepcopy(m) for m in modules]


def add_machine_args(p):
    """The trainers' options for where and how they run: device, threads, precision, layout, seed."""
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: every core)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: time a few steps of each that the hardware supports and keep the fastest")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory layout of the training tensors; auto: timed with the precision")
    p.add_argument("--seed", type=int, default=0)


def machine(args):
    """The device of ``args.device`` ('auto': CUDA when available), with ``args.threads`` torch threads on the
    CPU (0: every CPU this process may use)."""
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    return device


def parse_channels(value):
    """``--channels`` ``"16,32,64"`` (or a recipe's list) -> a tuple of three positive widths."""
    try:
        vals = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--channels {value!r}: expected three positive integers like 16,32,64")
    return vals
