"""Exact rewrites of trained convolutions into forms that run faster on CPUs, applied at export.

Each returns modules computing the same function up to float rounding (tested in tests/test_rewrites.py);
why each helps is in docs/performance.md.
"""
import torch
from torch import nn


def factor_conv(conv):
    """``conv`` (a k x k convolution, stride 1, zero padding k // 2 or none, few output channels) as two
    convolutions computing the same sums: 1 x k to out x k channels, then k x 1 back to out channels.

    The first does all the arithmetic; the second adds k shifted rows of each output, a few per cent of
    the work. The SR tail (9 x 9, 64 -> 3) ran at ~40 GFLOP/s in oneDNN, whose kernels vectorise over
    output channels and so leave 5 of 8 lanes idle for 3 channels; its 1 x 9, 64 -> 27 half keeps them
    busy: 85 vs 188 ms at 512 x 512 (docs/performance.md). Exact up to float rounding.
    :func:`unfactor_conv` gives the k x k weights back.
    """
    out_c, in_c, k, k2 = conv.weight.shape
    if k != k2 or conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1) \
            or conv.padding not in ((k // 2, k // 2), (0, 0)) or conv.padding_mode != "zeros":
        raise ValueError("factor_conv takes a square stride-1 convolution with zero padding k // 2 or none")
    pad = conv.padding[0]
    rows = nn.Conv2d(in_c, out_c * k, (1, k), padding=(pad, pad), bias=False)
    cols = nn.Conv2d(out_c * k, out_c, (k, 1), bias=conv.bias is not None)
    with torch.no_grad():
        # rows: output channel (o, ky) holds the row ky of the kernel of output o
        rows.weight.copy_(conv.weight.permute(0, 2, 1, 3).reshape(out_c * k, in_c, 1, k))
        cols.weight.zero_()
        for o in range(out_c):
            for ky in range(k):
                cols.weight[o, o * k + ky, ky, 0] = 1.0
        if conv.bias is not None:
            cols.bias.copy_(conv.bias)
    return nn.Sequential(rows, cols)


def fold_shuffle_into_conv(conv, r=2):
    """A convolution that, applied *before* ``PixelShuffle(r)``, gives what ``conv`` gives after it.

    ``conv(shuffle(v))`` (k x k, stride 1, "same" zero padding, C -> O channels) equals
    ``shuffle(folded(v))`` where ``folded`` reads ``v`` (C x r x r channels) at the low resolution with
    a kernel of ceil(k / r) + 1 taps (zero where no original tap falls) and writes O x r x r phase
    channels. The shuffle then moves O x r x r channels instead of C x r x r: for the SR tail, 12
    instead of 256, which at a 256-px input was a 268 MB memory-bound copy (docs/performance.md).
    """
    out_c, in_c, k, _ = conv.weight.shape
    p = k // 2
    if conv.stride != (1, 1) or conv.groups != 1 or conv.padding != (p, p) or k % 2 == 0:
        raise ValueError("fold_shuffle_into_conv takes an odd square stride-1 convolution with 'same' padding")
    taps = (p + r - 1) // r  # low-resolution taps on each side
    size = 2 * taps + 1
    folded = nn.Conv2d(in_c * r * r, out_c * r * r, size, padding=taps, bias=conv.bias is not None)
    w = torch.zeros(out_c * r * r, in_c * r * r, size, size)
    for oy in range(r):  # output phase
        for ox in range(r):
            for iy in range(r):  # input phase
                for ix in range(r):
                    for u in range(-taps, taps + 1):
                        for v in range(-taps, taps + 1):
                            ky, kx = r * u + iy - oy + p, r * v + ix - ox + p
                            if 0 <= ky < k and 0 <= kx < k:
                                w[oy * r + ox::r * r, iy * r + ix::r * r, u + taps, v + taps] = \
                                    conv.weight.detach()[:, :, ky, kx]
    with torch.no_grad():
        folded.weight.copy_(w)
        if conv.bias is not None:
            folded.bias.copy_(conv.bias.detach().repeat_interleave(r * r))
    return folded


def unfactor_conv(rows, cols):
    """The ``(weight, bias)`` of the k x k convolution that :func:`factor_conv` split into ``rows`` (1 x k)
    and ``cols`` (k x 1); used to give the textbook network back (the bench's FLOP count and peer)."""
    k = rows.weight.shape[-1]
    out_c = cols.weight.shape[0]
    weight = rows.weight.detach().reshape(out_c, k, -1, k).permute(0, 2, 1, 3).contiguous()
    return weight, None if cols.bias is None else cols.bias.detach().clone()

