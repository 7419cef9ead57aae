"""Style transfer: the network's size handling, the inference options, the shipped weights, and a training
smoke run that needs no data/ folder (tiny synthetic photos, a random VGG)."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgapi.stylize import rgb_to_ycbcr, stylize
from model.transformer_net import TransformerNet
from training.manifest import sha256_file
from training.export import export_style as export

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"


def shipped_styles():
    path = WEIGHTS / "manifest.json"
    if not path.exists():
        return []
    models = json.loads(path.read_text())["models"]
    return sorted((name, entry) for name, entry in models.items() if entry.get("kind") == "style")


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return TransformerNet(channels=(4, 8, 8), residual_blocks=1).eval()


def trained_looking_net(seed=0):
    """``tiny_net`` with instance-norm scales and shifts away from 1 and 0, as training leaves them."""
    net = tiny_net(seed)
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) + 0.5
            m.bias.data = torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2
    return net


def textbook(net):
    """The same weights run as ``nn.InstanceNorm2d`` layers on NCHW tensors (how style files were traced)."""
    ref = copy.deepcopy(net)
    ref.fused_norm = False
    return ref


def smooth_photo(w, h, seed=0):
    """A smooth colour image with mid-range values (no clipping when colour spaces are mixed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    a = np.stack([0.5 + 0.2 * np.sin(6 * xx + p) * np.cos(4 * yy + p) for p in rng.uniform(0, 6, 3)], -1)
    return Image.fromarray(np.rint(a * 255).astype(np.uint8), "RGB")


class Negative(torch.nn.Module):
    """A stand-in style network whose output is far from its input: 1 - x."""

    def forward(self, x):
        return 1.0 - x


@pytest.mark.parametrize("h, w", [(1, 1), (3, 5), (7, 7), (17, 30), (33, 64), (64, 48)])
def test_network_keeps_any_size(h, w):
    net = tiny_net()
    with torch.inference_mode():
        y = net(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, h, w)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_traced_network_keeps_sizes_other_than_the_example():
    net = tiny_net()
    traced = torch.jit.trace(net, torch.rand(1, 3, 40, 40), check_trace=False)
    for h, w in [(21, 13), (64, 99)]:
        x = torch.rand(1, 3, h, w)
        assert traced(x).shape == (1, 3, h, w)
        torch.testing.assert_close(traced(x), net(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1, 3, 21, 13), (1, 3, 64, 99), (3, 3, 17, 30)])
def test_exported_network_gives_the_textbook_output_and_never_mixes_images_of_a_batch(tmp_path, shape):
    net = trained_looking_net()
    export(net, tmp_path / "style.pt")
    served = torch.jit.load(str(tmp_path / "style.pt")).eval()
    x = torch.rand(shape)
    with torch.inference_mode():
        y = served(x)
        torch.testing.assert_close(y, textbook(net)(x), atol=1e-5, rtol=0)
        for i in range(shape[0]):  # each image normalised on its own statistics
            torch.testing.assert_close(y[i:i + 1], served(x[i:i + 1]), atol=1e-5, rtol=0)


def test_exported_network_runs_channels_last_inside():
    net = trained_looking_net().to(memory_format=torch.channels_last)
    seen = []
    net.deconv3.conv.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.inference_mode():
        net(torch.rand(1, 3, 24, 24))
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_strength_zero_returns_the_input():
    photo = smooth_photo(37, 23)
    out = stylize(tiny_net(), photo, strength=0.0)
    assert out.size == photo.size
    assert np.array_equal(np.asarray(out), np.asarray(photo))


def test_strength_blends_linearly():
    photo = smooth_photo(40, 30)
    full = np.asarray(stylize(Negative(), photo), dtype=np.float32)
    half = np.asarray(stylize(Negative(), photo, strength=0.5), dtype=np.float32)
    expected = 0.5 * full + 0.5 * np.asarray(photo, dtype=np.float32)
    assert np.abs(half - expected).max() <= 1.0


