"""training.train_decoders: a tiny run on a random VGG writes the traced encoder and decoder with their
manifest entries into its own folder, resumes with the same command, and never writes weights/."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from model.universal import LEVELS, NestedDecoder, decode
from model.vgg import VGG16Features
from training import train_decoders


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for sub, n in (("train", 2), ("val", 1)):
        (tmp_path / sub).mkdir()
        for i in range(n):
            img = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / sub / f"{i}.png")
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in VGG16Features(last="relu4_3").state_dict().items()}, tmp_path / "vgg.pt")
    return tmp_path


def run(folders, steps, *extra):
    return train_decoders.main(["--data", str(folders / "train"), "--val-dir", str(folders / "val"),
                                "--vgg", str(folders / "vgg.pt"), "--out", str(folders / "run"), "--size", "32",
                                "--batch", "1", "--max-steps", str(steps), "--threads", "1", "--precision", "fp32",
                                *extra])


def test_a_tiny_run_exports_both_files_with_their_entries_and_resumes(folders):
    run(folders, 2, "--depth", "2")
    models = json.loads((folders / "run" / "manifest.json").read_text())["models"]
    assert set(models) == {"universal/encoder", "universal/decoder"}
    entry = models["universal/decoder"]
    assert entry["training"]["steps"] == 2 and entry["depth"] == 2 and entry["photos"] == 1
    assert set(entry["reconstruction_psnr_y"]) == set(LEVELS)
    assert entry["recipe"]["values"]["size"] == 32 and entry["recipe"]["stretches"][0]["overrides"]["depth"] == 2
    run(folders, 4, "--depth", "2", "--lr", "1e-4")
    entry = json.loads((folders / "run" / "manifest.json").read_text())["models"]["universal/decoder"]
    assert entry["training"]["steps"] == 4
    assert [s["from_step"] for s in entry["recipe"]["stretches"]] == [0, 2]  # the lr changed at step 2


def test_the_traced_decoder_decodes_as_the_trained_one_from_every_level(folders):
    run(folders, 1)
    traced = torch.jit.load(str(folders / "run" / "universal_decoder.pt"))
    eager = NestedDecoder()
    eager.load_state_dict(torch.load(folders / "run" / "checkpoint.pt", weights_only=False)["decoder"])
    eager.eval()
    encoder = torch.jit.load(str(folders / "run" / "universal_encoder.pt"))
    with torch.inference_mode():
        feats = encoder(torch.rand(1, 3, 40, 24))
        for level in (1, 2, 3, 4):
            torch.testing.assert_close(decode(traced, feats[level - 1], level), decode(eager, feats[level - 1], level))


def test_a_run_refuses_the_shipped_weights_folder(folders):
    with pytest.raises(SystemExit, match="shipped weights"):
        train_decoders.main(["--out", str(train_decoders.recipes.SHIPPED), "--max-steps", "0"])
