"""A generator whose weights follow the photo's damage level: ESRGAN's network interpolation, made per request.

``training/blend_sr.py`` mixes a GAN generator with the PSNR generator it was fine-tuned from, weight by
weight (``alpha * gan + (1 - alpha) * psnr``). One alpha is a compromise: a clean photo wants the PSNR
generator's fidelity, a heavily compressed one the GAN's cleaning and texture. :class:`DamageBlend` holds
both generators and mixes them at the alpha of the damage level it is given (the fourth input plane of a
conditioned SRResNet, ``imgapi.damage.level``): ``clean`` at level 0, ``damaged`` at level 1, linear between.
At any level it computes exactly the network that ``mix`` would make at that alpha: every weight is lerped,
and the 9x9 tail, which the export factors into two convolutions (not linear in the 9x9 weights), runs for
both generators and its outputs are lerped (a convolution is linear in its weights). It costs the tail
twice and the lerps, about a tenth more than one generator.
"""
import copy

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from model.rewrites import tail_behind_last_shuffle


def _served_parts(net):
    """``(trunk, tail)`` of an ``SRResNet`` (eval mode) in the served form: BatchNorm folded into the
    convolutions, the last pixel shuffle moved behind the tail (its PReLU takes each slope four times), the
    tail factored and followed by that shuffle. ``trunk`` keeps the layout of the network's head, body,
    body_tail and upsample modules, with the BatchNorm layers gone."""
    net = copy.deepcopy(net).eval().cpu()
    if net.consistency is not None or not net.bicubic_skip or not net.condition:
        raise ValueError("DamageBlend takes conditioned SRResNets with the bicubic skip and no back-projection")
    for block in net.body:
        block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
        block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
    net.body_tail = nn.Sequential(fuse_conv_bn_eval(net.body_tail[0], net.body_tail[1]))
    tail_behind_last_shuffle(net, len(net.upsample))
    trunk = nn.Module()
    trunk.head, trunk.body, trunk.body_tail, trunk.upsample = net.head, net.body, net.body_tail, net.upsample
    return trunk, net.tail


class DamageBlend(nn.Module):
    """``forward``: ``(N, 4, H, W)`` (RGB in [0, 1] and the damage level, constant over the batch) ->
    ``(N, 3, 4H, 4W)``, not clamped: the generator ``lerp(psnr, gan, alpha)`` with
    ``alpha = clean + (damaged - clean) * level``, clamped to [0, 1]."""

    def __init__(self, psnr, gan, clean=0.0, damaged=1.0):
        super().__init__()
        self.low, self.tail_low = _served_parts(psnr)
        self.high, self.tail_high = _served_parts(gan)
        if [p.shape for p in self.low.parameters()] != [p.shape for p in self.high.parameters()]:
            raise ValueError("the two generators differ in layout (channels or blocks)")
        self.clean, self.damaged = float(clean), float(damaged)

    def _lerp(self, name, t):
        return torch.lerp(self.low.get_parameter(name), self.high.get_parameter(name), t)

    def _conv(self, name, x, t):
        return F.conv2d(x, self._lerp(f"{name}.weight", t), self._lerp(f"{name}.bias", t),
                        padding=self.low.get_submodule(name).padding)

    def _prelu(self, name, x, t):
        return F.prelu(x, self._lerp(f"{name}.weight", t))

    def forward(self, x):
        t = (self.clean + (self.damaged - self.clean) * x[:, 3:4].mean()).clamp(0.0, 1.0)
        feat = self._prelu("head.1", self._conv("head.0", x, t), t)
        h = feat
        for i in range(len(self.low.body)):
            inner = self._prelu(f"body.{i}.act", self._conv(f"body.{i}.conv1", h, t), t)
            h = h + self._conv(f"body.{i}.conv2", inner, t)
        feat = feat + self._conv("body_tail.0", h, t)
        for i in range(len(self.low.upsample)):
            feat = self._conv(f"upsample.{i}.conv", feat, t)
            if i < len(self.low.upsample) - 1:
                feat = F.pixel_shuffle(feat, 2)
            feat = self._prelu(f"upsample.{i}.act", feat, t)
        out = torch.lerp(self.tail_low(feat), self.tail_high(feat), t)
        return out + F.interpolate(x[:, :3], scale_factor=4.0, mode="bicubic", align_corners=False)
