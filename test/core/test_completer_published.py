"""`DepthCompleter` with published models (the test-only "tiny-test" architecture) and the torch-free default."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from depth_completion_ros.core.camera import CameraModel
from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
from depth_completion_ros.core.confidence import network_confidence
from depth_completion_ros.core.errors import CalibrationError, CheckpointError
from depth_completion_ros.core.published.importer import save_published

H, W = 30, 41


def _inputs(rng):
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    sparse = np.zeros((H, W), np.float32)
    sparse[1::3, ::4] = rng.uniform(5, 20, sparse[1::3, ::4].shape)
    camera = CameraModel(width=W, height=H, K=np.array([[500.0, 0, 20], [0, 500, 15], [0, 0, 1]]))
    return rgb, sparse, camera


def _checkpoint(tmp_path, arch, seed=0):
    torch.manual_seed(seed)
    model = arch.build(arch.default_config)
    path = tmp_path / "tiny.safetensors"
    save_published(path, arch, model, arch.default_config, extra={"source": "pe.pth.tar"})
    return path, model


def test_published_method_matches_the_model(tmp_path, tiny_arch, rng):
    path, model = _checkpoint(tmp_path, tiny_arch)
    c = DepthCompleter(CompleterConfig(method="tiny-test", checkpoint=path, device="cpu"))
    assert c.needs_camera and c.method == "tiny-test" and c.device_name == "cpu"
    assert c.model_name == "tiny-test (pe.pth.tar)"
    rgb, sparse, camera = _inputs(rng)
    depth, conf = c.complete(rgb, sparse, camera)
    with torch.inference_mode():
        K = torch.from_numpy(camera.projection_matrix[:, :3].astype(np.float32))[None]
        ref = model(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), torch.from_numpy(sparse)[None, None], K)
    np.testing.assert_allclose(depth, ref["pred"][0, 0].numpy(), rtol=1e-6)
    assert depth.dtype == np.float32 and conf.dtype == np.float32 and depth.shape == conf.shape == (H, W)
    assert (conf >= 0).all() and (conf <= 1).all()
    from depth_completion_ros.core.fill import sparse_stats

    np.testing.assert_array_equal(conf, network_confidence(depth, sparse, sparse_stats(sparse).spacing))


def test_camera_required_and_checked(tmp_path, tiny_arch, rng):
    path, _ = _checkpoint(tmp_path, tiny_arch)
    c = DepthCompleter(CompleterConfig(method="tiny-test", checkpoint=path, device="cpu"))
    rgb, sparse, camera = _inputs(rng)
    with pytest.raises(CalibrationError, match="needs the camera intrinsics"):
        c.complete(rgb, sparse)
    with pytest.raises(CalibrationError, match=r"camera model is for 82x60 images, the input is 41x30"):
        c.complete(rgb, sparse, camera.scaled(2, 2))


def test_checkpoint_refusals(tmp_path, tiny_arch):
    with pytest.raises(CheckpointError, match=r"needs a checkpoint.*import-weights --format tiny-test"):
        DepthCompleter(CompleterConfig(method="tiny-test"))
    with pytest.raises(CheckpointError, match="not found"):
        DepthCompleter(CompleterConfig(method="tiny-test", checkpoint=tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match="unknown published model 'nlspn'"):
        DepthCompleter(CompleterConfig(method="nlspn"))
    # a checkpoint of another architecture
    import dataclasses

    from depth_completion_ros.core.published.base import ARCHITECTURES, register

    other = dataclasses.replace(tiny_arch, name="tiny-other")
    register(other)
    try:
        path = tmp_path / "other.safetensors"
        save_published(path, other, other.build(other.default_config), other.default_config)
        with pytest.raises(CheckpointError, match="holds a 'tiny-other' model, not 'tiny-test'"):
            DepthCompleter(CompleterConfig(method="tiny-test", checkpoint=path))
    finally:
        ARCHITECTURES.pop("tiny-other", None)
    # a learned-cspn checkpoint given to a published method
    from depth_completion_ros.core.checkpoint import save_checkpoint
    from depth_completion_ros.core.model import CSPNModelConfig, CSPNNet

    cfg = CSPNModelConfig(base_width=4, depth=2, max_width=8, iterations=2)
    path = tmp_path / "cspn.safetensors"
    save_checkpoint(path, CSPNNet(cfg), cfg)
    with pytest.raises(CheckpointError, match="use method cspn"):
        DepthCompleter(CompleterConfig(method="tiny-test", checkpoint=path))


def test_random_weights_for_benchmarks(tiny_arch, rng):
    c = DepthCompleter(CompleterConfig(method="tiny-test", allow_random_weights=True, device="cpu"))
    assert c.model_name == "tiny-test (random weights)"
    rgb, sparse, camera = _inputs(rng)
    depth, _ = c.complete(rgb, sparse, camera)
    assert (depth > 0).all()


def test_network_confidence_ranks_disagreement(rng):
    """Pixels near measurements the output contradicts, and far from any, score lower."""
    sparse = np.zeros((40, 60), np.float32)
    sparse[::4, ::4] = 10.0
    depth = np.full((40, 60), 10.0, np.float32)
    depth[:, 30:] += np.where(sparse[:, 30:] > 0, 2.0, 0.0)  # the right half disagrees with its measurements
    conf = network_confidence(depth, sparse, 4.0)
    assert conf[:, 2:26].mean() > 2 * conf[:, 34:58].mean()
    assert conf[0, 0] == pytest.approx(1.0)  # a measured pixel the output reproduces, flat surroundings
    sparse[:, 20:] = 0
    far = network_confidence(np.full((40, 60), 10.0, np.float32), sparse, 4.0)
    assert far[:, 50].max() < far[:, 10].min()


def test_default_path_never_imports_torch():
    """`import` + `DepthCompleter()` + one frame of the weight-free default leave torch out of sys.modules."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter
        import depth_completion_ros.ros.params
        c = DepthCompleter(CompleterConfig())
        s = np.zeros((48, 64), np.float32)
        s[::4, ::3] = 10.0
        c.complete(np.zeros((48, 64, 3), np.uint8), s)
        print(c.device_name, sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["cpu", "[]"], out.stdout + out.stderr


def test_optional_intrinsics_are_passed_when_known(tmp_path, tiny_arch, rng):
    """A net that does not need K (like cspn-nyu) still gets the camera's K when one is given."""
    import dataclasses

    from depth_completion_ros.core.published.base import ARCHITECTURES, register

    optional = register(dataclasses.replace(tiny_arch, name="tiny-optional", needs_intrinsics=False))
    try:
        torch.manual_seed(0)
        model = optional.build(optional.default_config)
        path = tmp_path / "opt.safetensors"
        save_published(path, optional, model, optional.default_config)
        c = DepthCompleter(CompleterConfig(method="tiny-optional", checkpoint=path, device="cpu"))
        assert not c.needs_camera
        rgb, sparse, camera = _inputs(rng)
        depth, _ = c.complete(rgb, sparse, camera)
        with torch.inference_mode():
            K = torch.from_numpy(camera.projection_matrix[:, :3].astype(np.float32))[None]
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
            ref = model(x, torch.from_numpy(sparse)[None, None], K)["pred"][0, 0].numpy()
        np.testing.assert_allclose(depth, ref, rtol=1e-6)
        with pytest.raises(ValueError, match="tiny-test needs K"):  # the tiny net itself refuses K=None
            c.complete(rgb, sparse)
    finally:
        ARCHITECTURES.pop("tiny-optional", None)


def test_reconfigure_iterations_of_published_models():
    """Run-time `iterations` goes to the model's own config, within its bounds; ENet has none and refuses it."""
    from depth_completion_ros.core.completer import CompleterConfig, DepthCompleter

    penet = DepthCompleter(CompleterConfig(method="penet", allow_random_weights=True, device="cpu"))
    penet.reconfigure(iterations=3)
    assert penet.iterations == 3 and penet._model.config.iterations == 3
    with pytest.raises(ValueError, match="iterations"):
        penet.reconfigure(iterations=10_000)
    assert penet.iterations == 3  # a refused change changes nothing
    enet = DepthCompleter(CompleterConfig(method="enet", allow_random_weights=True, device="cpu"))
    with pytest.raises(ValueError, match="no propagation iterations"):
        enet.reconfigure(iterations=3)
    enet.reconfigure(max_depth=50.0)
    assert enet.config.max_depth == 50.0