def test_preserve_color_keeps_chroma_and_takes_stylized_luminance():
    photo = smooth_photo(48, 32, seed=1)
    styled = np.asarray(stylize(Negative(), photo), dtype=np.float32) / 255
    kept = np.asarray(stylize(Negative(), photo, preserve_color=True), dtype=np.float32) / 255
    original = np.asarray(photo, dtype=np.float32) / 255
    ycc_kept, ycc_orig, ycc_styled = rgb_to_ycbcr(kept), rgb_to_ycbcr(original), rgb_to_ycbcr(styled)
    assert np.abs(ycc_kept[..., 1:] - ycc_orig[..., 1:]).max() < 3 / 255
    assert np.abs(ycc_kept[..., 0] - ycc_styled[..., 0]).max() < 3 / 255
    # ...and it really is a different image from the plain stylized one (the stand-in flips the chroma).
    assert np.abs(kept - styled).mean() > 0.05


def test_max_side_shrinks_keeping_aspect():
    out = stylize(tiny_net(), smooth_photo(300, 120), max_side=100)
    assert out.size == (100, 40)


@pytest.mark.parametrize("kwargs", [{}, {"strength": 0.0}, {"strength": 0.5}, {"preserve_color": True},
                                    {"max_side": 100}])
def test_pixels_as_an_array_give_the_same_result_as_an_image(kwargs):
    """The server hands stylize the decoded upload as a uint8 array: the same pixels come back as an array."""
    photo = smooth_photo(130, 70, seed=2)
    want = np.asarray(stylize(tiny_net(), photo, **kwargs))
    pixels = np.array(photo)
    got = stylize(tiny_net(), pixels, **kwargs)
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(pixels, np.asarray(photo))  # the caller's pixels are not written to


