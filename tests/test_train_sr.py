"""Smoke run of the SR training pipeline on the CPU: tiny network, tiny synthetic images, a few
seconds per phase; the traced output must load and upscale, and the manifest must describe it."""
import json

import pytest
import torch

from imgapi import engine
from model.vgg import VGG16Features
from tests.helpers import photo, run_manifest
from training import losses, train_sr, validation
from training.export import export_sr


def tiny_sr_run(tmp_path):
    """Folders, a random VGG and the command line of a tiny SR run; returns the argument list."""
    data, val = tmp_path / "train", tmp_path / "val"
    data.mkdir(), val.mkdir()
    for i in range(2):
        photo(72, 64, seed=i).save(data / f"p{i}.png")
    photo(48, 40, seed=9).save(val / "v.png")
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in VGG16Features("conv4_3").state_dict().items()}, tmp_path / "vgg.pt")
    return ["--data", str(data), "--val", str(val), "--vgg", str(tmp_path / "vgg.pt"), "--batch", "2",
            "--patch", "8", "--blocks", "1", "--channels", "8", "--device", "cpu", "--threads", "1",
            "--precision", "fp32", "--channels-last", "off", "--out", str(tmp_path / "w"),
            "--checkpoint-dir", str(tmp_path / "ck"), "--docs", str(tmp_path / "docs"), "--val-every", "100"]


def test_train_sr_smoke(tmp_path):
    args = tiny_sr_run(tmp_path) + ["--minutes", "0.15", "--gan-fraction", "0.5", "--val-every", "2"]
    train_sr.main(args)
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    assert set(manifest) == {"srgan", "srresnet"}
    for name, entry in manifest.items():
        assert entry["training"]["steps"] > 0 and "psnr_y" in entry and "bicubic_psnr_y" in entry
        assert entry["detail"] > 0 and entry["bicubic_detail"] > 0
        net = torch.jit.load(str(tmp_path / "w" / entry["file"]))
        with torch.inference_mode():
            y = net(torch.rand(1, 3, 10, 13))
        assert y.shape == (1, 3, 40, 52) and torch.isfinite(y).all()
    assert (tmp_path / "docs" / "sr_training_curves.png").stat().st_size > 1000
    # By default the GAN is the shipped recipe: it alone ends in 3 back-projections onto its input, with the
    # flat term and the adversarial term at 0.01; SRResNet is the plain network.
    assert "lr_consistency" not in manifest["srresnet"]["arch"] and manifest["srgan"]["arch"]["lr_consistency"] == 3
    assert "10 x pixel L1 where the LR is smooth" in manifest["srgan"]["loss"]
    assert "0.01 x pixel L1" in manifest["srgan"]["loss"] and "0.01 x RaGAN" in manifest["srgan"]["loss"]
    from model.consistency import LRConsistency, pillow_bicubic_down
    lr, x = LRConsistency(), torch.rand(1, 3, 12, 16)
    with torch.inference_mode():
        shrunk = {n: (pillow_bicubic_down(torch.jit.load(str(tmp_path / "w" / f"{n}.pt"))(x), lr.rows, lr.cols)
                      - x).abs().mean().item() for n in manifest}
    assert shrunk["srgan"] < shrunk["srresnet"] / 2
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


def tiny_gan_run(tmp_path):
    """tiny_sr_run's command line for an SRGAN-only run fine-tuned from a served file, the way the shipped
    srresnet.pt is: ``start.pt``, exported here from trained_looking_sr(). Returns the argument list."""
    export_sr(trained_looking_sr(), tmp_path / "start.pt")
    return tiny_sr_run(tmp_path) + ["--gan-fraction", "1", "--init-from", str(tmp_path / "start.pt")]


