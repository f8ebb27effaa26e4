"""Checkpoints: safetensors round trip, config in the metadata, refusal of mismatched / corrupt / pickled files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from depth_completion_ros.core.checkpoint import (
    FORMAT_TAG,
    import_torch_checkpoint,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from depth_completion_ros.core.errors import CheckpointError
from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

CFG = CSPNModelConfig(base_width=4, depth=2, max_width=8, iterations=2)


def _model(seed=0, cfg=CFG):
    torch.manual_seed(seed)
    model = CSPNNet(cfg)
    with torch.no_grad():  # non-trivial BN statistics too
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    return model.eval()


def test_roundtrip(tmp_path, rng):
    model = _model()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, CFG, extra={"name": "unit", "step": 7, "val": {"rmse": 1.5}})
    loaded, cfg, meta = load_checkpoint(path, map_location="cpu")
    assert cfg == CFG
    assert meta["name"] == "unit"
    assert meta["step"] == 7
    assert meta["val"] == {"rmse": 1.5}
    assert meta["format"] == FORMAT_TAG
    assert not loaded.training
    ref = model.state_dict()
    got = loaded.state_dict()
    assert set(ref) == set(got)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    rgb = torch.from_numpy(rng.random((1, 3, 12, 20)).astype(np.float32))
    s = torch.where(torch.rand(1, 1, 12, 20) < 0.2, torch.rand(1, 1, 12, 20) * 50 + 1, torch.zeros(1, 1, 12, 20))
    with torch.inference_mode():
        np.testing.assert_array_equal(model(rgb, s)["pred"].numpy(), loaded(rgb, s)["pred"].numpy())


def test_metadata_is_plain_json(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model(), extra={"name": "x"})  # config taken from model.config
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT_TAG
    assert meta["format_version"] == "1"
    assert json.loads(meta["config"]) == CFG.to_dict()
    cfg, m = read_checkpoint_metadata(path)
    assert cfg == CFG
    assert m["name"] == "x"


def test_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, _model())
    data = path.read_bytes()
    for cut in (len(data) - 64, len(data) // 2, 6, 0):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(bad)


def test_garbage_and_missing(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all, just some bytes" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_different_config_is_refused_with_key_lists(tmp_path):
    """Tensors of a model with another configuration under this configuration's metadata."""
    other = CSPNNet(CSPNModelConfig(base_width=6, depth=3, max_width=12, iterations=2))
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in other.state_dict().items()}
    meta = {"format": FORMAT_TAG, "format_version": "1", "config": json.dumps(CFG.to_dict()), "extra": "{}"}
    path = tmp_path / "other.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "unexpected keys" in msg
    assert "mismatched shapes" in msg
    mine = CSPNNet(CFG).state_dict()
    theirs = other.state_dict()
    mism = sorted(k for k in theirs if k in mine and theirs[k].shape != mine[k].shape)
    unexp = sorted(set(theirs) - set(mine))
    assert mism
    assert unexp
    assert f"mismatched shapes ({len(mism)})" in msg
    assert f"unexpected keys ({len(unexp)})" in msg
    assert f"{mism[0]}: checkpoint {tuple(theirs[mism[0]].shape)} vs model {tuple(mine[mism[0]].shape)}" in msg


def test_missing_tensor_is_refused(tmp_path):
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in _model().state_dict().items()}
    dropped = sorted(tensors)[3]
    del tensors[dropped]
    meta = {"format": FORMAT_TAG, "format_version": "1", "config": json.dumps(CFG.to_dict()), "extra": "{}"}
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=f"missing keys \\(1\\): {dropped}"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"format": "something.else", "format_version": "1", "config": "{}"},
        {"format": FORMAT_TAG, "format_version": "99", "config": "{}"},
        {"format": FORMAT_TAG, "format_version": "1", "config": "{not json"},
        {"format": FORMAT_TAG, "format_version": "1", "config": json.dumps({"base_width": 4, "bogus": 1})},
        {"format": FORMAT_TAG, "format_version": "1", "config": json.dumps({"depth": 0})},
    ],
)
def test_bad_metadata(tmp_path, meta):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in _model().state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


class _Evil:
    """Unpickling this writes a marker file (a stand-in for arbitrary code execution)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_runs_code_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = {"state_dict": {"x": _Evil(str(marker))}}
    for name in ("evil.pt", "evil.pth", "evil.safetensors"):
        path = tmp_path / name
        with path.open("wb") as f:
            pickle.dump(payload, f)
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
        assert not marker.exists()
        with pytest.raises(CheckpointError):
            import_torch_checkpoint(path, CFG)
        assert not marker.exists()
    # a torch.save zip archive with the same payload: also refused by weights_only=True
    path = tmp_path / "evil_zip.pt"
    torch.save(payload, str(path))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="weights_only"):
        import_torch_checkpoint(path, CFG)
    assert not marker.exists()


def test_import_torch_state_dict(tmp_path):
    model = _model(seed=3)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, str(path))
    loaded = import_torch_checkpoint(path, CFG)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="mismatched shapes"):
        import_torch_checkpoint(path, CSPNModelConfig(base_width=8, depth=2, max_width=8, iterations=2))


def test_unserializable_extra(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "m.safetensors", _model(), CFG, extra={"obj": object()})
