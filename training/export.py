"""Trained module -> served TorchScript file, and back.

The served files are exact rewrites of the trained networks for CPU speed (docs/performance.md): BatchNorm
folded, channels_last weights, the SR tail moved behind the last pixel shuffle and factored, the style
network's decoder computed at the low resolution. ``export_sr`` / ``export_style`` write them;
``sr_from_state_dict`` / ``style_from_state_dict`` turn a served file's weights back into the trainable
architecture, for fine-tuning a shipped network and for the bench's textbook peer and FLOP count.
"""
import copy
from types import SimpleNamespace

import torch
from torch import nn

from model.rewrites import (SubpixelUpsampleConv, factor_conv, subpixel_to_3x3, tail_behind_last_shuffle,
                            unfactor_conv)
from model.srresnet import SRResNet
from model.transformer_net import TransformerNet

__all__ = ["export_sr", "export_damage_blend", "mixed", "export_style", "sr_from_state_dict",
           "style_from_state_dict", "rewritten", "SR_TOLERANCE", "STYLE_TOLERANCE"]

# Largest difference allowed between a served file and the network it was made from, on [0, 1] outputs:
# far below one grey level (1/255), far above float rounding through 20-odd layers.
SR_TOLERANCE = STYLE_TOLERANCE = 1e-4


def export_sr(net, path):
    """Trace ``net`` (an ``SRResNet``) on the CPU in eval mode to TorchScript at ``path``.

    The traced copy has BatchNorm folded into the convolutions and its weights in channels_last, so oneDNN
    runs every convolution in NHWC without reorders. Its last pixel shuffle moves behind the 9x9 tail
    (``model.rewrites.fold_shuffle_into_conv``: the PReLU before it takes each channel's slope four times),
    and the tail is factored into 1xk and kx1 convolutions (``model.rewrites.factor_conv``). ``net`` itself
    is left as it was, on its device (training goes on with it, under DistributedDataParallel too): the
    trace is made from a CPU copy.
    """
    from torch.fx.experimental.optimization import fuse
    net = copy.deepcopy(net).eval().cpu()
    fast = fuse(net)  # a folded copy
    tail_behind_last_shuffle(fast, len(net.upsample))
    fast = fast.to(memory_format=torch.channels_last)
    probe = torch.rand(1, net.head[0].in_channels, 32, 32)
    with torch.inference_mode():
        traced = torch.jit.trace(fast, probe, check_trace=False)
        diff = (traced(probe) - net(probe)).abs().max().item()
    if diff > SR_TOLERANCE:
        raise RuntimeError(f"the folded network differs from the trained one by {diff:.3g} (> {SR_TOLERANCE})")
    torch.jit.save(traced, str(path))


def mixed(gan, psnr, alpha):
    """A copy of ``gan`` (a trainable ``SRResNet``) with ``alpha * gan + (1 - alpha) * psnr`` for every
    floating-point parameter and buffer (ESRGAN's network interpolation; integer buffers are the GAN's)."""
    a, b = gan.state_dict(), psnr.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("the two generators differ in layout (channels or blocks); they cannot be mixed")
    net = copy.deepcopy(gan)
    net.load_state_dict({k: torch.lerp(b[k], a[k], alpha) if a[k].is_floating_point() else a[k] for k in a},
                        strict=True)
    return net.eval()


def export_damage_blend(psnr, gan, clean, damaged, path):
    """Trace a ``model.damage_blend.DamageBlend`` of two trainable conditioned ``SRResNet`` (``alpha`` of the
    GAN ``clean`` at damage level 0, ``damaged`` at 1) to TorchScript at ``path``, channels_last, after
    checking it against :func:`mixed` at levels 0, 0.5 and 1 (and at a level the trace was not made with)."""
    from model.damage_blend import DamageBlend
    blend = DamageBlend(psnr, gan, clean, damaged).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, 27, 33)
    with torch.inference_mode():
        traced = torch.jit.trace(blend, torch.cat([torch.rand(1, 3, 32, 32), torch.full((1, 1, 32, 32), 0.3)], 1),
                                 check_trace=False)
        for level in (0.0, 0.5, 1.0):
            alpha = min(max(clean + (damaged - clean) * level, 0.0), 1.0)
            probe = torch.cat([x, torch.full_like(x[:, :1], level)], 1)
            diff = (traced(probe) - mixed(gan, psnr, alpha).cpu()(probe)).abs().max().item()
            if diff > SR_TOLERANCE:
                raise RuntimeError(f"the damage blend at level {level} differs from the mix at alpha {alpha:g} "
                                   f"by {diff:.3g} (> {SR_TOLERANCE})")
    torch.jit.save(traced, str(path))


