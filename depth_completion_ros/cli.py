"""`depth-completion` command line: one entry point, one module per sub-command in `tools/`.

Each tool module defines `add_arguments(parser)` and `run(args) -> int`; modules are imported only when
their sub-command runs, so `depth-completion --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "one_line"]

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("depth_completion_ros.tools.demo", "main job: bag -> node over DDS -> dense depth PNGs + metrics"),
    "project": ("depth_completion_ros.tools.project", "project a LiDAR scan into a camera, write sparse PNGs"),
    "complete": ("depth_completion_ros.tools.complete", "complete a sparse depth PNG with its RGB image"),
    "import-weights": (
        "depth_completion_ros.tools.import_weights",
        "import the authors' PENet / ENet / CSPN (NYU) checkpoint into safetensors",
    ),
    "kitti-to-bag": ("depth_completion_ros.tools.kitti_to_bag", "convert a KITTI raw drive/frame to rosbag2"),
    "play": ("depth_completion_ros.tools.play", "replay a rosbag2 / ROS 1 bag onto live topics"),
    "launch": ("depth_completion_ros.tools.launch", "start what kitti/tof.launch.py start (no launch_ros needed)"),
    "train": ("depth_completion_ros.tools.train", "train the learned CSPN completer"),
    "evaluate": ("depth_completion_ros.tools.evaluate", "KITTI metrics, panels and sparsification plots"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run `depth-completion <command> ...`; returns the process exit code (2 = bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="depth-completion", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    from depth_completion_ros.core.allocator import configure_allocator

    configure_allocator()
    module = importlib.import_module(COMMANDS[argv[0]][0])
    cmd_parser = argparse.ArgumentParser(prog=f"depth-completion {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return _run_guarded(argv[0], module, args)


def _run_guarded(name: str, module: Any, args: argparse.Namespace) -> int:
    """Run a tool: bad input (DepthCompletionError) and failed file operations (OSError: disk full, read-only
    folder, a folder where a file is expected) end as one line on stderr and exit 2; Ctrl-C as 130.  Any other
    exception is a bug and keeps its traceback."""
    from depth_completion_ros.core.errors import DepthCompletionError

    try:
        return int(module.run(args) or 0)
    except (DepthCompletionError, OSError) as exc:
        print(f"depth-completion {name}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"depth-completion {name}: interrupted", file=sys.stderr)
        return 130


def one_line(exc: BaseException) -> str:
    """The message of `exc` on one line (an OSError as 'strerror: filename')."""
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename is not None else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
