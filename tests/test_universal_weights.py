"""Quick checks of the shipped universal style model: the encoder, the decoder and every preset load through
the store and match the manifest, the decoder reconstructs the held-out photos as the manifest says, and
each preset is the statistics of its painting under the shipped encoder."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgapi.config import ROOT, Config
from imgapi.store import ModelStore, sha256_file
from imgapi.universal import LEVELS, in_precision, load_stats, stylize_universal
from model.universal import weights_digest
from tests.helpers import photo
from training.train_decoders import centre_crops, validate

WEIGHTS = ROOT / "weights"
VAL = Path(__file__).parent / "data" / "sr_val"
MANIFEST = json.loads((WEIGHTS / "manifest.json").read_text())["models"]
PRESETS = sorted(n for n, e in MANIFEST.items() if e.get("kind") == "preset")
NAMED = sorted(n for n, e in MANIFEST.items() if n.startswith("style/"))


@pytest.fixture(scope="module")
def store():
    return ModelStore(Config(torch_threads=2))


def test_at_least_eight_named_styles_with_title_artist_licence_and_thumbnail():
    assert len(NAMED) >= 8
    for name in NAMED:
        e = MANIFEST[name]
        assert e["title"] and e["artist"] and e["licence"] and e["source"], name
        assert (WEIGHTS / e["thumbnail"]).is_file(), name


@pytest.mark.parametrize("name", ["universal/encoder", "universal/decoder"] + PRESETS)
def test_file_matches_manifest(name):
    assert sha256_file(WEIGHTS / MANIFEST[name]["file"]) == MANIFEST[name]["sha256"]


def test_decoder_reconstructs_the_held_out_photos_as_the_manifest_says(store):
    entry = MANIFEST["universal/decoder"]
    encoder, decoder = store.get("universal/encoder").module, store.get("universal/decoder").module
    scores, _ = validate(encoder, decoder, centre_crops(VAL), "fp32")
    assert entry["photos"] == len(list(VAL.glob("*.png")))
    for level in LEVELS:
        assert scores[level] == pytest.approx(entry["reconstruction_psnr_y"][level], abs=0.05), level


@pytest.mark.parametrize("name", PRESETS)
def test_preset_belongs_to_the_shipped_encoder_and_stylizes(store, name):
    entry = MANIFEST[name]
    assert entry["encoder_weights"] == weights_digest(store.get("universal/encoder").module)
    stats = load_stats(WEIGHTS / entry["file"])
    widths = store.get("universal/encoder").module.features
    assert [stats[level][0].shape[0] for level in LEVELS] == [64, 128, 256, 512], widths
    rgb = np.asarray(photo(48, 40, seed=5))
    out = stylize_universal(store.get("universal/encoder").module, store.get("universal/decoder").module, rgb,
                            stats)
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() > 10


def test_served_detail_keeps_more_of_the_photos_edges(store):
    """The decoder's manifest ``detail`` (the photo's own share of relu1_1) is why the gallery's pictures keep
    the photo's edges: the output's luma gradients follow the photo's more closely than without it."""
    def edges(rgb):
        y = rgb.astype(float).mean(2)
        return np.hypot(np.diff(y, axis=1)[:-1], np.diff(y, axis=0)[:, :-1]).ravel()

    entry = MANIFEST["universal/decoder"]
    assert 0.0 < entry["detail"] <= 1.0
    encoder, decoder = store.get("universal/encoder").module, store.get("universal/decoder").module
    stats = load_stats(WEIGHTS / MANIFEST["style/the_scream"]["file"])
    served, without = [], []
    for path in sorted(VAL.glob("*.png"))[:3]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for detail, out in ((entry["detail"], served), (0.0, without)):
            styled = stylize_universal(encoder, decoder, rgb, stats, depth=entry["depth"], detail=detail)
            out.append(np.corrcoef(edges(rgb), edges(styled))[0, 1])
    assert np.mean(served) > np.mean(without) + 0.1


def test_no_light_line_along_the_borders(store):
    """A stylized picture's outermost rows and columns differ from the lines 4 pixels in no more than lines
    inside the picture do (without the margin of reflected pixels the encoder's zero padding lit each border:
    1.8x the inner steps on these photos)."""
    def step(rgb, k):
        y = rgb.astype(float).mean(2)
        return np.mean([abs(y[k].mean() - y[k + 4].mean()), abs(y[-1 - k].mean() - y[-5 - k].mean()),
                        abs(y[:, k].mean() - y[:, k + 4].mean()), abs(y[:, -1 - k].mean() - y[:, -5 - k].mean())])

    entry = MANIFEST["universal/decoder"]
    encoder, decoder = store.get("universal/encoder").module, store.get("universal/decoder").module
    border = inner = 0.0
    for style in ("starry_night", "composition_vii"):
        stats = load_stats(WEIGHTS / MANIFEST[f"style/{style}"]["file"])
        for path in sorted(VAL.glob("*.png"))[:3]:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            styled = stylize_universal(encoder, decoder, rgb, stats, depth=entry["depth"], detail=entry["detail"])
            border += step(styled, 0)
            inner += np.mean([step(styled, k) for k in (8, 12, 16, 20)])
    assert border < 1.3 * inner


def test_bf16_computes_in_bfloat16_and_stays_near_float32(store):
    """``precision="bf16"`` runs bfloat16 copies of the traced modules (a traced module ignores autocast and
    would silently compute in float32): the picture differs from float32's, by a few grey levels (the
    whitening of small eigenvalues amplifies rounding: dropping those under 1e-4 of the largest instead of 1e-5
    moves a float32 picture 5x as far)."""
    encoder, decoder = store.get("universal/encoder").module, store.get("universal/decoder").module
    assert {p.dtype for p in in_precision(encoder, "bf16").parameters()} == {torch.bfloat16}
    assert in_precision(encoder, "bf16") is in_precision(encoder, "bf16") and in_precision(encoder, "fp32") is encoder
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    entry = MANIFEST["universal/decoder"]
    stats = load_stats(WEIGHTS / MANIFEST["style/starry_night"]["file"])
    rgb = np.asarray(Image.open(sorted(VAL.glob("*.png"))[0]).convert("RGB"))
    fp32, bf16 = (stylize_universal(encoder, decoder, rgb, stats, depth=entry["depth"], detail=entry["detail"],
                                    precision=p).astype(float) for p in ("fp32", "bf16"))
    assert 0.1 < np.abs(fp32 - bf16).mean() < 8.0
