"""Winograd F(4×4, 3×3): the transform matrices, the specialized transforms, and the convolutions against float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from depth_completion_ros.core import winograd
from depth_completion_ros.core.winograd import WinogradConv3x3, winograd_matrices

pytestmark = pytest.mark.skipif(not winograd.available(), reason="torch without oneDNN (mkldnn)")


@pytest.mark.parametrize("points", [(0, 1, -1, 2, -2), (0, 1, -1)])
def test_matrices_compute_a_correlation_exactly(points):
    bt, g, at = winograd_matrices(points)
    a, m = len(points) + 1, len(points) - 1
    assert bt.shape == (a, a) and g.shape == (a, 3) and at.shape == (m, a)
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, k = rng.normal(size=a), rng.normal(size=3)
        expected = np.array([d[j : j + 3] @ k for j in range(m)])
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


def test_specialized_output_transforms_match_the_matrices():
    rng = np.random.default_rng(1)
    for points, fn in (((0, 1, -1, 2, -2), winograd._at), ((0, 1, -1), winograd._at2)):
        at = winograd_matrices(points)[2]
        for _ in range(5):
            d = rng.normal(size=at.shape[1]).astype(np.float32)
            np.testing.assert_allclose(np.array(fn(*d)), at @ d, rtol=1e-5, atol=1e-5)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("channels", "out", "height", "width"), [((5, 3), 7, 9, 13), ((16,), 8, 4, 4), ((2, 1), 3, 1, 6)]
)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("tile", [4, 2])
def test_conv3x3_equals_direct_convolution(channels, out, height, width, residual, tile):
    g = torch.Generator().manual_seed(2)
    parts = tuple(_nhwc(torch.randn(1, c, height, width, generator=g)) for c in channels)
    weight = torch.randn(out, sum(channels), 3, 3, generator=g)
    bias = torch.randn(out, generator=g)
    other = _nhwc(torch.randn(1, out, height, width, generator=g)) if residual else None
    x = torch.cat(parts, 1).double()
    ref = F.conv2d(x, weight.double(), bias.double(), padding=1)
    if residual:
        ref = ref + other.double()
    conv = WinogradConv3x3(weight, bias, tile=tile)
    got = conv(parts, other, relu=False)
    assert got.shape == (1, out, height, width)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
    torch.testing.assert_close(
        conv(parts, other, relu=True).double(), ref.clamp_min(0), rtol=0, atol=1e-4 * float(ref.abs().max())
    )
    nchw = conv(tuple(p.contiguous() for p in parts), other, relu=False)  # NCHW inputs: same result
    torch.testing.assert_close(nchw, got)


@pytest.mark.parametrize(("cin", "cout", "height", "width"), [(6, 5, 7, 9), (3, 2, 1, 1), (8, 4, 4, 8)])
@pytest.mark.parametrize("tile", [4, 2])
def test_transposed_equals_direct_transposed_convolution(cin, cout, height, width, tile):
    g = torch.Generator().manual_seed(3)
    x = _nhwc(torch.randn(1, cin, height, width, generator=g))
    weight = torch.randn(cin, cout, 5, 5, generator=g)
    bias = torch.randn(cout, generator=g)
    other = _nhwc(torch.randn(1, cout, 2 * height, 2 * width, generator=g))
    ref = F.conv_transpose2d(x.double(), weight.double(), bias.double(), stride=2, padding=2, output_padding=1)
    ref = (ref + other.double()).clamp_min(0)
    got = WinogradConv3x3.from_transposed(weight, bias, tile=tile)((x,), other, relu=True)
    assert got.shape == (1, cout, 2 * height, 2 * width)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="weight"):
        WinogradConv3x3(torch.zeros(4, 3, 5, 5), None)
    with pytest.raises(ValueError, match="weight"):
        WinogradConv3x3.from_transposed(torch.zeros(4, 3, 3, 3), None)
    with pytest.raises(ValueError, match="tile"):
        WinogradConv3x3(torch.zeros(4, 3, 3, 3), None, tile=3)
    with pytest.raises(ValueError, match="bias"):
        WinogradConv3x3(torch.zeros(4, 3, 3, 3), torch.zeros(5))
    conv = WinogradConv3x3(torch.zeros(4, 3, 3, 3), None)
    with pytest.raises(ValueError, match="channels"):
        conv((torch.zeros(1, 2, 5, 5),))
    with pytest.raises(ValueError, match="batch"):
        conv((torch.zeros(2, 3, 5, 5),))


@pytest.mark.parametrize("transposed", [False, True])
def test_post_addition_and_appended_channels(transposed):
    """`post` is added after the ReLU, `append` comes back as the output's last channels; sizes are checked."""
    g = torch.Generator().manual_seed(6)
    x = _nhwc(torch.randn(1, 6, 5, 7, generator=g))
    if transposed:
        weight, bias = torch.randn(6, 4, 5, 5, generator=g), torch.randn(4, generator=g)
        conv = WinogradConv3x3.from_transposed(weight, bias)
        ref = F.conv_transpose2d(x.double(), weight.double(), bias.double(), stride=2, padding=2, output_padding=1)
    else:
        weight, bias = torch.randn(4, 6, 3, 3, generator=g), torch.randn(4, generator=g)
        conv = WinogradConv3x3(weight, bias)
        ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    size = ref.shape[2:]
    other, post = (_nhwc(torch.randn(1, 4, *size, generator=g)) for _ in range(2))
    extra = torch.randn(1, 3, *size, generator=g)
    ref = (ref + other.double()).clamp_min(0) + post.double()
    got = conv((x,), other, relu=True, append=extra, post=post)
    assert got.shape == (1, 7, *size)
    torch.testing.assert_close(got[:, :4].double(), ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
    assert torch.equal(got[:, 4:], extra)
    for name in ("other", "post", "append"):
        with pytest.raises(ValueError, match=name):
            conv((x,), **{name: torch.zeros(1, 4 if name != "append" else 3, size[0] + 1, size[1])})
    with pytest.raises(ValueError, match="height and width"):
        WinogradConv3x3(torch.zeros(4, 6, 3, 3), None)((x[:, :3], x[:, 3:, :-1]))