def test_exported_sr_network_gives_the_trained_networks_output_at_any_size(tmp_path):
    net = trained_looking_sr()
    export_sr(net, tmp_path / "sr.pt")
    served = torch.jit.load(str(tmp_path / "sr.pt")).eval()
    assert "tail.0.0.weight" in served.state_dict()  # the rewritten tail, not the trained 9x9 one
    for shape in [(1, 3, 17, 23), (1, 3, 32, 32), (2, 3, 9, 40)]:
        x = torch.rand(shape)
        with torch.inference_mode():
            torch.testing.assert_close(served(x), net(x), atol=2e-5, rtol=0)


def test_exporting_mid_training_leaves_the_network_training_where_it_was(tmp_path):
    net = trained_looking_sr().train().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    before = {k: (v.data_ptr(), v.clone()) for k, v in net.state_dict().items()}
    export_sr(net, tmp_path / "sr.pt")  # a --keep snapshot
    assert net.training
    for k, v in net.state_dict().items():  # the same storage (the optimiser's), the same values
        assert v.data_ptr() == before[k][0] and torch.equal(v, before[k][1]), k
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], net.parameters()))


def test_rerun_with_a_larger_budget_continues_the_phase(tmp_path):
    args = tiny_sr_run(tmp_path) + ["--gan-fraction", "0"]
    train_sr.main(args + ["--minutes", "0.03"])
    first = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    steps1, elapsed1 = first["step"]["srresnet"], first["elapsed"]["srresnet"]
    assert steps1 > 0 and elapsed1 >= 0.03 * 60

    train_sr.main(args + ["--minutes", "0.06"])
    second = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    assert second["step"]["srresnet"] > steps1
    assert 0.06 * 60 <= second["elapsed"]["srresnet"] < 0.06 * 60 + 2 * elapsed1
    # One schedule: the first run's end-of-budget validation is still in the history, and the steps go on
    # counting from there (a restart would have begun a new history at step 1).
    validated = [h["step"] for h in second["history"] if "psnr_y" in h]
    assert validated == [steps1, second["step"]["srresnet"]]
    logged = [h["step"] for h in second["history"] if "loss" in h]
    assert logged == sorted(set(logged))
    # The learning rate follows the new budget's cosine from the time already spent, not the peak again.
    assert all(h["lr"] < 2e-4 * 0.99 for h in second["history"] if "loss" in h and h["step"] > steps1)
    entry = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srresnet"]
    assert entry["training"]["steps"] == second["step"]["srresnet"]
    assert entry["training"]["precision"] == "fp32" and entry["training"]["hardware"]

    # The same budget again trains nothing and exports nothing new.
    sha = entry["sha256"]
    train_sr.main(args + ["--minutes", "0.06"])
    again = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]["srresnet"]
    assert again["sha256"] == sha and again["training"]["steps"] == entry["training"]["steps"]


def test_gan_fine_tuning_starts_from_a_served_file(tmp_path):
    from training.export import sr_from_state_dict
    train_sr.main(tiny_gan_run(tmp_path) + ["--minutes", "0.05"])
    manifest = run_manifest(tmp_path / "w")
    assert set(manifest) == {"srgan"}  # no SRResNet phase: the served file is the starting point
    entry = manifest["srgan"]
    assert entry["training"]["initialised_from"].startswith("start.pt (sha256 ")
    assert entry["training"]["steps"] > 0 and "detail" in entry and "bicubic_detail" in entry
    assert "0.01 x pixel L1" in entry["loss"] and entry["loss_segments"][0]["from_step"] == 0
    # Trained from the served weights: close to them, but moved.
    start = torch.jit.load(str(tmp_path / "start.pt"))
    tuned = torch.jit.load(str(tmp_path / "w" / "srgan.pt"))
    x = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        moved = (tuned(x) - start(x)).abs().mean().item()
    assert 0 < moved < 0.2
    # Its BatchNorm layers stayed the identity they were rebuilt as (frozen, folded statistics).
    ck = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    assert ck["frozen_bn"] is True
    bn_vars = [v for k, v in ck["g"].items() if k.endswith("running_var")]
    assert bn_vars and all(torch.allclose(v, torch.full_like(v, 1 - 1e-5)) for v in bn_vars)
    assert sr_from_state_dict(start.state_dict()) is not None


