"""Every loss the trainers optimise, in one place: change a term here and both the run and its manifest's
description of the loss follow.

SR (``training.train_sr``): SRResNet learns a pixel L1; SRGAN a VGG feature L1, a pixel L1, the 4x4-mean L1,
the texture and flat terms and a relativistic adversarial term (:func:`sr_generator_terms`,
:func:`ragan`), described in words by :func:`describe_sr_loss`.

Styles (``training.train_style``): Johnson et al.'s content and Gram style losses over the VGG16 loss
network, a total-variation term and the stride-lattice term (:func:`style_losses`), whose settings a
run records per stretch (:func:`style_loss_settings`).
"""
import argparse

import torch
from torch.nn import functional as F

from model.transformer_net import MULTIPLE
from training.common import FEATURE_SCALE, autocast, gram
from training.evaluate import STYLE_LAYERS

# Weights of the layers' relative Gram errors, all equal as in Johnson et al. With the style image at 256 px,
# optimising a photo's pixels against this loss paints the painting's strokes and swirls; with relu4_3 at
# 0.1 and the style image at 512 px, a network learned a fine regular mosaic of the palette instead, the
# statistics of the two lowest layers alone.
STYLE_LAYER_WEIGHTS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
CONTENT_LAYER = "relu2_2"
SHIFT_MARGIN = 8  # pixels of the shift term's comparison left out at the borders (reflection padding, the seam)
# conv4_3's mean |activation| (8.9 on the training photos, Caffe scale) over each layer's: a feature loss on
# several layers puts each on conv4_3's scale (x FEATURE_SCALE), so their weights mean what Real-ESRGAN's do.
LAYER_SCALES = {"conv1_2": 8.89 / 79.6, "conv2_2": 8.89 / 175.7, "conv3_3": 8.89 / 58.0, "conv4_3": 1.0}


def ragan(real_logit, fake_logit, fake_is_real):
    """Relativistic average GAN loss (ESRGAN): with ``fake_is_real`` (the generator's loss) the fakes are
    pushed to look more real than the reals on average; without it (the discriminator's), the reverse."""
    real_target = torch.zeros_like(real_logit) if fake_is_real else torch.ones_like(real_logit)
    fake_target = torch.ones_like(fake_logit) if fake_is_real else torch.zeros_like(fake_logit)
    return (F.binary_cross_entropy_with_logits(real_logit - fake_logit.mean(), real_target)
            + F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(), fake_target)) / 2


