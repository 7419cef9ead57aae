"""Universal style transfer (whitening and colouring, Li et al. 2017): any painting, no network per style.

Two traced modules (``model/universal.py``, exported by ``training/train_decoders.py``):
``universal/encoder`` takes ``(1, 3, H, W)`` float32 RGB in [0, 1], H and W multiples of 8, and returns the
VGG16 features ``(relu1_1, relu2_1, relu3_1, relu4_1)``; ``universal/decoder`` has ``block4`` (relu4_1 ->
relu3_1), ``block3``, ``block2`` and ``block1`` (relu1_1 -> RGB, unclamped).

A painting is reduced to its **statistics**: at each level, the mean of its features ``(C,)`` and the
colouring matrix ``(C, C)``, the square root of their covariance (eigendecomposition in float64). The photo
is encoded once to relu4_1; its features there are whitened (their own covariance removed) and coloured
with the painting's, decoded one block to relu3_1, whitened and coloured again there, and so on down to
the picture: coarse structures first, fine strokes last, without encoding the picture again between levels.
``strength`` blends each level's coloured features with the photo's own before they go down a block.

Statistics are arrays, so a named style can ship as a small ``.npz`` file (a *preset*), and a painting a
user uploads is reduced once and kept by its sha256 (:class:`StatsCache`).
"""
import copy
import hashlib
import threading
import warnings
import weakref
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imgapi.engine import plain_execution
from imgapi.stylize import rgb_to_ycbcr, shrink_to, ycbcr_to_rgb

LEVELS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
MULTIPLE = 8  # three poolings in the encoder
EPS = 1e-5    # eigenvalues below this (relative to the largest) are left out, as in the WCT paper
PAINTING_SIDE = 512  # a painting is reduced at this longest side at most
# The largest working size: a request's peak RSS in float32 is 2.2-2.7 GB at 768 px and 3.4-4.0 GB at 1024 px, over
# Lambda's default 3008 MB (fresh processes through the app on 2 threads; 1.4-1.6 GB at 768 px in bf16, on a CPU
# with bf16 units; docs/models.md).
UNIVERSAL_MAX_SIDE = 768
# The decoder blocks run in strips of about this many input pixels (:func:`decode_in_strips`), each with this
# many rows of context on either side.
STRIP_PIXELS = 1 << 17
STRIP_HALO = 4
# Whitening and colouring handle the pixels in chunks of this many (C x chunk temporaries only).
CHUNK_PIXELS = 1 << 16
# A photo is stylized with this many reflected pixels around it, cropped after: without them the encoder's
# zero padding lit a line along each border (its step to the next lines: 0.05-0.10 on Starry Night, about
# 0.035 with them, 8 held-out photos; docs/models.md). 6 % more pixels at 512 px.
MARGIN = 8


def cpu_flags():
    """The CPU feature flags of /proc/cpuinfo (empty where there is none). Training reads them here too."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_units(flags=None):
    """True when the CPU has bf16 arithmetic units (AVX512-BF16 or AMX): bf16 then runs the encoder and
    decoder in about half fp32's time (:func:`in_precision`); without them it is emulated and much slower (12x
    for a style training step on an AVX2-only AMD EPYC). ``flags``: :func:`cpu_flags` by default."""
    return bool({"avx512_bf16", "amx_bf16"} & (cpu_flags() if flags is None else flags))


_BF16_COPIES = weakref.WeakKeyDictionary()  # a traced module -> its bfloat16 copy
_BF16_LOCK = threading.Lock()


def _dtype(precision):
    return torch.bfloat16 if precision == "bf16" else torch.float32


def in_precision(module, precision):
    """``module`` itself for ``"fp32"``; for ``"bf16"`` a copy of it with bfloat16 weights (made once per
    module and kept while the module lives), which takes and returns bfloat16 tensors.

    A traced module ignores ``torch.autocast`` when it runs as traced (:func:`plain_execution`): it computes
    in float32 whatever the context. Its bfloat16 copy is what runs at the bf16 units' speed: 0.5x the time of
    the encoder and of the decoder at 512 px on an AMD EPYC with AVX512-BF16, features within 0.6 % (relative
    norm) of float32's (docs/models.md)."""
    if precision != "bf16":
        return module
    with _BF16_LOCK:
        copy_ = _BF16_COPIES.get(module)
        if copy_ is None:
            with warnings.catch_warnings():  # Module.to reads each traced parameter's .grad, which warns
                warnings.simplefilter("ignore", UserWarning)
                copy_ = _BF16_COPIES[module] = copy.deepcopy(module).to(torch.bfloat16)
        return copy_


