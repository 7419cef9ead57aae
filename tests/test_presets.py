"""training.make_presets: gallery paintings -> statistics files, thumbnails and manifest entries, in a run's
folder (never weights/), the same statistics the server computes for the uploaded painting."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgapi.store import sha256_file
from imgapi.universal import load_stats, style_statistics
from model.universal import weights_digest
from tools.fixtures import tiny_painting
from training import make_presets


@pytest.fixture
def styles_dir(tmp_path):
    folder = tmp_path / "styles"
    folder.mkdir()
    Image.fromarray(tiny_painting(48, seed=1)).save(folder / "stripes.jpg", quality=95)
    Image.fromarray(255 - tiny_painting(48, seed=2)).save(folder / "night.jpg", quality=95)
    Image.fromarray(tiny_painting(48, seed=3)).save(folder / "wallpaper.jpg", quality=95)
    meta = {"stripes": {"title": "Stripes", "artist": "A, 1900", "licence": "Public domain", "source": "s"},
            "night": {"title": "Night", "artist": "B, 1901", "licence": "Public domain", "source": "s"},
            "wallpaper": {"title": "Wall", "artist": "C", "licence": "CC-BY-SA-4.0", "source": "s"}}
    (folder / "styles.json").write_text(json.dumps(meta))
    return folder


def test_presets_are_the_servers_statistics_of_each_public_domain_painting(tiny_weights, styles_dir, tmp_path):
    encoder_path = tiny_weights / "universal_encoder.pt"
    out = tmp_path / "run"
    make_presets.main(["--encoder", str(encoder_path), "--styles-dir", str(styles_dir), "--out", str(out)])
    models = json.loads((out / "manifest.json").read_text())["models"]
    assert sorted(models) == ["style/night", "style/stripes"]  # the CC-BY-SA wallpaper is not in the gallery
    entry = models["style/stripes"]
    assert entry["kind"] == "preset" and entry["title"] == "Stripes" and entry["licence"] == "Public domain"
    assert entry["encoder_weights"] == weights_digest(torch.jit.load(str(encoder_path)))
    assert entry["sha256"] == sha256_file(out / entry["file"])
    with Image.open(out / entry["thumbnail"]) as thumb:
        assert max(thumb.size) == 48  # never enlarged
    encoder = torch.jit.load(str(encoder_path))
    with Image.open(styles_dir / "stripes.jpg") as im:
        expected = style_statistics(encoder, im.convert("RGB"))
    got = load_stats(out / entry["file"])
    for level, (mean, colouring) in expected.items():
        np.testing.assert_allclose(got[level][0], mean, rtol=1e-6)
        np.testing.assert_allclose(got[level][1], colouring, rtol=1e-6)


def test_named_paintings_only_and_unknown_names_refused(tiny_weights, styles_dir, tmp_path):
    out = tmp_path / "run"
    make_presets.main(["--encoder", str(tiny_weights / "universal_encoder.pt"), "--styles-dir", str(styles_dir),
                       "--out", str(out), "--style", "night"])
    assert list(json.loads((out / "manifest.json").read_text())["models"]) == ["style/night"]
    with pytest.raises(ValueError, match="Known: night, stripes, wallpaper"):
        make_presets.gallery(styles_dir, ["sunflowers"])
