"""Tests of `depth-completion complete`, run in-process through cli.main."""

from __future__ import annotations

import cv2
import numpy as np

from depth_completion_ros.cli import main


def _write_inputs(tmp_path, rng, h=40, w=56, sparse_w=None):
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sp = np.zeros((h, sparse_w or w), np.uint16)
    # a smooth slanted surface 5..20 m (no point lies behind its neighbours, so none is rejected)
    yy, xx = np.mgrid[: sp.shape[0], : sp.shape[1]]
    plane = np.rint((5.0 + 15.0 * (yy + xx) / (sp.shape[0] + sp.shape[1])) * 256).astype(np.uint16)
    sp[1::4, ::3] = plane[1::4, ::3]
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    cv2.imwrite(str(tmp_path / "sparse.png"), sp)
    return sp


def test_roundtrip_8_and_16_bit(tmp_path, rng):
    sp = _write_inputs(tmp_path, rng)
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        out, conf = tmp_path / f"d{bits}.png", tmp_path / f"c{bits}.png"
        rc = main(
            [
                "complete",
                "--rgb",
                str(tmp_path / "rgb.png"),
                "--sparse",
                str(tmp_path / "sparse.png"),
                "--out-depth",
                str(out),
                "--out-confidence",
                str(conf),
                "--confidence-bits",
                str(bits),
            ]
        )
        assert rc == 0
        d = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        c = cv2.imread(str(conf), cv2.IMREAD_UNCHANGED)
        assert d.dtype == np.uint16 and d.shape == sp.shape and (d > 0).all()
        m = sp > 0
        np.testing.assert_array_equal(d[m], sp[m])  # measurements survive the metres round trip
        assert c.dtype == dtype and (c[m] == np.iinfo(dtype).max).all()


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_missing_file(tmp_path, capsys):
    rc = main(
        [
            "complete",
            "--rgb",
            str(tmp_path / "no.png"),
            "--sparse",
            str(tmp_path / "no2.png"),
            "--out-depth",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 2
    assert "not found" in _err(capsys)


def test_size_mismatch(tmp_path, rng, capsys):
    _write_inputs(tmp_path, rng, sparse_w=50)
    rc = main(
        [
            "complete",
            "--rgb",
            str(tmp_path / "rgb.png"),
            "--sparse",
            str(tmp_path / "sparse.png"),
            "--out-depth",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 2
    assert "size" in _err(capsys)
    assert not (tmp_path / "o.png").exists()


def test_empty_sparse(tmp_path, rng, capsys):
    _write_inputs(tmp_path, rng)
    cv2.imwrite(str(tmp_path / "sparse.png"), np.zeros((40, 56), np.uint16))
    rc = main(
        [
            "complete",
            "--rgb",
            str(tmp_path / "rgb.png"),
            "--sparse",
            str(tmp_path / "sparse.png"),
            "--out-depth",
            str(tmp_path / "o.png"),
        ]
    )
    assert rc == 2
    assert "no valid" in _err(capsys)


def test_bad_checkpoint(tmp_path, rng, capsys):
    _write_inputs(tmp_path, rng)
    common = [
        "complete",
        "--rgb",
        str(tmp_path / "rgb.png"),
        "--sparse",
        str(tmp_path / "sparse.png"),
        "--out-depth",
        str(tmp_path / "o.png"),
        "--method",
        "cspn",
    ]
    assert main([*common, "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint" in _err(capsys)
    assert main(common) == 2
    assert "checkpoint" in _err(capsys)


def test_garbage_checkpoint(tmp_path, rng, capsys):
    _write_inputs(tmp_path, rng)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    rc = main(
        [
            "complete",
            "--rgb",
            str(tmp_path / "rgb.png"),
            "--sparse",
            str(tmp_path / "sparse.png"),
            "--out-depth",
            str(tmp_path / "o.png"),
            "--method",
            "cspn",
            "--checkpoint",
            str(bad),
        ]
    )
    assert rc == 2
    assert "checkpoint" in _err(capsys).lower()
