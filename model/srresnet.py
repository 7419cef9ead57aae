"""SRResNet / SRGAN generator (Ledig et al. 2017, "Photo-Realistic Single Image Super-Resolution
Using a Generative Adversarial Network"), 4x.

9x9 head, 16 residual blocks (conv-BN-PReLU-conv-BN), conv-BN and the long skip, two
conv + PixelShuffle(2) + PReLU stages, 9x9 tail. Input and output are RGB in [0, 1].

One addition, ``bicubic_skip`` (on in the shipped weights): the network predicts the residual
over a bicubic 4x upscale of its input, as in VDSR. With the tail initialised at zero, training
starts exactly at bicubic quality, which matters when the training budget is minutes on a CPU.
"""
import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    """conv3x3-BN-PReLU-conv3x3-BN with an identity skip."""

    def __init__(self, channels=64):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """conv3x3 to 4x the channels, PixelShuffle(2), PReLU: doubles height and width."""

    def __init__(self, channels=64):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x):
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """4x generator. ``forward``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, 4H, 4W)``, not clamped."""

    scale = 4

    def __init__(self, channels=64, blocks=16, bicubic_skip=True):
        super().__init__()
        self.bicubic_skip = bicubic_skip
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                       nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(UpsampleBlock(channels), UpsampleBlock(channels))
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        if bicubic_skip:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        feat = self.head(x)
        feat = feat + self.body_tail(self.body(feat))
        out = self.tail(self.upsample(feat))
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False)
        return out


def factor_conv(conv):
    """``conv`` (a k x k convolution, stride 1, "same" zero padding, few output channels) as two
    convolutions computing the same sums: 1 x k to out x k channels, then k x 1 back to out channels.

    The first does all the arithmetic; the second adds k shifted rows of each output, a few per cent of
    the work. The SR tail (9 x 9, 64 -> 3) ran at ~40 GFLOP/s in oneDNN, whose kernels vectorise over
    output channels and so leave 5 of 8 lanes idle for 3 channels; its 1 x 9, 64 -> 27 half keeps them
    busy: 85 vs 188 ms at 512 x 512 (docs/performance.md). Exact up to float rounding.
    """
    out_c, in_c, k, k2 = conv.weight.shape
    if k != k2 or conv.stride != (1, 1) or conv.groups != 1 or conv.padding != (k // 2, k // 2):
        raise ValueError("factor_conv takes a square stride-1 convolution with 'same' padding")
    rows = nn.Conv2d(in_c, out_c * k, (1, k), padding=(k // 2, k // 2), bias=False)
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