def _unfold_shuffle(weight, bias, r=2, k=9):
    """The k x k convolution (after ``PixelShuffle(r)``) that ``fold_shuffle_into_conv`` turned into
    ``weight`` / ``bias`` (before it): every original tap is read back from output phase (0, 0)."""
    size = weight.shape[-1]
    taps, p = size // 2, k // 2
    out_c, in_c = weight.shape[0] // (r * r), weight.shape[1] // (r * r)
    w = torch.zeros(out_c, in_c, k, k)
    for iy in range(r):
        for ix in range(r):
            for u in range(-taps, taps + 1):
                for v in range(-taps, taps + 1):
                    ky, kx = r * u + iy + p, r * v + ix + p
                    if 0 <= ky < k and 0 <= kx < k:
                        w[:, :, ky, kx] = weight[0::r * r, iy * r + ix::r * r, u + taps, v + taps]
    return w, None if bias is None else bias[0::r * r].clone()


def sr_from_state_dict(sd, consistency=0, condition=None):
    """The trainable ``SRResNet`` (eval mode, bicubic skip, ``consistency`` iterations of LR back-projection:
    a file's weights do not say how many it was exported with, its manifest ``arch`` does) holding a served SR
    file's weights.

    Its BatchNorm layers compute y = x (the statistics are folded into the convolutions): they must stay in
    eval mode when it is trained further (``training.train_sr`` freezes them), and the next export folds
    them away again. ``condition``: None keeps the file's input (three planes, or four with the damage level);
    True gives a three-plane file the level's plane with zero weights. Raises ValueError when ``sd`` is not an
    exported SRResNet."""
    # the back-projection's fixed kernel (a trace keeps it with the weights) is rebuilt by SRResNet
    sd = {k: v.detach().float().contiguous() for k, v in dict(sd).items() if not k.startswith("consistency.")}
    if "low.head.0.weight" in sd:
        raise ValueError("a damage blend of two generators (model.damage_blend), not one SRResNet: start from "
                         "one of its parents (its manifest entry's blend names them)")
    if "tail.0.0.weight" not in sd or "head.0.weight" not in sd:
        raise ValueError("not an exported SRResNet (no head.0 / factored tail.0.0 weights)")
    channels = sd["head.0.weight"].shape[0]
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    planes = sd["head.0.weight"].shape[1]
    if condition and planes == 3:
        sd["head.0.weight"] = torch.cat([sd["head.0.weight"], sd["head.0.weight"].new_zeros(channels, 1, 9, 9)], 1)
    net = SRResNet(channels=channels, blocks=blocks, bicubic_skip=True, consistency=consistency,
                   condition=bool(condition) or planes == 4)
    rows, cols = (SimpleNamespace(weight=sd.pop(f"tail.0.{i}.weight"), bias=sd.pop(f"tail.0.{i}.bias", None))
                  for i in (0, 1))
    folded_w, folded_b = unfactor_conv(rows, cols)
    sd["tail.weight"], sd["tail.bias"] = _unfold_shuffle(folded_w, folded_b)
    last = f"upsample.{len(net.upsample) - 1}.act.weight"
    sd[last] = sd[last][0::4].clone()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.fill_(1.0 - m.eps)
    own = net.state_dict()
    missing = set(own) - set(sd)
    if any(".bn" not in k and not k.startswith("body_tail.1.") for k in missing) or set(sd) - set(own):
        raise ValueError("the SR file's weights do not have SRResNet's layout")
    net.load_state_dict(dict(sd, **{k: own[k] for k in missing}), strict=True)
    return net.eval()


