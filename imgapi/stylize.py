"""Fast neural style transfer inference: one image in (PIL or a uint8 array), one of the same kind out.

Tensor contract of the style modules (``weights/style_<name>.pt``, TorchScript traced from
``model.transformer_net.TransformerNet``): input ``(1, 3, H, W)`` float32 RGB in [0, 1], any H, W >= 1;
output the same shape, RGB in [0, 1] (clamped). Padding to the network's multiple of 4 and cropping back
happen inside the module, so any size works without distortion.
"""
import numpy as np
import torch
from PIL import Image

from imgapi.engine import plain_execution

# ITU-R BT.601 full-range (JFIF) RGB <-> YCbCr, on values in [0, 1] with Cb, Cr centred on 0.
_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR).astype(np.float32)


def rgb_to_ycbcr(rgb):
    """(H, W, 3) float RGB in [0, 1] -> (H, W, 3) Y in [0, 1], Cb and Cr in [-0.5, 0.5] (BT.601 full range)."""
    return rgb @ _RGB_TO_YCBCR.T


def ycbcr_to_rgb(ycc):
    """Inverse of :func:`rgb_to_ycbcr`; the result is not clipped."""
    return ycc @ _YCBCR_TO_RGB.T


def shrink_to(rgb, max_side):
    """Return ``rgb`` resized (Lanczos, aspect kept) so that its longest side is at most ``max_side`` pixels."""
    w, h = rgb.size
    if max(w, h) <= max_side:
        return rgb
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return rgb.resize(size, Image.LANCZOS)


def stylize_with_alpha(module, rgb, alpha=None, *, strength=1.0, preserve_color=False, max_side=1024):
    """:func:`stylize` for an image with its alpha channel: returns ``(rgb, alpha)``, as
    :func:`imgapi.engine.upscale` does. The route and the CLI both call this.

    ``alpha``: None, or the image's alpha as ``images.decode`` gives it: a PIL ``"L"`` image or an ``(H, W)``
    uint8 array. It is resized (Lanczos) to the result's size, which differs when ``max_side`` shrank the
    image, and keeps its kind; None stays None.
    """
    out = stylize(module, rgb, strength=strength, preserve_color=preserve_color, max_side=max_side)
    return out, alpha_for(out, alpha)


def alpha_for(out, alpha):
    """``alpha`` (None, a PIL ``"L"`` image or an ``(H, W)`` uint8 array) resized (Lanczos) to the size of the
    stylized ``out`` (PIL or array), keeping its kind; None stays None."""
    if alpha is None:
        return None
    size = (out.shape[1], out.shape[0]) if isinstance(out, np.ndarray) else out.size
    if not isinstance(alpha, np.ndarray):
        return alpha.resize(size, Image.LANCZOS)
    if alpha.shape == (size[1], size[0]):
        return alpha
    return np.asarray(Image.fromarray(alpha, "L").resize(size, Image.LANCZOS))


def stylize(module, rgb, *, strength=1.0, preserve_color=False, max_side=1024):
    """Restyle an image with a style module.

    ``module``: a style network following the tensor contract in this module's docstring.
    ``rgb``: PIL image in mode ``"RGB"`` (8-bit sRGB), or its pixels as an ``(H, W, 3)`` uint8 array (the
    server's form: no copies in and out of PIL); EXIF orientation already applied; alpha is the caller's.
    ``strength``: 0.0 to 1.0, linear blend in sRGB of the (shrunk) original (0) and the stylized image (1).
    ``preserve_color``: keep the original's chroma (Cb, Cr of BT.601 YCbCr) and take only the stylized
    luminance, so the style contributes texture but not its palette.
    ``max_side``: longest side in pixels the image is stylized at; larger inputs are shrunk first (Lanczos,
    aspect kept). The result has the shrunk size.

    Returns an ``"RGB"`` PIL image, or an ``(H, W, 3)`` uint8 array when given one. Raises ``ValueError``
    for values outside these ranges.
    """
    as_array = isinstance(rgb, np.ndarray)
    if as_array and (rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3):
        raise ValueError(f"pixels of dtype {rgb.dtype} and shape {rgb.shape} are not supported. "
                         "Supported: uint8 (H, W, 3)")
    if not as_array and rgb.mode != "RGB":
        raise ValueError(f"image mode {rgb.mode!r} is not supported. Supported modes: 'RGB'")
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength {strength} is out of range. Allowed: 0.0 to 1.0")
    if int(max_side) < 1:
        raise ValueError(f"max_side {max_side} is out of range. Allowed: an integer >= 1")
    if as_array and max(rgb.shape[:2]) > int(max_side):  # the shrinking (Lanczos) is Pillow's
        rgb = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if not isinstance(rgb, np.ndarray):
        rgb = np.asarray(shrink_to(rgb, int(max_side)))  # read-only: torch warns on those, so copied below
    finish = (lambda a: a) if as_array else (lambda a: Image.fromarray(a, "RGB"))
    if strength == 0.0:
        return finish(rgb.copy())

    pixels = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy())  # (H, W, 3) uint8
    with torch.inference_mode():
        # (1, 3, H, W) with channels_last strides, as the shipped modules compute: no layout copy.
        # uint8 -> float32, then / 255 in place: faster than torch.div(uint8, float) (docs/performance.md)
        x = pixels.to(torch.float32).div_(255.0).permute(2, 0, 1).unsqueeze(0)
        with plain_execution():
            y = module(x)
        if tuple(y.shape) != tuple(x.shape):
            raise RuntimeError(f"style module returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
        if strength == 1.0 and not preserve_color:
            # The common case, in torch (both threads, no float64): the same rounding as below.
            # Rounding then clamping to 0..255 is clamping to [0, 1] then rounding, and runs faster in place.
            out = y[0].permute(1, 2, 0).mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
            return finish(np.ascontiguousarray(out.numpy()))
        styled = y[0].clamp(0.0, 1.0).permute(1, 2, 0).numpy()
    original = x[0].permute(1, 2, 0).numpy()

    if preserve_color:
        ycc = rgb_to_ycbcr(original)
        ycc[..., 0] = rgb_to_ycbcr(styled)[..., 0]
        styled = ycbcr_to_rgb(ycc)
    out = strength * styled + (1.0 - strength) * original
    return finish(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8))
