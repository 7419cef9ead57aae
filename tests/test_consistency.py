"""LR back-projection (model.consistency): a 4x output shrunk the protocol's way gives back its input, what
the input cannot show is kept, and a generator with it trains, exports and turns back into itself."""

import numpy as np
import torch
from PIL import Image

from model.consistency import LRConsistency, pillow_bicubic_down
from model.srresnet import SRResNet
from tests.helpers import photo, run_manifest
from tests.test_train_sr import tiny_gan_run, trained_looking_sr
from training import train_sr
from training.export import export_sr, sr_from_state_dict


def as_tensor(img):
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


def test_the_shrink_is_pillows_bicubic_to_within_a_grey_level():
    img = photo(96, 72, seed=4)  # the border rule shows on a picture this small
    theirs = as_tensor(img.resize((24, 18), Image.BICUBIC))
    lr = LRConsistency()
    ours = pillow_bicubic_down(as_tensor(img), lr.rows, lr.cols)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() * 255 < 1.0


def test_back_projection_makes_the_output_shrink_to_its_input_and_keeps_its_texture():
    torch.manual_seed(0)
    x = as_tensor(photo(20, 16, seed=1))
    # An upscale whose tones are off (too dark, a colour cast) and which has texture of its own.
    texture = 0.05 * torch.randn(1, 3, 64, 80)
    y = torch.nn.functional.interpolate(x, scale_factor=4.0, mode="bicubic", align_corners=False) * 0.8 + texture
    fixed = LRConsistency(3)(y, x)
    k = LRConsistency(0)
    before = (pillow_bicubic_down(y, k.rows, k.cols) - x).abs().mean().item()
    after = (pillow_bicubic_down(fixed, k.rows, k.cols) - x).abs().mean().item()
    assert after < before / 10
    # The correction is smooth: the texture's fine grain (pixel-to-pixel differences) is left as it was.
    grain = lambda t: (t[..., :, 1:] - t[..., :, :-1]).abs().mean().item()  # noqa: E731
    assert abs(grain(fixed) - grain(y)) < 0.1 * grain(y)


def test_a_generator_with_back_projection_exports_and_turns_back_into_itself(tmp_path):
    net = trained_looking_sr(seed=5)
    net.consistency = LRConsistency(2)
    export_sr(net, tmp_path / "sr.pt")
    served = torch.jit.load(str(tmp_path / "sr.pt"))
    plain = trained_looking_sr(seed=5)
    x = torch.rand(1, 3, 13, 18)
    with torch.inference_mode():
        torch.testing.assert_close(served(x), net(x), atol=2e-5, rtol=0)
        assert (served(x) - plain(x)).abs().max().item() > 1e-3  # the projection is in the file
        rebuilt = sr_from_state_dict(served.state_dict(), consistency=2)
        torch.testing.assert_close(rebuilt(x), net(x), atol=2e-5, rtol=0)


def test_train_sr_trains_through_the_projection_and_records_it(tmp_path):
    train_sr.main(tiny_gan_run(tmp_path) + ["--minutes", "0.05", "--consistency", "2"])
    entry = run_manifest(tmp_path / "w")["srgan"]
    assert entry["arch"]["lr_consistency"] == 2 and entry["training"]["steps"] > 0
    tuned = torch.jit.load(str(tmp_path / "w" / "srgan.pt"))
    x = as_tensor(photo(16, 12, seed=2))
    lr = LRConsistency()
    with torch.inference_mode():
        y = tuned(x)
        net = SRResNet(channels=8, blocks=2)
        net.load_state_dict(torch.load(tmp_path / "ck" / "last.pt", weights_only=False)["ema"])
        unprojected = net.eval()(x)
    # What it serves shrinks back to its input closer than the same weights without the projection.
    err = lambda t: (pillow_bicubic_down(t, lr.rows, lr.cols) - x).abs().mean().item()  # noqa: E731
    assert err(y) < err(unprojected) / 2


def test_a_resumed_run_keeps_the_projection_it_started_with(tmp_path):
    args = tiny_gan_run(tmp_path)
    train_sr.main(args + ["--minutes", "0.03", "--consistency", "2"])
    train_sr.main(args + ["--minutes", "0.06"])  # resumed with a larger budget, the flag left out
    entry = run_manifest(tmp_path / "w")["srgan"]
    assert entry["arch"]["lr_consistency"] == 2
    net = SRResNet(channels=8, blocks=2, consistency=2)
    net.load_state_dict(torch.load(tmp_path / "ck" / "last.pt", weights_only=False)["ema"])
    x = as_tensor(photo(16, 12, seed=2))
    with torch.inference_mode():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "w" / "srgan.pt"))(x), net.eval()(x),
                                   atol=2e-5, rtol=0)
