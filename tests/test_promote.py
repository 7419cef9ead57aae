"""``make promote``: a run reaches a weights folder only when it measures at least as well as what is there,
or when forced; the weights folders here are temporary copies, never the real weights/."""
import hashlib
import json
import shutil

import pytest
import torch

from model.srresnet import SRResNet
from tests.helpers import photo
from training import promote
from training.export import export_sr
from training.manifest import sha256_file, update_manifest


def folder_digest(folder):
    """One sha256 over every file of ``folder`` (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def sr_net(noise=0.0, seed=0):
    """A tiny SRResNet at bicubic quality (zero tail), or made worse by ``noise`` on its tail."""
    torch.manual_seed(seed)
    net = SRResNet(channels=8, blocks=1).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, noise) if noise else net.tail.weight.zero_()
    return net


def served(folder, name, net):
    """``net`` exported as ``folder/<name>.pt`` with an SR manifest entry; returns the entry."""
    folder.mkdir(parents=True, exist_ok=True)
    export_sr(net, folder / f"{name}.pt")
    return update_manifest(folder, name, dict(file=f"{name}.pt", kind="sr", scale=4, loss="L1",
                                              training=dict(steps=1)))


@pytest.fixture
def setup(tmp_path):
    """A shipped weights folder (a copy, in tmp_path) with a bicubic-quality srresnet, and validation photos."""
    val = tmp_path / "val"
    val.mkdir()
    for i in range(2):
        photo(48, 40, seed=i).save(val / f"v{i}.png")
    weights = tmp_path / "weights"
    served(weights, "srresnet", sr_net())
    return weights, ["--weights", str(weights), "--data", str(val)]


def test_a_worse_run_is_refused_and_the_weights_stay_as_they_were(tmp_path, setup, capsys):
    weights, args = setup
    before = folder_digest(weights)
    served(tmp_path / "runs" / "srresnet", "srresnet", sr_net(noise=0.2))
    assert promote.main([str(tmp_path / "runs" / "srresnet")] + args) == 1
    out = capsys.readouterr().out
    assert "worse" in out and "Y-PSNR gain" in out and "not promoted" in out
    assert folder_digest(weights) == before


def test_a_forced_promotion_ships_the_worse_run_and_keeps_the_old_entry_as_its_parent(tmp_path, setup, capsys):
    weights, args = setup
    old = json.loads((weights / "manifest.json").read_text())["models"]["srresnet"]
    run = tmp_path / "runs" / "srresnet"
    served(run, "srresnet", sr_net(noise=0.2))
    assert promote.main([str(run), "--force"] + args) == 0
    entry = json.loads((weights / "manifest.json").read_text())["models"]["srresnet"]
    assert sha256_file(weights / "srresnet.pt") == sha256_file(run / "srresnet.pt") == entry["sha256"]
    assert entry["parent"] == old and entry["promoted"]["forced"] is True
    assert entry["promoted"]["figures"]["gain_db"] < 0
    out = capsys.readouterr().out
    assert f"srresnet: srresnet.pt {old['sha256'][:12]} -> {entry['sha256'][:12]}" in out and "(forced)" in out


def test_a_run_as_good_as_what_ships_and_a_new_model_are_promoted(tmp_path, setup):
    weights, args = setup
    run = tmp_path / "runs" / "sr"
    served(run, "srresnet", sr_net())  # the same figures: "at least" the shipped ones
    served(run, "srgan", sr_net(noise=0.01, seed=3))  # nothing of this name ships yet
    assert promote.main([str(run)] + args) == 0
    models = json.loads((weights / "manifest.json").read_text())["models"]
    assert set(models) == {"srresnet", "srgan"}
    assert models["srresnet"]["promoted"]["forced"] is False and "parent" in models["srresnet"]
    assert "parent" not in models["srgan"]
    assert sha256_file(weights / "srgan.pt") == models["srgan"]["sha256"]


def test_a_run_whose_file_does_not_match_its_manifest_is_refused(tmp_path, setup):
    weights, args = setup
    run = tmp_path / "runs" / "srresnet"
    served(run, "srresnet", sr_net())
    shutil.copyfile(weights / "manifest.json", run / "other.json")
    (run / "srresnet.pt").write_bytes(b"not the traced file")
    before = folder_digest(weights)
    with pytest.raises(Exception, match="sha256|srresnet"):
        promote.main([str(run), "--force"] + args)
    assert folder_digest(weights) == before


def test_the_sr_rule_asks_for_the_gain_and_the_detail_at_make_evals_precision():
    shipped = dict(gain_db=1.104, detail=0.355)
    assert promote.sr_rule(dict(gain_db=1.101, detail=0.352), shipped)[0]  # the same at two decimals
    ok, reasons = promote.sr_rule(dict(gain_db=1.05, detail=0.36), shipped)
    assert not ok and "gain" in reasons[0]
    ok, reasons = promote.sr_rule(dict(gain_db=1.2, detail=0.30), shipped)
    assert not ok and "detail" in reasons[0]
    # Detail is closeness to the true images' 1.0: past it is noise, as far off as short of it.
    assert promote.sr_rule(dict(gain_db=-0.6, detail=1.10), dict(gain_db=-0.68, detail=0.85))[0]
    assert not promote.sr_rule(dict(gain_db=-0.6, detail=1.20), dict(gain_db=-0.68, detail=0.85))[0]


def test_the_style_rule_keeps_the_painting_and_lets_the_content_change_little():
    shipped = dict(gram_ratio=0.0439, content_change=1.2335)
    assert promote.style_rule(dict(gram_ratio=0.0435, content_change=1.28), shipped)[0]  # within 5 %
    ok, reasons = promote.style_rule(dict(gram_ratio=0.050, content_change=1.0), shipped)
    assert not ok and "Gram ratio" in reasons[0]
    ok, reasons = promote.style_rule(dict(gram_ratio=0.040, content_change=1.31), shipped)
    assert not ok and "content change" in reasons[0]


def universal_run(tiny_weights, folder, white=False, encoder_seed=None):
    """A run folder with the tiny universal encoder and decoder (decoding every picture to white when
    ``white``), and the tiny preset; the encoder retraced from other random weights when ``encoder_seed``."""
    from model.universal import NestedDecoder, UniversalEncoder, trace
    from tools.fixtures import TINY_UNIVERSAL_WIDTHS
    folder.mkdir(parents=True)
    shipped = json.loads((tiny_weights / "manifest.json").read_text())["models"]
    encoder = UniversalEncoder(TINY_UNIVERSAL_WIDTHS)
    traced = torch.jit.load(str(tiny_weights / "universal_encoder.pt")).state_dict()
    encoder.load_state_dict({k: v for k, v in traced.items() if k != "mean_bgr"})  # a buffer the trace keeps
    decoder = NestedDecoder(TINY_UNIVERSAL_WIDTHS)
    decoder.load_state_dict(torch.jit.load(str(tiny_weights / "universal_decoder.pt")).state_dict())
    if white:
        with torch.no_grad():
            decoder.b1.body[-1].weight.zero_()
            decoder.b1.body[-1].bias.fill_(5.0)
    if encoder_seed is not None:
        torch.manual_seed(encoder_seed)
        encoder = UniversalEncoder(TINY_UNIVERSAL_WIDTHS)
    traced_encoder, traced_decoder = trace(encoder, decoder, side=16)
    torch.jit.save(traced_encoder, str(folder / "universal_encoder.pt"))
    torch.jit.save(traced_decoder, str(folder / "universal_decoder.pt"))
    for name in ("encoder", "decoder"):
        update_manifest(folder, f"universal/{name}", dict(file=f"universal_{name}.pt", kind="universal", depth=4))
    (folder / "presets").mkdir()
    shutil.copytree(tiny_weights / "thumbs", folder / "thumbs")
    shutil.copyfile(tiny_weights / "presets" / "stripes.npz", folder / "presets" / "stripes.npz")
    entry = {k: v for k, v in shipped["style/stripes"].items() if k != "sha256"}
    from model.universal import weights_digest
    update_manifest(folder, "style/stripes", dict(entry, encoder_weights=weights_digest(traced_encoder)))


@pytest.fixture
def universal_setup(tmp_path, tiny_weights):
    from tests.test_weights import VAL
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    return weights, ["--weights", str(weights), "--data", str(VAL)]


def test_the_universal_model_is_promoted_when_it_reconstructs_as_well(tmp_path, tiny_weights, universal_setup):
    weights, args = universal_setup
    universal_run(tiny_weights, tmp_path / "same")
    assert promote.main([str(tmp_path / "same")] + args) == 0
    shipped = json.loads((weights / "manifest.json").read_text())["models"]
    assert shipped["universal/decoder"]["promoted"]["run"] == str(tmp_path / "same")


def test_a_worse_decoder_or_another_encoder_is_refused(tmp_path, tiny_weights, universal_setup, capsys):
    weights, args = universal_setup
    before = folder_digest(weights)
    universal_run(tiny_weights, tmp_path / "worse", white=True)
    assert promote.main([str(tmp_path / "worse")] + args) == 1
    assert "reconstruction from relu4_1" in capsys.readouterr().out
    universal_run(tiny_weights, tmp_path / "other", encoder_seed=7)
    assert promote.main([str(tmp_path / "other")] + args) == 1
    out = capsys.readouterr().out
    assert "the encoder's weights differ" in out and "made with other encoder weights" not in out
    assert folder_digest(weights) == before


def real_net(noise=0.0, seed=0):
    """A tiny conditioned SRResNet (the ``real`` model's input: RGB and the damage level)."""
    torch.manual_seed(seed)
    net = SRResNet(channels=8, blocks=1, condition=True).eval()
    with torch.no_grad():
        net.tail.weight.normal_(0, noise) if noise else net.tail.weight.zero_()
    return net


def test_the_real_model_ships_without_its_pixel_phase_and_is_judged_on_the_real_world_table(tmp_path, setup, capsys):
    from model.vgg import VGG16Features
    weights, args = setup
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in VGG16Features().state_dict().items()}, tmp_path / "vgg.pt")
    args = args + ["--vgg", str(tmp_path / "vgg.pt")]
    run = tmp_path / "runs" / "real"
    for name, net in (("real", real_net()), ("real_pixel", real_net(noise=0.05, seed=1))):
        entry = served(run, name, net)
        update_manifest(run, name, dict(entry, arch=dict(condition="damage"),
                                        **({"intermediate": True} if name == "real_pixel" else {})))
    assert promote.main([str(run)] + args) == 0
    models = json.loads((weights / "manifest.json").read_text())["models"]
    assert "real" in models and "real_pixel" not in models  # the intermediate stays in the run
    assert not (weights / "real_pixel.pt").exists()
    # a noisier real measures worse on the real-world table: refused, weights unchanged
    before = folder_digest(weights)
    worse = tmp_path / "runs" / "real2"
    entry = served(worse, "real", real_net(noise=0.3, seed=2))
    update_manifest(worse, "real", dict(entry, arch=dict(condition="damage")))
    assert promote.main([str(worse)] + args) == 1
    out = capsys.readouterr().out
    assert "real-world deep-feature distance" in out and folder_digest(weights) == before
