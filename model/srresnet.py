"""SRResNet / SRGAN generator (Ledig et al. 2017, "Photo-Realistic Single Image Super-Resolution
Using a Generative Adversarial Network"), 4x.

9x9 head, 16 residual blocks (conv-BN-PReLU-conv-BN), conv-BN and the long skip, two
conv + PixelShuffle(2) + PReLU stages, 9x9 tail. Input and output are RGB in [0, 1].

One addition, ``bicubic_skip`` (on in the shipped weights): the network predicts the residual
over a bicubic 4x upscale of its input, as in VDSR. With the tail initialised at zero, training
starts exactly at bicubic quality, which matters when the training budget is minutes on a CPU.

Another, ``consistency`` (off unless asked for): the output is back-projected onto the input
(``model.consistency.LRConsistency``), so that shrunk again it gives back the photo it was made from.

The sub-pixel convolutions start from ICNR (Aitken et al. 2017, "Checkerboard artifact free sub-pixel
convolution"): the four kernels that feed each 2x2 block of a pixel shuffle start equal, so an untrained
network upsamples as nearest-neighbour does and draws no dot grid; training starts from there. (The shipped
``srresnet.pt`` was trained before this initialisation; its descendants are fine-tuned from it.)

A third, ``condition`` (the ``real`` model): a fourth input plane, constant over the image, holds how damaged
the photo is (``imgapi.damage.level``: 0 clean, 1 heavy JPEG or noise), so that one network cleans as hard as
the photo needs (``imgapi.engine.with_level`` adds the plane).
"""
import torch
from torch import nn
from torch.nn import functional as F

from model.consistency import LRConsistency


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


def icnr_(conv, scale=2):
    """ICNR: give ``conv`` (followed by ``PixelShuffle(scale)``) the default initialisation of a convolution
    with ``scale ** 2`` times fewer outputs, each kernel and bias repeated for the ``scale ** 2`` positions it
    feeds (PixelShuffle takes output channel ``c * scale ** 2 + k`` to channel ``c``, position ``k``)."""
    r2 = scale ** 2
    sub = nn.Conv2d(conv.in_channels, conv.out_channels // r2, conv.kernel_size, padding=conv.padding)
    with torch.no_grad():
        conv.weight.copy_(sub.weight.repeat_interleave(r2, dim=0))
        conv.bias.copy_(sub.bias.repeat_interleave(r2, dim=0))


class UpsampleBlock(nn.Module):
    """conv3x3 to 4x the channels, PixelShuffle(2), PReLU: doubles height and width. ICNR-initialised."""

    def __init__(self, channels=64):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        icnr_(self.conv, 2)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x):
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """4x generator. ``forward``: ``(N, 3, H, W)`` in [0, 1] (``(N, 4, H, W)`` with ``condition``: RGB and the
    damage level) -> ``(N, 3, 4H, 4W)``, not clamped."""

    def __init__(self, channels=64, blocks=16, bicubic_skip=True, consistency=0, condition=False):
        super().__init__()
        self.bicubic_skip, self.condition = bicubic_skip, condition
        # iterations of LR back-projection at the end (0: none); it has no weights, so the state_dict is the same
        self.consistency = LRConsistency(consistency) if consistency else None
        self.head = nn.Sequential(nn.Conv2d(4 if condition else 3, channels, 9, padding=4), nn.PReLU(channels))
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
        x = x[:, :3]
        feat = feat + self.body_tail(self.body(feat))
        out = self.tail(self.upsample(feat))
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False)
        if self.consistency is not None:
            out = self.consistency(out, x)
        return out
