"""Exact rewrites of trained convolutions into forms that run faster on CPUs, applied at export.

Each returns modules computing the same function up to float rounding (tested in tests/test_rewrites.py);
why each helps is in docs/performance.md.
"""
import torch
from torch import nn
from torch.nn import functional as F


def tail_behind_last_shuffle(net, upsample_blocks):
    """In place on an SRResNet (or its folded copy) with ``upsample_blocks`` upsampling blocks: its last pixel
    shuffle moves behind the 9x9 tail (:func:`fold_shuffle_into_conv`; the PReLU before it takes each
    channel's slope four times), and the tail is factored (:func:`factor_conv`) and followed by that shuffle."""
    last = net.get_submodule(f"upsample.{upsample_blocks - 1}")
    act = nn.PReLU(last.act.weight.numel() * 4)
    with torch.no_grad():
        act.weight.copy_(last.act.weight.detach().repeat_interleave(4))
    last.shuffle, last.act = nn.Identity(), act
    net.tail = nn.Sequential(factor_conv(fold_shuffle_into_conv(net.tail)), nn.PixelShuffle(2))


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


# Nearest 2x upsampling then a 3x3 convolution on the reflection-padded result, at the low resolution.
# Output row 2i + a (a = 0, 1) reads upsampled rows 2i + a - 1 .. 2i + a + 1, that is input rows
# floor((2i + a + ky - 1) / 2) for the kernel rows ky = 0, 1, 2, clamped at the borders: the reflection
# padding of a nearest-upsampled image repeats its edge rows, so it is the replicate padding of the input.
# Each output phase therefore needs only 2 input rows (and 2 columns): tap t of phase a takes the kernel
# rows ky with floor((a + ky - 1) / 2) = t + a - 1 (a = 0: {0}, {1, 2}; a = 1: {0, 1}, {2}), read at grid
# row i + a of the replicate-padded input.
def _phase_taps(a):
    return [[ky for ky in range(3) if (a + ky - 1) // 2 == t + a - 1] for t in range(2)]


def _phase_matrix():
    """(16, 9): the 2x2 kernels of the four phases (a, b, ty, tx) as sums of the 3x3 kernel's taps."""
    m = torch.zeros(2, 2, 2, 2, 3, 3)
    for a in range(2):
        for b in range(2):
            for ty, rows in enumerate(_phase_taps(a)):
                for tx, cols in enumerate(_phase_taps(b)):
                    for ky in rows:
                        for kx in cols:
                            m[a, b, ty, tx, ky, kx] = 1.0
    return m.reshape(16, 9)


class SubpixelUpsampleConv(nn.Module):
    """Nearest 2x upsampling, reflection padding 1 and a 3x3 convolution, computed at the low resolution.

    A 2x2 convolution of the replicate-padded input writes the four output phases of each pixel (its
    ``conv``: C -> 4 x O channels, phase (a, b) of output channel o in channel 4 o + 2 (1 - a) + (1 - b)),
    and a pixel shuffle interleaves them. Exact up to float rounding; 16 multiply-adds per output value
    instead of 36, 4 x O output channels to vectorise over instead of O, and no upsampled copy of the input
    to pad and read. The style network's two decoder layers at 512 px: 26 -> 12 and 47 -> 15 ms
    (docs/performance.md). :func:`subpixel_to_3x3` gives the 3x3 weights back.
    """

    def __init__(self, conv):
        super().__init__()
        out_c, in_c, k, k2 = conv.weight.shape
        if (k, k2) != (3, 3) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise ValueError("SubpixelUpsampleConv takes the unpadded 3x3 stride-1 convolution of an "
                             "upsample-reflection-pad-convolve layer")
        self.conv = nn.Conv2d(in_c, 4 * out_c, 2, bias=conv.bias is not None)
        w = conv.weight.detach().reshape(out_c * in_c, 9) @ _phase_matrix().T  # (O x C, a b ty tx)
        w = w.reshape(out_c, in_c, 2, 2, 2, 2).flip(2, 3)  # (a, b) -> (1 - a, 1 - b): shuffle's sub-pixel
        with torch.no_grad():
            self.conv.weight.copy_(w.permute(0, 2, 3, 1, 4, 5).reshape(4 * out_c, in_c, 2, 2))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach().repeat_interleave(4))

    def forward(self, x):
        y = F.pixel_shuffle(self.conv(F.pad(x, [1, 1, 1, 1], mode="replicate")), 2)
        # The shuffle put phase (a, b) of grid pixel (m, n) at (2m + 1 - a, 2n + 1 - b); output pixel
        # (2i + a, 2j + b) is grid pixel (i + a, j + b): one row and column in from the shuffled corner.
        # The crop is copied into x's layout: instance norm on the strided view took longer than the copy.
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return y[:, :, 1:-1, 1:-1].contiguous(memory_format=layout)


def subpixel_to_3x3(weight, bias=None):
    """The ``(weight, bias)`` of the 3x3 convolution that a :class:`SubpixelUpsampleConv` of ``conv.weight``
    ``weight`` and ``conv.bias`` ``bias`` computes (least squares of the phase sums: exact up to float
    rounding); gives the textbook network back for the bench's FLOP count and ONNX Runtime."""
    out_c, in_c = weight.shape[0] // 4, weight.shape[1]
    w = weight.detach().reshape(out_c, 2, 2, in_c, 2, 2).permute(0, 3, 1, 2, 4, 5).flip(2, 3)
    w = torch.linalg.lstsq(_phase_matrix(), w.reshape(out_c * in_c, 16).T).solution.T
    return w.reshape(out_c, in_c, 3, 3).contiguous(), None if bias is None else bias.detach()[::4].clone()