def _padded(x, margin=0):
    """Pad ``(1, 3, H, W)`` by ``margin`` pixels on every side, then at the bottom and right to multiples of 8
    and at least 16 pixels (relu4_1 at least 2 x 2, which the decoder's reflection padding needs): reflected,
    or repeated where the image is too small. The picture starts at ``(margin, margin)`` of the result."""
    if margin:
        h, w = x.shape[-2:]
        x = F.pad(x, (margin,) * 4, mode="reflect" if h > margin and w > margin else "replicate")
    h, w = x.shape[-2:]
    ph, pw = max(-h % MULTIPLE, 2 * MULTIPLE - h), max(-w % MULTIPLE, 2 * MULTIPLE - w)
    if not ph and not pw:
        return x
    mode = "reflect" if h > ph and w > pw else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def to_input(rgb):
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    rgb = np.ascontiguousarray(rgb) if rgb.flags.writeable else np.array(rgb)  # torch warns on read-only arrays
    return torch.from_numpy(rgb).to(torch.float32).div_(255.0).permute(2, 0, 1)[None]


def covariance_stats(f):
    """Mean ``(C,)``, eigenvalues ``(k,)`` and eigenvectors ``(C, k)`` (float64) of ``(1, C, H, W)`` features'
    covariance; eigenvalues below ``EPS`` times the largest are left out."""
    c = f.shape[1]
    x = f[0].reshape(c, -1)
    mean = x.mean(1, dtype=torch.float64)
    # The pixel sums in float32 (a 1024-px photo's relu1_1 in float64 would be 512 MB), centred a chunk of
    # pixels at a time (no full-size copy), the C x C in float64.
    m32, cov = mean.float()[:, None], torch.zeros(c, c, dtype=torch.float64)
    for chunk in x.split(CHUNK_PIXELS, dim=1):
        centred = chunk.float() - m32
        cov += (centred @ centred.T).to(torch.float64)
    cov /= max(x.shape[1] - 1, 1)
    vals, vecs = torch.linalg.eigh(cov)
    keep = vals > EPS * max(vals.max().item(), EPS)
    return mean, vals[keep], vecs[:, keep]


def style_statistics(encoder, painting):
    """A painting's statistics: ``{level: (mean (C,), colouring (C, C))}`` float32 arrays, one per level.

    ``painting``: (H, W, 3) uint8 RGB or a PIL RGB image, shrunk here to at most ``PAINTING_SIDE`` px. Always
    encoded in float32: a painting is reduced once (a preset offline, an upload once per sha256), and an
    uploaded painting then gives exactly its preset's picture.
    """
    if not isinstance(painting, np.ndarray):
        painting = np.asarray(shrink_to(painting.convert("RGB"), PAINTING_SIDE))
    elif max(painting.shape[:2]) > PAINTING_SIDE:
        painting = np.asarray(shrink_to(Image.fromarray(np.ascontiguousarray(painting), "RGB"), PAINTING_SIDE))
    with torch.inference_mode(), plain_execution():
        feats = encoder(_padded(to_input(painting)))
    out = {}
    for name, f in zip(LEVELS, feats):
        mean, vals, vecs = covariance_stats(f.float())
        colouring = vecs @ torch.diag(vals.sqrt()) @ vecs.T
        out[name] = (mean.float().numpy(), colouring.float().numpy())
    return out


