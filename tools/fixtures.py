"""Tiny traced networks and a multipart encoder, shared by the tests, the bench and the load test.

Nothing that serves requests imports this: it makes weights folders and request bodies for the tools that
exercise the server.
"""
import hashlib
import io
import json

import torch
from PIL import Image
from torch import nn

from model.srresnet import SRResNet
from model.universal import NestedDecoder, UniversalEncoder, trace, weights_digest

BOUNDARY = "corpus-7MA4YWxkTrZu0gW"


class TinyStyle(nn.Module):
    """A stand-in style network: one 3x3 conv and a sigmoid, same size out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate")

    def forward(self, x):
        return torch.sigmoid(self.conv(x) * 3 - 1)


def tiny_sr(seed=0):
    torch.manual_seed(seed)
    net = SRResNet(channels=8, blocks=2)
    nn.init.normal_(net.tail.weight, std=0.02)  # not the identity-over-bicubic start
    return net.eval()


def write_weights(folder):
    """Trace tiny SR and style nets into ``folder`` with a manifest; return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    models = {}

    def add(name, net, file, **extra):
        with torch.inference_mode():
            traced = torch.jit.trace(net.eval(), torch.rand(1, 3, 16, 16), check_trace=False)
        torch.jit.save(traced, str(folder / file))
        sha = hashlib.sha256((folder / file).read_bytes()).hexdigest()
        models[name] = dict(file=file, sha256=sha, **extra)

    add("srgan", tiny_sr(0), "srgan.pt", kind="sr", scale=4)
    add("srresnet", tiny_sr(1), "srresnet.pt", kind="sr", scale=4)
    add_real(folder, models)
    torch.manual_seed(2)
    add("style/mosaic", TinyStyle(), "style_mosaic.pt", kind="style", title="Mosaic",
        artist="Test", source="tests", licence="CC0-1.0", thumbnail="thumbs/mosaic.jpg")
    (folder / "thumbs").mkdir(exist_ok=True)
    Image.new("RGB", (32, 32), (90, 140, 200)).save(folder / "thumbs" / "mosaic.jpg")
    add_universal(folder, models)
    manifest = {"models": models}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def add_real(folder, models, seed=5):
    """A tiny ``real`` model into ``folder`` and ``models`` (the manifest's entries), made as the shipped one is:
    two SRResNets conditioned on the damage level (``(1, 4, H, W)`` in: RGB and the level's plane) mixed per
    request by that level (``model.damage_blend.DamageBlend``, all of the first at level 0, all of the second
    at 1), traced, with ``arch.condition`` ``"damage"`` as training writes it. Their tails and the level's head
    weights are random and large enough that the level shows in the 8-bit output."""
    from model.damage_blend import DamageBlend
    nets = []
    for k in range(2):
        torch.manual_seed(seed + k)
        net = SRResNet(channels=8, blocks=1, condition=True).eval()
        with torch.no_grad():
            nn.init.normal_(net.tail.weight, std=0.05)
            nn.init.normal_(net.head[0].weight[:, 3], std=0.3)
        nets.append(net)
    with torch.inference_mode():
        traced = torch.jit.trace(DamageBlend(*nets).eval(), torch.rand(1, 4, 16, 16), check_trace=False)
    torch.jit.save(traced, str(folder / "real.pt"))
    models["real"] = dict(file="real.pt", sha256=hashlib.sha256((folder / "real.pt").read_bytes()).hexdigest(),
                          kind="sr", scale=4, arch=dict(channels=8, blocks=1, condition="damage"))


TINY_UNIVERSAL_WIDTHS = (4, 8, 8, 8)


def tiny_painting(side=40, seed=3):
    """A small stand-in painting: diagonal stripes in two colours with noise, (side, side, 3) uint8."""
    import numpy as np
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    stripes = ((x + y) // 5 % 2)[..., None]
    img = np.where(stripes, [200, 170, 40], [30, 60, 150]) + rng.normal(0, 10, (side, side, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def add_universal(folder, models):
    """Tiny traced universal encoder and decoder, and a preset made from :func:`tiny_painting`, into
    ``folder`` and ``models`` (the manifest's entries)."""
    from imgapi.universal import save_stats, style_statistics
    torch.manual_seed(4)
    encoder, decoder = UniversalEncoder(TINY_UNIVERSAL_WIDTHS), NestedDecoder(TINY_UNIVERSAL_WIDTHS)
    traced_encoder, traced_decoder = trace(encoder, decoder, side=16)
    for name, module in (("encoder", traced_encoder), ("decoder", traced_decoder)):
        torch.jit.save(module, str(folder / f"universal_{name}.pt"))
        models[f"universal/{name}"] = dict(file=f"universal_{name}.pt", kind="universal",
                                           sha256=_sha256(folder / f"universal_{name}.pt"))
    (folder / "presets").mkdir(exist_ok=True)
    save_stats(style_statistics(traced_encoder, tiny_painting()), folder / "presets" / "stripes.npz")
    Image.fromarray(tiny_painting()).save(folder / "thumbs" / "stripes.jpg")
    models["style/stripes"] = dict(file="presets/stripes.npz", kind="preset", title="Stripes", artist="Test",
                                   source="tests", licence="CC0-1.0", thumbnail="thumbs/stripes.jpg",
                                   encoder_weights=weights_digest(traced_encoder),
                                   sha256=_sha256(folder / "presets" / "stripes.npz"))


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def multipart(fields, boundary=BOUNDARY):
    """Encode ``fields`` as a multipart/form-data body. ``fields`` is a list of ``(name, value)``;
    ``value`` is text, or ``(filename, bytes, content_type)`` for a file. Returns ``(body, ctype)``."""
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, tuple):
            filename, data, ctype = value
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                      f"Content-Type: {ctype}\r\n\r\n".encode())
            out.write(data)
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
            out.write(value.encode("utf-8"))
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"
