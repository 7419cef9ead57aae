"""The server's parts on their own: the one decision "inline, presigned URL or 413" (imgapi/respond.py),
stylize with alpha in the engine layer (imgapi/stylize.py) called the same way by the route and the CLI,
and the size rule for imgapi/'s functions."""
import ast
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgapi import respond
from imgapi import stylize as style_engine
from imgapi.__main__ import main as cli
from imgapi.app import create_app
from imgapi.config import Config
from imgapi.errors import ApiError
from imgapi.images import png_size_bound
from tools.fixtures import TinyStyle
from tests.helpers import encode, photo

IMGAPI = Path(__file__).resolve().parents[1] / "imgapi"
MAX_FUNCTION_LINES = 60


# -- inline, presigned URL or 413 ------------------------------------------------------------------------
@pytest.mark.parametrize("limit, bucket, png_size, expected", [
    (0, None, 10**9, respond.INLINE),                 # no limit (locally): always inline
    (6_000_000, None, 1000, respond.INLINE),
    (6_000_000, "results", 1000, respond.INLINE),     # a bucket is used only when the result does not fit
    (6_000_000, "results", 5_000_000, respond.STORED),
    (6_000_000, None, 5_000_000, respond.REFUSED),
])
def test_delivery_decides_inline_stored_or_refused(limit, bucket, png_size, expected):
    config = Config(max_response_bytes=limit, result_bucket=bucket)
    assert respond.delivery(png_size, config) == expected


def test_delivery_counts_base64_and_the_json_fields():
    # base64 makes 3 bytes 4, and 1024 bytes are kept for the other fields: exactly at the limit is inline.
    assert respond.inline_size(3000) == 4000 + 1024
    config = Config(max_response_bytes=5024, result_bucket=None)
    assert respond.delivery(3000, config) == respond.INLINE
    assert respond.delivery(3001, config) == respond.REFUSED


def test_the_check_before_work_refuses_only_what_could_not_go_back():
    limit = png_size_bound(100, 100, 4) * 4 // 3 + 1024
    fits = Config(max_response_bytes=limit, result_bucket=None)
    respond.check_result_fits(100, 100, 4, fits)  # the largest PNG of that size just fits: no error
    with pytest.raises(ApiError) as exc_info:
        respond.check_result_fits(101, 100, 4, fits)
    assert (exc_info.value.status, exc_info.value.code) == (413, "result_too_large")
    assert f"{limit}-byte response limit" in exc_info.value.message
    respond.check_result_fits(101, 100, 4, Config(max_response_bytes=limit, result_bucket="results"))
    respond.check_result_fits(10_000, 10_000, 4, Config(max_response_bytes=0, result_bucket=None))


# -- stylize with alpha ----------------------------------------------------------------------------------
def _rgba(w=40, h=30):
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1)), "L")
    return photo(w, h), alpha


@pytest.mark.parametrize("max_side", [40, 20])
def test_stylize_with_alpha_resizes_the_alpha_to_the_result(max_side):
    rgb, alpha = _rgba()
    module = TinyStyle().eval()
    out, out_alpha = style_engine.stylize_with_alpha(module, rgb, alpha, strength=0.7, max_side=max_side)
    assert np.array_equal(np.asarray(out), np.asarray(style_engine.stylize(module, rgb, strength=0.7,
                                                                            max_side=max_side)))
    assert out_alpha.mode == "L" and out_alpha.size == out.size
    assert np.array_equal(np.asarray(out_alpha), np.asarray(alpha.resize(out.size, Image.LANCZOS)))
    # The server's form, arrays, gives the same pixels and keeps its kind.
    arr, arr_alpha = style_engine.stylize_with_alpha(module, np.asarray(rgb), np.asarray(alpha), strength=0.7,
                                                     max_side=max_side)
    assert isinstance(arr, np.ndarray) and isinstance(arr_alpha, np.ndarray)
    assert np.array_equal(arr, np.asarray(out)) and np.array_equal(arr_alpha, np.asarray(out_alpha))


def test_stylize_with_alpha_without_alpha():
    rgb, _ = _rgba()
    out, alpha = style_engine.stylize_with_alpha(TinyStyle().eval(), rgb, None, preserve_color=True)
    assert alpha is None and out.size == rgb.size


def test_the_route_and_the_cli_make_the_same_stylize_call(tiny_weights, tmp_path, monkeypatch):
    calls = []
    real = style_engine.stylize_with_alpha

    def spy(module, rgb, alpha=None, **options):
        calls.append((type(alpha) if alpha is not None else None, options))
        return real(module, rgb, alpha, **options)

    monkeypatch.setattr(style_engine, "stylize_with_alpha", spy)
    rgb, alpha = _rgba()
    data = encode(Image.merge("RGBA", (*rgb.split(), alpha)))
    client = create_app(Config(weights_dir=tiny_weights, torch_threads=1)).test_client()
    resp = client.post("/stylize", data={"image": (io.BytesIO(data), "p.png"), "style": "mosaic", "strength": "0.7",
                                         "preserve_color": "true", "max_side": "20"},
                       headers={"Accept": "image/png"})
    assert resp.status_code == 200, resp.get_json()
    (tmp_path / "p.png").write_bytes(data)
    monkeypatch.setenv("WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("TORCH_THREADS", "1")
    assert cli(["stylize", str(tmp_path / "p.png"), "--style", "mosaic", "-o", str(tmp_path / "out"),
                "--strength", "0.7", "--preserve-color", "--max-side", "20"]) == 0
    options = {"strength": 0.7, "preserve_color": True, "max_side": 20}
    assert [c[1] for c in calls] == [options, options] and all(c[0] is not None for c in calls)
    # And the same RGBA result, the alpha resized alongside the colour to the shrunk size.
    from_route = Image.open(io.BytesIO(resp.data))
    from_cli = Image.open(tmp_path / "out" / "p_mosaic.png")
    assert from_route.mode == from_cli.mode == "RGBA" and from_route.size == from_cli.size == (20, 15)
    assert np.array_equal(np.asarray(from_route), np.asarray(from_cli))


# -- size of imgapi/'s functions -------------------------------------------------------------------------
def test_no_function_in_imgapi_is_over_60_lines():
    long = []
    for path in sorted(IMGAPI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