def whiten_colour(f, mean, colouring, strength, dtype=torch.float32):
    """``f`` (1, C, H, W) with its own covariance removed and the painting's ``mean``/``colouring`` put in,
    blended with ``f`` by ``strength``; a new tensor of ``dtype`` (``f`` is left as it was)."""
    c = f.shape[1]
    own_mean, vals, vecs = covariance_stats(f)
    whitening = vecs @ torch.diag(vals.rsqrt()) @ vecs.T
    colour = torch.as_tensor(colouring, dtype=torch.float64)
    # One C x C matrix applied to the pixels, in float32 (the float64 part is C x C only), a chunk of pixels
    # at a time, written straight into the result: no full-size temporary (at 768 px relu1_1 is 150 MB).
    transform = (colour @ whitening).float()
    shift = torch.as_tensor(mean, dtype=torch.float32)[:, None] - transform @ own_mean.float()[:, None]
    out = torch.empty(f.shape, dtype=dtype)
    pixels, written = f[0].reshape(c, -1), out[0].view(c, -1)
    for chunk, target in zip(pixels.split(CHUNK_PIXELS, dim=1), written.split(CHUNK_PIXELS, dim=1)):
        chunk = chunk.float()
        y = torch.addmm(shift, transform, chunk)
        if strength < 1.0:
            y.mul_(strength).add_(chunk, alpha=1.0 - strength)
        target.copy_(y)
    return out


