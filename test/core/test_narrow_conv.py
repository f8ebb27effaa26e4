"""The few-output 3×3 convolution (1×1 tap products + shifted sum) against float64 direct convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from depth_completion_ros.core import narrow_conv
from depth_completion_ros.core.device import onednn_ops
from depth_completion_ros.core.narrow_conv import NarrowConv3x3

pytestmark = pytest.mark.skipif(onednn_ops() is None, reason="torch without oneDNN (mkldnn)")


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("cin", "cout", "height", "width"), [(32, 2, 9, 13), (5, 1, 1, 1), (3, 4, 1, 6), (8, 3, 7, 2)])
@pytest.mark.parametrize("relu", [False, True])
def test_equals_direct_convolution(cin, cout, height, width, relu):
    g = torch.Generator().manual_seed(4)
    x = _nhwc(torch.randn(1, cin, height, width, generator=g))
    weight, bias = torch.randn(cout, cin, 3, 3, generator=g), torch.randn(cout, generator=g)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    ref = ref.clamp_min(0) if relu else ref
    conv = NarrowConv3x3(weight, bias)
    got = conv(x, relu)
    assert got.shape == (1, cout, height, width) and got.is_contiguous()
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()) + 1e-6)
    torch.testing.assert_close(conv(x.contiguous(), relu), got)  # NCHW input: same result


def test_transposed_equals_direct_transposed_convolution():
    g = torch.Generator().manual_seed(5)
    x = _nhwc(torch.randn(1, 6, 5, 7, generator=g))
    weight, bias = torch.randn(6, 2, 3, 3, generator=g), torch.randn(2, generator=g)
    ref = F.conv_transpose2d(x.double(), weight.double(), bias.double(), padding=1)
    got = NarrowConv3x3.from_transposed(weight, bias)(x)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="weight"):
        NarrowConv3x3(torch.zeros(2, 3, 5, 5), None)
    with pytest.raises(ValueError, match="weight"):
        NarrowConv3x3(torch.zeros(narrow_conv.MAX_OUTPUTS + 1, 3, 3, 3), None)
    with pytest.raises(ValueError, match="bias"):
        NarrowConv3x3(torch.zeros(2, 3, 3, 3), torch.zeros(3))
    conv = NarrowConv3x3(torch.zeros(2, 3, 3, 3), None)
    with pytest.raises(ValueError, match="x"):
        conv(torch.zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match="x"):
        conv(torch.zeros(2, 3, 5, 5))
