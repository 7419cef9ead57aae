"""``make blend-sr``: the served srgan as a mix of the GAN and SRResNet generators, on tiny networks."""
import json

import pytest
import torch

from model.srresnet import SRResNet
from tests.helpers import photo
from training import blend_sr
from training.export import export_sr, sr_from_state_dict
from training.manifest import update_manifest


def served(folder, name, net, initialised_from=None):
    """Export ``net`` as ``folder/<name>.pt`` with a manifest entry like train_sr's; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    export_sr(net, path)
    arch = {"lr_consistency": net.consistency.iterations} if net.consistency is not None else {}
    update_manifest(folder, name, dict(file=path.name, kind="sr", scale=4, loss="L1" if name == "srresnet" else "GAN",
                                       arch=dict(net="SRResNet", **arch),
                                       training=dict(steps=10, initialised_from=initialised_from),
                                       validation=dict(images=[])))
    return path


def pair(tmp_path, noise=0.05, consistency=0, name="srgan", condition=None):
    """A PSNR generator (near bicubic) and a 'GAN' fine-tuned from it (its tail pushed by ``noise``; with
    ``consistency`` iterations of LR back-projection; with ``condition``, the damage plane, as ``real``),
    served in ``tmp_path/w`` as ``srresnet.pt`` and ``<name>.pt`` from one lineage. Up to ``noise`` 0.1 the
    pictures stay in range, so more of the 'GAN' means more detail; past it they clip."""
    torch.manual_seed(0)
    psnr = SRResNet(channels=8, blocks=1).eval()
    with torch.no_grad():
        psnr.tail.weight.normal_(0, 0.002)
    psnr_path = served(tmp_path / "w", "srresnet", psnr)
    sha = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srresnet"]["sha256"]
    gan = sr_from_state_dict(torch.jit.load(str(psnr_path)).state_dict(), consistency=consistency,
                             condition=condition).eval()
    with torch.no_grad():
        gan.tail.weight.add_(torch.randn_like(gan.tail.weight) * noise)
        gan.head[0].weight.mul_(1.1)
    gan_path = served(tmp_path / "w", name, gan, initialised_from=f"srresnet.pt (sha256 {sha[:12]})")
    return gan_path, psnr_path


def photos(folder, n, size, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo(size, size, seed=seed + i).save(folder / f"p{i}.png")
    return folder


def outputs(path_or_net, x):
    net = torch.jit.load(str(path_or_net)) if not isinstance(path_or_net, torch.nn.Module) else path_or_net
    with torch.inference_mode():
        return net(x)


def test_alpha_1_is_the_gan_alpha_0_the_psnr_network_and_between_is_between(tmp_path):
    gan_path, psnr_path = pair(tmp_path)
    gan, psnr = blend_sr.trainable(gan_path), blend_sr.trainable(psnr_path)
    x = torch.rand(1, 3, 10, 9)
    torch.testing.assert_close(outputs(blend_sr.mix(gan, psnr, 1.0), x), outputs(gan_path, x), atol=2e-5, rtol=0)
    torch.testing.assert_close(outputs(blend_sr.mix(gan, psnr, 0.0), x), outputs(psnr_path, x), atol=2e-5, rtol=0)
    half = blend_sr.mix(gan, psnr, 0.5)
    torch.testing.assert_close(half.tail.weight, (gan.tail.weight + psnr.tail.weight) / 2)
    d_gan = (outputs(half, x) - outputs(gan_path, x)).abs().mean()
    d_psnr = (outputs(half, x) - outputs(psnr_path, x)).abs().mean()
    assert d_gan > 0 and d_psnr > 0


def test_a_gan_trained_with_back_projection_keeps_it_in_the_blend(tmp_path):
    gan_path, psnr_path = pair(tmp_path, noise=0.1, consistency=2)
    models = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    gan = blend_sr.trainable(gan_path, models["srgan"])
    psnr = blend_sr.trainable(psnr_path, models["srresnet"])
    assert gan.consistency.iterations == 2 and psnr.consistency is None
    x = torch.rand(1, 3, 12, 10)
    torch.testing.assert_close(outputs(blend_sr.mix(gan, psnr, 1.0), x), outputs(gan_path, x), atol=2e-5, rtol=0)
    # read without its manifest entry, the same weights lose the projection, and the blend would not be the GAN
    bare = blend_sr.trainable(gan_path)
    assert (outputs(bare, x) - outputs(gan_path, x)).abs().max() > 1e-3
    blend_sr.main(["--gan", str(gan_path), "--psnr", str(psnr_path), "--out", str(tmp_path / "o"), "--alpha", "1",
                   "--val", str(photos(tmp_path / "val", 1, 40, seed=7)), "--threads", "1"])
    torch.testing.assert_close(outputs(tmp_path / "o" / "srgan.pt", x), outputs(gan_path, x), atol=2e-5, rtol=0)
    entry = json.loads((tmp_path / "o" / "manifest.json").read_text())["models"]["srgan"]
    assert entry["arch"]["lr_consistency"] == 2


def test_the_sweep_keeps_the_least_gan_that_still_has_the_detail_asked_for(tmp_path):
    gan_path, psnr_path = pair(tmp_path, noise=0.1)
    gan, psnr = blend_sr.trainable(gan_path), blend_sr.trainable(psnr_path)
    crops = blend_sr.centre_crops(sorted(photos(tmp_path / "sel", 3, 48).iterdir()), 32)
    alphas = [1.0, 0.75, 0.5, 0.25, 0.0]
    _, rows = blend_sr.sweep(gan, psnr, crops, alphas, 100.0)
    detail = {r["alpha"]: r["detail"] for r in rows}
    psnr_y = {r["alpha"]: r["psnr_y"] for r in rows}
    assert [detail[a] for a in alphas] == sorted(detail.values(), reverse=True)  # more GAN, more 'detail'
    assert psnr_y[0.0] > psnr_y[1.0]  # and less fidelity
    target = (detail[0.5] + detail[0.75]) / 2
    alpha, _ = blend_sr.sweep(gan, psnr, crops, alphas, target)
    assert alpha == 0.75  # 0.5 falls short of the target, 0.75 reaches it
    assert blend_sr.sweep(gan, psnr, crops, alphas, 100.0)[0] == 1.0  # out of reach: the GAN as it is
    assert blend_sr.sweep(gan, psnr, crops, alphas, 0.0)[0] == 0.0


def test_make_blend_sr_replaces_srgan_keeps_the_gan_and_records_the_blend(tmp_path):
    gan_path, psnr_path = pair(tmp_path, noise=0.1)
    gan_sha = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srgan"]["sha256"]
    x = torch.rand(1, 3, 8, 8)
    gan_out = outputs(gan_path, x)
    args = ["--gan", str(gan_path), "--psnr", str(psnr_path), "--out", str(tmp_path / "w"),
            "--select-on", str(photos(tmp_path / "sel", 3, 48)), "--crop", "32", "--alphas", "1", "0.5", "0",
            "--val", str(photos(tmp_path / "val", 1, 40, seed=7)), "--keep-gan", str(tmp_path / "ck" / "gan.pt"),
            "--threads", "1", "--detail", "0"]
    assert blend_sr.main(args) == 0

    entry = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srgan"]
    assert blend_sr.sha256_file(tmp_path / "w" / "srgan.pt") == entry["sha256"] != gan_sha
    assert entry["blend"]["alpha"] == 0.0 and len(entry["blend"]["sweep"]) == 3  # any detail will do
    torch.testing.assert_close(outputs(tmp_path / "w" / "srgan.pt", x), outputs(psnr_path, x), atol=2e-5, rtol=0)
    assert entry["blend"]["gan"]["sha256"] == gan_sha and entry["validation"]["images"] == ["p0.png"]
    # The GAN itself is kept, with its entry, so that it can be blended again with another alpha.
    torch.testing.assert_close(outputs(tmp_path / "ck" / "gan.pt", x), gan_out)
    blend_sr.load_entry(tmp_path / "ck" / "gan.pt")
    with pytest.raises(SystemExit, match="already a blend"):
        blend_sr.main(args)
    assert blend_sr.main(args[:1] + [str(tmp_path / "ck" / "gan.pt")] + args[2:] + ["--alpha", "0.25"]) == 0
    again = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srgan"]
    assert again["blend"]["alpha"] == 0.25 and again["blend"]["chosen"] == "given (--alpha)"


def test_networks_of_different_lineages_are_not_mixed(tmp_path):
    gan_path, _ = pair(tmp_path / "a")
    torch.manual_seed(5)
    other = served(tmp_path / "b", "srresnet", SRResNet(channels=8, blocks=1).eval())
    with pytest.raises(SystemExit, match="not fine-tuned from"):
        blend_sr.main(["--gan", str(gan_path), "--psnr", str(other), "--out", str(tmp_path / "o"), "--alpha", "0.5"])


def test_an_alpha_above_1_goes_on_past_the_gan_and_says_so(tmp_path):
    gan_path, psnr_path = pair(tmp_path, noise=0.1)
    gan, psnr = blend_sr.trainable(gan_path), blend_sr.trainable(psnr_path)
    crops = blend_sr.centre_crops(sorted(photos(tmp_path / "sel", 3, 48).iterdir()), 32)
    _, rows = blend_sr.sweep(gan, psnr, crops, [1.2, 1.0, 0.0], 100.0)
    detail = {r["alpha"]: r["detail"] for r in rows}
    assert detail[1.2] > detail[1.0] > detail[0.0]  # further along the line from SRResNet to the GAN
    torch.testing.assert_close(blend_sr.mix(gan, psnr, 1.2).tail.weight,
                               gan.tail.weight + 0.2 * (gan.tail.weight - psnr.tail.weight))
    blend_sr.main(["--gan", str(gan_path), "--psnr", str(psnr_path), "--out", str(tmp_path / "o"), "--alpha", "1.2",
                   "--val", str(photos(tmp_path / "val", 1, 40, seed=7)), "--threads", "1"])
    entry = json.loads((tmp_path / "o" / "manifest.json").read_text())["models"]["srgan"]
    assert entry["blend"]["alpha"] == 1.2
    assert entry["loss"] == "1.2 x [GAN] - 0.2 x [srresnet, L1] (network extrapolation)"


def test_a_damage_blend_moves_from_the_clean_alpha_to_the_damaged_one_with_the_level(tmp_path):
    gan_path, psnr_path = pair(tmp_path, name="real", condition=True)
    args = ["--name", "real", "--gan", str(gan_path), "--psnr", str(psnr_path), "--out", str(tmp_path / "o"),
            "--alpha", "0.8", "--alpha-clean", "0.2", "--val", str(photos(tmp_path / "val", 1, 40)), "--threads", "1"]
    assert blend_sr.main(args) == 0

    entry = json.loads((tmp_path / "o" / "manifest.json").read_text())["models"]["real"]
    assert (entry["blend"]["alpha_clean"], entry["blend"]["alpha"]) == (0.2, 0.8)
    assert entry["loss"].startswith("(0.2 at damage 0 to 0.8 at damage 1) x [GAN]")
    gan, psnr = blend_sr.trainable(gan_path), blend_sr.trainable(psnr_path, condition=True)
    x = torch.rand(1, 3, 12, 10)
    outs = []
    for level, alpha in ((0.0, 0.2), (0.5, 0.5), (1.0, 0.8)):
        xl = torch.cat([x, torch.full_like(x[:, :1], level)], 1)
        outs.append(outputs(tmp_path / "o" / "real.pt", xl))
        torch.testing.assert_close(outs[-1], outputs(blend_sr.mix(gan, psnr, alpha), xl), atol=2e-5, rtol=0)
    assert (outs[0] - outs[2]).abs().max() > 1e-3  # the level moves the picture
    # The validation photos are clean shrinks: the manifest's figures are the blend's at level 0.
    assert entry["psnr_y"] == pytest.approx(blend_sr.validate(blend_sr.mix(gan, psnr, 0.2), blend_sr.list_images(
        tmp_path / "val"), torch.device("cpu"))["psnr_y"], abs=1e-6)
    with pytest.raises(ValueError, match="damage blend"):
        sr_from_state_dict(torch.jit.load(str(tmp_path / "o" / "real.pt")).state_dict())
    with pytest.raises(SystemExit):
        blend_sr.parse_args(args[:8] + ["--alpha-clean", "0.2"])  # no --alpha: nothing to reach at level 1