def decode_in_strips(block, f, scale, pixels=STRIP_PIXELS, halo=STRIP_HALO):
    """``block(f)`` for a decoder block (``(1, C, H, W)`` in, ``(1, C', scale*H, scale*W)`` out), computed in
    horizontal strips of about ``pixels`` input pixels, each with ``halo`` rows of context above and below
    that are cropped from its output: the same picture as one call (the blocks' 3x3 convolutions see at most
    2 input rows away, and their reflection padding then touches only the cropped rows), while the block's
    full-size temporaries (padded copies, hidden layers) exist for one strip at a time."""
    h, w = f.shape[-2:]
    rows = max(8, pixels // max(w, 1))
    if h <= rows + 2 * halo:
        return block(f)
    out = None
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        a, b = max(0, y0 - halo), min(h, y1 + halo)
        part = block(f[..., a:b, :])
        if out is None:
            out = part.new_empty(part.shape[:2] + (h * scale, part.shape[-1]))
        out[..., y0 * scale:y1 * scale, :] = part[..., (y0 - a) * scale:(y1 - a) * scale, :]
    return out


def transfer(encoder, decoder, x, stats, strength=1.0, precision="fp32", depth=4, detail=0.0):
    """Stylize ``x`` (1, 3, H, W) in [0, 1] with the statistics ``stats``, whitening and colouring from level
    ``depth`` (4: relu4_1, the coarsest strokes; 1: relu1_1, colours and fine texture only) down to relu1_1;
    returns (1, 3, H, W) clamped to [0, 1].

    ``detail`` (0..1) is the share of the photo's own relu1_1 features in those whitened and coloured last
    (below ``depth`` 1): the edges and fine texture that the decoder blurs on its way down from the deeper
    levels come back from the photo, and take the painting's colours and texture statistics there."""
    h, w = x.shape[-2:]
    dtype, decoder = _dtype(precision), in_precision(decoder, precision)
    blocks = (decoder.block1, decoder.block2, decoder.block3, decoder.block4)
    with torch.inference_mode(), plain_execution():
        feats = in_precision(encoder, precision)(_padded(x, MARGIN).to(dtype))
        f, fine = feats[depth - 1], feats[0] if detail > 0.0 and depth > 1 else None
        del feats
        for level in range(depth, 0, -1):
            if level == 1 and fine is not None:
                # In place, in the modules' precision (the decoded and the photo's features alike): at 768 px a
                # relu1_1-sized float temporary is 150 MB of a peak near Lambda's 3008 MB (docs/models.md).
                f.lerp_(fine, float(detail))
                fine = None
            mean, colouring = stats[LEVELS[level - 1]]
            f = whiten_colour(f, mean, colouring, strength, dtype)
            f = decode_in_strips(blocks[level - 1], f, 1 if level == 1 else 2)
        return f.float()[..., MARGIN:MARGIN + h, MARGIN:MARGIN + w].clamp_(0.0, 1.0)


def served_settings(entry):
    """``{"depth", "detail"}`` of the decoder's manifest entry, as :func:`stylize_universal` takes them (an
    entry without them: depth 4, detail 0)."""
    return {"depth": int(entry.get("depth", 4)), "detail": float(entry.get("detail", 0.0))}


def stylize_universal(encoder, decoder, rgb, stats, *, strength=1.0, preserve_color=False, max_side=1024,
                      precision="fp32", depth=4, detail=0.0):
    """Restyle ``rgb`` ((H, W, 3) uint8, EXIF applied) with a painting's ``stats`` (:func:`style_statistics`).

    ``strength`` 0..1 blends the features at every level (0: the photo itself, returned as it is);
    ``preserve_color`` keeps the photo's chroma (BT.601 Cb, Cr) and takes the stylized luminance;
    ``depth``: the deepest level whitened and coloured, ``detail``: the photo's own share of the finest level
    (:func:`transfer`; the decoder's manifest entry chooses both). ``max_side``: longer inputs are
    shrunk first (Lanczos), never past ``UNIVERSAL_MAX_SIDE``. Returns
    (h, w, 3) uint8 at the shrunk size.
    """
    max_side = min(int(max_side), UNIVERSAL_MAX_SIDE)
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength {strength} is out of range. Allowed: 0.0 to 1.0")
    if max(rgb.shape[:2]) > int(max_side):
        rgb = np.asarray(shrink_to(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), int(max_side)))
    if strength == 0.0:
        return np.array(rgb, dtype=np.uint8, copy=True)
    x = to_input(rgb)
    y = transfer(encoder, decoder, x, stats, strength, precision, depth, detail)[0].permute(1, 2, 0).numpy()
    if preserve_color:
        ycc = rgb_to_ycbcr(x[0].permute(1, 2, 0).numpy())
        ycc[..., 0] = rgb_to_ycbcr(y)[..., 0]
        y = ycbcr_to_rgb(ycc)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def save_stats(stats, path):
    """Write statistics as an ``.npz`` (``<level>_mean``, ``<level>_colouring``; float32, no pickle)."""
    arrays = {}
    for name, (mean, colouring) in stats.items():
        arrays[f"{name}_mean"], arrays[f"{name}_colouring"] = mean, colouring
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load_stats(path):
    """Read :func:`save_stats`'s file; ValueError when a level is missing or the shapes disagree."""
    with np.load(path, allow_pickle=False) as z:
        try:
            stats = {n: (z[f"{n}_mean"].astype(np.float32), z[f"{n}_colouring"].astype(np.float32))
                     for n in LEVELS}
        except KeyError as exc:
            raise ValueError(f"style statistics {path} lack {exc}") from None
    for name, (mean, colouring) in stats.items():
        if colouring.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"style statistics {path}: {name} has mean {mean.shape} and colouring "
                             f"{colouring.shape}")
    return stats


class StatsCache:
    """Painting statistics by the sha256 of the painting's bytes, the ``maxsize`` most recent kept.

    Thread-safe; two requests with the same new painting may both compute it (the result is the same).
    Only a request that sends the very same bytes gets an entry: it reveals nothing it did not send.
    """

    def __init__(self, maxsize=16):
        self.maxsize = maxsize
        self._items = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def key(data):
        return hashlib.sha256(data).hexdigest()

    def get(self, key, compute):
        """The statistics under ``key``, made by ``compute()`` and kept when absent."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        stats = compute()
        with self._lock:
            self._items[key] = stats
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return stats