def test_srgan_serves_the_moving_average_of_its_weights(tmp_path):
    from model.srresnet import SRResNet
    # a budget that a busy machine (a GAN step of a second or more) still fills with several steps
    train_sr.main(tiny_gan_run(tmp_path) + ["--minutes", "0.15", "--ema", "0.9"])
    entry = run_manifest(tmp_path / "w")["srgan"]
    assert "moving average (decay 0.9)" in entry["loss"]
    ck = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)
    assert entry["training"]["steps"] > 2
    nets = {}
    for key in ("ema", "g"):
        nets[key] = SRResNet(channels=8, blocks=2, consistency=entry["arch"].get("lr_consistency", 0))
        nets[key].load_state_dict(ck[key])
        nets[key].eval()
    exported = torch.jit.load(str(tmp_path / "w" / "srgan.pt"))
    x = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        torch.testing.assert_close(exported(x), nets["ema"](x), atol=2e-5, rtol=0)
        assert (exported(x) - nets["g"](x)).abs().max().item() > 1e-4  # not the last step's weights


def test_a_served_sr_file_turns_back_into_the_trained_network():
    from training.export import sr_from_state_dict
    net = trained_looking_sr(seed=3)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        export_sr(net, f"{d}/sr.pt")
        served = torch.jit.load(f"{d}/sr.pt")
    rebuilt = sr_from_state_dict(served.state_dict())
    x = torch.rand(1, 3, 15, 11)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(x), net(x), atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="not an exported SRResNet"):
        sr_from_state_dict({"head.0.weight": torch.zeros(8, 3, 9, 9)})


