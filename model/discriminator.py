"""SRGAN discriminator (Ledig et al. 2017), for training only.

Eight conv-BN-LeakyReLU stages (64..512 channels, stride 2 every other one), then a dense head.
Global average pooling before the head lets it take any patch size, not only 96x96.
"""
from torch import nn


class ConvBlock(nn.Module):
    """conv3x3 (stride 1 or 2), optional BN, LeakyReLU(0.2)."""

    def __init__(self, cin, cout, stride, bn=True):
        super().__init__()
        layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class Discriminator(nn.Module):
    """``(N, 3, H, W)`` RGB in [0, 1] -> ``(N,)`` logits (real > 0)."""

    def __init__(self, channels=64):
        super().__init__()
        c = channels
        plan = [(3, c, 1, False), (c, c, 2, True), (c, 2 * c, 1, True), (2 * c, 2 * c, 2, True),
                (2 * c, 4 * c, 1, True), (4 * c, 4 * c, 2, True), (4 * c, 8 * c, 1, True),
                (8 * c, 8 * c, 2, True)]
        self.features = nn.Sequential(*[ConvBlock(*p) for p in plan])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * c, 16 * c),
                                  nn.LeakyReLU(0.2, inplace=True), nn.Linear(16 * c, 1))

    def forward(self, x):
        return self.head(self.features(x * 2 - 1)).squeeze(1)
