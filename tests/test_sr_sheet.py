"""``make eval --sheet``: the SR comparison sheet shows the same window of every result, where the photo is busiest."""
import numpy as np
import torch
from PIL import Image

from model.srresnet import SRResNet
from training import metrics
from training.evaluate import busiest_crop, sr_sheet


def half_busy(w, h, seed=0):
    """A photo grey on the left half and noise on the right half."""
    arr = np.full((h, w, 3), 128, np.uint8)
    arr[:, w // 2:] = np.random.default_rng(seed).integers(0, 256, (h, w - w // 2, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def test_the_busiest_crop_is_where_the_detail_is():
    left, top = busiest_crop(half_busy(160, 96), 48)
    assert left >= 80 and 0 <= top <= 48


def test_the_sheet_shows_bicubic_each_model_and_the_truth_in_the_same_window(tmp_path):
    paths = []
    for i in range(2):
        half_busy(120, 96, seed=i).save(tmp_path / f"p{i}.png")
        paths.append(tmp_path / f"p{i}.png")
    torch.manual_seed(0)
    net = SRResNet(channels=8, blocks=1).eval()
    sheet = sr_sheet([("tiny", net)], paths, crop=40, zoom=2, label_height=18)
    assert sheet.size == (3 * 80, 18 + 2 * 80)
    hr, lr = metrics.degrade(Image.open(paths[1]).convert("RGB"))
    left, top = busiest_crop(hr, 40)

    def cell(col):
        return np.asarray(sheet.crop((col * 80, 18 + 80, col * 80 + 80, 18 + 160)))[::2, ::2]

    np.testing.assert_array_equal(cell(2), np.asarray(hr)[top:top + 40, left:left + 40])
    np.testing.assert_array_equal(cell(0), np.asarray(metrics.bicubic_up(lr))[top:top + 40, left:left + 40])
    assert not np.array_equal(cell(1), cell(2))  # the model's guess, not the truth
