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


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's discriminator (Wang et al. 2021): a U-Net with spectral normalisation that judges every
    pixel, ``(N, 3, H, W)`` RGB in [0, 1] (H, W multiples of 8) -> ``(N, 1, H, W)`` logits (real > 0).

    Per-pixel verdicts give the generator a gradient where its picture goes wrong (a block edge, a dot grid)
    instead of one number for the patch; spectral normalisation bounds each layer's gain, which holds the
    GAN steady under degraded inputs. Three stride-2 convolutions down, three bilinear doublings up with
    skip additions, two more convolutions and a one-channel head.
    """

    def __init__(self, channels=64):
        super().__init__()
        c = channels
        sn = nn.utils.spectral_norm
        self.conv0 = nn.Conv2d(3, c, 3, padding=1)
        self.down = nn.ModuleList([sn(nn.Conv2d(a, b, 4, stride=2, padding=1, bias=False))
                                   for a, b in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c))])
        self.up = nn.ModuleList([sn(nn.Conv2d(a, b, 3, padding=1, bias=False))
                                 for a, b in ((8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c))])
        self.tail = nn.Sequential(sn(nn.Conv2d(c, c, 3, padding=1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
                                  sn(nn.Conv2d(c, c, 3, padding=1, bias=False)), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x):
        act = nn.functional.leaky_relu
        skips = [act(self.conv0(x * 2 - 1), 0.2)]
        for conv in self.down:
            skips.append(act(conv(skips[-1]), 0.2))
        y = skips.pop()
        for conv in self.up:
            y = nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = act(conv(y), 0.2) + skips.pop()
        return self.tail(y)


def make_discriminator(kind):
    """``"vgg"``: SRGAN's (one logit per patch); ``"unet"``: Real-ESRGAN's U-Net with spectral norm (one per
    pixel, at half its width: 32 channels, a quarter of the cost, for 2-core training)."""
    if kind == "unet":
        return UNetDiscriminator(channels=32)
    if kind == "vgg":
        return Discriminator()
    raise ValueError(f"unknown discriminator {kind!r}: vgg or unet")
