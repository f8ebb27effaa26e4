"""Training samples and their augmentation: crop (with intrinsics), horizontal flip (with intrinsics), colour jitter.

A *frame* is the numpy form of one sample (before tensors):
    rgb (H, W, 3) uint8 RGB; sparse (H, W) float32 metres (0 = none); gt (H, W) float32 metres (0 = none);
    K (3, 3) float64 intrinsics of the image; id str.
`to_sample` turns it into the tensor dict that data sets yield and `tools/train.py` consumes:
    rgb (3, H, W) float32 in [0, 1]; sparse, gt (1, H, W) float32 metres; K (3, 3) float32; id str.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from depth_completion_ros.core.errors import DataError

__all__ = [
    "AugmentConfig",
    "Frame",
    "augment",
    "bottom_crop",
    "check_frame",
    "colour_jitter",
    "crop",
    "hflip",
    "to_sample",
]


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One frame as numpy arrays (see module docstring for shapes and units)."""

    rgb: np.ndarray
    sparse: np.ndarray
    gt: np.ndarray
    K: np.ndarray
    id: str


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Random augmentation.  `crop` = (height, width) of a random crop, None = keep the full image."""

    crop: tuple[int, int] | None = None
    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


def check_frame(frame: Frame) -> Frame:
    """Validate sizes and dtypes of a frame.

    Raises:
        DataError: RGB not (H, W, 3) uint8, sparse/gt size different from the RGB size, or K not (3, 3).
    """
    rgb = np.asarray(frame.rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"{frame.id}: RGB must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    for name in ("sparse", "gt"):
        arr = np.asarray(getattr(frame, name))
        if arr.shape != rgb.shape[:2]:
            raise DataError(
                f"{frame.id}: {name} depth size {arr.shape[1]}x{arr.shape[0]} does not match "
                f"the RGB size {rgb.shape[1]}x{rgb.shape[0]}"
            )
    if np.asarray(frame.K).shape != (3, 3):
        raise DataError(f"{frame.id}: K must be (3, 3), got {np.asarray(frame.K).shape}")
    return frame


def crop(frame: Frame, y0: int, x0: int, height: int, width: int) -> Frame:
    """Crop all images to rows y0..y0+height, columns x0..x0+width; the principal point moves by (-x0, -y0)."""
    h, w = frame.rgb.shape[:2]
    if not (y0 >= 0 and x0 >= 0 and y0 + height <= h and x0 + width <= w and height > 0 and width > 0):
        raise DataError(f"{frame.id}: crop ({x0}, {y0}, {width}x{height}) outside the {w}x{h} image")
    K = np.array(frame.K, dtype=np.float64)
    K[0, 2] -= x0
    K[1, 2] -= y0
    sl = (slice(y0, y0 + height), slice(x0, x0 + width))
    return replace(frame, rgb=frame.rgb[sl], sparse=frame.sparse[sl], gt=frame.gt[sl], K=K)


def bottom_crop(frame: Frame, height: int, width: int) -> Frame:
    """KITTI's deterministic bottom-centre crop (as val_selection_cropped: 1216x352)."""
    h, w = frame.rgb.shape[:2]
    return crop(frame, h - height, (w - width) // 2, min(height, h), min(width, w))


def hflip(frame: Frame) -> Frame:
    """Mirror left-right; cx -> (W - 1) - cx (pixel centres at integer coordinates)."""
    w = frame.rgb.shape[1]
    K = np.array(frame.K, dtype=np.float64)
    K[0, 2] = (w - 1) - K[0, 2]
    return replace(
        frame,
        rgb=np.ascontiguousarray(frame.rgb[:, ::-1]),
        sparse=np.ascontiguousarray(frame.sparse[:, ::-1]),
        gt=np.ascontiguousarray(frame.gt[:, ::-1]),
        K=K,
    )


def colour_jitter(
    rgb: np.ndarray, rng: np.random.Generator, *, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x]; (H, W, 3) uint8 -> same."""
    img = rgb.astype(np.float32)
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = rng.uniform(1 - saturation, 1 + saturation)
    img = img * b
    grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    img = (img - grey.mean()) * c + grey.mean()
    grey = (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    img = (img - grey) * s + grey
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def augment(frame: Frame, cfg: AugmentConfig, rng: np.random.Generator) -> Frame:
    """Random crop, flip and colour jitter of a frame (depth values are never changed, only moved)."""
    h, w = frame.rgb.shape[:2]
    if cfg.crop is not None:
        ch, cw = min(cfg.crop[0], h), min(cfg.crop[1], w)
        frame = crop(frame, int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
    if rng.uniform() < cfg.hflip:
        frame = hflip(frame)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        frame = replace(
            frame,
            rgb=colour_jitter(
                frame.rgb, rng, brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation
            ),
        )
    return frame


def to_sample(frame: Frame) -> dict[str, torch.Tensor | str]:
    """Frame -> tensor dict: rgb (3, H, W) float32 [0, 1], sparse / gt (1, H, W) float32 m, K (3, 3), id."""
    check_frame(frame)
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(frame.rgb.transpose(2, 0, 1))).float().div_(255.0),
        "sparse": torch.from_numpy(np.ascontiguousarray(frame.sparse, dtype=np.float32))[None],
        "gt": torch.from_numpy(np.ascontiguousarray(frame.gt, dtype=np.float32))[None],
        "K": torch.from_numpy(np.asarray(frame.K, dtype=np.float32)),
        "id": frame.id,
    }
