"""The image path of /upscale: decoding every kind of input to sRGB(A), and the tiled engine."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from imgapi import engine, images
from imgapi.errors import ApiError
from tools.fixtures import tiny_sr
from tests.helpers import bomb_png, encode, photo

BIG = 10_000_000


def test_exif_orientation_is_applied():
    img = photo(30, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rgb, alpha = images.decode(encode(img, "JPEG", exif=exif, quality=100, subsampling=0), BIG)
    assert rgb.size == (20, 30)
    assert alpha is None
    # The top-left of the stored image ends up top-right once displayed, not anywhere else.
    got = np.asarray(rgb, dtype=int)
    right = np.abs(got - np.asarray(img.transpose(Image.ROTATE_270), dtype=int)).mean()
    wrong = np.abs(got - np.asarray(img.transpose(Image.ROTATE_90), dtype=int)).mean()
    assert right < 4 and wrong > 20


def test_out_of_range_exif_orientation_keeps_pixels():
    exif = Image.Exif()
    exif[0x0112] = 99
    data = encode(photo(30, 20), "JPEG", exif=exif)
    rgb, _ = images.decode(data, BIG)
    assert rgb.size == (30, 20)
    # The pixels as stored, neither rotated nor mirrored: exactly what Pillow decodes from the same bytes.
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(np.asarray(rgb), stored)


def test_alpha_is_kept_and_upscaled():
    img = photo(12, 10).convert("RGBA")
    a = np.zeros((10, 12), np.uint8)
    a[:, 6:] = 255
    img.putalpha(Image.fromarray(a))
    rgb, alpha = images.decode(encode(img), BIG)
    out, out_alpha = engine.upscale(tiny_sr(), rgb, alpha, scale=4)
    assert out.size == out_alpha.size == (48, 40)
    al = np.asarray(out_alpha)
    assert al[:, :20].max() < 30 and al[:, 28:].min() > 225


@pytest.mark.parametrize("mode", ["L", "P", "1", "LA", "I;16", "I", "F", "CMYK"])
def test_modes_become_8bit_rgb(mode):
    src = photo(16, 12)
    if mode == "I;16":
        img = Image.fromarray(np.asarray(src.convert("L"), dtype=np.uint16) * 257)
        assert img.mode == "I;16"
    elif mode == "F":
        img = Image.fromarray(np.asarray(src.convert("L"), dtype=np.float32) / 255.0, "F")
    else:
        img = src.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode in ("F", "I") else "PNG")
    rgb, alpha = images.decode(encode(img, fmt), BIG)
    assert rgb.mode == "RGB" and rgb.size == (16, 12)
    assert (alpha is not None) == (mode == "LA")
    if mode in ("L", "I;16", "I", "F"):
        # The grey levels survive the trip (16-bit scaled down, float 0..1 scaled up).
        grey = np.asarray(src.convert("L"), dtype=int)
        assert np.abs(np.asarray(rgb, dtype=int)[..., 0] - grey).max() <= 1
    if mode == "CMYK":
        assert np.abs(np.asarray(rgb, dtype=int) - np.asarray(src, dtype=int)).mean() < 20


def test_palette_transparency_becomes_alpha():
    index = (np.arange(64).reshape(8, 8) % 4).astype(np.uint8)  # palette entries 0..3, a quarter each
    palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [250, 250, 250]], np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    rgb, alpha = images.decode(encode(img, transparency=0), BIG)  # entry 0 is transparent
    assert rgb.mode == "RGB" and alpha is not None
    assert np.array_equal(np.asarray(alpha), np.where(index == 0, 0, 255))
    opaque = index != 0
    assert np.array_equal(np.asarray(rgb)[opaque], palette[index[opaque]])


def test_sixteen_bit_rgb_png():
    a = (np.asarray(photo(10, 8), dtype=np.uint16) * 257)
    import struct, zlib
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a)

    def chunk(k, b):
        return struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 8, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    rgb, _ = images.decode(png, BIG)
    assert np.abs(np.asarray(rgb, dtype=int) - np.asarray(photo(10, 8), dtype=int)).max() <= 1


def test_icc_profile_is_converted_to_srgb():
    from PIL import ImageCms
    img = photo(8, 8)
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    rgb, _ = images.decode(encode(img, icc_profile=lab.tobytes()), BIG)
    assert np.abs(np.asarray(rgb, dtype=int) - np.asarray(img, dtype=int)).max() <= 2
    # A corrupt profile is ignored rather than failing the request.
    rgb, _ = images.decode(encode(img, icc_profile=b"not a profile"), BIG)
    assert rgb.size == (8, 8)


@pytest.mark.parametrize("data, status", [
    (b"", 400),
    (b"hello, I am text", 415),
    (encode(photo(40, 40))[:200], 415),
    (bomb_png(), 413),
    (encode(photo(40, 40), "JPEG")[:300], 415),
])
def test_bad_bytes_give_client_errors(data, status):
    with pytest.raises(ApiError) as err:
        images.decode(data, 64 * 64)
    assert err.value.status == status


def test_pixel_limit_is_read_from_header():
    with pytest.raises(ApiError) as err:
        images.decode(bomb_png(300, 300), 64 * 64)
    assert err.value.status == 413 and "4096" in err.value.message


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_scales_give_exact_sizes(scale):
    out, _ = engine.upscale(tiny_sr(), photo(13, 7), scale=scale)
    assert out.size == (13 * scale, 7 * scale)


def test_tiled_matches_untiled_within_one_level():
    net = tiny_sr()
    x = engine.to_tensor(photo(70, 45, seed=3))
    with torch.inference_mode():
        whole = engine.forward_tiled(net, x, tile=0)
        tiled = engine.forward_tiled(net, x, tile=24, overlap=16)
    assert tiled.shape == whole.shape == (1, 3, 180, 280)
    assert (tiled.clamp(0, 1) - whole.clamp(0, 1)).abs().max().item() <= 1 / 255


def test_output_is_sharper_path_not_identity():
    """The tiny net is not the identity over bicubic: the output differs from plain bicubic."""
    img = photo(16, 16)
    out, _ = engine.upscale(tiny_sr(), img)
    bic = img.resize((64, 64), Image.BICUBIC)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(bic, dtype=int)).mean() > 0.5


class RecordsExecutorMode(torch.nn.Module):
    """A stand-in network that notes whether TorchScript's optimising executor is on while it runs."""

    def __init__(self, scale):
        super().__init__()
        self.scale, self.seen = scale, []

    def forward(self, x):
        self.seen.append(torch._C._get_graph_executor_optimize())
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")


