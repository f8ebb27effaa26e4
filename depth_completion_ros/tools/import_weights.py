"""`depth-completion import-weights`: the authors' `.pth` / `.pth.tar` of a published model -> our safetensors.

    depth-completion import-weights --format penet pe.pth.tar --out penet.safetensors

The authors' file is read with a restricted unpickler (nothing in it is imported or run, see
`core/published/importer.py`); every key and shape is checked against our model; a refusal is one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]

FORMATS = ("penet", "enet", "cspn-nyu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the sub-command's options."""
    parser.add_argument(
        "--format", required=True, metavar="{" + ",".join(FORMATS) + "}", help="which published model SRC holds"
    )
    parser.add_argument("src", type=Path, metavar="SRC", help="the authors' checkpoint (.pth / .pth.tar)")
    parser.add_argument("--out", required=True, type=Path, metavar="DST", help="output .safetensors")
    parser.add_argument(
        "--config",
        default=None,
        metavar="JSON",
        help="overrides of the model's configuration as a JSON object (default: the released weights')",
    )


def _fail(msg: str) -> int:
    print(f"depth-completion import-weights: error: {msg}", file=sys.stderr)
    return 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(args: argparse.Namespace) -> int:
    """Read, check, write.  Returns 0, or 2 on any refusal (one line on stderr)."""
    from depth_completion_ros.core.errors import DepthCompletionError
    from depth_completion_ros.core.published import get_architecture
    from depth_completion_ros.core.published.importer import (
        import_authors_state,
        read_authors_checkpoint,
        save_published,
    )

    try:
        arch = get_architecture(args.format)
    except ValueError as exc:
        return _fail(str(exc))
    src = Path(args.src)
    out = Path(args.out)
    if not src.is_file():
        return _fail(f"checkpoint not found: {src}")
    if out.resolve() == src.resolve():
        return _fail("--out must differ from SRC")
    try:
        config = arch.default_config
        if args.config is not None:
            overrides = json.loads(args.config)
            if not isinstance(overrides, dict):
                return _fail("--config must be a JSON object")
            config = arch.config_from_dict({**config.to_dict(), **overrides})
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        return _fail(f"bad --config: {exc}")
    try:
        state = read_authors_checkpoint(src)
        model, config = import_authors_state(arch, state, config, source=str(src))
        out.parent.mkdir(parents=True, exist_ok=True)
        extra = {
            "source": src.name,
            "source_sha256": _sha256(src),
            "title": arch.title,
            "training_data": arch.training_data,
            "imported_by": "depth-completion import-weights",
        }
        save_published(out, arch, model, config, extra=extra)
    except (DepthCompletionError, ValueError, OSError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    n = sum(v.numel() for v in model.state_dict().values())
    print(f"imported {arch.name} ({arch.title}) from {src.name}: {len(state)} keys, {n / 1e6:.2f} M values -> {out}")
    return 0