def local_detail(img, window=8):
    """The amplitude of the luminance gradients of ``img`` (N, 3, H, W) averaged over ``window`` x ``window``
    squares at half-window steps: where a photo has texture and how much, with no say about its phase.
    The same gradient energy as the detail figure (``training.metrics.gradient_energy``), made local; its
    floor, 0.003 (under one grey level a pixel), is the rounding of an 8-bit photo's smoothest areas."""
    y = (img * img.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    gx, gy = y[..., :-1, 1:] - y[..., :-1, :-1], y[..., 1:, :-1] - y[..., :-1, :-1]
    return F.avg_pool2d(gx * gx + gy * gy, window, stride=window // 2).add(1e-5).sqrt()


def flat_mask(lr_img, size, low=0.0032, high=0.006):
    """Where the LR photo is smooth, at the HR ``size``: 1 where the bicubic upscale's local gradient amplitude
    (``local_detail``) is at its floor, 0 from ``high`` up (a smooth sky's grain is under it; wood, foliage
    and edges are over it). Computed from what the generator sees, so it can learn where the mask is."""
    up = F.interpolate(lr_img.float(), scale_factor=4.0, mode="bicubic", align_corners=False)
    w = ((high - local_detail(up)) / (high - low)).clamp(0, 1)
    return F.interpolate(w, size=size, mode="bilinear", align_corners=False)


def percep_layers(spec):
    """``--percep-layer``'s layers and weights: ``"conv4_3"`` -> ``{"conv4_3": 1.0}``;
    ``"conv1_2:0.1,conv2_2:0.1,conv3_3:1,conv4_3:1"`` (Real-ESRGAN's weights) -> that dict."""
    layers = {}
    for item in spec.split(","):
        name, _, weight = item.strip().partition(":")
        if name not in LAYER_SCALES:
            raise ValueError(f"--percep-layer: {name!r} is not one of {', '.join(LAYER_SCALES)}")
        layers[name] = float(weight or 1.0)
    return layers


def feature_l1(vgg, sr, target, layers):
    """The weighted sum over ``layers`` (:func:`percep_layers`) of the L1 between the VGG16 features (before
    the ReLU) of ``sr`` and ``target``, each layer on conv4_3's scale; an fp32 scalar. Call it under the
    step's autocast."""
    feats = vgg(torch.cat([sr, target]), list(layers))
    total = 0.0
    for name, weight in layers.items():
        f_sr, f_hr = (feats[name].float() * (FEATURE_SCALE * LAYER_SCALES[name])).chunk(2)
        total = total + weight * F.l1_loss(f_sr, f_hr.detach())
    return total


def usm_sharpen(img, weight=0.5, radius=50, threshold=10 / 255):
    """Real-ESRGAN's unsharp mask of its training targets: ``img`` plus ``weight`` times its difference from a
    Gaussian blur (OpenCV's sigma for a ``2 radius + 1`` kernel: 8 px), only where that difference is over
    ``threshold`` (the mask itself blurred, so there are no seams): edges and texture get crisper, smooth
    areas and their grain are left alone. ``img``: (N, 3, H, W) in [0, 1]; the result is clamped to it."""
    radius = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)
    size = 2 * radius + 1
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float32, device=img.device) - radius
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()

    def blur(t):
        c = t.shape[1]
        t = F.pad(t, (radius, radius, radius, radius), mode="reflect")
        t = F.conv2d(t, g.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
        return F.conv2d(t, g.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)
    img = img.float()
    residual = img - blur(img)
    soft = blur((residual.abs() > threshold).float())
    sharp = (img + weight * residual).clamp(0, 1)
    return soft * sharp + (1 - soft) * img


def sr_generator_terms(sr, hr, lr_img, percep, real_logit, fake_logit, args):
    """The SRGAN generator's terms, unweighted fp32 scalars: ``percep`` (given: :func:`feature_l1`),
    ``pixel``, ``lowpass``, ``texture`` and ``flat`` (zero when their weight is 0) and ``adv``.
    ``sr``, ``hr``: (N, 3, 4h, 4w) in [0, 1] (``hr``: the target, sharpened or not); ``lr_img``: the
    (N, 3, h, w) input."""
    sr = sr.float()
    terms = dict(percep=percep, pixel=F.l1_loss(sr, hr))
    # The colours of each 4x4 block (the LR pixel it came from): holds the GAN to the photo's tones and
    # colours, which the feature loss lets drift, without asking for smoothness inside the block.
    terms["lowpass"] = F.l1_loss(F.avg_pool2d(sr, 4), F.avg_pool2d(hr, 4))
    # How much texture each 8x8 square has, as a ratio to the photo's (log): grain at 1.5x the little a
    # smooth sky or skin has costs as much as half the texture of foliage, and neither asks where the
    # texture's edges fall. (On an amplitude scale, the first would cost almost nothing.)
    terms["texture"] = (F.l1_loss(local_detail(sr).log(), local_detail(hr).log()) if args.texture_weight
                        else sr.new_zeros(()))
    # Pixel L1 where the LR photo is smooth: no grain on a smooth sky, wall or skin, where the photo's own
    # grain cannot be told from the photo and a painted one only adds its error.
    terms["flat"] = ((flat_mask(lr_img, hr.shape[-2:]) * (sr - hr).abs()).mean() if args.flat_weight
                     else sr.new_zeros(()))
    terms["adv"] = ragan(real_logit, fake_logit, fake_is_real=True)
    return terms


def sr_generator_loss(terms, args):
    """The weighted sum of :func:`sr_generator_terms` with the run's ``--*-weight`` options."""
    return (args.percep_weight * terms["percep"] + args.pixel_weight * terms["pixel"]
            + args.lowpass_weight * terms["lowpass"] + args.texture_weight * terms["texture"]
            + args.flat_weight * terms["flat"] + args.adv_weight * terms["adv"])


def describe_sr_loss(phase, args):
    """The loss of ``phase`` with ``args``' weights, in words (the manifest's ``loss``)."""
    if phase == "srresnet":
        return "L1"
    layers = percep_layers(args.percep_layer)
    feature = (f"VGG16 {args.percep_layer} L1" if len(layers) == 1 and ":" not in args.percep_layer else
               "VGG16 feature L1 (" + ", ".join(f"{w:g} x {n}" for n, w in layers.items()) + ")")
    return (f"{args.percep_weight:g} x {feature}"
            + (f" to targets sharpened by {args.sharpen:g} x unsharp mask" if getattr(args, "sharpen", 0) else "")
            + f" + {args.pixel_weight:g} x pixel L1 + "
            + (f"{args.lowpass_weight:g} x 4x4-mean L1 + " if args.lowpass_weight else "")
            + (f"{args.texture_weight:g} x 8x8 log gradient-amplitude L1 + " if args.texture_weight else "")
            + (f"{args.flat_weight:g} x pixel L1 where the LR is smooth + " if args.flat_weight else "")
            + f"{args.adv_weight:g} x RaGAN"
            + (" (per pixel, U-Net discriminator)" if getattr(args, "disc", "vgg") == "unet" else "")
            + ", from srresnet"
            + (f"; the weights' moving average (decay {args.ema:g})" if args.ema else ""))


def add_sr_loss_args(p):
    """SRGAN's loss weights and generator options. ESRGAN's recipe (Wang et al. 2018): the feature loss before
    the ReLU leads and the pixel loss only anchors the colours. Its weights (1, 0.01, 0.005) assume VGG19
    features ~40x larger than these HED VGG16 conv4_3 features / 58: with them the adversarial term was a fifth
    of the loss and drew a grid and a colour shift within 300 steps. The defaults are the shipped srgan.pt's
    (training/recipes/srgan.toml): a pixel L1 at a tenth of ESRGAN's balance, the adversarial term at 10x, the
    flat term and 3 back-projection iterations."""
    p.add_argument("--percep-layer", default="conv4_3",
                   help="VGG16 layer of the feature loss (before its ReLU), or layers with weights: "
                        "conv1_2:0.1,conv2_2:0.1,conv3_3:1,conv4_3:1 (each on conv4_3's scale)")
    p.add_argument("--sharpen", type=float, default=0.0,
                   help="SRGAN: the pixel and feature terms' targets get this much unsharp mask (Real-ESRGAN: "
                        "0.5; usm_sharpen); the discriminator sees the true photo (0: none)")
    p.add_argument("--percep-weight", type=float, default=1.0, help="SRGAN: VGG feature L1 weight")
    p.add_argument("--pixel-weight", type=float, default=0.01, help="SRGAN: pixel L1 weight")
    p.add_argument("--lowpass-weight", type=float, default=1.0,
                   help="SRGAN: L1 weight of the 4x4 block means (the tones and colours at the LR scale)")
    p.add_argument("--texture-weight", type=float, default=0.0,
                   help="SRGAN: L1 weight of the log local gradient amplitude (8x8 squares): texture where the "
                        "photo has it, in its amount, and no grain where it is smooth (~0.003: its gradients "
                        "are ~500x the feature loss's)")
    p.add_argument("--flat-weight", type=float, default=10.0,
                   help="SRGAN: pixel L1 weight where the LR photo is smooth (flat_mask): no painted grain there")
    p.add_argument("--adv-weight", type=float, default=0.01, help="SRGAN: adversarial loss weight")
    p.add_argument("--disc", choices=("vgg", "unet"), default="vgg",
                   help="SRGAN's discriminator: vgg (SRGAN's, one verdict per patch) or unet (Real-ESRGAN's "
                        "U-Net with spectral norm, one per pixel; model.discriminator)")
    p.add_argument("--ema", type=float, default=0.995,
                   help="SRGAN: decay of the moving average of the generator's weights that is validated and "
                        "exported (0: the raw weights, whose look swings from step to step under the GAN)")
    p.add_argument("--consistency", type=int, default=3,
                   help="SRGAN: iterations of LR back-projection at the generator's end, trained through and "
                        "exported (model.consistency; 0: none). It holds a GAN's tones and colours to the "
                        "photo's. SRResNet has none; a resumed run keeps the number it began with")


def total_variation(y):
    """Mean squared difference of neighbouring pixels (N, 3, H, W), in [0, 1] units squared."""
    return (y[:, :, 1:, :] - y[:, :, :-1, :]).pow(2).mean() + (y[:, :, :, 1:] - y[:, :, :, :-1]).pow(2).mean()


def shift_error(y, moved, s, margin=SHIFT_MARGIN):
    """How much the network's picture depends on where the photo sits on its 4-pixel stride grid: the mean
    squared difference between ``moved``, its output for the photo rolled up and left by ``s`` pixels
    (:func:`roll_photo`), and ``y``, its output for the photo, moved likewise; ``margin`` pixels in from the
    borders and the roll's seam (less on crops too small for it).

    The encoder's two stride-2 convolutions and the decoder's two upsamplings make the network shift-equivariant
    only by multiples of 4 pixels. Whatever its output does differently at the four phases of that grid shows as
    a lattice of period 4 over the whole picture, whatever the photo: the Starry Night and Great Wave networks
    trained without this term changed by an RMS of 31 and 36 grey levels when the photo moved by 2 pixels
    (``training.evaluate.shift_change``, 8 held-out photos), and Starry Night by under 2 when it moved by 4.
    A painting's texture moves with the photo; the lattice does not, so this term removes it and leaves the
    strokes to the style loss."""
    h, w = y.shape[-2], y.shape[-1]
    m = min(margin, (min(h, w) - s) // 4)
    return F.mse_loss(moved[:, :, m:h - s - m, m:w - s - m].float(), y[:, :, s + m:h - m, s + m:w - m].float())


def roll_photo(x, s):
    """``x`` (N, C, H, W) rolled up and left by ``s`` pixels: the same pixels, so instance norm sees the same
    statistics, at another phase of the stride grid."""
    return torch.roll(x, shifts=(-s, -s), dims=(2, 3))


def style_loss_settings(args):
    """The loss and learning-rate settings a style run trains with (kept per stretch of steps in the checkpoint
    and the manifest's ``training.recipes``). The shift term is named only when it is on, so a run from before
    it resumed with ``--shift-weight 0`` keeps its settings."""
    r = dict(style_size=args.style_size, layer_weights=dict(args.layer_weights), content_weight=args.content_weight,
             style_weight=args.style_weight, tv_weight=args.tv_weight, lr=args.lr, output_lr=args.output_lr)
    if args.shift_weight:
        r["shift_weight"] = args.shift_weight
    return r


def style_targets(grams, layer_weights):
    """``(targets, norms)`` of the style loss from the style image's Gram matrices: each layer's error is
    divided by its target's mean square (over its weight). Each layer's Gram matrices live on their own scale
    (with the HED VGG, relu4_3's are ~1e8 times smaller than relu1_2's), so an unnormalised sum is relu1_2
    alone: colour, no brushwork; relative errors weigh the four layers equally."""
    # Cloned out of inference mode: the loss keeps them for its backward pass.
    targets = {k: v.clone() for k, v in grams.items()}
    norms = {k: (float(v.pow(2).mean()) + 1e-30) / layer_weights[k] for k, v in targets.items()}
    return targets, norms


def style_losses(net, vgg, x, targets, norms, args, precision):
    """Forward ``x`` (N, 3, S, S) in [0, 1] through ``net`` and the loss network; returns the weighted content,
    style and total-variation terms and the stride-lattice term of :func:`shift_error` (zero when
    ``--shift-weight`` is 0), fp32 scalars. Under bf16 autocast the networks run in bf16 while the
    Gram matrices and every loss are computed in fp32 from fp32 copies of the features."""
    with autocast(x.device, precision):
        with torch.no_grad():
            content = vgg(x, (CONTENT_LAYER,))[CONTENT_LAYER]
        if args.shift_weight:
            # One forward of the photo and its rolled copy (a second call would trip DistributedDataParallel).
            s = int(torch.randint(1, MULTIPLE, ()))
            y, moved = net(torch.cat([x, roll_photo(x, s)])).chunk(2)
        else:
            y = net(x)
        feats = vgg(y, STYLE_LAYERS)
    content = content.float() * FEATURE_SCALE
    feats = {k: v.float() * FEATURE_SCALE for k, v in feats.items()}
    y = y.float()
    content_loss = args.content_weight * F.mse_loss(feats[CONTENT_LAYER], content) / (
        content.pow(2).mean() + 1e-12)
    style_loss = args.style_weight * sum(
        F.mse_loss(gram(feats[k]), targets[k].expand(y.shape[0], -1, -1)) / norms[k] for k in STYLE_LAYERS)
    tv_loss = args.tv_weight * total_variation(y)
    shift_loss = args.shift_weight * shift_error(y, moved, s) if args.shift_weight else y.new_zeros(())
    return content_loss, style_loss, tv_loss, shift_loss


def parse_layer_weights(value):
    """``--layer-weights`` ``"1,1,1,1"`` (or a recipe's table by layer name) -> ``{layer: weight}``."""
    if isinstance(value, dict):
        if set(value) != set(STYLE_LAYERS):
            raise argparse.ArgumentTypeError(f"layer_weights {value!r}: expected the layers {', '.join(STYLE_LAYERS)}")
        value = ",".join(str(value[k]) for k in STYLE_LAYERS)
    try:
        vals = [float(v) for v in value.split(",")]
    except (AttributeError, ValueError):
        vals = []
    if len(vals) != len(STYLE_LAYERS) or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"--layer-weights {value!r}: expected four positive numbers like 1,1,1,1")
    return dict(zip(STYLE_LAYERS, vals))


def add_style_loss_args(p):
    """The style loss's weights and the learning rates (docs/data.md; ``param_groups`` of the trainer)."""
    p.add_argument("--style-size", type=int, default=256, help="longest side of the style image")
    p.add_argument("--layer-weights", type=parse_layer_weights, default=dict(STYLE_LAYER_WEIGHTS),
                   help="weights of the relative Gram errors of relu1_2,relu2_2,relu3_3,relu4_3")
    # Johnson's rate for the body. The output convolution's own: with the output on [0, 1]
    # (model.transformer_net.OUTPUT_SCALE), 1e-3 there moves a pixel by tens of grey levels a step and the
    # network stayed a dark hatched wash; 1e-4 brought the painting's palette.
    p.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate of the network's body")
    p.add_argument("--output-lr", type=float, default=1e-4,
                   help="peak learning rate of the output convolution (see param_groups)")
    p.add_argument("--warmup-steps", type=int, default=50, help="linear learning-rate warm-up")
    p.add_argument("--content-weight", type=float, default=1.0, help="on the relative relu2_2 error")
    p.add_argument("--style-weight", type=float, default=2.0, help="on the sum of per-layer relative Gram errors")
    p.add_argument("--tv-weight", type=float, default=5.0, help="on the mean squared neighbour difference")
    p.add_argument("--shift-weight", type=float, default=100.0,
                   help="on the output's change when the photo moves by 1-3 px (the 4-px stride lattice; "
                        "shift_error); 0: off, with cheaper steps")
