"""`depth-completion complete`: complete one KITTI-format sparse depth PNG with its RGB image.

The published models that use the intrinsics (penet, enet) need the camera: `--intrinsics fx,fy,cx,cy` (pixels,
of this image) or `--camera-info FILE` (the ROS camera-calibration YAML; the image is taken as rectified, K from
its projection_matrix, unless `--raw-image`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from depth_completion_ros.cli import one_line
from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.errors import CalibrationError, DepthCompletionError
from depth_completion_ros.core.files import check_image_output, read_image, write_image
from depth_completion_ros.core.units import kitti_png_to_metres, metres_to_kitti_png

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the sub-command's options."""
    parser.add_argument("--rgb", required=True, type=Path, help="RGB image (any 8-bit format OpenCV reads)")
    parser.add_argument("--sparse", required=True, type=Path, help="sparse depth, uint16 PNG, metres x 256")
    parser.add_argument(
        "--method",
        default="default",
        metavar="{" + ",".join(METHODS) + "}",
        help="weight-free default, the learned cspn, or a published model (needs --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="safetensors checkpoint (cspn: from train; penet / enet / cspn-nyu: from import-weights)",
    )
    camera = parser.add_mutually_exclusive_group()
    camera.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY", help="pinhole intrinsics of the image")
    camera.add_argument("--camera-info", type=Path, default=None, metavar="FILE", help="ROS camera-calibration YAML")
    parser.add_argument(
        "--raw-image", action="store_true", help="with --camera-info: the image is raw (K = camera_matrix)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--fp16", action="store_true", help="published models on CUDA: float16 autocast")
    parser.add_argument("--out-depth", required=True, type=Path, help="dense depth, uint16 PNG, metres x 256")
    parser.add_argument("--out-confidence", type=Path, default=None, help="confidence PNG (0..max = 0..1)")
    parser.add_argument("--confidence-bits", type=int, choices=(8, 16), default=8)


METHODS = ("default", "cspn", "penet", "enet", "cspn-nyu")


def parse_intrinsics(text: str, width: int, height: int) -> CameraModel:
    """'fx,fy,cx,cy' (pixels) -> a pinhole `CameraModel` of a width x height image.

    Raises:
        CalibrationError: not four finite numbers, or focal lengths <= 0.
    """
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not np.isfinite(values).all():
        raise CalibrationError(f"--intrinsics must be four numbers fx,fy,cx,cy, got {text!r}")
    fx, fy, cx, cy = values
    return CameraModel(width=width, height=height, K=np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]))


def _fail(msg: str) -> int:
    print(f"depth-completion complete: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Read, complete, write.  Returns 0, or 2 on bad input (one-line message on stderr).

    Outputs are checked before any work (a format that cannot hold the values, a folder, a device) and written
    atomically: a failed write leaves the previous file as it was.
    """
    try:
        inputs = {Path(p).resolve() for p in (args.rgb, args.sparse)}
        outputs = [p for p in (args.out_depth, args.out_confidence) if p is not None]
        for out in outputs:
            if Path(out).resolve() in inputs:
                return _fail(f"output {out} would overwrite an input")
        if len(outputs) == 2 and Path(outputs[0]).resolve() == Path(outputs[1]).resolve():
            return _fail("--out-depth and --out-confidence name the same file")
        check_image_output(args.out_depth, np.uint16)
        conf_dtype = np.uint8 if args.confidence_bits == 8 else np.uint16
        if args.out_confidence is not None:
            check_image_output(args.out_confidence, conf_dtype)
        bgr = read_image(args.rgb, cv2.IMREAD_COLOR, what="rgb image")
        raw = read_image(args.sparse, cv2.IMREAD_UNCHANGED, what="sparse depth")
        if raw.ndim != 2 or raw.dtype != np.uint16:
            return _fail(f"sparse depth must be a single-channel uint16 PNG, got {raw.dtype} {raw.shape}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        sparse = kitti_png_to_metres(raw)
        camera = None
        if args.intrinsics is not None:
            camera = parse_intrinsics(args.intrinsics, rgb.shape[1], rgb.shape[0])
        elif args.camera_info is not None:
            from depth_completion_ros.core.calibration import read_camera_info_yaml

            camera = read_camera_info_yaml(args.camera_info, rectified=not args.raw_image)
        config = CompleterConfig(method=args.method, checkpoint=args.checkpoint, device=args.device, fp16=args.fp16)
        completer = DepthCompleter(config)
        depth, conf = completer.complete(rgb, sparse, camera)
        write_image(args.out_depth, metres_to_kitti_png(depth))
        if args.out_confidence is not None:
            top = np.iinfo(conf_dtype).max
            write_image(args.out_confidence, np.clip(np.rint(conf.astype(np.float64) * top), 0, top).astype(conf_dtype))
    except (DepthCompletionError, ValueError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(one_line(exc))
    return 0
