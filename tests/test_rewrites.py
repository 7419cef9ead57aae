"""model/rewrites: each rewrite computes what the convolution it replaces computes."""
import pytest
import torch

from model.rewrites import SubpixelUpsampleConv, factor_conv, fold_shuffle_into_conv, subpixel_to_3x3, unfactor_conv
from model.transformer_net import UpsampleConvLayer


@pytest.mark.parametrize("k, padding", [(3, 1), (5, 2), (9, 4), (9, 0), (3, 0)])
def test_factored_convolution_computes_the_same_sums_and_unfactors_back(k, padding):
    torch.manual_seed(k)
    conv = torch.nn.Conv2d(6, 3, k, padding=padding)
    x = torch.randn(1, 6, 11, 14)
    rows, cols = factor_conv(conv)
    with torch.no_grad():
        torch.testing.assert_close(cols(rows(x)), conv(x), atol=1e-5, rtol=0)
    weight, bias = unfactor_conv(rows, cols)
    torch.testing.assert_close(weight, conv.weight.detach(), atol=0, rtol=0)
    torch.testing.assert_close(bias, conv.bias.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("k", [3, 5, 9])
def test_convolution_moved_before_the_pixel_shuffle_computes_the_same_image(k):
    torch.manual_seed(k)
    conv = torch.nn.Conv2d(4, 3, k, padding=k // 2)
    v = torch.randn(1, 16, 7, 10)
    shuffle = torch.nn.PixelShuffle(2)
    with torch.no_grad():
        torch.testing.assert_close(shuffle(fold_shuffle_into_conv(conv)(v)), conv(shuffle(v)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (7, 5), (16, 16)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_low_resolution_decoder_layer_computes_upsample_pad_and_convolve(h, w, channels_last):
    """Borders included: the reflection padding of the upsampled image is the input's replicate padding."""
    torch.manual_seed(h * 10 + w)
    layer = UpsampleConvLayer(5, 3, 3).eval()
    fast = SubpixelUpsampleConv(layer.conv.conv)
    x = torch.randn(2, 5, h, w)
    if channels_last:
        fast, x = fast.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = fast(x)
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=0)
    assert got.shape == (2, 3, 2 * h, 2 * w)
    weight, bias = subpixel_to_3x3(fast.conv.weight, fast.conv.bias)
    torch.testing.assert_close(weight, layer.conv.conv.weight.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias, layer.conv.conv.bias.detach(), atol=0, rtol=0)


def test_rewrites_refuse_convolutions_they_cannot_reproduce():
    with pytest.raises(ValueError):
        factor_conv(torch.nn.Conv2d(4, 3, 3, stride=2, padding=1))
    with pytest.raises(ValueError):
        fold_shuffle_into_conv(torch.nn.Conv2d(4, 3, 3, padding=0))
    with pytest.raises(ValueError):
        SubpixelUpsampleConv(torch.nn.Conv2d(4, 3, 3, padding=1))
    with pytest.raises(ValueError):
        SubpixelUpsampleConv(torch.nn.Conv2d(4, 3, 5))
