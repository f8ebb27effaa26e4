"""colorize_depth / colorize_confidence: shapes, 'none' = black, near = warm and far = cool, range handling."""

from __future__ import annotations

import cv2
import numpy as np

from depth_completion_ros.core.visualize import colorize_confidence, colorize_depth


def _turbo(value: int) -> np.ndarray:
    """RGB of OpenCV's turbo colormap at index `value`."""
    return cv2.applyColorMap(np.array([[value]], np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1]


def test_none_is_black_and_range_ends_are_the_colormap_ends():
    depth = np.array([[0.0, np.nan, np.inf, 2.0, 50.0, 1.0, 100.0]], np.float32)
    out = colorize_depth(depth, min_depth=2.0, max_depth=50.0)
    assert out.shape == (1, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :3], 0)  # 0, NaN, inf: no depth
    np.testing.assert_array_equal(out[0, 3], _turbo(255))  # nearest of the range: warm end
    np.testing.assert_array_equal(out[0, 4], _turbo(0))  # farthest: cool end
    np.testing.assert_array_equal(out[0, 5], out[0, 3])  # nearer than the range: clipped
    np.testing.assert_array_equal(out[0, 6], out[0, 4])  # farther: clipped


def test_colour_follows_inverse_depth():
    """Equal steps of 1/depth give equal steps along the colormap (within the 255 levels' rounding)."""
    lo, hi = 2.0, 40.0
    inv = np.linspace(1 / hi, 1 / lo, 11)
    out = colorize_depth((1.0 / inv)[None].astype(np.float32), min_depth=lo, max_depth=hi)
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0, ::-1]
    index = [int(np.argmin(np.abs(lut.astype(int) - px.astype(int)).sum(axis=1))) for px in out[0]]
    expected = np.linspace(0, 255, 11)
    assert np.abs(np.array(index) - expected).max() <= 3


def test_default_range_from_percentiles(rng):
    depth = rng.uniform(5.0, 60.0, (120, 160)).astype(np.float32)
    depth[::7] = 0.0
    out = colorize_depth(depth)
    np.testing.assert_array_equal(out[::7], 0)
    lo, hi = np.percentile(depth[::4, ::4][depth[::4, ::4] > 0], [2, 98])
    np.testing.assert_array_equal(out, colorize_depth(depth, min_depth=lo, max_depth=hi))
    # Near is warmer (more red than blue) than far.
    near, far = out[depth == depth[depth > 0].min()][0], out[depth == depth.max()][0]
    assert int(near[0]) - int(near[2]) > int(far[0]) - int(far[2])


def test_empty_and_sparse_inputs():
    np.testing.assert_array_equal(colorize_depth(np.zeros((4, 5), np.float32)), 0)
    one = np.zeros((9, 9), np.float32)
    one[3, 5] = 7.0  # off the 4x subsample: the range falls back to every valid pixel
    out = colorize_depth(one)
    assert out[3, 5].any() and not np.delete(out.reshape(-1, 3), 3 * 9 + 5, axis=0).any()


def test_colorize_confidence():
    out = colorize_confidence(np.array([[0.0, 0.5, 1.0, np.nan]], np.float32))
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out[0, 3], out[0, 0])  # NaN as 0
    assert not np.array_equal(out[0, 0], out[0, 2])