def test_networks_run_without_the_profiling_executor_and_the_setting_is_restored():
    from imgapi.stylize import stylize
    before = torch._C._get_graph_executor_optimize()
    sr, style = RecordsExecutorMode(4), RecordsExecutorMode(1)
    engine.upscale(sr, Image.new("RGB", (8, 8), (10, 20, 30)))
    stylize(style, Image.new("RGB", (8, 8), (10, 20, 30)))
    assert sr.seen == [False] and style.seen == [False]
    assert torch._C._get_graph_executor_optimize() == before


class _Spy:
    """Stands in for the ``pyspng`` module: counts the decodes it is asked for, or refuses to be asked."""

    def __init__(self, real, allowed=True):
        self.real, self.allowed, self.attempts, self.calls = real, allowed, 0, 0

    def load(self, data, fmt=None):
        assert self.allowed, "libspng was asked to decode a PNG that Pillow's path must handle"
        self.attempts += 1
        out = self.real.load(data, fmt)
        self.calls += 1
        return out


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_plain_png_decodes_through_libspng_to_the_same_pixels(monkeypatch, mode):
    img = photo(37, 23).convert(mode)
    if mode == "RGBA":
        img.putalpha(Image.fromarray(np.arange(37 * 23, dtype=np.uint8).reshape(23, 37)))
    data = encode(img)
    monkeypatch.setattr(images, "pyspng", None)
    want = [None if a is None else np.asarray(a) for a in images.decode(data, BIG)]
    spy = _Spy(pytest.importorskip("pyspng"))
    monkeypatch.setattr(images, "pyspng", spy)
    for arrays in (False, True):
        rgb, alpha = images.decode(data, BIG, arrays=arrays)
        assert (rgb.mode, rgb.size) == ("RGB", (37, 23)) if not arrays else rgb.shape == (23, 37, 3)
        np.testing.assert_array_equal(np.asarray(rgb), want[0])
        assert (alpha is None) == (mode == "RGB")
        if alpha is not None:
            np.testing.assert_array_equal(np.asarray(alpha), want[1])
    assert spy.calls == 2