def test_the_texture_term_finds_grain_on_a_smooth_photo_where_it_is_and_ignores_its_phase():
    torch.manual_seed(0)
    smooth = torch.linspace(0.2, 0.8, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    grain = smooth.clone()
    grain[..., :32, :32] += 0.08 * torch.randn(1, 1, 32, 32)  # grain on the top-left quarter only
    other_grain = smooth.clone()
    other_grain[..., :32, :32] += 0.08 * torch.randn(1, 1, 32, 32)  # as much grain, elsewhere in phase
    amp = losses.local_detail(grain)[0, 0]
    assert amp[:6, :6].min() > 5 * amp[8:, 8:].max()  # high where the grain is, low on the smooth rest
    log_amp = {k: losses.local_detail(v).log() for k, v in dict(g=grain, s=smooth, o=other_grain).items()}
    off_texture = torch.nn.functional.l1_loss(log_amp["g"], log_amp["s"])
    off_phase = torch.nn.functional.l1_loss(log_amp["g"], log_amp["o"])
    pixel_phase = torch.nn.functional.l1_loss(grain, other_grain)
    pixel_texture = torch.nn.functional.l1_loss(grain, smooth)
    # A pixel loss charges grain of the wrong phase more than none at all; this term charges it far less.
    assert pixel_phase > pixel_texture and off_phase < off_texture / 5


def test_a_resumed_gan_run_with_the_texture_term_records_where_its_loss_changed(tmp_path):
    args = tiny_gan_run(tmp_path)
    train_sr.main(args + ["--minutes", "0.03"])
    first = run_manifest(tmp_path / "w")["srgan"]["training"]["steps"]
    train_sr.main(args + ["--minutes", "0.06", "--texture-weight", "0.5"])
    entry = run_manifest(tmp_path / "w")["srgan"]
    assert entry["training"]["steps"] > first
    segments = entry["loss_segments"]
    assert [s["from_step"] for s in segments] == [0, first]
    assert "gradient-amplitude" not in segments[0]["loss"] and "0.5 x 8x8 log gradient-amplitude L1" in segments[1]["loss"]
    assert entry["loss"] == segments[1]["loss"]


def test_the_flat_mask_marks_where_the_lr_photo_is_smooth():
    torch.manual_seed(0)
    lr = torch.linspace(0.4, 0.5, 32).view(1, 1, 1, 32).expand(1, 3, 24, 32).contiguous()  # a smooth sky
    lr[..., :, 16:] += 0.1 * torch.randn(1, 1, 24, 16)  # and foliage on its right half
    mask = losses.flat_mask(lr, (96, 128))
    assert mask.shape == (1, 1, 96, 128)
    assert mask[..., 8:-8, 8:48].min() > 0.9 and mask[..., 8:-8, 72:-8].max() < 0.1
    # The term it weights: grain painted on the sky costs, the same grain on the foliage does not.
    hr = torch.nn.functional.interpolate(lr, scale_factor=4.0, mode="bicubic", align_corners=False)
    grain = 0.05 * torch.randn(1, 1, 96, 64)
    on_sky, on_foliage = hr.clone(), hr.clone()
    on_sky[..., :64] += grain
    on_foliage[..., 64:] += grain
    assert (mask * (on_sky - hr).abs()).mean() > 20 * (mask * (on_foliage - hr).abs()).mean()


def test_keep_writes_a_servable_snapshot_at_every_validation_that_reproduces_its_figures(tmp_path):
    from PIL import Image
    from training.manifest import sha256_file
    args = tiny_sr_run(tmp_path) + ["--minutes", "0.1", "--gan-fraction", "0.5", "--val-every", "1.5", "--keep"]
    train_sr.main(args)
    history = json.loads((tmp_path / "ck" / "history.json").read_text())
    validated = {(h["phase"], h["step"]): h for h in history if "psnr_y" in h}
    kept = sorted((tmp_path / "ck" / "kept").iterdir())
    assert {p.name for p in kept} == {f"{phase}-step{step}" for phase, step in validated}
    assert {phase for phase, _ in validated} == {"srresnet", "srgan"} and len(kept) >= 4
    val = [Image.open(tmp_path / "val" / "v.png").convert("RGB")]
    probe, outputs = torch.rand(1, 3, 12, 12), []
    for folder in kept:
        phase, step = folder.name.split("-step")
        entry = json.loads((folder / "manifest.json").read_text())["models"][phase]
        assert entry["training"]["steps"] == int(step) and entry["sha256"] == sha256_file(folder / entry["file"])
        assert entry["psnr_y"] == validated[(phase, int(step))]["psnr_y"]
        net = torch.jit.load(str(folder / entry["file"]))
        with torch.inference_mode():
            again = validation.measure(net, val, torch.device("cpu"))
            outputs.append(net(probe))
        assert abs(again["psnr_y"] - entry["psnr_y"]) < 0.05
    # snapshots of different steps, not one network written many times
    assert all((a - b).abs().max() > 0 for a, b in zip(outputs, outputs[1:]))
    # The run's own output is the last snapshot of each phase.
    final = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    for phase, entry in final.items():
        last = max(step for p, step in validated if p == phase)
        assert entry["training"]["steps"] == last
        x = torch.rand(1, 3, 12, 12)
        with torch.inference_mode():
            torch.testing.assert_close(torch.jit.load(str(tmp_path / "w" / entry["file"]))(x), torch.jit.load(
                str(tmp_path / "ck" / "kept" / f"{phase}-step{last}" / entry["file"]))(x), atol=1e-6, rtol=0)


def test_the_real_model_trains_on_degraded_patches_and_takes_the_damage_level(tmp_path):
    """--degrade --condition: a pool of degraded patches is made once into the run's folder, the generator takes
    a fourth plane (the damage level), both phases export under --export-as, and the pixel phase is marked as
    the run's intermediate."""
    args = tiny_sr_run(tmp_path) + ["--minutes", "0.12", "--gan-fraction", "0.5", "--degrade", "--condition",
                                    "--pool", "24", "--consistency", "0", "--export-as", "real"]
    train_sr.main(args)
    manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())["models"]
    assert set(manifest) == {"real", "real_pixel"}
    assert manifest["real_pixel"]["intermediate"] and "intermediate" not in manifest["real"]
    assert list((tmp_path / "ck").glob("pool-*.npz"))  # kept with the checkpoint for a resumed stretch
    entry = manifest["real"]
    assert entry["arch"]["condition"] == "damage" and "lr_consistency" not in entry["arch"]
    assert entry["training"]["degradation"]["pool"] == 24
    net = torch.jit.load(str(tmp_path / "w" / "real.pt"))
    x = torch.rand(1, 3, 10, 12)
    with torch.inference_mode():
        outs = [net(engine.with_level(x, level)) for level in (0.0, 1.0)]
    assert outs[0].shape == (1, 3, 40, 48) and torch.isfinite(outs[0]).all()
    # the level's plane was trained: the network answers it (it starts at zero weight for it)
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_the_unsharp_mask_crisps_edges_and_leaves_smooth_areas_alone():
    """Real-ESRGAN's sharpened targets: a soft edge gets steeper with an overshoot on each side; a gentle
    gradient far from it (its residual under the threshold) is left as it was."""
    ramp = torch.linspace(0.3, 0.4, 128).view(1, 1, 1, 128).expand(1, 3, 128, 128).contiguous()
    img = ramp.clone()
    edge = torch.sigmoid((torch.arange(128.0) - 96) / 1.5).view(1, 1, 1, 128) * 0.4  # a soft edge at x = 96
    img = img + edge
    out = losses.usm_sharpen(img, weight=0.5)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    steepest = lambda t: (t[..., 1:] - t[..., :-1]).abs()[..., 90:102].max()
    assert steepest(out) > 1.2 * steepest(img)
    assert out[0, 0, 64, 100:110].max() > img[0, 0, 64, 100:110].max() + 0.02  # the bright side overshoots
    assert (out - img)[..., 8:-8, 8:48].abs().max() < 1e-3  # the smooth ramp, 50 px from the edge
    assert torch.allclose(losses.usm_sharpen(img, weight=0.0), img, atol=1e-6)


