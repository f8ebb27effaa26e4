"""benchmarks/gpu_check on a machine without CUDA: says so and exits 0 (the GPU parts run only with a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: gpu_check would run its parts")
def test_without_cuda_says_so_and_exits_0():
    assert os.access(SCRIPT, os.X_OK), "benchmarks/gpu_check must be executable"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout
