"""Universal style transfer networks: a frozen VGG16 encoder to relu4_1 and a nested decoder that inverts it.

The encoder is VGG16's trunk (torchvision's layer indices, so the project's converted VGG weights load into
it) and returns the four features that whitening and colouring work on: relu1_1, relu2_1, relu3_1, relu4_1.

The decoder is four blocks, each one level up the trunk: ``block4`` maps relu4_1 to relu3_1, ``block3``
relu3_1 to relu2_1, ``block2`` relu2_1 to relu1_1 and ``block1`` relu1_1 to the picture. Decoding from level k
is ``block1(...(block_k(f)))``, so one decoder serves every level, and a stylizer can whiten and colour the
features between two blocks without encoding the picture again. Each block works on features divided by
its level's fixed scale (``scales``, a buffer set from photos when training starts), so every level's numbers
are about one.

Tensor contract: images ``(N, 3, H, W)`` RGB in [0, 1] with H and W multiples of 8 (three poolings);
features as VGG computes them (Caffe scale: BGR, 0..255, mean subtracted, inside the encoder).
"""
import torch
from torch import nn

LEVELS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
VGG_WIDTHS = (64, 128, 256, 512)
# Caffe convention of the HED VGG weights: BGR, 0..255, minus this mean (B, G, R); as in model/vgg.py.
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)


def conv(cin, cout):
    """3x3 convolution with reflection padding (no border of zeros for the decoder to paint)."""
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


class UniversalEncoder(nn.Module):
    """VGG16 to relu4_1. ``forward(x)`` returns ``(relu1_1, relu2_1, relu3_1, relu4_1)``.

    ``widths``: the channels of VGG16's four blocks (the defaults load the project's VGG weights; tests use
    narrower ones).
    """

    def __init__(self, widths=VGG_WIDTHS):
        super().__init__()
        c1, c2, c3, c4 = widths
        # Indices match torchvision's vgg16().features, so its state dict (to index 18) loads strictly.
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(),                                   # 0, 1: relu1_1
            nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                 # 2-4
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),                                  # 5, 6: relu2_1
            nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                 # 7-9
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),                                  # 10, 11: relu3_1
            nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU(),                                  # 12, 13
            nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                 # 14-16
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),                                  # 17, 18: relu4_1
        )
        self.taps = (1, 6, 11, 18)
        self.register_buffer("mean_bgr", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1) / 255.0,
                             persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        x = (x.flip(1) - self.mean_bgr) * 255.0
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return tuple(out)


class Block(nn.Module):
    """One decoder level: features of level k -> features of level k - 1: a convolution to the lower width,
    a nearest 2x upsampling and ``extra`` more convolutions at the new size, ReLU after each. ``picture``:
    relu1_1 -> RGB instead, a hidden convolution and ReLU, then a linear one to 3 channels (relu1_1 is far
    from linearly invertible: the best 3x3 linear map reaches about 21 dB, this block 27 dB after 300 steps)."""

    def __init__(self, cin, cout, extra=1, upsample=True, picture=False):
        super().__init__()
        layers = [conv(cin, cin), nn.ReLU(), conv(cin, cout)] if picture else [conv(cin, cout), nn.ReLU()]
        if upsample:
            layers.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
            for _ in range(extra):
                layers += [conv(cout, cout), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class NestedDecoder(nn.Module):
    """The four decoder blocks; ``forward(f4)`` decodes relu4_1 features to the picture.

    ``scales``: buffer of the four levels' feature scales (relu1_1..relu4_1), set by training from photos.
    ``block_k(f)`` takes level-k features at VGG's scale and returns level k-1's at VGG's scale (``block1``:
    RGB, unclamped, about [0, 1]).
    """

    def __init__(self, widths=VGG_WIDTHS):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.b4 = Block(c4, c3, extra=2)
        self.b3 = Block(c3, c2, extra=1)
        self.b2 = Block(c2, c1, extra=1)
        self.b1 = Block(c1, 3, upsample=False, picture=True)
        self.register_buffer("scales", torch.ones(4))

    def block4(self, f):
        return self.b4(f / self.scales[3]) * self.scales[2]

    def block3(self, f):
        return self.b3(f / self.scales[2]) * self.scales[1]

    def block2(self, f):
        return self.b2(f / self.scales[1]) * self.scales[0]

    def block1(self, f):
        return self.b1(f / self.scales[0])

    def forward(self, f4):
        return decode(self, f4, 4)


def decode(decoder, f, level):
    """The picture from level ``level`` (1..4) features through ``decoder``'s blocks (a ``NestedDecoder`` or
    its traced copy, whose block methods are traced too)."""
    for block in (decoder.block4, decoder.block3, decoder.block2, decoder.block1)[4 - level:]:
        f = block(f)
    return f


def trace(encoder, decoder, side=64):
    """TorchScript copies of ``encoder`` (forward) and ``decoder`` (forward and block1..block4), traced on the
    CPU in eval mode on a ``side``-px probe; the two given modules are left in eval mode on the CPU."""
    encoder, decoder = encoder.cpu().eval(), decoder.cpu().eval()
    x = torch.rand(1, 3, side, side)
    with torch.inference_mode():
        feats = encoder(x)
        traced_encoder = torch.jit.trace(encoder, x, check_trace=False)
        methods = {"forward": feats[3], "block4": feats[3], "block3": feats[2], "block2": feats[1],
                   "block1": feats[0]}
        traced_decoder = torch.jit.trace_module(decoder, methods, check_trace=False)
    return traced_encoder, traced_decoder


def weights_digest(module):
    """sha256 of a module's state (names and values, in order of name): the same for two files traced from the
    same weights, whose bytes differ (TorchScript's archives are not reproducible byte for byte)."""
    import hashlib
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