def test_array_of_another_shape_or_type_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        stylize(tiny_net(), np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        stylize(tiny_net(), np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("kwargs", [{"strength": 1.5}, {"strength": -0.1}, {"max_side": 0}])
def test_bad_options_are_refused_with_the_allowed_range(kwargs):
    with pytest.raises(ValueError, match="Allowed"):
        stylize(tiny_net(), smooth_photo(8, 8), **kwargs)


STYLES = shipped_styles()


def test_paintings_are_shipped_at_johnsons_widths():
    assert STYLES, "no trained style network ships"
    for name, entry in STYLES:
        assert entry["architecture"]["channels"] == [32, 64, 128], name
        assert entry["licence"] == "Public domain", name
        module = torch.jit.load(str(WEIGHTS / entry["file"]), map_location="cpu")
        assert module.state_dict()["conv3.conv.weight"].shape[0] == 128, name
        # The held-out figures of docs/data.md: the painting came closer than the photo was, and the
        # photo's content is still there.
        assert 0 < entry["eval"]["gram_ratio"] < 0.9 and 0 < entry["eval"]["content_change"] < 1.5, name


@pytest.mark.parametrize("name, entry", STYLES, ids=[name for name, _ in STYLES])
def test_shipped_style_loads_matches_sha256_and_stylizes(name, entry):
    path = WEIGHTS / entry["file"]
    assert sha256_file(path) == entry["sha256"]
    for key in ("title", "artist", "source", "licence", "thumbnail"):
        assert entry[key], key
    with Image.open(WEIGHTS / entry["thumbnail"]) as thumb:
        assert max(thumb.size) <= 256
    module = torch.jit.load(str(path), map_location="cpu").eval()
    photo = smooth_photo(45, 31)
    out = stylize(module, photo)
    assert out.size == photo.size and out.mode == "RGB"
    # A style that returned its input would be no style at all.
    assert np.abs(np.asarray(out, dtype=np.float32) - np.asarray(photo, dtype=np.float32)).mean() > 5


def test_training_smoke_run_produces_a_servable_style(tmp_path):
    from model.vgg import VGG16Features
    from training import train_style

    rng = np.random.default_rng(0)
    content, styles, val = tmp_path / "content", tmp_path / "styles", tmp_path / "val"
    for d in (content, styles, val):
        d.mkdir()
    for i in range(3):
        smooth_photo(40, 36, seed=i).save(content / f"photo{i}.png")
    smooth_photo(32, 32, seed=9).save(val / "val0.png")
    stripes = (np.indices((48, 48)).sum(0) // 4 % 2 * 200 + rng.integers(0, 40, (48, 48)))
    Image.fromarray(np.stack([stripes, stripes // 2, 255 - stripes], -1).astype(np.uint8)).save(
        styles / "stripes.jpg")
    (styles / "styles.json").write_text(json.dumps({"stripes": {
        "title": "Stripes", "artist": "test", "source": "synthetic", "licence": "CC0-1.0"}}))
    torch.manual_seed(0)
    vgg = tmp_path / "vgg.pt"
    torch.save({k: v.half() for k, v in VGG16Features(last="relu4_3").state_dict().items()}, vgg)

    out, ckpt = tmp_path / "weights", tmp_path / "ckpt"
    args = ["--style", "stripes", "--data", str(content), "--val-dir", str(val), "--styles-dir", str(styles),
            "--vgg", str(vgg), "--minutes", "10", "--identity-minutes", "10", "--size", "32", "--batch", "1",
            "--style-size", "48",
            "--channels", "4,8,8", "--device", "cpu", "--threads", "1", "--out", str(out), "--checkpoint-dir", str(ckpt),
            "--sheet", str(tmp_path / "sheet.png")]
    train_style.main(args + ["--max-steps", "3"])

    entry = json.loads((out / "manifest.json").read_text())["models"]["style/stripes"]
    assert entry["kind"] == "style" and entry["training"]["steps"] == 3
    assert entry["training"]["precision"] in ("fp32", "bf16") and entry["training"]["hardware"]
    assert entry["training"]["crops"] == [{"size": 32, "from_step": 0, "steps": 3,
                                           "minutes": entry["training"]["crops"][0]["minutes"]}]
    assert entry["eval"]["photos"] == 1 and entry["eval"]["gram_ratio"] > 0
    assert entry["training"]["initialised_from"].startswith("identity pretraining (3 steps")
    assert sha256_file(out / entry["file"]) == entry["sha256"]
    assert (out / entry["thumbnail"]).exists()
    assert (tmp_path / "sheet.png").exists()
    module = torch.jit.load(str(out / entry["file"]), map_location="cpu")
    assert stylize(module, smooth_photo(29, 19)).size == (29, 19)

    # Rerunning resumes from the checkpoint instead of starting again.
    train_style.main(args + ["--max-steps", "5"])
    entry = json.loads((out / "manifest.json").read_text())["models"]["style/stripes"]
    assert entry["training"]["steps"] == 5


def test_textbook_network_is_rebuilt_from_an_exported_file(tmp_path):
    from training.export import style_from_state_dict as from_state_dict
    net = trained_looking_net()
    export(net, tmp_path / "style.pt")
    rebuilt = from_state_dict(torch.jit.load(str(tmp_path / "style.pt")).state_dict())
    rebuilt.fused_norm = False  # the graph ONNX Runtime is given in make bench
    x = torch.rand(1, 3, 30, 22)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(x), textbook(net)(x), atol=1e-6, rtol=0)


def test_rewritten_textbook_network_computes_the_same_image():
    """The export's rewrites in NCHW with nn.InstanceNorm2d (a form make bench gives ONNX Runtime)."""
    from training.export import rewritten
    net = trained_looking_net()
    fast = rewritten(textbook(net))
    assert fast.deconv1.conv.kernel_size == (2, 2) and not fast.fused_norm
    for shape in ((1, 3, 30, 22), (2, 3, 9, 13)):
        x = torch.rand(*shape)
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), textbook(net)(x), atol=1e-5, rtol=0)


def tiny_style_inputs(tmp_path, photos=2):
    """Content photos, a style named blobs and a random VGG under ``tmp_path``; returns the train_style
    arguments that name them (no held-out photos)."""
    from model.vgg import VGG16Features
    content, styles = tmp_path / "content", tmp_path / "styles"
    for d in (content, styles):
        d.mkdir()
    for i in range(photos):
        smooth_photo(40, 36, seed=i).save(content / f"photo{i}.png")
    smooth_photo(48, 48, seed=5).save(styles / "blobs.jpg")
    (styles / "styles.json").write_text(json.dumps({"blobs": {
        "title": "Blobs", "artist": "test", "source": "synthetic", "licence": "CC0-1.0"}}))
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in VGG16Features(last="relu4_3").state_dict().items()}, tmp_path / "vgg.pt")
    return ["--style", "blobs", "--data", str(content), "--val-dir", "", "--styles-dir", str(styles),
            "--vgg", str(tmp_path / "vgg.pt")]


