"""LR consistency: iterative back-projection of a 4x output onto its input (Irani & Peleg 1991).

A 4x generator trained with a GAN invents texture, and with it some error in the tones and colours that the
input already fixes. ``LRConsistency`` corrects that part: it shrinks the output as the evaluation protocol
does (Pillow's BICUBIC downscale: the antialiased cubic with a = -0.5, 16 taps a side at 4x, each weight
divided by the sum of those that fall inside the image), takes the difference from the input, and adds it
back, upscaled bicubically, a few times. What the input cannot show (the texture) is left as it is. The
correction has no weights and costs ~1% of the generator; Bahat & Michaeli (2020, "Explorable Super
Resolution") put the same idea, exact, behind ESRGAN.
"""
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LRConsistency", "pillow_bicubic_down"]

SCALE = 4
TAPS = 16  # Pillow's support at 4x: 2 (the cubic's) x 4, each side
PAD = 6    # output pixel i reads inputs 4i-6 .. 4i+9


def _cubic(x, a=-0.5):
    x = x.abs()
    return torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                       torch.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, torch.zeros_like(x)))


def _kernel():
    k = _cubic((torch.arange(TAPS, dtype=torch.float64) - (TAPS - 1) / 2) / SCALE)
    return (k / k.sum()).float()


def pillow_bicubic_down(y, rows, cols):
    """``y`` (N, 3, H, W), H and W multiples of 4, shrunk 4x like Pillow's BICUBIC; ``rows`` / ``cols``: the
    kernel as (3, 1, 16, 1) / (3, 1, 1, 16) depthwise weights (``LRConsistency``'s buffers)."""
    def blur(t):
        t = F.conv2d(F.pad(t, (0, 0, PAD, PAD)), rows.to(t.dtype), stride=(SCALE, 1), groups=3)
        return F.conv2d(F.pad(t, (PAD, PAD, 0, 0)), cols.to(t.dtype), stride=(1, SCALE), groups=3)
    # Zero padding, then each output divided by the weight that fell inside the image: Pillow's border rule.
    return blur(y) / blur(torch.ones_like(y))


class LRConsistency(nn.Module):
    """``forward(y, x)``: ``y`` (N, 3, 4H, 4W) moved ``iterations`` times by the bicubic upscale of
    ``x - down(y)``, where ``x`` (N, 3, H, W) is the input that ``y`` was made from."""

    def __init__(self, iterations=3):
        super().__init__()
        self.iterations = int(iterations)
        k = _kernel()
        self.register_buffer("rows", k.view(1, 1, TAPS, 1).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("cols", k.view(1, 1, 1, TAPS).repeat(3, 1, 1, 1), persistent=False)

    def forward(self, y, x):
        for _ in range(self.iterations):
            error = x - pillow_bicubic_down(y, self.rows, self.cols)
            y = y + F.interpolate(error, scale_factor=float(SCALE), mode="bicubic", align_corners=False)
        return y
