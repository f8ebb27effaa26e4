"""`depth-completion import-weights`, in-process through cli.main, with the test-only "tiny-test" architecture."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from depth_completion_ros.cli import main
from depth_completion_ros.core.published.importer import load_published


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _authors_file(tmp_path, arch, *, drop=None, add=None, evil=None, legacy=True):
    torch.manual_seed(0)
    model = arch.build(arch.default_config)
    state = {"module." + ("backbone." + k[4:] if k.startswith("net.") else k): v for k, v in model.state_dict().items()}
    if drop:
        del state["module." + drop]
    state.update(add or {})
    path = tmp_path / "pe.pth.tar"
    obj = {"model": state, "epoch": 3, "args": argparse.Namespace(lr=1e-3), "best_result": evil, "optimizer": {}}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path, model


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_import_roundtrip(tmp_path, tiny_arch, capsys):
    marker = tmp_path / "marker"
    src, ref = _authors_file(tmp_path, tiny_arch, evil=_System(f"touch {marker}"))
    out = tmp_path / "out" / "tiny.safetensors"
    assert main(["import-weights", "--format", "tiny-test", str(src), "--out", str(out)]) == 0
    assert not marker.exists()
    assert "imported tiny-test" in capsys.readouterr().out
    model, arch, cfg, meta = load_published(out)
    assert arch.name == "tiny-test" and cfg == tiny_arch.default_config
    assert meta["source"] == "pe.pth.tar" and len(meta["source_sha256"]) == 64
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_config_override(tmp_path, tiny_arch, capsys):
    src, _ = _authors_file(tmp_path, tiny_arch)
    out = tmp_path / "o.safetensors"
    rc = main(["import-weights", "--format", "tiny-test", str(src), "--out", str(out), "--config", '{"width": 8}'])
    assert rc == 2  # the weights are width 4: the shapes refuse it
    assert "mismatched shapes" in _err(capsys)
    rc = main(["import-weights", "--format", "tiny-test", str(src), "--out", str(out), "--config", '{"width": 0}'])
    assert rc == 2
    assert "bad --config: width must be" in _err(capsys)
    rc = main(["import-weights", "--format", "tiny-test", str(src), "--out", str(out), "--config", "[1]"])
    assert rc == 2
    assert "JSON object" in _err(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drop": "head.bias"}, r"missing keys \(1\): head\.bias"),
        ({"add": {"module.extra.weight": torch.zeros(1)}}, r"unexpected keys \(1\): extra\.weight"),
        ({"add": {"module.head.bias": torch.zeros(2)}}, r"head\.bias: checkpoint \(2,\) vs model \(1,\)"),
    ],
    ids=["missing", "unexpected", "shape"],
)
def test_refusals(tmp_path, tiny_arch, capsys, kwargs, match):
    src, _ = _authors_file(tmp_path, tiny_arch, **kwargs)
    out = tmp_path / "o.safetensors"
    assert main(["import-weights", "--format", "tiny-test", str(src), "--out", str(out)]) == 2
    import re

    assert re.search(match, _err(capsys))
    assert not out.exists()


def test_bad_inputs(tmp_path, tiny_arch, capsys):
    out = tmp_path / "o.safetensors"
    assert main(["import-weights", "--format", "tiny-test", str(tmp_path / "nope.pth"), "--out", str(out)]) == 2
    assert "not found" in _err(capsys)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["import-weights", "--format", "tiny-test", str(bad), "--out", str(out)]) == 2
    assert "not a readable torch checkpoint" in _err(capsys)
    assert main(["import-weights", "--format", "nlspn", str(bad), "--out", str(out)]) == 2
    assert "unknown published model 'nlspn'" in _err(capsys)
