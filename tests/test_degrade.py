"""training/degrade.py: what each stage of the degradation must do, its determinism, and the pool of degraded
patches a run of the ``real`` model trains on."""
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from imgapi import damage
from training import degrade


def photo(size=64, seed=0):
    """A smooth colour gradient with a few edges: (size, size, 3) uint8."""
    y, x = np.mgrid[0:size, 0:size] / size
    a = np.stack([x, y, 1 - x * y], -1) * 200 + 20
    a[size // 3:size // 2, :] += 30
    a[:, size // 4:size // 4 + 3] -= 40
    return np.clip(a, 0, 255).astype(np.uint8)


def as_tensor(a):
    return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("shape", ["gaussian", "generalized", "plateau"])
def test_blur_kernels_sum_to_one_and_are_centred(shape):
    k = degrade.gaussian_kernel(21, 2.5, 1.0, 0.7, shape, beta=1.5)
    assert k.shape == (21, 21) and abs(k.sum() - 1) < 1e-9 and (k >= 0).all()
    assert np.unravel_index(k.argmax(), k.shape) == (10, 10)
    assert np.allclose(k, k[::-1, ::-1])  # point-symmetric: a blur moves nothing
    wide, narrow = degrade.gaussian_kernel(21, 3.0, 3.0, 0), degrade.gaussian_kernel(21, 0.5, 0.5, 0)
    assert wide.max() < narrow.max()


def test_an_anisotropic_kernel_is_long_along_its_angle():
    k = degrade.gaussian_kernel(21, 4.0, 0.5, 0.0)  # long along x
    assert k[10, :].sum() > 3 * k[:, 10].sum()


def test_the_sinc_kernel_sums_to_one_and_rings():
    k = degrade.sinc_kernel(21, math.pi / 3)
    assert abs(k.sum() - 1) < 1e-9
    assert k.min() < -1e-4  # negative lobes: the ringing it is there for
    assert np.allclose(k, k.T)


def test_the_blur_keeps_a_flat_image_and_softens_an_edge():
    flat = torch.full((1, 3, 32, 32), 0.4)
    k = degrade.gaussian_kernel(9, 2.0, 2.0, 0)
    assert torch.allclose(degrade.filter2d(flat, k), flat, atol=1e-6)
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 1
    out = degrade.filter2d(edge, k)
    assert 0.05 < float(out[0, 0, 10, 15]) < 0.95  # the step is spread over several pixels


def test_gaussian_noise_has_the_sigma_asked_for_and_grey_noise_is_one_plane():
    rng = np.random.default_rng(0)
    img = torch.full((1, 3, 128, 128), 0.5)
    out = degrade.gaussian_noise(img, rng, 10.0, gray=False)
    assert abs(float((out - img).std()) * 255 - 10) < 0.5
    grey = degrade.gaussian_noise(img, rng, 10.0, gray=True)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    # measured as the server measures it: luma sigma of grey noise is the noise's sigma
    assert abs(damage.noise_sigma(grey[0].permute(1, 2, 0).numpy() * 255) - 10) < 1.0


def test_poisson_noise_grows_with_brightness():
    rng = np.random.default_rng(1)
    dark, bright = torch.full((1, 3, 96, 96), 0.1), torch.full((1, 3, 96, 96), 0.9)
    d = float((degrade.poisson_noise(dark, rng, 1.0, False) - dark).std())
    b = float((degrade.poisson_noise(bright, rng, 1.0, False) - bright).std())
    assert b > 2 * d and abs(b * 255 - math.sqrt(0.9 * 255)) < 1.5  # shot noise: sigma = sqrt(counts)


@pytest.mark.parametrize("quality", [30, 55, 95])
def test_the_jpeg_stage_writes_the_encoders_tables_for_its_quality(quality):
    img = as_tensor(photo())
    data = degrade.encode_jpeg(img, quality)
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG"
    assert np.array_equal(np.asarray(im.quantization[0]), damage.ijg_table(damage.STD_LUMA, quality))
    assert damage.jpeg_quality(im) == quality
    out = degrade.jpeg(img, quality)
    assert out.shape == img.shape and float((out - img).abs().mean()) < 0.05


def test_degrade_is_deterministic_for_a_seed_and_shrinks_four_times():
    hr = photo(96)
    a, info_a = degrade.degrade(hr, np.random.default_rng(7))
    b, info_b = degrade.degrade(hr, np.random.default_rng(7))
    c, _ = degrade.degrade(hr, np.random.default_rng(8))
    assert a.shape == (24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and info_a == info_b
    assert not np.array_equal(a, c)
    stages = [s["stage"] for s in info_a["stages"]]
    assert stages[-1] == "final" and stages.count("jpeg") == 2 and stages.count("resize") == 2


def test_degraded_photos_are_further_from_the_truth_than_clean_shrinks():
    hr = photo(128)
    clean, _ = degrade.clean(hr, np.random.default_rng(0))
    errors = []
    for seed in range(6):
        lr, _ = degrade.degrade(hr, np.random.default_rng(seed))
        errors.append(np.abs(lr.astype(float) - clean).mean())
    assert np.median(errors) > 2  # blur, noise and blocks: grey levels off on average


def test_the_pool_is_the_same_however_it_is_split(tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(photo(128, i)).save(paths[-1])
    mix = {"clean": 1, "simple": 1, "real": 1}
    a = degrade.make_pool(paths, 6, 64, seed=3, mix=mix, workers=1)
    b = degrade.make_pool(paths, 3, 64, seed=3, mix=mix, workers=1)
    assert a["hr"].shape == (6, 64, 64, 3) and a["lr"].shape == (6, 16, 16, 3)
    assert np.array_equal(a["lr"][:3], b["lr"]) and np.array_equal(a["level"][:3], b["level"])
    for lr, lv, way in zip(a["lr"], a["level"], a["way"]):
        assert 0 <= lv <= 1
        if a["ways"][way] == "clean":
            assert lv == damage.level(None, damage.noise_sigma(lr))


def test_the_pool_sampler_gives_the_level_as_a_fourth_plane():
    from training.data import PoolSampler
    rng = np.random.default_rng(0)
    pool = dict(hr=rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8),
                lr=rng.integers(0, 255, (5, 8, 8, 3), dtype=np.uint8),
                level=np.linspace(0, 1, 5, dtype=np.float32))
    lr, hr = PoolSampler(pool, torch.device("cpu"), condition=True).batch(4, torch.Generator().manual_seed(0))
    assert lr.shape == (4, 4, 8, 8) and hr.shape == (4, 3, 32, 32)
    levels = lr[:, 3].flatten(1)
    assert torch.equal(levels.min(1).values, levels.max(1).values)  # constant over each patch
    assert set(np.round(levels[:, 0].numpy(), 4)) <= set(np.round(pool["level"], 4))
    plain, _ = PoolSampler(pool, torch.device("cpu")).batch(2, torch.Generator().manual_seed(0))
    assert plain.shape[1] == 3


def test_mix_is_checked():
    assert degrade.parse_mix("clean=0.2,real=0.8") == {"clean": 0.2, "real": 0.8}
    with pytest.raises(ValueError, match="ways"):
        degrade.parse_mix("blurry=1")
