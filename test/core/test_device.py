"""resolve_device: auto / cpu / cuda[:N], with a warning (not a crash) when CUDA is absent."""

from __future__ import annotations

import warnings

import pytest
import torch

from depth_completion_ros.core.device import resolve_device


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:7", "CUDA:1"])
def test_cuda_request_falls_back_with_warning(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="CUDA"):
        assert resolve_device(name) == torch.device("cpu")


def test_cuda_index_beyond_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        assert resolve_device("cuda") == torch.device("cuda")
    with pytest.warns(RuntimeWarning, match="1 CUDA device"):
        assert resolve_device("cuda:3") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "cpu:0", "mps"])
def test_bad_names(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)
