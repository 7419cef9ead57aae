"""What the trainers learn from: photos read from disk and the random patches and crops cut from them.

``PatchSampler`` gives the SR trainer (LR, HR) patch pairs; ``CropSampler`` gives the style trainer
augmented square crops. Both hold their photos in memory and draw from a generator they are given, so that
a resumed run draws what the run it continues would have drawn.
"""
import random

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from imgapi import engine
from training.common import list_images


def seed_everything(seed):
    """Seed Python's, NumPy's and torch's global generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_rgb(path):
    """Open an image file as an 8-bit RGB PIL image."""
    with Image.open(path) as im:
        return im.convert("RGB")


def to_tensor(im):
    """PIL RGB -> (3, H, W) float32 in [0, 1]."""
    return engine.to_tensor(im)[0]


def to_pil(t):
    """(3, H, W) float in [0, 1] -> PIL RGB."""
    a = t.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.rint(a * 255).astype(np.uint8), "RGB")


class PatchSampler:
    """Random HR patches (flips and 90-degree turns) from images held in memory as uint8.

    LR patches are made on the device with antialiased bicubic, which matches Pillow's BICUBIC
    downscale to within 2 grey levels (docs/data.md).
    """

    def __init__(self, paths, hr_size, device):
        self.images = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                       for p in paths]
        self.images = [im for im in self.images if min(im.shape[1:]) >= hr_size]
        if not self.images:
            raise SystemExit(f"no training image is at least {hr_size}x{hr_size}")
        self.images = [im.to(device) for im in self.images]
        self.weights = torch.tensor([im.shape[1] * im.shape[2] for im in self.images], dtype=torch.float)
        self.hr_size, self.device = hr_size, device

    def batch(self, n, generator):
        """``(lr, hr)``: (n, 3, s/4, s/4) and (n, 3, s, s) float32 in [0, 1], s the HR patch side."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
        s = self.hr_size
        out = []
        for i in idx:
            im = self.images[i]
            y = int(torch.randint(0, im.shape[1] - s + 1, (1,), generator=generator))
            x = int(torch.randint(0, im.shape[2] - s + 1, (1,), generator=generator))
            patch = im[:, y:y + s, x:x + s]
            k = int(torch.randint(0, 8, (1,), generator=generator))
            if k & 4:
                patch = patch.flip(2)
            patch = torch.rot90(patch, k & 3, (1, 2))
            out.append(patch)
        hr = torch.stack(out).float() / 255.0
        lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", align_corners=False, antialias=True)
        return lr.clamp(0, 1), hr


class CropSampler:
    """Random augmented square crops of a folder of photos, held in memory at a reduced size.

    Each photo is stored with its short side at ``base`` pixels (2.5 crops); a crop of a random side
    between ``size`` and ``2 * size`` is cut, flipped at random and resized to ``size``, so the network
    sees objects at several scales.
    """

    def __init__(self, folder, size, rng, largest=None):
        self.size, self.rng = size, rng
        side = max(size, largest or size)  # every crop size of the run must fit
        base = int(2.5 * side)
        self.images = []
        for path in list_images(folder):
            im = load_rgb(path)
            scale = base / min(im.size)
            if scale < 1:
                im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                               Image.BICUBIC)
            if min(im.size) < side:
                up = side / min(im.size)
                im = im.resize((max(side, round(im.width * up)), max(side, round(im.height * up))), Image.BICUBIC)
            self.images.append(to_tensor(im))

    def batch(self, n):
        """(n, 3, size, size) float32 in [0, 1]."""
        out = []
        for _ in range(n):
            img = self.images[self.rng.randrange(len(self.images))]
            _, h, w = img.shape
            side = self.rng.randint(self.size, min(h, w, 2 * self.size))
            y, x = self.rng.randint(0, h - side), self.rng.randint(0, w - side)
            crop = img[:, y:y + side, x:x + side].unsqueeze(0)
            if side != self.size:
                crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                     align_corners=False)
            if self.rng.random() < 0.5:
                crop = crop.flip(3)
            out.append(crop)
        return torch.cat(out).clamp_(0, 1)


class PoolSampler:
    """Random (LR, HR) pairs from a pool of degraded patches (``training.degrade.make_pool``), flipped and
    turned alike; the LR carries each patch's damage level as a fourth plane when ``condition``."""

    def __init__(self, pool, device, condition=False):
        self.hr = torch.from_numpy(pool["hr"]).permute(0, 3, 1, 2).contiguous()
        self.lr = torch.from_numpy(pool["lr"]).permute(0, 3, 1, 2).contiguous()
        self.level = torch.from_numpy(pool["level"]).float()
        self.device, self.condition = device, condition

    def batch(self, n, generator):
        """``(lr, hr)``: (n, 3 or 4, s/4, s/4) and (n, 3, s, s) float32 in [0, 1]."""
        idx = torch.randint(0, len(self.hr), (n,), generator=generator)
        k = int(torch.randint(0, 8, (1,), generator=generator))
        lr, hr = self.lr[idx].float() / 255.0, self.hr[idx].float() / 255.0
        if k & 4:
            lr, hr = lr.flip(3), hr.flip(3)
        lr, hr = torch.rot90(lr, k & 3, (2, 3)), torch.rot90(hr, k & 3, (2, 3))
        if self.condition:
            lr = torch.cat([lr, self.level[idx].view(n, 1, 1, 1).expand(n, 1, *lr.shape[-2:])], 1)
        return lr.contiguous().to(self.device), hr.contiguous().to(self.device)
