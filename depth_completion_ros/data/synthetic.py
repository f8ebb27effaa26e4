"""Procedural scenes with exact depth, a simulated spinning LiDAR and a ToF spot pattern (no download).

World frame = LiDAR / sensor frame (REP 103: x forward, y left, z up), metres.  The camera looks along +x;
`T_camera_from_lidar` maps LiDAR points into the camera optical frame (x right, y down, z forward).
Depth is ray-cast exactly (vectorized numpy) against planes, yawed boxes and vertical cylinders; colours
come from per-object textures and Lambertian shading, so RGB edges agree with depth edges.
Everything is deterministic from the seed (one `numpy.random.Generator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.errors import DataError
from depth_completion_ros.core.files import check_image_pixels
from depth_completion_ros.core.projection import project_points
from depth_completion_ros.data.augment import AugmentConfig, Frame, augment, to_sample

__all__ = [
    "KITTI_HDL64_ELEVATION_DEG",
    "LidarConfig",
    "SyntheticDataset",
    "SyntheticScene",
    "generate_scene",
    "tof_spot_depth",
]

KITTI_HDL64_ELEVATION_DEG = (-24.9, 2.0)
"""Vertical field of view of the KITTI Velodyne HDL-64E (lowest, highest beam), degrees."""

_R_CAM_FROM_LIDAR = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
_EPS = 1e-4


@dataclass(frozen=True, kw_only=True)
class LidarConfig:
    """Spinning LiDAR model: `beams` rows evenly spread over `elevation_deg`, `azimuth_step_deg` per column."""

    beams: int = 64
    elevation_deg: tuple[float, float] = KITTI_HDL64_ELEVATION_DEG
    azimuth_step_deg: float = 0.16
    max_range: float = 120.0
    range_noise_std: float = 0.015
    dropout: float = 0.04


@dataclass(frozen=True)
class SyntheticScene:
    """One rendered scene.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        depth_gt: (H, W) float32 metres along the optical axis, 0 = sky / no return.
        sparse_depth: (H, W) float32 metres, projected LiDAR or ToF samples, 0 = none.
        points_lidar: (N, 4) float32 x, y, z, intensity in the LiDAR frame (REP 103), metres.
        camera: rectified `CameraModel` of the image.
        T_camera_from_lidar: (4, 4) float64, LiDAR frame -> camera optical frame.
        kind: "outdoor" or "indoor".
        sensor: "lidar" or "tof".
    """

    rgb: np.ndarray
    depth_gt: np.ndarray
    sparse_depth: np.ndarray
    points_lidar: np.ndarray
    camera: CameraModel
    T_camera_from_lidar: np.ndarray
    kind: str
    sensor: str = "lidar"
    seed: int = field(default=0)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 intrinsics of the rectified image."""
        return np.asarray(self.camera.K, dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------
# scene description
@dataclass
class _Scene:
    planes: list[tuple[np.ndarray, float, int]] = field(default_factory=list)  # (normal n, offset d: n.p = d), mat
    boxes: list[tuple[np.ndarray, np.ndarray, float, int, bool]] = field(
        default_factory=list
    )  # c, half, yaw, mat, inside
    cylinders: list[tuple[float, float, float, float, float, int]] = field(default_factory=list)  # cx cy r z0 z1 mat
    materials: list[dict] = field(default_factory=list)


def _material(
    rng: np.random.Generator, base: tuple[float, float, float] | None = None, pattern: str | None = None
) -> dict:
    if base is None:
        hue = rng.uniform(0, 1)
        sat = rng.uniform(0.25, 0.8)
        val = rng.uniform(0.35, 0.95)
        base = _hsv_to_rgb(hue, sat, val)
    return {
        "base": np.asarray(base, dtype=np.float32),
        "pattern": pattern or str(rng.choice(["noise", "stripes", "checker", "plain"])),
        "freq": float(rng.uniform(1.0, 4.0)),
        "phase": rng.uniform(0, 2 * np.pi, size=3).astype(np.float32),
        "reflectance": float(rng.uniform(0.1, 0.9)),
    }


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _add_material(scene: _Scene, mat: dict) -> int:
    scene.materials.append(mat)
    return len(scene.materials) - 1


def _outdoor_scene(rng: np.random.Generator, sensor_height: float) -> _Scene:
    s = _Scene()
    road = _add_material(s, {**_material(rng, (0.33, 0.33, 0.35), "asphalt"), "reflectance": 0.15})
    s.planes.append((np.array([0.0, 0.0, 1.0]), -sensor_height, road))
    road_half = rng.uniform(3.5, 6.0)
    # cars / crates on the road sides
    for _ in range(int(rng.integers(5, 10))):
        length, width, height = rng.uniform(3.5, 4.8), rng.uniform(1.6, 2.0), rng.uniform(1.3, 1.8)
        if rng.uniform() < 0.3:
            length, width, height = rng.uniform(0.6, 1.5), rng.uniform(0.6, 1.5), rng.uniform(0.5, 1.5)
        x = rng.uniform(5.0, 45.0)
        side = rng.choice([-1.0, 1.0])
        y = side * rng.uniform(0.3 * road_half, road_half + 2.0)
        c = np.array([x, y, -sensor_height + height / 2])
        s.boxes.append(
            (
                c,
                np.array([length / 2, width / 2, height / 2]),
                float(rng.normal(0, 0.25)),
                _add_material(s, _material(rng)),
                False,
            )
        )
    # buildings / walls along both sides, with gaps
    for side in (-1.0, 1.0):
        x = rng.uniform(-10.0, 5.0)
        while x < 90.0:
            length = rng.uniform(6.0, 25.0)
            if rng.uniform() < 0.8:
                depth = rng.uniform(3.0, 8.0)
                y = side * (road_half + rng.uniform(3.0, 8.0) + depth / 2)
                height = rng.uniform(3.0, 14.0)
                mat = _add_material(s, _material(rng, pattern=str(rng.choice(["bricks", "stripes", "noise"]))))
                c = np.array([x + length / 2, y, -sensor_height + height / 2])
                s.boxes.append(
                    (c, np.array([length / 2, depth / 2, height / 2]), float(rng.normal(0, 0.03)), mat, False)
                )
            x += length + rng.uniform(1.0, 8.0)
    # poles (street lights, signs, trees)
    for _ in range(int(rng.integers(4, 10))):
        x = rng.uniform(4.0, 50.0)
        y = rng.choice([-1.0, 1.0]) * rng.uniform(road_half + 0.5, road_half + 3.0)
        r = rng.uniform(0.05, 0.3)
        mat = _add_material(s, _material(rng, pattern="plain"))
        s.cylinders.append((x, y, r, -sensor_height, -sensor_height + rng.uniform(2.5, 7.0), mat))
    return s


def _indoor_scene(rng: np.random.Generator, sensor_height: float) -> _Scene:
    s = _Scene()
    length, width, height = rng.uniform(5.0, 10.0), rng.uniform(4.0, 8.0), rng.uniform(2.4, 3.2)
    floor = _add_material(s, _material(rng, pattern="checker"))
    s.planes.append((np.array([0.0, 0.0, 1.0]), -sensor_height, floor))
    ceiling = _add_material(s, _material(rng, (0.85, 0.85, 0.82), "plain"))
    s.planes.append((np.array([0.0, 0.0, -1.0]), -(height - sensor_height), ceiling))
    walls = _add_material(s, _material(rng, pattern=str(rng.choice(["stripes", "noise", "plain"]))))
    back = rng.uniform(0.5, 1.5)
    centre = np.array([length / 2 - back, rng.uniform(-0.5, 0.5), -sensor_height + height / 2])
    s.boxes.append((centre, np.array([length / 2, width / 2, height / 2 + 0.5]), 0.0, walls, True))
    for _ in range(int(rng.integers(4, 9))):
        bl, bw, bh = rng.uniform(0.4, 1.8), rng.uniform(0.4, 1.2), rng.uniform(0.4, 2.0)
        x = rng.uniform(1.0, length - back - 0.5)
        y = centre[1] + rng.uniform(-width / 2 + 0.5, width / 2 - 0.5)
        c = np.array([x, y, -sensor_height + bh / 2])
        s.boxes.append(
            (
                c,
                np.array([bl / 2, bw / 2, bh / 2]),
                float(rng.uniform(-0.6, 0.6)),
                _add_material(s, _material(rng)),
                False,
            )
        )
    for _ in range(int(rng.integers(0, 3))):
        x, y = rng.uniform(1.5, length - back - 0.5), centre[1] + rng.uniform(-width / 2 + 0.3, width / 2 - 0.3)
        mat = _add_material(s, _material(rng, pattern="plain"))
        s.cylinders.append((x, y, rng.uniform(0.1, 0.3), -sensor_height, height - sensor_height, mat))
    return s


# --------------------------------------------------------------------------------------------------------------
# ray casting


class _AngularCull:
    """Conservative selection of the rays that can hit a convex object, by azimuth and elevation bounds."""

    def __init__(self, origin: np.ndarray, dirs: np.ndarray) -> None:
        self.origin = origin.astype(np.float64)
        az = np.arctan2(dirs[:, 1], dirs[:, 0]).astype(np.float64)
        self.el = np.arctan2(dirs[:, 2], np.hypot(dirs[:, 0], dirs[:, 1])).astype(np.float64)
        self.order = np.argsort(az, kind="stable")
        self.az_sorted = az[self.order]
        self.n = dirs.shape[0]

    def select(self, corners: np.ndarray, radius_xy: float, centre: np.ndarray) -> np.ndarray:
        """Indices of rays whose direction falls within the object's angular box (all rays if too close)."""
        rel = corners - self.origin
        cen = centre - self.origin
        dist_xy = float(np.hypot(cen[0], cen[1]))
        if dist_xy <= radius_xy * 1.05 + 0.05:
            return np.arange(self.n)
        centre_az = np.arctan2(cen[1], cen[0])
        da = np.angle(np.exp(1j * (np.arctan2(rel[:, 1], rel[:, 0]) - centre_az)))
        lo, hi = centre_az + da.min() - 1e-3, centre_az + da.max() + 1e-3
        ranges = [(lo, hi)]
        if lo < -np.pi:
            ranges = [(lo + 2 * np.pi, np.pi), (-np.pi, hi)]
        elif hi > np.pi:
            ranges = [(lo, np.pi), (-np.pi, hi - 2 * np.pi)]
        parts = [
            self.order[np.searchsorted(self.az_sorted, a, "left") : np.searchsorted(self.az_sorted, b, "right")]
            for a, b in ranges
        ]
        idx = np.concatenate(parts)
        dmin = max(dist_xy - radius_xy, 1e-3)
        dmax = dist_xy + radius_xy
        zmin, zmax = float(rel[:, 2].min()), float(rel[:, 2].max())
        el_hi = np.arctan2(zmax, dmin if zmax > 0 else dmax) + 1e-3
        el_lo = np.arctan2(zmin, dmin if zmin < 0 else dmax) - 1e-3
        el = self.el[idx]
        return idx[(el >= el_lo) & (el <= el_hi)]


def _cast(
    scene: _Scene, origin: np.ndarray, dirs: np.ndarray, max_t: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit along `origin + t * dirs` (dirs (N, 3), not necessarily unit).

    Returns t (N,) float32 (inf = no hit), material (N,) int32 (-1 = none), normal (N, 3) float32 (unit).
    """
    n = dirs.shape[0]
    d = dirs.astype(np.float32)
    o = origin.astype(np.float32)
    best = np.full(n, np.inf, dtype=np.float32)
    mat = np.full(n, -1, dtype=np.int32)
    normal = np.zeros((n, 3), dtype=np.float32)

    def keep(t: np.ndarray, m: int, nrm: np.ndarray | None) -> np.ndarray:
        better = (t > _EPS) & (t < best)
        best[better] = t[better]
        mat[better] = m
        if nrm is not None:
            normal[better] = nrm if nrm.ndim == 1 else nrm[better]
        return better

    for nv, off, m in scene.planes:
        denom = d @ nv.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.float32(off) - np.float32(o @ nv)) / denom
        t = np.where(denom < 0, t, np.inf).astype(np.float32)  # only front faces
        keep(t, m, nv.astype(np.float32))

    cull = _AngularCull(o, d)
    for c, half, yaw, m, inside in scene.boxes:
        cy, sy = np.float32(np.cos(yaw)), np.float32(np.sin(yaw))
        rot = np.array([[cy, sy, 0], [-sy, cy, 0], [0, 0, 1]], dtype=np.float32)  # world -> box
        corners = c + (np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * half) @ rot
        idx = np.arange(n) if inside else cull.select(corners, float(np.hypot(half[0], half[1])), c)
        if idx.size == 0:
            continue
        ol = rot @ (o - c.astype(np.float32))
        dl = d[idx] @ rot.T
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.float32(1.0) / np.where(np.abs(dl) < 1e-9, np.float32(1e-9), dl)
        h = half.astype(np.float32)
        t1 = (-h - ol) * inv
        t2 = (h - ol) * inv
        tnear = np.minimum(t1, t2)
        tfar = np.maximum(t1, t2)
        if inside:
            t = tfar.min(axis=1)
            axis = tfar.argmin(axis=1)
        else:
            t = tnear.max(axis=1)
            axis = tnear.argmax(axis=1)
            t = np.where((t <= tfar.min(axis=1)) & (t > _EPS), t, np.inf).astype(np.float32)
        better = (t > _EPS) & (t < best[idx])
        if not better.any():
            continue
        sub = idx[better]
        ax = axis[better]
        nl = np.zeros((sub.size, 3), dtype=np.float32)
        nl[np.arange(sub.size), ax] = -np.sign(dl[better, ax])
        best[sub] = t[better]
        mat[sub] = m
        normal[sub] = nl @ rot  # box -> world (rot is orthonormal)

    for cx, cy_, r, z0, z1, m in scene.cylinders:
        centre = np.array([cx, cy_, (z0 + z1) / 2])
        corners = centre + np.array(np.meshgrid([-r, r], [-r, r], [z0 - centre[2], z1 - centre[2]])).reshape(3, -1).T
        idx = cull.select(corners, r * 1.5, centre)
        if idx.size == 0:
            continue
        ds = d[idx]
        ox, oy = o[0] - cx, o[1] - cy_
        a = ds[:, 0] ** 2 + ds[:, 1] ** 2
        b = 2 * (ox * ds[:, 0] + oy * ds[:, 1])
        cc = ox * ox + oy * oy - r * r
        disc = b * b - 4 * a * cc
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        z = o[2] + t * ds[:, 2]
        t = np.where((disc > 0) & (a > 1e-12) & (z >= z0) & (z <= z1), t, np.inf).astype(np.float32)
        better = (t > _EPS) & (t < best[idx])
        if not better.any():
            continue
        sub = idx[better]
        best[sub] = t[better]
        mat[sub] = m
        px = ox + t[better] * ds[better, 0]
        py = oy + t[better] * ds[better, 1]
        normal[sub] = np.stack([px, py, np.zeros_like(px)], axis=1) / np.float32(r)

    far = best * np.linalg.norm(d, axis=1) > max_t
    best[far] = np.inf
    mat[far] = -1
    return best, mat, normal


def _texture(scene: _Scene, mat: np.ndarray, points: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Albedo (N, 3) float32 in [0, 1] of the hit points (world frame)."""
    out = np.zeros((mat.size, 3), dtype=np.float32)
    for m in np.unique(mat[mat >= 0]):
        sel = mat == m
        spec = scene.materials[int(m)]
        p = points[sel]
        f, ph = spec["freq"], spec["phase"]
        # surface coordinates: the two axes most orthogonal to the normal
        nz = np.abs(normal[sel, 2]) > 0.7
        u = np.where(nz, p[:, 0], p[:, 0] + p[:, 1])
        v = np.where(nz, p[:, 1], p[:, 2])
        pat = spec["pattern"]
        if pat == "asphalt":
            g = 0.08 * np.sin(13.1 * u + ph[0]) * np.sin(17.3 * v + ph[1]) + 0.05 * np.sin(41.0 * u + 37.0 * v)
            lane = (np.abs(np.abs(p[:, 1]) - 0.1) < 0.08) & (np.mod(p[:, 0], 6.0) < 3.0)
            shade = 1.0 + g
            col = spec["base"][None, :] * shade[:, None]
            col[lane] = 0.9
        else:
            if pat == "stripes":
                shade = 0.8 + 0.2 * np.sign(np.sin(f * 2.0 * v + ph[0]))
            elif pat == "checker":
                shade = 0.75 + 0.25 * np.sign(np.sin(f * u + ph[0]) * np.sin(f * v + ph[1]))
            elif pat == "bricks":
                row = np.floor(v / 0.3)
                col_ = np.floor(u / 0.8 + 0.5 * np.mod(row, 2))
                mortar = (np.mod(v, 0.3) < 0.03) | (np.mod(u / 0.8 + 0.5 * np.mod(row, 2), 1.0) < 0.04)
                shade = np.where(mortar, 1.3, 0.85 + 0.1 * np.sin(col_ * 12.9898 + row * 78.233))
            elif pat == "noise":
                shade = (
                    0.85
                    + 0.1 * np.sin(f * 3.1 * u + ph[0]) * np.sin(f * 2.3 * v + ph[1])
                    + 0.05 * np.sin(f * 11.0 * (u + v) + ph[2])
                )
            else:
                shade = np.ones(p.shape[0], dtype=np.float32)
            col = spec["base"][None, :] * shade[:, None]
        out[sel] = col
    return np.clip(out, 0.0, 1.0)


def _shade(
    scene: _Scene, t: np.ndarray, mat: np.ndarray, normal: np.ndarray, origin: np.ndarray, dirs: np.ndarray, kind: str
) -> np.ndarray:
    """Colour (N, 3) float32 in [0, 1]: Lambert shading of the texture, sky gradient where nothing is hit."""
    hit = mat >= 0
    pts = origin[None, :].astype(np.float32) + np.where(hit, t, 0)[:, None] * dirs
    albedo = _texture(scene, mat, pts, normal)
    if kind == "outdoor":
        light = np.array([0.4, 0.5, 0.77], dtype=np.float32)
        ambient, diffuse = 0.35, 0.75
    else:
        light = np.array([0.2, 0.3, 0.93], dtype=np.float32)
        ambient, diffuse = 0.45, 0.6
    light /= np.linalg.norm(light)
    # light the face turned to the viewer (normals may point either way on thin objects)
    lam = np.abs(normal @ light)
    col = albedo * (ambient + diffuse * lam)[:, None]
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    if kind == "outdoor":
        dist = np.where(hit, t * np.linalg.norm(dirs, axis=1), 0)
        fog = (1.0 - np.exp(-dist / 250.0))[:, None]
        sky = np.array([0.55, 0.7, 0.92], dtype=np.float32)[None, :] * (0.8 + 0.4 * np.clip(unit[:, 2:3], 0, 1))
        col = col * (1 - fog) + sky * fog
        col[~hit] = sky[~hit]
    else:
        col[~hit] = 0.05
    return np.clip(col, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------------------
# sensors
def _spinning_lidar(scene: _Scene, cfg: LidarConfig, rng: np.random.Generator) -> np.ndarray:
    """Simulated scan (N, 4) float32 x, y, z, intensity in the LiDAR frame (sensor at the origin)."""
    elev = np.deg2rad(np.linspace(cfg.elevation_deg[0], cfg.elevation_deg[1], cfg.beams))
    az = np.deg2rad(np.arange(-180.0, 180.0, cfg.azimuth_step_deg))
    el, a = np.meshgrid(elev, az, indexing="ij")
    el = el + rng.normal(0, np.deg2rad(0.02), size=el.shape)  # per-beam calibration jitter
    dirs = np.stack([np.cos(el) * np.cos(a), np.cos(el) * np.sin(a), np.sin(el)], axis=-1).reshape(-1, 3)
    origin = np.zeros(3)
    t, mat, normal = _cast(scene, origin, dirs, cfg.max_range)
    hit = mat >= 0
    cos_inc = np.abs(np.sum(normal * dirs.astype(np.float32), axis=1))
    # dropouts: random, more at grazing incidence and on dark surfaces
    p_drop = cfg.dropout + 0.3 * (cos_inc < 0.1)
    keep = hit & (rng.uniform(size=t.size) >= p_drop)
    rng_noise = rng.normal(0, cfg.range_noise_std, size=t.size).astype(np.float32)
    r = t[keep] + rng_noise[keep]
    pts = dirs[keep].astype(np.float32) * r[:, None]
    refl = np.array([m["reflectance"] for m in scene.materials], dtype=np.float32)
    intensity = np.clip(refl[mat[keep]] * (0.3 + 0.7 * cos_inc[keep]), 0, 1)
    return np.concatenate([pts, intensity[:, None]], axis=1).astype(np.float32)


def tof_spot_depth(
    depth_gt: np.ndarray,
    rng: np.random.Generator,
    *,
    spacing: int = 8,
    jitter_px: float = 0.5,
    rel_noise: float = 0.01,
    dropout: float = 0.05,
    max_range: float = 8.0,
) -> np.ndarray:
    """ToF-like regular spot grid sampled from dense depth (H, W) float32 metres -> sparse (H, W), 0 = none.

    Spots every `spacing` px (with sub-pixel jitter rounded to the nearest pixel), relative range noise
    `rel_noise`, random dropouts and no return beyond `max_range` metres.
    """
    h, w = depth_gt.shape
    vs, us = np.meshgrid(np.arange(spacing // 2, h, spacing), np.arange(spacing // 2, w, spacing), indexing="ij")
    vs = np.clip(np.rint(vs + rng.normal(0, jitter_px, vs.shape)), 0, h - 1).astype(np.int64).ravel()
    us = np.clip(np.rint(us + rng.normal(0, jitter_px, us.shape)), 0, w - 1).astype(np.int64).ravel()
    d = depth_gt[vs, us].astype(np.float32)
    d = d * (1.0 + rng.normal(0, rel_noise, d.shape)).astype(np.float32)
    ok = (depth_gt[vs, us] > 0) & (depth_gt[vs, us] <= max_range) & (rng.uniform(size=d.shape) >= dropout)
    out = np.zeros_like(depth_gt, dtype=np.float32)
    out[vs[ok], us[ok]] = d[ok]
    return out


# --------------------------------------------------------------------------------------------------------------
def _camera(kind: str, width: int, height: int) -> CameraModel:
    if kind == "outdoor":  # KITTI-like: f = 721.5 px at 1242 wide, horizon a bit above the centre
        f = 721.5377 * width / 1242.0
        cx, cy = 609.5593 * width / 1242.0, 172.854 * height / 375.0
    else:  # Kinect-like: f = 525 px at 640 wide
        f = 525.0 * width / 640.0
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    P = np.hstack([K, np.zeros((3, 1))])
    if hasattr(CameraModel, "from_projection"):
        return CameraModel.from_projection(P, width, height)
    return CameraModel(width=width, height=height, K=K, P=P, rectified=True)


def generate_scene(
    seed: int = 0,
    kind: str = "outdoor",
    width: int = 1242,
    height: int = 375,
    lidar_beams: int = 64,
    sensor: str = "lidar",
    *,
    azimuth_step_deg: float | None = None,
) -> SyntheticScene:
    """Render one procedural scene, deterministic from `seed`.

    Args:
        seed: seed of the `numpy.random.Generator` that drives layout, textures and sensor noise.
        kind: "outdoor" (road, cars, buildings, poles, sky) or "indoor" (room, furniture, columns).
        width, height: image size in pixels.
        lidar_beams: number of LiDAR rows (64, 32, 16, ...) over KITTI's -24.9..+2 degrees.
        sensor: "lidar" (spinning LiDAR) or "tof" (regular spot grid in the image).
        azimuth_step_deg: LiDAR column step (default 0.16 degrees at 64 beams, up to 0.2 at 16 beams).

    Returns:
        A `SyntheticScene` (see its attributes for shapes and units).

    Raises:
        DataError: unknown `kind` / `sensor`, or a non-positive size.
    """
    if kind not in ("outdoor", "indoor"):
        raise DataError(f"generate_scene: kind must be 'outdoor' or 'indoor', got {kind!r}")
    if sensor not in ("lidar", "tof"):
        raise DataError(f"generate_scene: sensor must be 'lidar' or 'tof', got {sensor!r}")
    _check_size(width, height, lidar_beams)
    rng = np.random.default_rng(seed)
    sensor_height = 1.73 if kind == "outdoor" else float(rng.uniform(0.9, 1.5))
    scene = _outdoor_scene(rng, sensor_height) if kind == "outdoor" else _indoor_scene(rng, sensor_height)
    camera = _camera(kind, width, height)
    K = np.asarray(camera.K, dtype=np.float64)
    # camera 0.27 m ahead of and 0.08 m below the LiDAR (KITTI-like), slight random mounting error
    T = np.eye(4)
    ang = rng.normal(0, 0.002, 3)
    cz, sz = np.cos(ang[2]), np.sin(ang[2])
    cyy, syy = np.cos(ang[1]), np.sin(ang[1])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    Ry = np.array([[cyy, 0, syy], [0, 1, 0], [-syy, 0, cyy]])
    R_c_l = _R_CAM_FROM_LIDAR @ Rz @ Ry
    cam_pos = np.array([0.27, 0.0, -0.08]) if kind == "outdoor" else np.array([0.05, 0.0, -0.05])
    T[:3, :3] = R_c_l
    T[:3, 3] = -R_c_l @ cam_pos

    # camera rays with unit optical-axis component, so the ray parameter t is the depth z
    vv, uu = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    rays_cam = np.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], np.ones_like(uu)], axis=-1).reshape(-1, 3)
    dirs = (rays_cam @ R_c_l).astype(np.float32)  # camera -> lidar frame: R^T applied to row vectors
    max_range = 90.0 if kind == "outdoor" else 20.0  # KITTI-like: annotated depth ends near 85 m
    t, mat, normal = _cast(scene, cam_pos, dirs, max_range)
    depth_gt = np.where(mat >= 0, t, 0).astype(np.float32).reshape(height, width)
    col = _shade(scene, t, mat, normal, cam_pos, dirs, kind).reshape(height, width, 3)
    col = col + rng.normal(0, 0.01, col.shape).astype(np.float32)
    rgb = np.clip(np.rint(col * 255.0), 0, 255).astype(np.uint8)

    if sensor == "lidar":
        step = azimuth_step_deg if azimuth_step_deg is not None else 0.16 * max(1.0, 64.0 / lidar_beams) ** 0.16
        cfg = LidarConfig(beams=lidar_beams, azimuth_step_deg=step, max_range=max_range)
        points = _spinning_lidar(scene, cfg, rng)
        sparse = project_points(points[:, :3].astype(np.float64), T, camera, min_depth=0.1)
    else:
        spacing = max(4, round(width / 80))
        sparse = tof_spot_depth(depth_gt, rng, spacing=spacing, max_range=8.0 if kind == "indoor" else 30.0)
        vs, us = np.nonzero(sparse)
        z = sparse[vs, us].astype(np.float64)
        pc = np.stack([(us - K[0, 2]) / K[0, 0] * z, (vs - K[1, 2]) / K[1, 1] * z, z], axis=1)
        pl = (pc - T[:3, 3]) @ T[:3, :3]  # camera -> sensor frame
        points = np.concatenate([pl, np.ones((pl.shape[0], 1))], axis=1).astype(np.float32)
    return SyntheticScene(
        rgb=rgb,
        depth_gt=depth_gt,
        sparse_depth=sparse.astype(np.float32),
        points_lidar=points,
        camera=camera,
        T_camera_from_lidar=T,
        kind=kind,
        sensor=sensor,
        seed=seed,
    )


MAX_LIDAR_BEAMS = 4096
"""Most beams a synthetic LiDAR may have (real ones have 16 to 128)."""


def _check_size(width: int, height: int, lidar_beams: int) -> None:
    """DataError for a size below 8x8 or beams outside 1..MAX_LIDAR_BEAMS; ShapeError beyond MAX_IMAGE_PIXELS."""
    if width < 8 or height < 8 or not 1 <= lidar_beams <= MAX_LIDAR_BEAMS:
        raise DataError(
            f"generate_scene: need width, height >= 8 and 1 <= lidar_beams <= {MAX_LIDAR_BEAMS}, got "
            f"{width}x{height}, {lidar_beams}"
        )
    check_image_pixels(width, height, "synthetic scene")


class SyntheticDataset(torch.utils.data.Dataset):
    """`length` synthetic frames (scene i uses seed `seed + i`), yielding `augment.to_sample` dicts.

    Frames are rendered on demand (about 0.1-0.5 s each at KITTI size); `cache=True` keeps them in memory.
    """

    def __init__(
        self,
        length: int,
        *,
        seed: int = 0,
        kind: str = "outdoor",
        width: int = 1242,
        height: int = 375,
        lidar_beams: int = 64,
        sensor: str = "lidar",
        augment_cfg: AugmentConfig | None = None,
        cache: bool = False,
    ) -> None:
        if length < 1:
            raise DataError(f"SyntheticDataset: length must be >= 1, got {length}")
        _check_size(width, height, lidar_beams)
        self.length = length
        self.seed = seed
        self.kwargs = {"kind": kind, "width": width, "height": height, "lidar_beams": lidar_beams, "sensor": sensor}
        self.augment_cfg = augment_cfg
        self._cache: dict[int, Frame] | None = {} if cache else None
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per epoch, like DistributedSampler.set_epoch)."""
        self._epoch = epoch

    def __len__(self) -> int:
        return self.length

    def frame(self, index: int) -> Frame:
        """The un-augmented frame `index` (numpy)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        s = generate_scene(self.seed + index, **self.kwargs)
        kind = self.kwargs["kind"]
        f = Frame(rgb=s.rgb, sparse=s.sparse_depth, gt=s.depth_gt, K=s.K, id=f"synthetic/{kind}/{self.seed + index}")
        if self._cache is not None:
            self._cache[index] = f
        return f

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        f = self.frame(index)
        if self.augment_cfg is not None:
            f = augment(f, self.augment_cfg, np.random.default_rng([self.seed, index, self._epoch]))
        return to_sample(f)
