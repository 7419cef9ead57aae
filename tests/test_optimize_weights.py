"""tools/optimize_weights: files traced the old way are re-exported in place, verified and re-hashed."""
import json

import torch

from model.transformer_net import TransformerNet
from tools import optimize_weights
from training.manifest import sha256_file, update_manifest


def old_style_file(folder):
    """A style network traced as train_style.py traced them before the channels_last export."""
    torch.manual_seed(0)
    net = TransformerNet(channels=(4, 8, 8), residual_blocks=1).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.fused_norm = False
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.rand(1, 3, 67, 93), check_trace=False)
    traced.save(str(folder / "style_old.pt"))
    update_manifest(folder, "style/old", {"file": "style_old.pt", "kind": "style", "title": "Old"})
    return traced


def manifest_entry(folder):
    return json.loads((folder / "manifest.json").read_text())["models"]["style/old"]


def test_old_style_file_is_reexported_verified_and_rehashed(tmp_path, capsys):
    old = old_style_file(tmp_path)
    before = manifest_entry(tmp_path)["sha256"]

    optimize_weights.main(["--weights", str(tmp_path)])

    entry = manifest_entry(tmp_path)
    assert "re-exported" in capsys.readouterr().out
    assert entry["sha256"] != before and entry["sha256"] == sha256_file(tmp_path / "style_old.pt")
    assert entry["title"] == "Old"
    new = torch.jit.load(str(tmp_path / "style_old.pt")).eval()
    w = new.state_dict()["conv1.conv.weight"]
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert "deconv3.conv.0.weight" in new.state_dict()  # the factored output convolution
    assert new.state_dict()["deconv1.conv.weight"].shape[2:] == (2, 2)  # the low-resolution decoder layers
    x = torch.rand(1, 3, 45, 31)
    with torch.inference_mode():
        torch.testing.assert_close(new(x), old(x), atol=1e-5, rtol=0)

    optimize_weights.main(["--weights", str(tmp_path)])  # a second run leaves the file alone
    assert "already optimized" in capsys.readouterr().out
    assert manifest_entry(tmp_path)["sha256"] == entry["sha256"]


def test_unknown_entry_is_refused_with_the_list(tmp_path):
    old_style_file(tmp_path)
    try:
        optimize_weights.main(["--weights", str(tmp_path), "--models", "style/nope"])
    except SystemExit as e:
        assert "style/nope" in str(e) and "style/old" in str(e)
    else:
        raise AssertionError("an unknown entry was accepted")


def test_sr_file_folded_by_an_earlier_export_gets_the_rewritten_tail(tmp_path, capsys):
    from torch.fx.experimental.optimization import fuse

    from model.srresnet import SRResNet
    torch.manual_seed(0)
    net = SRResNet(channels=8, blocks=2).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    with torch.inference_mode():  # as export() traced before the tail was rewritten
        old = torch.jit.trace(fuse(net).to(memory_format=torch.channels_last), torch.rand(1, 3, 16, 16),
                              check_trace=False)
    old.save(str(tmp_path / "sr_old.pt"))
    update_manifest(tmp_path, "sr_old", {"file": "sr_old.pt", "kind": "sr", "arch": {"bicubic_skip": True}})

    optimize_weights.main(["--weights", str(tmp_path), "--models", "sr_old"])

    assert "re-exported" in capsys.readouterr().out
    new = torch.jit.load(str(tmp_path / "sr_old.pt")).eval()
    assert "tail.0.0.weight" in new.state_dict()
    assert json.loads((tmp_path / "manifest.json").read_text())["models"]["sr_old"]["sha256"] == \
        sha256_file(tmp_path / "sr_old.pt")
    x = torch.rand(1, 3, 19, 13)
    with torch.inference_mode():
        torch.testing.assert_close(new(x), net(x), atol=2e-5, rtol=0)
