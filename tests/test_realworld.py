"""make eval's real-world table (training/realworld.py): the protocol's uploads, the deep-feature distance, and
the table itself on tiny weights with a random VGG16 (the peer is left out: it is the bench's requirement)."""
import io
import json

import numpy as np
import torch
from PIL import Image, ImageFilter

from model.vgg import VGG16Features
from tests.helpers import photo
from training import metrics, realworld


def test_uploads_follow_the_protocol_jpeg_quality_in_turn_and_noise_on_every_other_photo():
    from imgapi import damage
    hr = photo(96, 80, seed=3)
    for i, quality in enumerate(realworld.QUALITIES):
        true, data = realworld.upload(hr, i)
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.size == (24, 20) and true.size == (96, 80)
        assert abs(damage.jpeg_quality(img) - quality) <= 1
    # even indices are the clean shrink saved as JPEG; odd ones carry noise first
    for i in range(4):
        buf = io.BytesIO()
        metrics.degrade(hr)[1].save(buf, "JPEG", quality=realworld.QUALITIES[i])
        assert (realworld.upload(hr, i)[1] == buf.getvalue()) == (i % 2 == 0)


def test_the_feature_distance_is_zero_for_the_same_picture_and_grows_with_blur():
    torch.manual_seed(0)
    vgg = VGG16Features().eval()
    true = photo(64, 64, seed=1)
    a = np.asarray(true)
    soft = np.asarray(true.filter(ImageFilter.GaussianBlur(1)))
    softer = np.asarray(true.filter(ImageFilter.GaussianBlur(3)))
    assert realworld.feature_distance(vgg, a, a) < 1e-9
    assert 0 < realworld.feature_distance(vgg, soft, a) < realworld.feature_distance(vgg, softer, a)


def test_the_table_measures_every_model_beside_bicubic_and_the_ablation_only_when_asked(tmp_path, real_weights,
                                                                                     capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        photo(80, 72, seed=i).save(photos / f"p{i}.png")
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in VGG16Features().state_dict().items()}, tmp_path / "vgg.pt")
    args = ["--data", str(photos), "--weights", str(real_weights), "--vgg", str(tmp_path / "vgg.pt"),
            "--models", "real", "srresnet", "--no-peer"]
    assert realworld.main(args + ["--json", str(tmp_path / "t.json"), "--sheet", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ")[0].lstrip("| ") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["bicubic", "real (level measured)", "real at level 0", "real at level 0.5", "real at level 1",
                        "srresnet", "true photo"]
    means = json.loads((tmp_path / "t.json").read_text())
    assert set(means["srresnet"]) == {"psnr_y", "feature_distance", "grid"} and set(means["true photo"]) == {"grid"}
    assert means["bicubic"]["grid"] < 0.5 and means["true photo"]["grid"] < 0.5  # smooth pictures draw no grid
    assert "Real-ESRGAN" not in out
    sheet = Image.open(tmp_path / "s.png")  # upload, bicubic, real, srresnet, the true photo; no ablation
    assert sheet.size == (5 * 128, 18 + 2 * 128)
    assert realworld.main(args + ["--no-ablation"]) == 0
    assert "at level" not in capsys.readouterr().out