def test_rerun_with_a_larger_budget_continues_and_switches_to_large_crops(tmp_path):
    """A run that stopped at its budget goes on from its checkpoint when given more minutes, on the same
    schedule: the step count continues, and the last quarter of the new budget uses the large crops."""
    from training import train_style

    out, ckpt = tmp_path / "weights", tmp_path / "ckpt"
    args = tiny_style_inputs(tmp_path) + [
        "--identity-minutes", "0", "--size", "16", "--final-size", "24", "--final-fraction", "0.25", "--batch", "1",
        "--style-size", "32", "--channels", "4,8,8", "--device", "cpu", "--threads", "1", "--precision", "fp32",
        "--channels-last", "off", "--out", str(out), "--checkpoint-dir", str(ckpt), "--sheet", ""]
    # budgets of seconds, long enough that one step slowed by a busy machine cannot straddle the last quarter
    train_style.main(args + ["--minutes", "0.1"])
    first = json.loads((out / "manifest.json").read_text())["models"]["style/blobs"]["training"]
    assert [c["size"] for c in first["crops"]] == [16, 24]

    train_style.main(args + ["--minutes", "0.2"])
    second = json.loads((out / "manifest.json").read_text())["models"]["style/blobs"]["training"]
    assert second["steps"] > first["steps"]
    assert 0.2 <= second["minutes"] < 0.2 + first["minutes"]
    sizes = [c["size"] for c in second["crops"]]
    assert sizes == [16, 24, 16, 24]  # back to small crops for the new budget's first three quarters
    assert second["crops"][2]["from_step"] == first["steps"]
    assert sum(c["steps"] for c in second["crops"]) == second["steps"]


def test_output_convolution_learns_at_its_own_rate():
    """--output-lr sets the last convolution's rate apart from the body's: at 0 it stays put while the body
    moves; by default both learn."""
    from training import train_style

    def one_step(argv):
        args = train_style.parse_args(["--style", "x"] + argv)
        torch.manual_seed(0)
        net = train_style.TransformerNet(channels=(4, 8, 8)).train()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        opt = torch.optim.Adam(train_style.param_groups(net, args), lr=args.lr)
        for group in opt.param_groups:
            group["lr"] = group["peak"]
        net(torch.rand(1, 3, 16, 16)).pow(2).mean().backward()
        opt.step()
        return {k: not torch.equal(v, before[k]) for k, v in net.state_dict().items() if k in before}

    moved = one_step(["--lr", "1e-3", "--output-lr", "0"])
    assert not moved["deconv3.conv.weight"] and not moved["deconv3.conv.bias"]
    assert moved["conv1.conv.weight"] and moved["res.4.conv2.conv.weight"]
    moved = one_step(["--lr", "1e-3"])
    assert moved["deconv3.conv.weight"] and moved["conv1.conv.weight"]


