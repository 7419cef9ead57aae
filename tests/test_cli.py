"""``python -m imgapi stylize`` (imgapi/__main__.py) with a named style or any painting: the same pixels as
``POST /stylize`` for the same bytes and options (one UniversalStyles, one decoder), presets by name,
exactly one of ``--style`` and ``--style-image``, and a bad painting reported with the server's message."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgapi.__main__ import main as cli
from imgapi.app import create_app
from imgapi.config import Config
from tests.helpers import encode, png_bytes
from tools.fixtures import tiny_painting

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tiny_weights, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("TORCH_THREADS", "1")
    return {**os.environ, "WEIGHTS_DIR": str(tiny_weights), "TORCH_THREADS": "1"}


@pytest.fixture
def api(tiny_weights):
    return create_app(Config(weights_dir=tiny_weights, torch_threads=1)).test_client()


def painting_png(seed=3):
    return encode(Image.fromarray(tiny_painting(seed=seed)))


def from_route(api, photo, fields, painting=None):
    body = {"image": (io.BytesIO(photo), "p.png"), **fields}
    if painting is not None:
        body["style_image"] = (io.BytesIO(painting), "painting.png")
    resp = api.post("/stylize", data=body, headers={"Accept": "image/png"})
    assert resp.status_code == 200, resp.get_json()
    return np.asarray(Image.open(io.BytesIO(resp.data)))


def pixels(path):
    return np.asarray(Image.open(path))


def test_style_image_gives_the_routes_pixels(env, api, tmp_path, capsys):
    photo = png_bytes(30, 20, "RGBA", seed=4)
    (tmp_path / "p.png").write_bytes(photo)
    (tmp_path / "wave.png").write_bytes(painting_png())
    options = ["--strength", "0.7", "--preserve-color", "--max-side", "24"]

    assert cli(["stylize", str(tmp_path / "p.png"), "--style-image", str(tmp_path / "wave.png"),
                "-o", str(tmp_path / "out"), *options]) == 0

    ours = pixels(tmp_path / "out" / "p_wave.png")  # named like the page's download, photo_<painting>.png
    theirs = from_route(api, photo, {"strength": "0.7", "preserve_color": "true", "max_side": "24"},
                        painting_png())
    assert ours.shape == theirs.shape == (16, 24, 4)
    np.testing.assert_array_equal(ours, theirs)
    assert "p_wave.png (24x16" in capsys.readouterr().out


def test_one_input_into_a_png_file_name(env, tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(20, 12))
    (tmp_path / "painting.jpg").write_bytes(encode(Image.fromarray(tiny_painting()), "JPEG", quality=95))
    assert cli(["stylize", str(tmp_path / "p.png"), "--style-image", str(tmp_path / "painting.jpg"),
                "-o", str(tmp_path / "result.png")]) == 0
    assert pixels(tmp_path / "result.png").shape == (12, 20, 3)
    with pytest.raises(SystemExit) as info:
        cli(["stylize", str(tmp_path / "p.png"), str(tmp_path / "p.png"), "--style", "stripes",
             "-o", str(tmp_path / "x.png")])
    assert info.value.code == 2


def test_a_preset_by_name_is_the_routes_and_its_paintings(env, api, tmp_path):
    photo = png_bytes(24, 16, seed=2)
    (tmp_path / "p.png").write_bytes(photo)
    (tmp_path / "stripes.png").write_bytes(painting_png())
    assert cli(["stylize", str(tmp_path / "p.png"), "--style", "stripes", "-o", str(tmp_path / "a")]) == 0
    preset = pixels(tmp_path / "a" / "p_stripes.png")
    np.testing.assert_array_equal(preset, from_route(api, photo, {"style": "stripes"}))
    # The preset was made from this very painting (tools/fixtures.py): the same picture either way.
    assert cli(["stylize", str(tmp_path / "p.png"), "--style-image", str(tmp_path / "stripes.png"),
                "-o", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(preset, pixels(tmp_path / "b" / "p_stripes.png"))


def test_a_trained_network_by_name_still_works(env, api, tmp_path):
    photo = png_bytes(20, 12, seed=1)
    (tmp_path / "p.png").write_bytes(photo)
    assert cli(["stylize", str(tmp_path / "p.png"), "--style", "mosaic", "-o", str(tmp_path / "o")]) == 0
    np.testing.assert_array_equal(pixels(tmp_path / "o" / "p_mosaic.png"), from_route(api, photo, {"style": "mosaic"}))


@pytest.mark.parametrize("style_args, given", [
    ([], "neither was given"),
    (["--style", "stripes", "--style-image", "painting.png"], "both were given"),
])
def test_exactly_one_of_style_and_style_image(env, tmp_path, capsys, style_args, given):
    with pytest.raises(SystemExit) as info:
        cli(["stylize", "p.png", "-o", str(tmp_path / "o"), *style_args])
    assert info.value.code == 2  # argparse's usage error
    err = capsys.readouterr().err
    assert "usage:" in err and "exactly one of --style NAME" in err and "--style-image PAINTING" in err
    assert given in err


def test_unknown_style_lists_networks_and_presets(env, tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(8, 8))
    with pytest.raises(SystemExit) as info:
        cli(["stylize", str(tmp_path / "p.png"), "--style", "nope", "-o", str(tmp_path / "o")])
    assert str(info.value.code) == "unknown style 'nope'. Styles: mosaic, stripes"


def test_a_bad_painting_is_the_servers_message_without_a_traceback(env, api, tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(8, 8))
    (tmp_path / "notes.jpg").write_text("not a painting, only text named so")
    server = api.post("/stylize", data={"image": (io.BytesIO(png_bytes(8, 8)), "p.png"),
                                        "style_image": (io.BytesIO(b"not a painting, only text named so"), "n.jpg")})
    assert server.status_code == 415
    message = server.get_json()["error"]["message"]
    assert message.startswith("style_image: ")

    done = subprocess.run([sys.executable, "-m", "imgapi", "stylize", str(tmp_path / "p.png"), "--style-image",
                           str(tmp_path / "notes.jpg"), "-o", str(tmp_path / "o")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 1
    assert done.stderr.strip() == f"{tmp_path / 'notes.jpg'}: {message}"
    assert not (tmp_path / "o").exists()


def test_too_many_pixels_and_a_missing_painting(env, tmp_path, monkeypatch):
    (tmp_path / "p.png").write_bytes(png_bytes(8, 8))
    (tmp_path / "big.png").write_bytes(encode(Image.new("RGB", (40, 40), (20, 90, 160))))
    monkeypatch.setenv("MAX_STYLIZE_PIXELS", str(32 * 32))
    with pytest.raises(SystemExit) as info:
        cli(["stylize", str(tmp_path / "p.png"), "--style-image", str(tmp_path / "big.png"), "-o", str(tmp_path)])
    assert str(info.value.code).startswith(f"{tmp_path / 'big.png'}: style_image: the image is 40x40 = 1600 pixels")
    with pytest.raises(SystemExit) as info:
        cli(["stylize", str(tmp_path / "p.png"), "--style-image", str(tmp_path / "gone.png"), "-o", str(tmp_path)])
    assert str(info.value.code) == f"{tmp_path / 'gone.png'}: the painting could not be read (No such file or directory)"
