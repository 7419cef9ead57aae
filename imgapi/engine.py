"""Inference: image in, image out. The tensor contract is written down once, here.

The networks take ``(1, 3, H, W)`` float32 RGB in [0, 1] on the CPU and return ``(1, 3, 4H, 4W)``
(SR); outputs are clamped to [0, 1] and rounded to 8 bits here, not in the networks. A network conditioned on
the damage level (``real``: manifest ``arch.condition`` ``"damage"``) takes ``(1, 4, H, W)``: RGB and a
fourth plane holding the level in [0, 1] everywhere (0 clean, 1 heavily damaged; :mod:`imgapi.damage`).
"""
import ctypes
import math

import numpy as np
import torch
from PIL import Image


def keep_freed_memory():
    """Have glibc serve large buffers from its heap and keep freed memory for the next forward.

    By default glibc maps each buffer over 32 MB fresh from the kernel and unmaps it when it is
    freed, so every SR forward page-faults and zero-fills its large activations again, a sizeable
    share of the forward's time. The cost is a higher peak RSS: the heap is not given back and
    fragments (:func:`warm_up` keeps it smaller). docs/performance.md has the figures of both.
    Process-wide; returns False and changes nothing where the C library has no ``mallopt`` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


def to_tensor(img):
    """PIL RGB -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def with_level(x, level):
    """``x`` ``(1, 3, H, W)`` with the fourth plane of a conditioned network: ``level`` (0..1) everywhere."""
    return torch.cat([x, torch.full_like(x[:, :1], float(level))], 1)


def to_image(t):
    """``(1, 3, H, W)`` float in [0, 1] (clamped here) -> PIL RGB."""
    a = t.clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(a, "RGB")


def plain_execution():
    """Run TorchScript modules as traced, without the profiling graph executor's specialisation.

    On the CPU that executor fuses nothing for these networks (same steady-state speed), but its profiling
    and optimising runs make the first two calls at every new input shape several times slower than the
    later ones (docs/performance.md). The setting is per thread, hence a context manager around each
    forward rather than a switch at start-up.
    """
    return torch.jit.optimized_execution(False)


def warm_up(module, side=16, planes=3):
    """Run a just-loaded ``module`` once on a small ``side`` x ``side`` image of ``planes`` input planes (4 for
    a network conditioned on the damage level: its RGB and a level of 0.5), as the server runs forwards.

    A loaded TorchScript module's first run grows glibc's heap to about twice what later runs of the same
    size need, and ``keep_freed_memory`` keeps that heap; when that first run is a 16-px one, the heap of
    the first real requests stays near what later runs need (peak RSS in docs/performance.md). It is the
    module's own first run that does it, not the process's first convolution or oneDNN's primitive cache.
    The first request does not pay the first run's one-time costs either. Returns False, leaving the module
    as it was, when the module refuses the probe (the requests then report whatever is wrong with it).
    """
    x = torch.linspace(0.0, 1.0, 3 * side * side).reshape(1, 3, side, side)
    if planes == 4:
        x = with_level(x, 0.5)
    try:
        with torch.inference_mode(), plain_execution():
            module(x)
    except Exception:  # a broken module is reported by the request that uses it
        return False
    return True


def _spans(length, tile):
    """Split ``range(length)`` into near-equal spans of at most ``tile``."""
    n = max(1, math.ceil(length / tile))
    edges = [round(i * length / n) for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _windows(length, tile, overlap):
    """``(start, end, window_start, window_end)`` of each span of :func:`_spans`, its window holding at
    least ``overlap`` pixels of context on each inner side. Every window has the same size, so every
    tile allocates the same buffers and the kept heap (``keep_freed_memory``) is reused, not fragmented."""
    spans = _spans(length, tile)
    size = max(min(length, b + overlap) - max(0, a - overlap) for a, b in spans)
    return [(a, b, p, p + size) for a, b in spans for p in [min(max(0, a - overlap), length - size)]]


def forward_tiled(net, x, scale=4, tile=192, overlap=16, out=None):
    """Run ``net`` on ``x`` (``(1, C, H, W)``, every plane tiled alike) in tiles of at most ``tile`` input
    pixels a side.

    Each tile is run with ``overlap`` extra input pixels of context on every inner side and only
    its own centre is kept, so seams do not show and memory stays bounded by the tile size.
    ``tile <= 0`` runs the whole image at once. Returns the network's planes, ``(1, 3, scale*H, scale*W)``
    whatever ``C`` is: ``out`` when given, filled in. A uint8 ``out`` gets each tile clamped to [0, 1],
    scaled to 0..255 and rounded as it is computed (exactly as ``to_image`` does), so the float32 output of
    a large image is never held whole: peak memory then depends on the tile size only (docs/performance.md).
    """
    h, w = x.shape[2:]
    whole = tile <= 0 or (h <= tile and w <= tile)
    if whole and out is None:
        return net(x)
    for y0, y1, py0, py1 in [(0, h, 0, h)] if whole else _windows(h, tile, overlap):
        for x0, x1, px0, px1 in [(0, w, 0, w)] if whole else _windows(w, tile, overlap):
            y = net(x[:, :, py0:py1, px0:px1])
            if out is None:  # the network's planes, not the input's (4 with the damage level)
                out = torch.empty((1, y.shape[1], h * scale, w * scale), dtype=y.dtype)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            y = y[:, :, oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
            if out.dtype == torch.uint8:
                y = y.clamp(0, 1).mul_(255).round_()
            out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = y
    return out


@torch.inference_mode()
def upscale(net, rgb, alpha=None, scale=4, tile=192, overlap=16, level=None):
    """Super-resolve ``rgb`` (PIL RGB, sRGB) with the 4x ``net``; returns ``(rgb, alpha)`` PIL images.

    ``scale`` 4 is the network's own output; 2 and 3 are resized from it with Lanczos. The alpha
    channel, when given, is resized to the same size with Lanczos. ``level`` (0..1): the damage level of a
    conditioned ``net`` (``real``), given to it as a fourth input plane; None for the others.
    """
    if scale not in (2, 3, 4):
        raise ValueError(f"scale {scale} is not supported. Supported scales: 2, 3, 4")
    if level is not None and not 0.0 <= level <= 1.0:
        raise ValueError(f"level {level} is not supported. Supported levels: 0 to 1")
    x = to_tensor(rgb) if level is None else with_level(to_tensor(rgb), level)
    pixels = np.empty((rgb.height * 4, rgb.width * 4, 3), np.uint8)  # HWC, as PIL wants it
    with plain_execution():
        forward_tiled(net, x, 4, tile, overlap, out=torch.from_numpy(pixels).permute(2, 0, 1)[None])
    out = Image.fromarray(pixels, "RGB")
    size = (rgb.width * scale, rgb.height * scale)
    if scale != 4:
        out = out.resize(size, Image.LANCZOS)
    if alpha is not None:
        alpha = alpha.resize(size, Image.LANCZOS)
    return out, alpha