def test_checkpoint_with_one_parameter_group_resumes(tmp_path):
    """A checkpoint written before the output convolution had its own rate (one Adam group) resumes: each
    parameter keeps its own Adam moments, and the run goes on from its step."""
    from training import train_style

    out, ckpt = tmp_path / "weights", tmp_path / "ckpt"
    args = tiny_style_inputs(tmp_path) + [
        "--identity-minutes", "0", "--size", "16", "--batch", "1", "--style-size", "32", "--channels", "4,8,8",
        "--device", "cpu", "--threads", "1", "--precision", "fp32", "--channels-last", "off", "--minutes", "10",
        "--out", str(out), "--checkpoint-dir", str(ckpt), "--sheet", ""]
    train_style.main(args + ["--max-steps", "2"])
    path = ckpt / "style_blobs.ckpt"
    saved = torch.load(path, weights_only=False)
    groups = saved["optimizer"]["param_groups"]
    assert len(groups) == 2
    saved["optimizer"]["param_groups"] = [dict(groups[0], params=groups[0]["params"] + groups[1]["params"])]
    torch.save(saved, path)

    train_style.main(args + ["--max-steps", "4"])
    resumed = torch.load(path, weights_only=False)
    assert resumed["step"] == 4
    net = train_style.TransformerNet(channels=(4, 8, 8))
    params = list(net.parameters())
    for group in resumed["optimizer"]["param_groups"]:
        for i in group["params"]:
            assert resumed["optimizer"]["state"][i]["exp_avg"].shape == params[i].shape


class GridLattice(torch.nn.Module):
    """A 'style network' that adds a pattern fixed to a 4-pixel grid of its own, as a network with stride 4
    can: the photo moves under it, the pattern does not."""

    def forward(self, x):
        rows = torch.arange(x.shape[-2]) % 4 < 2
        return (x + 0.1 * rows[:, None].to(x.dtype)).clamp(0, 1)


class MovesWithThePhoto(torch.nn.Module):
    """A pixel-by-pixel 'style network': whatever it paints moves with the photo."""

    def forward(self, x):
        return (0.2 + 0.6 * x.flip(1)).clamp(0, 1)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_shift_term_sees_a_grid_lattice_and_nothing_that_moves_with_the_photo(s):
    from training.losses import roll_photo, shift_error
    x = torch.rand(2, 3, 40, 36) * 0.8
    for net, expected in ((MovesWithThePhoto(), 0.0), (GridLattice(), 0.01 if s == 2 else 0.005)):
        y, moved = net(torch.cat([x, roll_photo(x, s)])).chunk(2)
        assert shift_error(y, moved, s).item() == pytest.approx(expected, abs=1e-3), (net, s)


def test_shift_change_figure_is_in_grey_levels_and_near_zero_without_a_lattice():
    from training.evaluate import shift_change
    photo = smooth_photo(64, 48, seed=3)
    for net, expected in ((MovesWithThePhoto(), 0.0), (GridLattice(), 25.5)):
        out = stylize(net, photo)
        assert shift_change(net, photo, out) == pytest.approx(expected, abs=0.6), net


def test_training_with_the_shift_term_records_it(tmp_path):
    from training import train_style
    out = tmp_path / "weights"
    args = tiny_style_inputs(tmp_path) + [
        "--identity-minutes", "0", "--size", "24", "--batch", "2", "--style-size", "32", "--channels", "4,8,8",
        "--device", "cpu", "--threads", "1", "--precision", "fp32", "--channels-last", "off", "--out", str(out),
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--sheet", "", "--minutes", "1", "--shift-weight", "50"]
    train_style.main(args + ["--max-steps", "2"])
    entry = json.loads((out / "manifest.json").read_text())["models"]["style/blobs"]
    assert entry["training"]["shift_weight"] == 50 and entry["training"]["recipes"][-1]["shift_weight"] == 50
    assert 0 < entry["final_losses"]["shift"] < entry["final_losses"]["total"]