def export_style(net, path):
    """Trace ``net`` (a ``TransformerNet``) on the CPU in eval mode to TorchScript at ``path``.

    The traced copy has its convolution weights in channels_last and runs NHWC throughout, with the
    layout-keeping instance norm of ``model.transformer_net``, and the exact rewrites of
    ``rewritten``: its 9x9 RGB output convolution factored into 1x9 and 9x1, its two
    upsampling decoder layers computed at the low resolution. It is checked against ``net``'s textbook NCHW
    graph on a size other than the tracing example's (a trace that baked a size would fail there) and on a
    batch of two images. ``net`` itself is left as it was.
    """
    was_training = net.training
    net = net.eval().cpu()
    fast = rewritten(net).to(memory_format=torch.channels_last)
    fast.fused_norm = True
    reference = copy.deepcopy(net)
    reference.fused_norm = False
    net.train(was_training)
    with torch.inference_mode():
        traced = torch.jit.trace(fast, torch.rand(1, 3, 67, 93), check_trace=False)
        for probe in (torch.rand(1, 3, 50, 41), torch.rand(2, 3, 36, 28)):
            diff = (traced(probe) - reference(probe)).abs().max().item()
            if diff > STYLE_TOLERANCE:
                raise RuntimeError(f"traced style network differs from the eager one by {diff:.3g}")
    torch.jit.save(traced, str(path))


def style_from_state_dict(state):
    """The textbook ``TransformerNet`` (eval mode) of the shapes in ``state`` (a trained network's or a served
    file's ``state_dict()``), holding its weights. The export's rewrites are turned back: its factored output
    convolution (``deconv3.conv.0`` / ``.1``, ``model.rewrites.factor_conv``) into the 9x9 one, its
    low-resolution decoder layers (``deconv1.conv`` / ``deconv2.conv``, 2x2,
    ``model.rewrites.SubpixelUpsampleConv``) into upsampling and 3x3 convolutions."""
    sd = dict(state)
    for layer in ("deconv1", "deconv2"):
        if f"{layer}.conv.weight" in sd:
            sd[f"{layer}.conv.conv.weight"], sd[f"{layer}.conv.conv.bias"] = subpixel_to_3x3(
                sd.pop(f"{layer}.conv.weight"), sd.pop(f"{layer}.conv.bias"))
    if "deconv3.conv.0.weight" in sd:
        rows, cols = (SimpleNamespace(weight=sd.pop(f"deconv3.conv.{i}.weight"),
                                      bias=sd.pop(f"deconv3.conv.{i}.bias", None)) for i in (0, 1))
        sd["deconv3.conv.weight"], sd["deconv3.conv.bias"] = unfactor_conv(rows, cols)
    channels = tuple(sd[f"{k}.conv.weight"].shape[0] for k in ("conv1", "conv2", "conv3"))
    blocks = len({k.split(".")[1] for k in sd if k.startswith("res.")})
    net = TransformerNet(channels=channels, residual_blocks=blocks)
    net.load_state_dict(sd, strict=True)
    return net.eval()


def rewritten(net):
    """A copy of ``net`` (a ``TransformerNet``, eval mode) with the export's exact rewrites of its
    convolutions: the 9x9 output convolution factored (``model.rewrites.factor_conv``) and the two decoder
    layers computed at the low resolution (``model.rewrites.SubpixelUpsampleConv``). Same layout and norm
    form as ``net``: the export adds channels_last; ``make bench`` gives it to ONNX Runtime in NCHW form."""
    fast = copy.deepcopy(net).eval()
    fast.deconv3.conv = factor_conv(fast.deconv3.conv)
    fast.deconv1 = SubpixelUpsampleConv(fast.deconv1.conv.conv)
    fast.deconv2 = SubpixelUpsampleConv(fast.deconv2.conv.conv)
    return fast
