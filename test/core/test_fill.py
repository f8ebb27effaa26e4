"""Tests of core/fill.py: IP-Basic baseline, nearest fill, density statistics and the default's fill."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from depth_completion_ros.core.errors import DataError, ShapeError
from depth_completion_ros.core.fill import (
    _nearest_exact,
    classical_fill,
    classical_fill_detailed,
    ip_basic_fill,
    nearest_fill,
    reject_outliers,
    sparse_stats,
)
from depth_completion_ros.core.metrics import compute_metrics


def _kitti(d, i):
    dc = d / "depth_completion"
    sp = cv2.imread(str(dc / f"velodyne_raw_image_0{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
    gt = cv2.imread(str(dc / f"groundtruth_image_0{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
    return sp, gt


class TestNearestFill:
    def test_matches_brute_force(self, rng):
        sp = np.zeros((17, 23), np.float32)
        ys, xs = rng.integers(0, 17, 9), rng.integers(0, 23, 9)
        sp[ys, xs] = rng.uniform(1, 50, 9).astype(np.float32)
        out = nearest_fill(sp)
        py, px = np.nonzero(sp)
        yy, xx = np.mgrid[:17, :23]
        d2 = (yy[..., None] - py) ** 2 + (xx[..., None] - px) ** 2
        best = d2.min(axis=-1)
        # Where the nearest measurement is unique, the value must be its depth.
        unique = (d2 == best[..., None]).sum(-1) == 1
        expect = sp[py, px][d2.argmin(-1)]
        np.testing.assert_array_equal(out[unique], expect[unique])

    def test_empty_raises(self):
        with pytest.raises(DataError, match="no valid"):
            nearest_fill(np.zeros((4, 4), np.float32))

    def test_bad_shape(self):
        with pytest.raises(ShapeError):
            nearest_fill(np.zeros((4, 4, 2), np.float32))


class TestIpBasic:
    def test_constant_plane_is_kept(self):
        sp = np.zeros((60, 80), np.float32)
        sp[20::4, ::2] = 12.5
        out = ip_basic_fill(sp)
        # The measured rows span 20..59; the whole image is filled by extrapolation with the same depth.
        np.testing.assert_allclose(out, 12.5, atol=1e-4)

    def test_prefers_near_surface(self):
        sp = np.zeros((40, 40), np.float32)
        sp[::3, ::3] = 30.0
        sp[15:22:3, 15:22:3] = 5.0  # a small near object in a far field
        out = ip_basic_fill(sp, blur="none", extrapolate=False)
        # Dilation in inverted depth (max = nearest) makes the near object win between its points and
        # 2 px beyond them (diamond 5 dilation, then 5×5 closing), the far field stays 30 m further away.
        assert out[18, 19] == pytest.approx(5.0, abs=1e-4)
        assert out[23, 18] == pytest.approx(5.0, abs=1e-4)
        assert out[5, 5] == pytest.approx(30.0, abs=1e-4)

    def test_no_extrapolation_leaves_top_empty(self):
        sp = np.zeros((60, 40), np.float32)
        sp[40::2, ::2] = 10.0
        out = ip_basic_fill(sp, extrapolate=False)
        assert (out[:20] == 0).all()
        assert (out[45:] > 0).all()

    def test_bad_blur(self):
        with pytest.raises(ValueError, match="blur"):
            ip_basic_fill(np.ones((5, 5), np.float32), blur="box")


class TestStats:
    @pytest.mark.parametrize("step", [2, 4, 8, 16])
    def test_spacing_scales_with_grid(self, step):
        sp = np.zeros((200, 240), np.float32)
        sp[::step, ::step] = 3.0
        st = sparse_stats(sp)
        assert st.count == int((sp > 0).sum())
        assert 0.5 * step <= st.spacing <= 1.5 * step
        assert st.max_depth == pytest.approx(3.0)

    def test_nan_and_inf_count_as_missing(self, rng):
        sp = np.where(rng.random((30, 40)) < 0.1, rng.uniform(1, 9, (30, 40)), 0).astype(np.float32)
        sp[[0, 29]] = 0.0
        sp[:, [0, 39]] = 0.0
        clean = sparse_stats(sp)
        dirty = sp.copy()
        dirty[0, 0], dirty[29, 39], dirty[15, 0] = np.nan, np.inf, -np.inf  # (missing either way)
        assert sparse_stats(dirty) == clean
        np.testing.assert_array_equal(classical_fill(dirty), classical_fill(sp))
        np.testing.assert_array_equal(ip_basic_fill(dirty), ip_basic_fill(sp))
        with pytest.raises(DataError):
            sparse_stats(np.full((4, 4), np.nan, np.float32))


class TestClassicalFill:
    @pytest.mark.parametrize("depth", [0.1, 1.0, 40.0, 250.0, 2000.0])
    def test_plane_any_depth(self, depth):
        sp = np.zeros((90, 120), np.float32)
        sp[5::7, 3::5] = depth
        out = classical_fill(sp)
        assert out.dtype == np.float32 and out.shape == sp.shape
        np.testing.assert_allclose(out, depth, rtol=1e-5)

    def test_keeps_measurements_and_fills_everything(self, rng):
        sp = np.zeros((64, 96), np.float32)
        m = rng.random(sp.shape) < 0.03
        sp[m] = rng.uniform(0.5, 300, int(m.sum())).astype(np.float32)
        out = classical_fill(sp, outlier_tolerance=0.0)
        assert (out > 0).all()
        np.testing.assert_array_equal(out[m], sp[m])
        # With rejection on, every kept measurement keeps its value and only far-behind points go.
        res = classical_fill_detailed(sp)
        kept = res.anchors > 0
        assert kept.sum() > 0.5 * m.sum() and not (kept & ~m).any()
        np.testing.assert_array_equal(res.depth[kept], sp[kept])

    def test_slanted_plane_interpolates(self):
        # Depth linear in the row: the fill must be much closer to it than a nearest fill.
        h, w = 120, 160
        truth = np.repeat(np.linspace(5, 25, h, dtype=np.float32)[:, None], w, axis=1)
        sp = np.zeros_like(truth)
        sp[::6, ::6] = truth[::6, ::6]
        err_fill = np.abs(classical_fill(sp) - truth)[:114].mean()
        err_nn = np.abs(nearest_fill(sp) - truth)[:114].mean()
        assert err_fill < err_nn

    @staticmethod
    def _bands_equal_whole(sp, cuts, monkeypatch):
        """Every band equals its rows of the whole-image fill; returns the heights the nearest fill ran on."""
        import depth_completion_ros.core.fill as fill_module

        heights = []
        real = fill_module._nearest_exact

        def spy(depth, spacing=None, out=None):
            heights.append(depth.shape[0])
            return real(depth, spacing, out)

        whole = classical_fill_detailed(sp)
        monkeypatch.setattr(fill_module, "_nearest_exact", spy)
        stats = sparse_stats(sp)
        for r0, r1 in itertools.pairwise(cuts):
            band = classical_fill_detailed(sp, rows=(r0, r1), stats=stats)
            np.testing.assert_array_equal(band.depth, whole.depth[r0:r1])
            np.testing.assert_array_equal(band.anchors, whole.anchors[r0:r1])
            np.testing.assert_array_equal(band.distance, whole.distance[r0:r1])
        return heights

    def test_bands_equal_whole_image(self, rng, monkeypatch):
        """LiDAR-like lines with occluded points: each band's nearest fill runs on a part of the image only."""
        h, w = 300, 160
        sp = np.zeros((h, w), np.float32)
        sp[40::5, ::2] = rng.uniform(5.0, 40.0, (len(range(40, h, 5)), w // 2)).astype(np.float32)
        sp[100:140:5, 60:90:2] = 3.0  # a near object in front of the lines
        heights = self._bands_equal_whole(sp, [0, 97, 180, 300], monkeypatch)
        assert heights and max(heights) < h  # no band fell back to the whole image

    def test_band_falls_back_when_its_nearest_may_be_far(self, rng, monkeypatch):
        """Measurements in the top rows only: a bottom band cannot see them within its margin."""
        h, w = 300, 80
        sp = np.zeros((h, w), np.float32)
        sp[2:12:3, ::3] = rng.uniform(2.0, 9.0, (4, len(range(0, w, 3)))).astype(np.float32)
        heights = self._bands_equal_whole(sp, [0, 150, 300], monkeypatch)
        assert heights[-1] == h  # the bottom band used the whole image

    def test_bad_rows(self):
        sp = np.ones((10, 10), np.float32)
        for rows in [(5, 5), (-1, 4), (3, 11)]:
            with pytest.raises(ValueError, match="rows"):
                classical_fill_detailed(sp, rows=rows)

    def test_reject_outliers_drops_points_behind_surface(self):
        sp = np.zeros((50, 50), np.float32)
        sp[::2, ::2] = 10.0
        sp[24, 25] = 40.0  # seen through the 10 m surface
        out = reject_outliers(sp)
        assert out[24, 25] == 0
        assert (out[::2, ::2] == 10.0).all()


@pytest.mark.shared_data
@pytest.mark.parametrize("cam", [2, 3])
def test_kitti_baselines_reasonable(kitti_dc_dir, cam):
    sp, gt = _kitti(kitti_dc_dir, cam)
    ipb = compute_metrics(ip_basic_fill(sp), gt)
    nn = compute_metrics(nearest_fill(sp), gt)
    # Published fill_in_fast on KITTI val is ~1.3 m RMSE; this frame is easier. Both must be sane, and
    # IP-Basic must beat the nearest fill (it does in the paper).
    assert ipb.rmse_mm < 2000 and nn.rmse_mm < 2500
    assert ipb.rmse_mm < nn.rmse_mm


@pytest.mark.parametrize("top, bottom", [(0, 0), (30, 0), (25, 17)])
def test_reject_outliers_matches_whole_image_morphology(rng, top, bottom):
    """The rejection reads only the rows around the measurements; the kept set equals the whole-image IP-Basic
    morphology (diamond dilation + closing in inverted depth) written out here."""
    h, w = 90, 70
    depth = np.zeros((h, w), np.float32)
    rows = slice(top, h - bottom)
    band = depth[rows]
    mask = rng.random(band.shape) < 0.08
    band[mask] = rng.uniform(2.0, 40.0, mask.sum())
    band[:, 30:40][mask[:, 30:40]] = rng.uniform(2.0, 3.0, mask[:, 30:40].sum())  # a near object: behind it, outliers
    valid = depth > 0
    spacing = max(1.0, float(np.sqrt(band.size / valid.sum())))
    k = int(np.clip(round(spacing + 1.0), 3, 63))
    k += 1 - k % 2
    r = k // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    ref = np.float32(depth.max() * 1.05 + 1.0)
    inv = np.where(valid, ref - depth, 0).astype(np.float32)
    near = cv2.dilate(inv, (np.abs(yy) + np.abs(xx) <= r).astype(np.uint8))
    near = cv2.morphologyEx(near, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    kept = valid & ~(near > ref - depth / np.float32(1.25))
    assert 0 < (valid & ~kept).sum() < valid.sum()  # the case rejects some points, not all
    np.testing.assert_array_equal(reject_outliers(depth, tolerance=0.25) > 0, kept)


def test_gaps_in_a_near_surface_are_filled_from_it():
    """A pixel whose nearest measurement lies behind the surface enclosing it (a gap between nearer measurements, too
    wide for the rejection's near surface) takes that surface's depth; across a clean edge and beyond the
    measurements, the nearest fill stays."""
    depth = np.zeros((60, 70), np.float32)
    near_rows = [10, 14, 18, 22, 26, 37, 41, 45, 49]  # a near surface with a 10-row gap (27..36)
    depth[np.ix_(near_rows, range(10, 51, 4))] = 5.0
    depth[31, 30] = 30.0  # a far point seen through the gap
    depth[np.ix_(near_rows, [58, 62])] = 30.0  # a far surface right of the near one, beyond a clean edge
    fr = classical_fill_detailed(depth, blur=0.0)
    assert fr.anchors[31, 30] == 30.0  # not rejected: the gap is wider than the near surface's reach
    plain = _nearest_exact(fr.anchors)[0]  # the nearest fill the default uses (ties: the smaller column)
    gap = (slice(27, 37), slice(10, 51))
    assert (plain[gap] == 30.0).sum() > 20  # nearest fill alone spreads the far depth in the gap ...
    filled = fr.depth[gap].copy()
    filled[31 - 27, 30 - 10] = 5.0  # (the measurement itself keeps its value)
    np.testing.assert_array_equal(filled, 5.0)  # ... the enclosing surface fills it
    np.testing.assert_array_equal(fr.depth[:, 56:], plain[:, 56:])  # the far surface keeps its nearest fill
    np.testing.assert_array_equal(fr.depth[:4], plain[:4])  # beyond the measurements: no surface, no change


def _lidar_like(rng):
    """Lines every 4 rows in the lower 2/3 with dropouts and a wide gap: rows of the window, search-on and envelope
    paths of `_nearest_kernel`."""
    d = np.zeros((45, 140), np.float32)
    d[16::4] = np.where(rng.random((len(range(16, 45, 4)), 140)) < 0.7, rng.uniform(2, 60, (8, 140)), 0)
    d[30:, 60:75] = 0.0
    return d


@pytest.mark.parametrize("spacing", [None, 1.0])  # the envelope kernel, the window kernel
def test_exact_nearest_matches_brute_force(rng, spacing):
    """The default's nearest fill: the measurement at the smallest Euclidean distance (ties: smaller column, then
    smaller row), checked against every measurement's distance on small random maps and a LiDAR-like one."""
    maps = [_lidar_like(rng)]
    for _ in range(60):
        h, w = rng.integers(1, 30, 2)
        density = rng.choice([0.01, 0.05, 0.3, 0.9])
        maps.append(np.where(rng.random((h, w)) < density, rng.uniform(1, 9, (h, w)), 0).astype(np.float32))
        maps[-1][rng.integers(h), rng.integers(w)] = 2.0
    for d in maps:
        h, w = d.shape
        fill, dist = _nearest_exact(d, spacing)
        ys, xs = np.nonzero(d > 0)
        yy, xx = np.mgrid[:h, :w]
        sq = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
        best = np.lexsort((ys[None, None].repeat(h, 0).repeat(w, 1), xs[None, None].repeat(h, 0).repeat(w, 1), sq))
        first = best[..., 0]
        np.testing.assert_array_equal(fill, d[ys[first], xs[first]])
        np.testing.assert_allclose(dist, np.sqrt(sq.min(-1)), rtol=1e-6)
    with pytest.raises(DataError):
        _nearest_exact(np.zeros((4, 4), np.float32))


def test_extend_above_copies_the_first_exact_row(rng, monkeypatch):
    """Rows above `extend_above` take row t's nearest fill (distance + the rows between); rows from t on are the plain
    result; bands equal the whole image."""
    d = _lidar_like(rng)
    t = 9  # measurements from row 16 on
    plain = classical_fill_detailed(d, blur=0.0)
    ext = classical_fill_detailed(d, blur=0.0, extend_above=t)
    np.testing.assert_array_equal(ext.depth[t:], plain.depth[t:])
    np.testing.assert_array_equal(ext.distance[t:], plain.distance[t:])
    np.testing.assert_array_equal(ext.depth[:t], np.broadcast_to(plain.depth[t], (t, d.shape[1])))
    np.testing.assert_allclose(ext.distance[:t], plain.distance[t] + np.arange(t, 0, -1)[:, None], rtol=1e-6)
    np.testing.assert_array_equal(ext.anchors, plain.anchors)
    whole = classical_fill_detailed(d, extend_above=t)
    stats = sparse_stats(d)
    for r0, r1 in itertools.pairwise([0, 5, 20, 45]):
        band = classical_fill_detailed(d, rows=(r0, r1), stats=stats, extend_above=t)
        np.testing.assert_array_equal(band.depth, whole.depth[r0:r1])
        np.testing.assert_array_equal(band.distance, whole.distance[r0:r1])
        np.testing.assert_array_equal(band.anchors, whole.anchors[r0:r1])
    with pytest.raises(ValueError, match="above"):
        classical_fill_detailed(d, extend_above=20)
