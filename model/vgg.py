"""VGG16 convolutional trunk used as a fixed loss network (perceptual and style losses).

Layer indices follow torchvision's ``vgg16().features`` so that feature names such as
``relu2_2`` mean what they mean in the literature. Only training imports this module.
"""
import torch
from torch import nn

# (block, number of convs, output channels) of VGG16.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))

# Caffe convention of the HED weights: BGR, 0..255, minus this mean (B, G, R).
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)


def layer_names(last="relu4_3"):
    """Names of the trunk's layers in order, up to and including ``last``."""
    names = []
    for block, convs, _ in _BLOCKS:
        if block > 1:
            names.append(f"pool{block - 1}")
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
    if last not in names:
        raise ValueError(f"layer {last!r} is not a VGG16 layer. Known layers: {', '.join(names)}")
    return names[: names.index(last) + 1]


class VGG16Features(nn.Module):
    """VGG16 trunk up to ``last``; ``forward`` returns the requested feature maps.

    Input: ``(N, 3, H, W)`` RGB in [0, 1]. The Caffe preprocessing (BGR, 0..255, mean
    subtraction) happens inside, so callers never see it.
    """

    def __init__(self, last="relu4_3"):
        super().__init__()
        self.names = layer_names(last)
        layers, channels = [], 3
        for name in self.names:
            if name.startswith("conv"):
                block = int(name[4])
                out = _BLOCKS[block - 1][2]
                layers.append(nn.Conv2d(channels, out, 3, padding=1))
                channels = out
            elif name.startswith("relu"):
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1) / 255.0
        self.register_buffer("mean_bgr", mean, persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x, wanted):
        """Return ``{name: feature}`` for each name in ``wanted``. ``x``: RGB in [0, 1]."""
        x = (x.flip(1) - self.mean_bgr) * 255.0
        out = {}
        last = max(self.names.index(w) for w in wanted)
        for name, layer in zip(self.names[: last + 1], self.features):
            x = layer(x)
            if name in wanted:
                out[name] = x
        return out
