"""What photos go through before they reach the API: blur, resizing, noise and JPEG, twice, for training the
``real`` SR model (docs/models.md), after Real-ESRGAN's second-order degradation (Wang et al., 2021).

``degrade(hr, rng)`` turns an HR photo (uint8 ``(H, W, 3)``, sides multiples of 4) into the LR photo a user
might upload, ``(H/4, W/4, 3)`` uint8, and says what it did (the last JPEG's quality, each stage's draw). The
stages, each drawn from a ``numpy.random.Generator`` (so a seed gives the same photo every time):

1. first round: a blur kernel (isotropic or anisotropic Gaussian, generalized Gaussian, plateau; a sinc
   kernel for ringing at ``sinc_prob``), a random resize (up, down or kept; area, bilinear or bicubic),
   Gaussian or Poisson noise (colour, or grey at ``gray_noise_prob``), JPEG at a random quality (Pillow);
2. a second round with its own ranges and probabilities (its blur at ``second_blur_prob``);
3. the end: resize to a quarter of the HR size and a sinc filter (at ``final_sinc_prob``), and JPEG, in
   random order.

``Degradation`` holds the ranges; its defaults are Real-ESRGAN's (``train_realesrgan_x4plus.yml``).
``make_pool`` cuts HR patches from the training photos and degrades each once, in worker processes, into
arrays that a run keeps in memory (``training.data.PoolSampler``): on two CPU cores degrading on the fly
would take a share of every step.
"""
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from imgapi import damage

KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


@dataclass(frozen=True)
class Round:
    """One round's ranges: blur, resize, noise, JPEG."""
    kernel_prob: tuple = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # over KERNELS
    blur_sigma: tuple = (0.2, 3.0)
    betag: tuple = (0.5, 4.0)      # generalized Gaussian's shape
    betap: tuple = (1.0, 2.0)      # plateau's shape
    sinc_prob: float = 0.1
    resize_prob: tuple = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple = (1.0, 30.0)       # sigma, grey levels
    poisson_scale: tuple = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple = (30, 95)


@dataclass(frozen=True)
class Degradation:
    """Both rounds and the end; the defaults are Real-ESRGAN x4plus's."""
    first: Round = field(default_factory=Round)
    second: Round = field(default_factory=lambda: Round(
        blur_sigma=(0.2, 1.5), resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2), noise_range=(1.0, 25.0),
        poisson_scale=(0.05, 2.5)))
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8
    kernel_sizes: tuple = tuple(range(7, 22, 2))
    scale: int = 4


def _grid(size):
    r = (size - 1) / 2
    ax = np.arange(size, dtype=np.float64) - r
    return np.meshgrid(ax, ax, indexing="xy")