def _with_text(img):
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "hello")
    return encode(img, pnginfo=info)


def _with_exif(img):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return encode(img, exif=exif)


@pytest.mark.parametrize("make, size", [
    (lambda img: _with_exif(img), (20, 30)),  # eXIf: the orientation is applied
    (lambda img: encode(img, transparency=(0, 0, 0)), (30, 20)),  # tRNS: becomes alpha
    (lambda img: encode(img, icc_profile=b"not a profile"), (30, 20)),  # iCCP
    (_with_text, (30, 20)),  # text may carry EXIF ("Raw profile type exif")
    (lambda img: encode(img.convert("L")), (30, 20)),  # not RGB(A)
])
def test_pngs_with_chunks_that_decode_acts_on_go_to_pillow(monkeypatch, make, size):
    pytest.importorskip("pyspng")
    monkeypatch.setattr(images, "pyspng", _Spy(None, allowed=False))
    rgb, alpha = images.decode(make(photo(30, 20)), BIG)
    assert rgb.mode == "RGB" and rgb.size == size


def test_png_that_libspng_refuses_is_left_to_pillow(monkeypatch):
    """A row with an undefined filter type: libspng refuses it, and the answer is Pillow's (a 415), not a 500."""
    spy = _Spy(pytest.importorskip("pyspng"))
    monkeypatch.setattr(images, "pyspng", spy)
    raw = b"".join(b"\x00" + row.tobytes() for row in np.asarray(photo(30, 20)))
    png = images._chunk(b"IHDR", struct.pack(">IIBBBBB", 30, 20, 8, 2, 0, 0, 0)) + images._chunk(
        b"IDAT", zlib.compress(b"\x07" + raw[1:])) + images._chunk(b"IEND", b"")
    with pytest.raises(ApiError) as err:
        images.decode(b"\x89PNG\r\n\x1a\n" + png, BIG)
    assert err.value.status == 415 and spy.attempts == 1 and spy.calls == 0


_SEEN_AT_TORCH_IMPORT = r"""
import os, sys
class Spy:  # records GOMP_SPINCOUNT when torch is first imported: libgomp reads it then
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("at import torch:", os.environ.get("GOMP_SPINCOUNT"))
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Spy())
import {module}
"""


@pytest.mark.parametrize("module", ["imgapi.app", "handler"])
def test_openmp_spin_count_is_set_before_torch_loads_and_a_given_value_wins(module):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for given, expected in ((None, "10000"), ("300000", "300000")):
        run_env = env if given is None else dict(env, GOMP_SPINCOUNT=given)
        out = subprocess.run([sys.executable, "-c", _SEEN_AT_TORCH_IMPORT.replace("{module}", module)], cwd=root,
                             env=dict(run_env, PYTHONPATH=root), capture_output=True, text=True, timeout=120)
        assert f"at import torch: {expected}" in out.stdout, out.stderr[-2000:]


def test_warm_up_runs_a_small_forward_and_tolerates_a_module_that_refuses_it():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((tuple(x.shape), float(x.min()), float(x.max())))
            return x

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("no")

    assert engine.warm_up(Probe()) is True
    assert seen == [((1, 3, 16, 16), 0.0, 1.0)]  # an image in the networks' range, not noise or zeros
    assert engine.warm_up(Broken()) is False


def test_models_are_warmed_up_when_the_store_loads_them(tiny_weights, caplog):
    """The store's first load runs the module once (engine.warm_up), so the first request's forward is not
    the module's first run; the log line says so."""
    import json
    import logging

    from imgapi.config import Config
    from imgapi.store import ModelStore
    with caplog.at_level(logging.INFO, logger="imgapi"):
        ModelStore(Config(weights_dir=tiny_weights)).get("srgan")
    loaded = [json.loads(r.getMessage()) for r in caplog.records if "model_loaded" in r.getMessage()]
    assert loaded and loaded[0]["model"] == "srgan" and loaded[0]["warmed_up"] is True
