"""`depth-completion complete`: complete one KITTI-format sparse depth PNG with its RGB image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.errors import DepthCompletionError
from depth_completion_ros.core.units import kitti_png_to_metres, metres_to_kitti_png

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the sub-command's options."""
    parser.add_argument("--rgb", required=True, type=Path, help="RGB image (any 8-bit format OpenCV reads)")
    parser.add_argument("--sparse", required=True, type=Path, help="sparse depth, uint16 PNG, metres x 256")
    parser.add_argument("--method", choices=("default", "cspn"), default="default")
    parser.add_argument("--checkpoint", type=Path, default=None, help="safetensors checkpoint (method cspn)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out-depth", required=True, type=Path, help="dense depth, uint16 PNG, metres x 256")
    parser.add_argument("--out-confidence", type=Path, default=None, help="confidence PNG (0..max = 0..1)")
    parser.add_argument("--confidence-bits", type=int, choices=(8, 16), default=8)


def _fail(msg: str) -> int:
    print(f"depth-completion complete: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Read, complete, write.  Returns 0, or 2 on bad input (one-line message on stderr)."""
    for name, path in (("rgb", args.rgb), ("sparse", args.sparse)):
        if not Path(path).is_file():
            return _fail(f"{name} file not found: {path}")
    bgr = cv2.imread(str(args.rgb), cv2.IMREAD_COLOR)
    if bgr is None:
        return _fail(f"cannot read rgb image: {args.rgb}")
    raw = cv2.imread(str(args.sparse), cv2.IMREAD_UNCHANGED)
    if raw is None:
        return _fail(f"cannot read sparse depth: {args.sparse}")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        return _fail(f"sparse depth must be a single-channel uint16 PNG, got {raw.dtype} {raw.shape}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    sparse = kitti_png_to_metres(raw)
    try:
        completer = DepthCompleter(CompleterConfig(method=args.method, checkpoint=args.checkpoint, device=args.device))
        depth, conf = completer.complete(rgb, sparse)
    except DepthCompletionError as exc:
        return _fail(str(exc))
    except ValueError as exc:
        return _fail(str(exc))
    for out in (args.out_depth, args.out_confidence):
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out_depth), metres_to_kitti_png(depth)):
        return _fail(f"cannot write {args.out_depth}")
    if args.out_confidence is not None:
        top = 255 if args.confidence_bits == 8 else 65535
        dtype = np.uint8 if args.confidence_bits == 8 else np.uint16
        img = np.clip(np.rint(conf.astype(np.float64) * top), 0, top).astype(dtype)
        if not cv2.imwrite(str(args.out_confidence), img):
            return _fail(f"cannot write {args.out_confidence}")
    return 0