def gaussian_kernel(size, sigma_x, sigma_y, theta, shape="gaussian", beta=2.0):
    """A ``size`` x ``size`` blur kernel summing to 1: an anisotropic Gaussian of ``sigma_x``, ``sigma_y``
    rotated by ``theta``; ``shape`` "generalized" raises the exponent to ``beta`` / 2 (exp(-0.5 q^(beta/2))),
    "plateau" is 1 / (1 + q^(beta/2)), q the Mahalanobis distance squared."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * xx + s * yy, -s * xx + c * yy
    q = (u / sigma_x) ** 2 + (v / sigma_y) ** 2
    if shape == "gaussian":
        k = np.exp(-0.5 * q)
    elif shape == "generalized":
        k = np.exp(-0.5 * np.power(q, beta / 2))
    elif shape == "plateau":
        k = 1.0 / (1.0 + np.power(q, beta / 2))
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return k / k.sum()


def sinc_kernel(size, cutoff):
    """The circular low-pass (ideal, cut off at ``cutoff`` radians a pixel, pi the Nyquist) on a ``size`` x
    ``size`` grid, summing to 1: its ripples are the ringing of over-sharpened and resized photos."""
    xx, yy = _grid(size)
    r = np.sqrt(xx ** 2 + yy ** 2)
    j1 = torch.special.bessel_j1(torch.from_numpy(cutoff * r)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(r == 0, cutoff ** 2 / (4 * math.pi), cutoff * j1 / (2 * math.pi * r))
    return k / k.sum()


def random_kernel(rng, rnd, sizes):
    """A blur kernel drawn as ``rnd`` (a :class:`Round`) says; returns ``(kernel, description)``."""
    size = int(rng.choice(sizes))
    if rng.random() < rnd.sinc_prob:
        cutoff = rng.uniform(math.pi / 3, math.pi) if size < 13 else rng.uniform(math.pi / 5, math.pi)
        return sinc_kernel(size, cutoff), dict(kind="sinc", size=size, cutoff=round(cutoff, 3))
    kind = KERNELS[rng.choice(len(KERNELS), p=np.asarray(rnd.kernel_prob) / sum(rnd.kernel_prob))]
    sx = rng.uniform(*rnd.blur_sigma)
    sy, theta = (sx, 0.0) if kind.endswith("iso") and not kind.endswith("aniso") else (
        rng.uniform(*rnd.blur_sigma), rng.uniform(-math.pi, math.pi))
    shape, beta = "gaussian", 2.0
    if kind.startswith("generalized"):
        shape, beta = "generalized", rng.uniform(*rnd.betag)
    elif kind.startswith("plateau"):
        shape, beta = "plateau", rng.uniform(*rnd.betap)
    desc = dict(kind=kind, size=size, sigma=(round(sx, 3), round(sy, 3)), theta=round(theta, 3), beta=round(beta, 3))
    return gaussian_kernel(size, sx, sy, theta, shape, beta), desc


def filter2d(img, kernel):
    """``img`` (1, 3, H, W) float convolved with ``kernel`` (k x k) on every channel, reflect-padded."""
    k = torch.as_tensor(kernel, dtype=img.dtype)
    p = k.shape[-1] // 2
    if p >= min(img.shape[-2:]):  # reflect padding needs the image larger than the pad
        padded = F.pad(img, (p, p, p, p), mode="replicate")
    else:
        padded = F.pad(img, (p, p, p, p), mode="reflect")
    return F.conv2d(padded, k.expand(3, 1, *k.shape), groups=3)


def resize(img, size, mode):
    """``img`` to ``size`` (h, w) with ``mode`` (area, bilinear, bicubic; antialiased when shrinking)."""
    if mode == "area":
        return F.interpolate(img, size=size, mode="area")
    return F.interpolate(img, size=size, mode=mode, align_corners=False,
                         antialias=size[0] < img.shape[-2] or size[1] < img.shape[-1])


def gaussian_noise(img, rng, sigma, gray):
    """Add noise of standard deviation ``sigma`` grey levels: one plane for all channels when ``gray``."""
    shape = (1, 1, *img.shape[-2:]) if gray else img.shape
    return img + torch.from_numpy(rng.normal(0.0, sigma / 255.0, shape).astype(np.float32))


def poisson_noise(img, rng, scale, gray):
    """Add shot noise (Poisson in 255 counts of the photo's grey levels, times ``scale``): brighter pixels get
    more, as a sensor's; on the luma alone when ``gray``."""
    src = (img[:, :1] * 0.299 + img[:, 1:2] * 0.587 + img[:, 2:3] * 0.114) if gray else img
    lam = src.clamp(0, 1).numpy().astype(np.float64) * 255
    noise = (rng.poisson(lam) - lam) / 255
    return img + torch.from_numpy((noise * scale).astype(np.float32))


def encode_jpeg(img, quality):
    """The JPEG file (bytes) Pillow writes of ``img`` (1, 3, H, W) in [0, 1] at ``quality`` (4:2:0, as
    most cameras and browsers save)."""
    a = img[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(a, "RGB").save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg(img, quality):
    """``img`` (1, 3, H, W) in [0, 1] through Pillow's JPEG encoder at ``quality`` and back (8-bit)."""
    out = np.asarray(Image.open(io.BytesIO(encode_jpeg(img, quality))).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)[None].float() / 255


def _round(img, rng, rnd, cfg, blur, hr_size, log):
    if blur:
        kernel, desc = random_kernel(rng, rnd, cfg.kernel_sizes)
        img = filter2d(img, kernel)
        log.append(dict(stage="blur", **desc))
    way = ("up", "down", "keep")[rng.choice(3, p=np.asarray(rnd.resize_prob) / sum(rnd.resize_prob))]
    factor = {"up": rng.uniform(1, rnd.resize_range[1]), "down": rng.uniform(rnd.resize_range[0], 1),
              "keep": 1.0}[way]
    mode = RESIZE_MODES[rng.integers(3)]
    # never below 8 px a side, nor above the HR photo's size
    h, w = (min(hr, max(8, round(s * factor))) for s, hr in zip(img.shape[-2:], hr_size))
    img = resize(img, (h, w), mode).clamp(0, 1)
    log.append(dict(stage="resize", factor=round(factor, 3), mode=mode))
    gray = bool(rng.random() < rnd.gray_noise_prob)
    if rng.random() < rnd.gaussian_noise_prob:
        sigma = rng.uniform(*rnd.noise_range)
        img = gaussian_noise(img, rng, sigma, gray)
        log.append(dict(stage="gaussian_noise", sigma=round(sigma, 2), gray=gray))
    else:
        scale = rng.uniform(*rnd.poisson_scale)
        img = poisson_noise(img, rng, scale, gray)
        log.append(dict(stage="poisson_noise", scale=round(scale, 3), gray=gray))
    quality = int(rng.integers(rnd.jpeg_range[0], rnd.jpeg_range[1] + 1))
    log.append(dict(stage="jpeg", quality=quality))
    return jpeg(img.clamp(0, 1), quality)


def degrade(hr, rng, cfg=Degradation()):
    """The degraded LR photo of ``hr`` (uint8 ``(H, W, 3)``, H and W multiples of ``cfg.scale``):
    ``(lr, info)``, ``lr`` uint8 ``(H/scale, W/scale, 3)``; ``info``: ``quality`` (the last JPEG's) and
    ``stages`` (each stage's draw, in order)."""
    h, w = hr.shape[0] // cfg.scale, hr.shape[1] // cfg.scale
    img = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)[None].float() / 255
    log = []
    img = _round(img, rng, cfg.first, cfg, True, hr.shape[:2], log)
    img = _round(img, rng, cfg.second, cfg, rng.random() < cfg.second_blur_prob, hr.shape[:2], log)
    quality = int(rng.integers(cfg.second.jpeg_range[0], cfg.second.jpeg_range[1] + 1))
    sinc = None
    if rng.random() < cfg.final_sinc_prob:
        size = int(rng.choice(cfg.kernel_sizes))
        sinc = sinc_kernel(size, rng.uniform(math.pi / 3, math.pi))
    mode = RESIZE_MODES[rng.integers(3)]

    def shrink(x):
        x = resize(x, (h, w), mode).clamp(0, 1)
        return filter2d(x, sinc).clamp(0, 1) if sinc is not None else x

    if rng.random() < 0.5:
        img = jpeg(shrink(img), quality)
        order = "resize+sinc, jpeg"
    else:
        img = shrink(jpeg(img, quality))
        order = "jpeg, resize+sinc"
    log.append(dict(stage="final", order=order, mode=mode, sinc=sinc is not None, quality=quality))
    lr = img[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return lr, dict(quality=quality if order.endswith("jpeg") else None, stages=log)


def shrink(hr, rng, scale=4):
    """The plain LR photo: ``hr`` shrunk ``scale`` times with an antialiased bicubic, bilinear or area filter."""
    img = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)[None].float() / 255
    mode = RESIZE_MODES[rng.integers(3)]
    img = resize(img, (hr.shape[0] // scale, hr.shape[1] // scale), mode).clamp(0, 1)
    return img, mode


def simple(hr, rng, scale=4, noise_prob=0.5, noise_range=(1.0, 10.0), jpeg_range=(30, 95)):
    """A first-order upload: shrunk, some Gaussian noise (colour or grey) at ``noise_prob``, saved as JPEG.
    ``(lr, info)`` as :func:`degrade`'s."""
    img, mode = shrink(hr, rng, scale)
    stages = [dict(stage="resize", factor=1 / scale, mode=mode)]
    if rng.random() < noise_prob:
        sigma, gray = rng.uniform(*noise_range), bool(rng.random() < 0.4)
        img = gaussian_noise(img, rng, sigma, gray)
        stages.append(dict(stage="gaussian_noise", sigma=round(sigma, 2), gray=gray))
    quality = int(rng.integers(jpeg_range[0], jpeg_range[1] + 1))
    img = jpeg(img.clamp(0, 1), quality)
    stages.append(dict(stage="jpeg", quality=quality))
    return img[0].mul(255).round().byte().permute(1, 2, 0).numpy(), dict(quality=quality, stages=stages)


def clean(hr, rng, scale=4):
    """The photo only shrunk (no noise, no JPEG): what ``srresnet`` was trained on. ``(lr, info)``."""
    img, mode = shrink(hr, rng, scale)
    return (img[0].mul(255).round().byte().permute(1, 2, 0).numpy(),
            dict(quality=None, stages=[dict(stage="resize", factor=1 / scale, mode=mode)]))


WAYS = {"clean": clean, "simple": simple, "real": degrade}


def pool_item(images, weights, i, seed, hr_size, mix):
    """The ``i``-th patch pair of a pool: an HR patch of one of ``images`` (uint8 arrays; drawn by
    ``weights``), degraded one of the ways of ``mix`` (``{way: share}``). Its own generator, seeded by
    ``(seed, i)``, draws everything: the pool does not depend on how it is split among processes."""
    rng = np.random.default_rng([seed, i])
    im = images[rng.choice(len(images), p=weights)]
    y, x = rng.integers(0, im.shape[0] - hr_size + 1), rng.integers(0, im.shape[1] - hr_size + 1)
    hr = im[y:y + hr_size, x:x + hr_size]
    names = sorted(mix)
    way = names[rng.choice(len(names), p=np.array([mix[n] for n in names]) / sum(mix.values()))]
    lr, info = WAYS[way](hr, rng)
    return hr, lr, damage.level(info["quality"], damage.noise_sigma(lr)), names.index(way)


_WORKER = {}


def _init_worker(paths, hr_size):
    torch.set_num_threads(1)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    images = [im for im in images if min(im.shape[:2]) >= hr_size]
    areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
    _WORKER.update(images=images, weights=areas / areas.sum())


def _work(job):
    start, stop, seed, hr_size, mix = job
    return [pool_item(_WORKER["images"], _WORKER["weights"], i, seed, hr_size, mix) for i in range(start, stop)]


def make_pool(paths, n, hr_size, seed, mix, workers=2):
    """``n`` degraded patch pairs of the photos at ``paths``, made by ``workers`` processes: a dict of ``hr``
    (n, s, s, 3) and ``lr`` (n, s/4, s/4, 3) uint8, ``level`` (n,) float32 (``imgapi.damage.level`` of
    each LR patch, as the server would measure it) and ``way`` (n,) int8, an index into ``ways`` (the sorted
    names of ``mix``)."""
    import multiprocessing as mp
    chunks = [(a, min(n, a + 256), seed, hr_size, dict(mix)) for a in range(0, n, 256)]
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, _init_worker, (list(map(str, paths)), hr_size)) as pool:
            items = [it for part in pool.imap(_work, chunks) for it in part]
    else:
        _init_worker(list(map(str, paths)), hr_size)
        items = [it for c in chunks for it in _work(c)]
    hr, lr, level, way = zip(*items)
    return dict(hr=np.stack(hr), lr=np.stack(lr), level=np.array(level, np.float32),
                way=np.array(way, np.int8), ways=np.array(sorted(mix)))


MIX = "clean=0.2,simple=0.4,real=0.4"


def parse_mix(text):
    """``"clean=0.2,simple=0.4,real=0.4"`` -> ``{"clean": 0.2, ...}`` (each name one of :data:`WAYS`)."""
    mix = {}
    for part in str(text).split(","):
        name, _, share = part.partition("=")
        if name.strip() not in WAYS or not share:
            raise ValueError(f"mix {text!r}: expected way=share,... with ways {', '.join(sorted(WAYS))}")
        mix[name.strip()] = float(share)
    if sum(mix.values()) <= 0:
        raise ValueError(f"mix {text!r}: the shares sum to 0")
    return mix


def add_degrade_args(p):
    """The SR trainer's options for training on degraded photos (the ``real`` model)."""
    p.add_argument("--degrade", action="store_true",
                   help="train on a pool of degraded patches (training/degrade.py) instead of bicubic shrinks")
    p.add_argument("--pool", type=int, default=8000, help="patch pairs in the degraded pool")
    p.add_argument("--mix", default=MIX, help="shares of the pool's ways: clean (shrunk only), simple (shrunk, "
                                              "noise, JPEG), real (Real-ESRGAN's second-order degradation)")
    p.add_argument("--condition", action="store_true",
                   help="the generator takes the damage level (imgapi/damage.py) as a fourth input plane")


def pool_sampler(args, train_paths, device, folder):
    """The run's :class:`training.data.PoolSampler`: its pool read from ``folder`` (``pool-*.npz``, made by an
    earlier stretch of the run), else made now (every core) and kept there."""
    from training.data import PoolSampler
    mix = parse_mix(args.mix)
    key = f"pool-s{args.seed}-n{args.pool}-p{args.patch * 4}-" + "-".join(f"{k}{mix[k]:g}" for k in sorted(mix))
    path = folder / f"{key}.npz"
    if path.exists():
        with np.load(path) as f:
            pool = {k: f[k] for k in f.files}
    else:
        workers = max(1, torch.get_num_threads())
        print(f"degrading {args.pool} patches of {args.patch * 4} px ({workers} processes) into {path}", flush=True)
        pool = make_pool(train_paths, args.pool, args.patch * 4, args.seed, mix, workers=workers)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{key}.{os.getpid()}.tmp.npz"  # ranks of a torchrun make the same pool: each renames its own
        np.savez(tmp, **pool)
        tmp.replace(path)
    return PoolSampler(pool, device, condition=args.condition)


def describe(args):
    """The manifest's record of how the run's inputs were degraded (None for bicubic shrinks)."""
    if not getattr(args, "degrade", False):
        return None
    return dict(pool=args.pool, lr_patch=args.patch, mix=parse_mix(args.mix), seed=args.seed,
                pipeline="training/degrade.py: clean (shrunk), simple (shrunk, Gaussian noise, JPEG 30-95), "
                         "real (Real-ESRGAN's second-order degradation, its x4plus ranges)",
                condition="imgapi.damage.level of each LR patch" if args.condition else None)
