"""Quick checks of the shipped SR weights: they load through the store, match the manifest, and
on the held-out validation images measure what the manifest claims."""
import json
from pathlib import Path

import pytest
import torch

from imgapi import engine
from imgapi.config import ROOT, Config
from imgapi.store import ModelStore, sha256_file
from imgapi.store import conditioned as store_conditioned
from tests.helpers import photo
from training.evaluate import evaluate, summary

WEIGHTS = ROOT / "weights"
VAL = Path(__file__).parent / "data" / "sr_val"
MANIFEST = json.loads((WEIGHTS / "manifest.json").read_text())["models"] if (WEIGHTS / "manifest.json").exists() else {}
SR = [n for n, e in MANIFEST.items() if e.get("kind") == "sr"]


@pytest.fixture(scope="module")
def store():
    return ModelStore(Config(torch_threads=2))


def conditioned(name):
    return store_conditioned(MANIFEST[name])


def at_level(module, level):
    """A conditioned SR module (``real``) run with its damage plane at ``level``, as a 3-channel SR module."""
    return lambda x: module(engine.with_level(x, level))


def test_the_three_sr_models_are_shipped():
    assert {"srgan", "srresnet", "real"} <= set(SR)
    assert conditioned("real") and not conditioned("srgan") and not conditioned("srresnet")


@pytest.mark.parametrize("name", SR)
def test_file_matches_manifest_and_upscales(store, name):
    entry = MANIFEST[name]
    assert sha256_file(WEIGHTS / entry["file"]) == entry["sha256"]
    assert entry["scale"] == 4 and entry["training"]["hardware"] and entry["validation"]["images"]
    out, _ = engine.upscale(store.get(name).module, photo(20, 14), scale=4, level=0.3 if conditioned(name) else None)
    assert out.size == (80, 56)


@pytest.mark.parametrize("name", SR)
def test_validation_quality_is_what_the_manifest_claims(store, name):
    entry = MANIFEST[name]
    assert sorted(p.name for p in VAL.glob("*.png")) == sorted(entry["validation"]["images"])
    module = store.get(name).module
    # a conditioned model's manifest figures are those of a clean shrink at damage level 0
    s = summary(evaluate(at_level(module, 0.0) if conditioned(name) else module, sorted(VAL.glob("*.png"))))
    assert s["psnr_y"] == pytest.approx(entry["psnr_y"], abs=0.05)
    assert s["gain_db"] == pytest.approx(entry["gain_db"], abs=0.05)
    assert s["bicubic_psnr_y"] == pytest.approx(entry["bicubic_psnr_y"], abs=0.01)


def test_srresnet_beats_bicubic(store):
    s = summary(evaluate(store.get("srresnet").module, sorted(VAL.glob("*.png"))))
    assert s["gain_db"] > 0.1


def test_real_keeps_within_a_db_of_srresnet_on_clean_photos_draws_no_dot_grid_and_answers_its_damage_level(store):
    real = store.get("real").module
    clean = summary(evaluate(at_level(real, 0.0), sorted(VAL.glob("*.png"))))
    assert clean["psnr_y"] >= MANIFEST["srresnet"]["psnr_y"] - 1.0 and clean["gain_db"] > 0
    assert clean["grid"] <= clean["true_grid"] + 0.05  # no more 4-px grid than the true photos have
    x = engine.to_tensor(photo(24, 20, seed=2))
    with torch.inference_mode():
        a, b = at_level(real, 0.0)(x), at_level(real, 1.0)(x)
    assert (a - b).abs().max().item() > 1 / 255  # the level plane changes what it paints


def test_tiling_with_shipped_weights_matches_untiled(store):
    net = store.get("srresnet").module
    x = engine.to_tensor(photo(100, 72, seed=4))
    with torch.inference_mode():
        whole = engine.to_tensor(engine.to_image(engine.forward_tiled(net, x, tile=0)))
        tiled = engine.to_tensor(engine.to_image(engine.forward_tiled(net, x, tile=48, overlap=16)))
    assert (whole - tiled).abs().max().item() <= 1 / 255 + 1e-6
