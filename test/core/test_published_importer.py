"""The published-model importer: no code runs while reading the authors' pickles; refusals; round trips.

Uses the test-only architecture "tiny-test" (fixture `tiny_arch` in test/conftest.py), so it does not depend on
the real architecture modules.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
from collections import OrderedDict

import pytest
import torch

from depth_completion_ros.core.errors import CheckpointError
from depth_completion_ros.core.published.importer import (
    FORMAT_TAG,
    Inert,
    RestrictedUnpickler,
    import_authors_state,
    load_published,
    read_authors_checkpoint,
    read_published_metadata,
    save_published,
)


class _System:
    """Unpickling this runs `os.system(cmd)` with a normal unpickler."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Subprocess:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


class _Eval:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('ran')",))


def _authors_state(arch, seed=0, prefix="module."):
    """The tiny model's state dict under the authors' names (backbone.* for net.*, plus a dropped buffer)."""
    torch.manual_seed(seed)
    model = arch.build(arch.default_config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    state = OrderedDict()
    for k, v in model.state_dict().items():
        state[prefix + ("backbone." + k.removeprefix("net.") if k.startswith("net.") else k)] = v.clone()
    state[prefix + "unused_buffer"] = torch.zeros(3)
    return model, state


def _penet_like(state, evil):
    """The layout of PENet's released files: {"model", "epoch", "args", "best_result", "optimizer"}."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.Adam(params)
    params[0].grad = torch.ones(2)
    opt.step()
    return {
        "model": state,
        "epoch": 7,
        "args": argparse.Namespace(dilation_rate=2, convolutional_layer_encoding="xyz", lr=1e-3),
        "best_result": evil,
        "optimizer": opt.state_dict(),
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "subprocess", "eval"])
def test_crafted_pickle_runs_nothing(tmp_path, tiny_arch, zip_format, kind):
    marker = tmp_path / "marker"
    evil = {
        "os.system": _System(f"touch {marker}"),
        "subprocess": _Subprocess(str(marker)),
        "eval": _Eval(str(marker)),
    }[kind]
    _, state = _authors_state(tiny_arch)
    path = tmp_path / "pe.pth.tar"
    torch.save(_penet_like(state, evil), path, _use_new_zipfile_serialization=zip_format)
    # The file really names the callable (checked without running it).
    raw = path.read_bytes()
    if zip_format:
        import zipfile

        with zipfile.ZipFile(path) as zf:
            raw = b"".join(zf.read(n) for n in zf.namelist() if n.endswith("data.pkl"))
    assert {"os.system": b"system", "subprocess": b"call", "eval": b"eval"}[kind] in raw  # subprocess -> Py2 commands
    got = read_authors_checkpoint(path)
    assert not marker.exists()
    assert set(got) == {k.removeprefix("module.") for k in state}
    for k, v in state.items():
        assert torch.equal(got[k.removeprefix("module.")], v)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_malicious_model_entry_is_refused(tmp_path, zip_format):
    marker = tmp_path / "marker"
    path = tmp_path / "e.pth.tar"
    torch.save({"model": _System(f"touch {marker}"), "epoch": 1}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match=r"pickled posix\.system|pickled nt\.system"):
        read_authors_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps(_System(f"touch {marker}"), protocol=2))
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_authors_checkpoint(path)
    assert not marker.exists()


def test_restricted_unpickler_placeholders(tmp_path):
    marker = tmp_path / "marker"
    import io

    obj = RestrictedUnpickler(io.BytesIO(pickle.dumps([_System(f"touch {marker}"), OrderedDict(a=1)]))).load()
    assert isinstance(obj[0], Inert)
    assert obj[0].source.endswith(".system")
    assert obj[1] == OrderedDict(a=1)
    assert not marker.exists()
    # protocol 0 (copyreg._reconstructor) builds a Namespace without calling anything else
    ns = RestrictedUnpickler(io.BytesIO(pickle.dumps(argparse.Namespace(a=1, b="x"), protocol=0))).load()
    assert isinstance(ns, argparse.Namespace)
    assert vars(ns) == {"a": 1, "b": "x"}


def test_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / "scripted.pth"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_authors_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"PK\x03\x04broken"])
def test_corrupt_authors_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_authors_checkpoint(path)


def test_missing_authors_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_authors_checkpoint(tmp_path / "nope.pth")


def test_state_dict_variants(tmp_path, tiny_arch):
    _, state = _authors_state(tiny_arch, prefix="")
    for i, obj in enumerate((state, {"state_dict": state}, {"model": state, "epoch": 1})):
        path = tmp_path / f"v{i}.pth"
        torch.save(obj, path)
        assert set(read_authors_checkpoint(path)) == set(state)
    path = tmp_path / "nontensor.pth"
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, path)
    with pytest.raises(CheckpointError, match="'b' is a int, not a tensor"):
        read_authors_checkpoint(path)


def test_import_matches_the_model(tmp_path, tiny_arch):
    ref, state = _authors_state(tiny_arch)
    path = tmp_path / "pe.pth.tar"
    torch.save(_penet_like(state, argparse.Namespace()), path, _use_new_zipfile_serialization=False)
    model, cfg = import_authors_state(tiny_arch, read_authors_checkpoint(path), source=str(path))
    assert cfg == tiny_arch.default_config
    assert not model.training
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    rgb = torch.rand(1, 3, 10, 13) * 255
    sparse = torch.rand(1, 1, 10, 13) * 10
    K = torch.tensor([[[700.0, 0, 6], [0, 700, 5], [0, 0, 1]]])
    with torch.inference_mode():
        assert torch.equal(model(rgb, sparse, K)["pred"], ref(rgb, sparse, K)["pred"])


def _one_line_refusal(arch, state, match):
    with pytest.raises(CheckpointError, match=match) as info:
        import_authors_state(arch, state, source="pe.pth.tar")
    assert "\n" not in str(info.value)


def test_import_refusals(tiny_arch):
    _, state = _authors_state(tiny_arch, prefix="")
    missing = dict(state)
    del missing["backbone.1.running_var"]
    _one_line_refusal(tiny_arch, missing, r"missing keys \(1\): net\.1\.running_var")
    extra = dict(state, **{"refine.weight": torch.zeros(2)})
    _one_line_refusal(tiny_arch, extra, r"unexpected keys \(1\): refine\.weight")
    wrong = dict(state, **{"head.weight": torch.zeros(1, 5, 1, 1)})
    _one_line_refusal(tiny_arch, wrong, r"mismatched shapes \(1\): head\.weight: checkpoint \(1, 5, 1, 1\)")
    twice = dict(state, **{"net.0.bias": state["backbone.0.bias"]})
    _one_line_refusal(tiny_arch, twice, r"both map to 'net\.0\.bias'")


def test_published_roundtrip(tmp_path, tiny_arch):
    ref, state = _authors_state(tiny_arch, prefix="")
    model, cfg = import_authors_state(tiny_arch, state)
    path = tmp_path / "tiny.safetensors"
    save_published(path, tiny_arch, model, cfg, extra={"source": "pe.pth.tar", "sha256": "ab"})
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded, arch, cfg2, meta = load_published(path)
    assert arch is tiny_arch
    assert cfg2 == cfg
    assert meta["format"] == FORMAT_TAG
    assert meta["architecture"] == "tiny-test"
    assert meta["source"] == "pe.pth.tar"
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    assert json.loads(header["config"]) == {"width": 4}


def _write_raw(path, tensors, **meta):
    from safetensors.torch import save_file

    base = {"format": FORMAT_TAG, "format_version": "1", "architecture": "tiny-test", "config": '{"width": 4}'}
    base.update(meta)
    save_file(tensors, str(path), metadata={k: v for k, v in base.items() if v is not None})


def test_load_refusals(tmp_path, tiny_arch):
    model, cfg = import_authors_state(tiny_arch, _authors_state(tiny_arch, prefix="")[1])
    good = {k: v.contiguous() for k, v in model.state_dict().items()}
    cases = {
        "tag": ({"format": "depth_completion_ros.cspn"}, r"not a depth_completion_ros\.published.*use method cspn"),
        "version": ({"format_version": "9"}, "format_version 9"),
        "arch": ({"architecture": "nlspn"}, "unknown published model 'nlspn'"),
        "config": ({"config": '{"width": 1000000000}'}, "width must be"),
        "config-field": ({"config": '{"width": 4, "depth": 9}'}, "unknown fields"),
        "config-json": ({"config": "{"}, "bad or missing tiny-test configuration"),
    }
    for name, (meta, match) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        _write_raw(path, good, **meta)
        with pytest.raises(CheckpointError, match=match):
            load_published(path)
    path = tmp_path / "shape.safetensors"
    _write_raw(path, dict(good, **{"head.weight": torch.zeros(1, 9, 1, 1)}))
    with pytest.raises(CheckpointError, match=r"head\.weight: checkpoint \(1, 9, 1, 1\) vs model \(1, 4, 1, 1\)"):
        load_published(path)
    path = tmp_path / "trunc.safetensors"
    save_published(path, tiny_arch, model, cfg)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError):
        load_published(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_published(tmp_path / "nope.safetensors")


def test_shapes_checked_before_allocating(tmp_path, tiny_arch):
    """A header whose shapes disagree with its configuration is refused before a real model is built."""
    model, _ = import_authors_state(tiny_arch, _authors_state(tiny_arch, prefix="")[1])
    path = tmp_path / "m.safetensors"
    _write_raw(path, {k: v.contiguous() for k, v in model.state_dict().items()}, config='{"width": 64}')
    devices = []
    build = tiny_arch.build

    def recording_build(cfg):
        devices.append(torch.empty(0).device.type)
        return build(cfg)

    object.__setattr__(tiny_arch, "build", recording_build)
    try:
        with pytest.raises(CheckpointError, match="mismatched shapes"):
            load_published(path)
    finally:
        object.__setattr__(tiny_arch, "build", build)
    assert devices == ["meta"]
    assert read_published_metadata(path)[1].width == 64


def test_atomic_write_keeps_the_old_file(tmp_path, tiny_arch, monkeypatch):
    model, cfg = import_authors_state(tiny_arch, _authors_state(tiny_arch, prefix="")[1])
    path = tmp_path / "m.safetensors"
    save_published(path, tiny_arch, model, cfg, extra={"v": 1})
    before = path.read_bytes()
    import safetensors.torch

    def failing(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        save_published(path, tiny_arch, model, cfg, extra={"v": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(CheckpointError, match="not JSON-serializable"):
        save_published(path, tiny_arch, model, cfg, extra={"v": object()})


def test_storage_larger_than_the_file_is_refused_before_allocating(tmp_path):
    """A legacy-format file whose storage claims 4 TB is refused by the size check, not by the allocator."""
    import io

    sentinel = object()

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is sentinel:
                return ("storage", torch.FloatStorage, "0", "cpu", 10**12, None)
            return None

    buf = io.BytesIO()
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    for header in (0x1950A86A20F9469CFC6C, 1001, sys_info):
        pickle.dump(header, buf, protocol=2)
    _Pickler(buf, protocol=2).dump({"model": {"w": sentinel}})
    pickle.dump(["0"], buf, protocol=2)
    path = tmp_path / "huge.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="does not fit in the file"):
        read_authors_checkpoint(path)
