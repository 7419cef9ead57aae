"""Smoke run of the SR training pipeline on the CPU: tiny network, tiny synthetic images, a few
seconds per phase; the traced output must load and upscale, and the manifest must describe it."""
import json

import torch

from model.vgg import VGG16Features
from tests.helpers import photo
from training import train_sr


def test_train_sr_smoke(tmp_path):
    data, val = tmp_path / "train", tmp_path / "val"
    data.mkdir(), val.mkdir()
    for i in range(3):
        photo(96, 80, seed=i).save(data / f"p{i}.png")
    photo(64, 48, seed=9).save(val / "v.png")
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in VGG16Features("relu4_3").state_dict().items()}, tmp_path / "vgg.pt")
    args = ["--data", str(data), "--val", str(val), "--vgg", str(tmp_path / "vgg.pt"),
            "--minutes", "0.15", "--gan-fraction", "0.5", "--batch", "2", "--patch", "8",
            "--blocks", "1", "--channels", "8", "--device", "cpu", "--threads", "1",
            "--out", str(tmp_path / "w"), "--checkpoint-dir", str(tmp_path / "ck"),
            "--docs", str(tmp_path / "docs"), "--val-every", "2"]
    train_sr.main(args)
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    assert set(manifest) == {"srgan", "srresnet"}
    for name, entry in manifest.items():
        assert entry["training"]["steps"] > 0 and "psnr_y" in entry and "bicubic_psnr_y" in entry
        net = torch.jit.load(str(tmp_path / "w" / entry["file"]))
        with torch.inference_mode():
            y = net(torch.rand(1, 3, 10, 13))
        assert y.shape == (1, 3, 40, 52) and torch.isfinite(y).all()
    assert (tmp_path / "docs" / "sr_training_curves.png").stat().st_size > 1000
    history = json.loads((tmp_path / "ck" / "history.json").read_text())
    assert any("psnr_y" in h for h in history)
    # Running again resumes from the checkpoint: both phases are done, nothing is retrained.
    steps = {n: e["training"]["steps"] for n, e in manifest.items()}
    train_sr.main(args)
    again = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    assert {n: e["training"]["steps"] for n, e in again.items()} == steps


def trained_looking_sr(seed=0):
    """A small SRResNet whose BatchNorm statistics, PReLU slopes and tail are not at their initial values."""
    from model.srresnet import SRResNet
    torch.manual_seed(seed)
    net = SRResNet(channels=8, blocks=2)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
        if isinstance(m, torch.nn.PReLU):
            m.weight.data.uniform_(0.0, 0.5)
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    return net.eval()


def test_exported_sr_network_gives_the_trained_networks_output_at_any_size(tmp_path):
    net = trained_looking_sr()
    train_sr.export(net, tmp_path / "sr.pt")
    served = torch.jit.load(str(tmp_path / "sr.pt")).eval()
    assert "tail.0.0.weight" in served.state_dict()  # the rewritten tail, not the trained 9x9 one
    for shape in [(1, 3, 17, 23), (1, 3, 32, 32), (2, 3, 9, 40)]:
        x = torch.rand(shape)
        with torch.inference_mode():
            torch.testing.assert_close(served(x), net(x), atol=2e-5, rtol=0)
