"""Image transformation network of Johnson et al. 2016 for fast neural style transfer.

Layout as in pytorch/examples ``fast_neural_style/neural_style/transformer_net.py``: reflection-padded
convolutions with instance norm, five residual blocks, and an upsample-then-convolve decoder (no transposed
convolutions, so no checkerboard). Two changes, each for a reason found in training:

* the input is RGB in [0, 1] and stays on that scale inside; 0..255 inputs drove instance norm to NaN on
  near-constant channels on the CPU;
* any input size works: the image is padded to the network's multiple of 4 (and to at least 8 pixels, the
  smallest size the 9x9 reflection padding accepts after the two stride-2 stages) and cropped back, so there
  are no size errors and no aspect distortion.

The output is RGB in [0, 1], clamped in eval mode. In training mode it is left unclamped so that the loss
keeps its gradient for pixels that overshoot.

For CPU serving (docs/performance.md), eval mode runs the activations channels_last and normalises with
:func:`instance_norm`, which keeps that layout; ``fused_norm = False`` gives the textbook graph
(``nn.InstanceNorm2d``, NCHW) with the same weights and the same outputs within float rounding.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

MULTIPLE = 4
MIN_SIDE = 8
# The last convolution sums 9 x 9 x channels terms; at the [0, 1] output scale an Adam step moves the
# output by up to ~lr x 1300, which made training oscillate (the 0..255 output of pytorch/examples hides
# this). Scaling the last layer down keeps each step's change in the picture small.
OUTPUT_SCALE = 0.1


@torch.jit.script
def pad_to_multiple(x: torch.Tensor, multiple: int, min_side: int) -> torch.Tensor:
    """Replicate-pad ``x`` (N, C, H, W) on the right and bottom to a multiple of ``multiple``, at least
    ``min_side``. Scripted so that a traced network keeps the size arithmetic instead of baking constants."""
    h = x.size(2)
    w = x.size(3)
    th = max((h + multiple - 1) // multiple * multiple, min_side)
    tw = max((w + multiple - 1) // multiple * multiple, min_side)
    if th == h and tw == w:
        # A new tensor, not ``x`` itself: when tracing, returning the input would make the tracer take the
        # caller's later uses of ``x`` (the crop back) for this function's output.
        return x.clone()
    return F.pad(x, [0, tw - w, 0, th - h], mode="replicate")


@torch.jit.script
def instance_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                  eps: float) -> torch.Tensor:
    """Instance norm of ``x`` (N, C, H, W) with an affine ``weight`` and ``bias`` and no running statistics,
    as ``nn.InstanceNorm2d(affine=True)`` computes it, but keeping ``x``'s memory format.

    For one image, instance norm is batch norm with batch statistics, whose CPU kernel works on a
    channels_last tensor as it is; ``F.instance_norm`` reshapes to (1, N x C, H, W) and so copies a
    channels_last input to NCHW and back. Scripted so that a traced network keeps both branches."""
    if x.size(0) == 1:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    return F.instance_norm(x, None, None, weight, bias, True, 0.0, eps)


@torch.jit.script
def crop_like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Crop ``y`` to the height and width of ``x`` (top-left anchored)."""
    return y[:, :, : x.size(2), : x.size(3)]


def norm(layer: nn.InstanceNorm2d, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """``layer(x)``, through :func:`instance_norm` when ``fused``."""
    if fused:
        return instance_norm(x, layer.weight, layer.bias, layer.eps)
    return layer(x)


class ConvLayer(nn.Module):
    """Reflection padding + convolution, so borders are not darkened by zero padding."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x):
        return self.conv(self.pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with an identity skip (He et al. 2016, as used by Johnson)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x, fused_norm: bool = False):
        y = F.relu(norm(self.in1, self.conv1(x), fused_norm))
        return x + norm(self.in2, self.conv2(y), fused_norm)


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour 2x upsampling then a convolution: avoids the checkerboard of transposed convs."""

    def __init__(self, in_channels, out_channels, kernel_size, upsample=2):
        super().__init__()
        self.upsample = upsample
        self.conv = ConvLayer(in_channels, out_channels, kernel_size)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=float(self.upsample), mode="nearest")
        return self.conv(x)


class TransformerNet(nn.Module):
    """Feed-forward style network.

    ``channels``: widths of the three encoder stages; the default is Johnson's and pytorch/examples', and the
    shipped styles'.
    ``residual_blocks``: number of residual blocks at the bottleneck.
    ``fused_norm``: normalise through :func:`instance_norm` and, in eval mode, run channels_last (the
    default, for CPU speed); False calls the ``nn.InstanceNorm2d`` layers on NCHW tensors (the graph
    ONNX Runtime is given in ``make bench``). Same weights, same state dict, either way.

    ``forward``: (N, 3, H, W) float RGB in [0, 1], any H, W >= 1 -> (N, 3, H, W) RGB in [0, 1].
    """

    def __init__(self, *, channels: Tuple[int, int, int] = (32, 64, 128), residual_blocks: int = 5,
                 fused_norm: bool = True):
        super().__init__()
        c1, c2, c3 = channels
        self.channels = tuple(channels)
        self.fused_norm = fused_norm
        self.conv1 = ConvLayer(3, c1, 9)
        self.in1 = nn.InstanceNorm2d(c1, affine=True)
        self.conv2 = ConvLayer(c1, c2, 3, stride=2)
        self.in2 = nn.InstanceNorm2d(c2, affine=True)
        self.conv3 = ConvLayer(c2, c3, 3, stride=2)
        self.in3 = nn.InstanceNorm2d(c3, affine=True)
        self.res = nn.Sequential(*[ResidualBlock(c3) for _ in range(residual_blocks)])
        self.deconv1 = UpsampleConvLayer(c3, c2, 3)
        self.in4 = nn.InstanceNorm2d(c2, affine=True)
        self.deconv2 = UpsampleConvLayer(c2, c1, 3)
        self.in5 = nn.InstanceNorm2d(c1, affine=True)
        self.deconv3 = ConvLayer(c1, 3, 9)

    def forward(self, x):
        h = pad_to_multiple(x, MULTIPLE, MIN_SIDE)
        if self.fused_norm and not self.training:
            # NHWC end to end: oneDNN convolves it without reordering around every layer.
            h = h.contiguous(memory_format=torch.channels_last)
        # Centre the input around 0; instance norm takes care of the scale.
        h = h - 0.5
        h = F.relu(norm(self.in1, self.conv1(h), self.fused_norm))
        h = F.relu(norm(self.in2, self.conv2(h), self.fused_norm))
        h = F.relu(norm(self.in3, self.conv3(h), self.fused_norm))
        for block in self.res:
            h = block(h, self.fused_norm)
        h = F.relu(norm(self.in4, self.deconv1(h), self.fused_norm))
        h = F.relu(norm(self.in5, self.deconv2(h), self.fused_norm))
        y = crop_like(self.deconv3(h) * OUTPUT_SCALE + 0.5, x)
        if self.training:
            return y
        return y.clamp(0.0, 1.0)
