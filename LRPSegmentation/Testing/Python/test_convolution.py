"""The oneDNN route for 3-D CPU convolutions gives PyTorch's own results (forward, autograd, input gradient)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from LRPSegmentationLib.lrp.convolution import conv3d_input_grad, fast_convolutions, transposed_conv3d_input_grad

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


@pytest.mark.parametrize("padding", [0, 1, (1, 0, 2)])
def test_fast_convolutions_match_the_reference_kernel_with_gradients(padding):
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 5, (3, 3, 3), padding=padding)
    x = torch.randn(1, 3, 6, 9, 11, requires_grad=True)
    expected = conv(x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    with fast_convolutions():
        got = conv(x)
        (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    assert got.grad_fn is not None and "Mkldnn" in type(got.grad_fn).__name__  # the oneDNN kernel ran
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-5)


def test_other_convolutions_pass_through_unchanged():
    conv = nn.Conv3d(2, 2, 3, padding="same")
    x = torch.randn(1, 2, 4, 5, 6, dtype=torch.float64)
    with fast_convolutions():
        assert torch.equal(conv.double()(x), torch.conv3d(x, conv.weight, conv.bias, padding="same"))


@pytest.mark.parametrize("padding", [(1, 1, 1), (0, 0, 0), (2, 1, 0)])
def test_input_gradient_equals_convolution_backward(padding):
    torch.manual_seed(1)
    x = torch.randn(1, 4, 7, 8, 9)
    weight = torch.randn(6, 4, 3, 3, 3)
    out = torch.nn.functional.conv3d(x, weight, None, 1, padding)
    grad = torch.randn_like(out)
    expected = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1, 1], list(padding), [1, 1, 1], False,
                                                   [0, 0, 0], 1, [True, False, False])[0]
    got = conv3d_input_grad(grad, x, weight, (1, 1, 1), padding, (1, 1, 1), 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert conv3d_input_grad(grad, x, weight, (2, 2, 2), padding, (1, 1, 1), 1) is None  # strided: not this route


@pytest.mark.parametrize(("stride", "padding", "output_padding"), [(2, 0, 0), (2, 1, 1), (1, 1, 0)])
def test_transposed_input_gradient_equals_convolution_backward(stride, padding, output_padding):
    torch.manual_seed(2)
    up = nn.ConvTranspose3d(4, 3, 3 if padding else 2, stride=stride, padding=padding, output_padding=output_padding)
    x = torch.randn(1, 4, 5, 6, 7)
    grad = torch.randn_like(up(x))
    expected = torch.ops.aten.convolution_backward(grad, x, up.weight, None, list(up.stride), list(up.padding),
                                                   list(up.dilation), True, list(up.output_padding), 1,
                                                   [True, False, False])[0]
    got = transposed_conv3d_input_grad(grad, x, up.weight.detach(), up.stride, up.padding, up.dilation, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