def test_the_feature_loss_takes_several_layers_each_on_conv4_3s_scale():
    torch.manual_seed(0)
    vgg = VGG16Features("conv4_3").eval()
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert losses.percep_layers("conv4_3") == {"conv4_3": 1.0}
    several = losses.percep_layers("conv1_2:0.1,conv3_3:1")
    assert several == {"conv1_2": 0.1, "conv3_3": 1.0}
    with pytest.raises(ValueError, match="relu9_9"):
        losses.percep_layers("relu9_9")
    feats = vgg(torch.cat([a, b]), ["conv1_2", "conv3_3", "conv4_3"])
    scaled = {k: v * losses.FEATURE_SCALE * losses.LAYER_SCALES[k] for k, v in feats.items()}
    l1 = {k: torch.nn.functional.l1_loss(*v.chunk(2)) for k, v in scaled.items()}
    # one layer: the loss the shipped srgan.pt was trained on, unchanged
    assert torch.allclose(losses.feature_l1(vgg, a, b, {"conv4_3": 1.0}),
                          torch.nn.functional.l1_loss(*(feats["conv4_3"] * losses.FEATURE_SCALE).chunk(2)))
    assert torch.allclose(losses.feature_l1(vgg, a, b, several), 0.1 * l1["conv1_2"] + l1["conv3_3"])


def test_a_gan_run_on_several_feature_layers_and_sharpened_targets_says_so(tmp_path):
    args = tiny_gan_run(tmp_path)
    train_sr.main(args + ["--minutes", "0.03", "--percep-layer", "conv1_2:0.1,conv2_2:0.1,conv3_3:1,conv4_3:1",
                          "--sharpen", "0.5"])
    entry = run_manifest(tmp_path / "w")["srgan"]
    assert entry["training"]["steps"] > 0
    assert entry["loss"].startswith("1 x VGG16 feature L1 (0.1 x conv1_2, 0.1 x conv2_2, 1 x conv3_3, 1 x conv4_3)"
                                     " to targets sharpened by 0.5 x unsharp mask + ")


def test_a_bad_feature_layer_is_refused_before_any_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_sr.parse_args(tiny_sr_run(tmp_path) + ["--percep-layer", "conv3_3:1,pool9:0.1"])
    assert "'pool9' is not one of conv1_2, conv2_2, conv3_3, conv4_3" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("seed", [0, 1])
def test_an_untrained_generator_draws_no_dot_grid_thanks_to_icnr(seed, monkeypatch):
    """The sub-pixel convolutions start ICNR-initialised (model.srresnet.icnr_): on a smooth photo the untrained
    network's 4x picture has no 4-px grid, where the default initialisation of the same network draws one."""
    import numpy as np
    from PIL import ImageFilter

    from model import srresnet
    from training.metrics import grid_amplitude

    x = engine.to_tensor(photo(40, 40, seed=1).filter(ImageFilter.GaussianBlur(2)))

    def grid():
        torch.manual_seed(seed)
        net = srresnet.SRResNet(channels=8, blocks=2).eval()
        torch.nn.init.normal_(net.tail.weight, std=0.02)  # not the identity-over-bicubic start
        conv = net.upsample[0].conv.weight  # PixelShuffle's four positions of channel 0 share one kernel
        same = all(torch.equal(conv[0], conv[k]) for k in range(1, 4))
        with torch.inference_mode():
            return same, grid_amplitude(np.asarray(engine.to_image(net(x))))

    same, icnr = grid()
    monkeypatch.setattr(srresnet, "icnr_", lambda conv, scale=2: None)
    differ, default = grid()
    assert same and not differ
    assert icnr < 0.3 < 1.0 < default


def test_the_unet_discriminator_judges_each_pixel_from_its_neighbourhood():
    """Real-ESRGAN's U-Net gives one verdict per pixel: damage in one corner of a photo moves the verdicts there
    and leaves the far corner's as they were (SRGAN's gives one number for the whole patch)."""
    from model.discriminator import make_discriminator

    torch.manual_seed(0)
    d = make_discriminator("unet").eval()
    x = torch.rand(1, 3, 128, 128)
    damaged = x.clone()
    damaged[..., :16, :16] = 0.5
    with torch.no_grad():
        a, b = d(x), d(damaged)
    assert a.shape == (1, 1, 128, 128)
    assert (a - b)[..., :16, :16].abs().mean() > 1e-3
    assert torch.equal(a[..., -32:, -32:], b[..., -32:, -32:])
    with torch.no_grad():
        assert make_discriminator("vgg").eval()(x).shape == (1,)


def test_a_gan_run_with_the_unet_discriminator_says_so_and_resumes_only_with_it(tmp_path):
    args = tiny_gan_run(tmp_path) + ["--disc", "unet"]
    train_sr.main(args + ["--minutes", "0.03"])
    entry = run_manifest(tmp_path / "w")["srgan"]
    assert entry["training"]["steps"] > 0
    assert "RaGAN (per pixel, U-Net discriminator)" in entry["loss"]
    with pytest.raises(SystemExit, match="another discriminator than --disc vgg"):
        train_sr.main(args[:-2] + ["--disc", "vgg", "--minutes", "1"])
    spent = torch.load(tmp_path / "ck" / "last.pt", weights_only=False)["elapsed"]["srgan"]
    train_sr.main(args + ["--minutes", f"{spent / 60 + 0.03:.4f}"])
    assert run_manifest(tmp_path / "w")["srgan"]["training"]["steps"] > entry["training"]["steps"]
