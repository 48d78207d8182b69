"""`noposplat-ros pair` with the tiny conformance weights reproduces the official Gaussians."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from noposplat_ros.cli import main as cli_main
from noposplat_ros.predictors.network.config import MODEL_DIR

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ("means", "scales", "rotations", "opacities", "harmonics", "covariances")


def _write_inputs(tmp_path: pathlib.Path, golden: dict, b: int) -> tuple[list[str], dict]:
    H, W = golden["input.image_01"].shape[-2:]
    paths = []
    for v in range(2):
        p = tmp_path / f"view{v}.npy"
        np.save(p, golden["input.image_01"][b, v].permute(1, 2, 0).numpy())
        paths.append(str(p))
    intr = {}
    for v in range(2):
        Kn = golden["input.intrinsics"][b, v].double().numpy()
        # normalised K is corner-based (pixelSplat); pixel K is OpenCV (centres at integers)
        intr[f"image{v}"] = {"fx": Kn[0, 0] * W, "fy": Kn[1, 1] * H, "cx": Kn[0, 2] * W - 0.5, "cy": Kn[1, 2] * H - 0.5}
    (tmp_path / "intrinsics.json").write_text(json.dumps(intr))
    return paths, intr


@pytest.fixture(scope="module")
def golden(conformance_dir):
    return load_file(str(conformance_dir / "noposplat_tiny_io.safetensors"))


@pytest.mark.parametrize("b", [1])
def test_pair_command_reproduces_golden_item(tmp_path, conformance_dir, golden, b):
    images, _ = _write_inputs(tmp_path, golden, b)
    out = tmp_path / "out"
    rc = cli_main([
        "pair", *images, "--intrinsics", str(tmp_path / "intrinsics.json"),
        "--checkpoint", str(conformance_dir / "noposplat_tiny_weights.safetensors"),
        "--model-config", str(MODEL_DIR / "noposplat_tiny.json"), "--device", "cpu", "--out", str(out),
    ])
    assert rc == 0
    got = load_file(str(out / "gaussians.safetensors"))
    n = 2 * 32 * 48
    for name in FIELDS:
        assert got[name].dtype == torch.float32
        assert got[name].shape[0] == n, name
        torch.testing.assert_close(got[name], golden[f"out.{name}"][b], rtol=1e-4, atol=1e-4, msg=name)
    pose = json.loads((out / "pose.json").read_text())
    assert pose["backend"] == "noposplat" and pose["scale_kind"] == "unit_baseline"
    assert np.asarray(pose["T_cam0_from_cam1"]).shape == (4, 4)
    assert pose["grid_hw"] == [32, 48]
    assert (out / "splats.ply").stat().st_size > n * 50


def test_pair_command_console_script_subprocess(tmp_path, conformance_dir, golden):
    script = pathlib.Path(sys.executable).parent / "noposplat-ros"
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    images, _ = _write_inputs(tmp_path, golden, 0)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [str(script), "pair", *images, "--intrinsics", str(tmp_path / "intrinsics.json"),
         "--checkpoint", str(conformance_dir / "noposplat_tiny_weights.safetensors"),
         "--model-config", str(MODEL_DIR / "noposplat_tiny.json"), "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "noposplat: 3072 Gaussians" in proc.stdout
    got = load_file(str(out / "gaussians.safetensors"))
    torch.testing.assert_close(got["means"], golden["out.means"][0], rtol=1e-4, atol=1e-4)


def test_pair_command_errors(tmp_path, conformance_dir, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((32, 48, 3), 2.0, np.float32))
    (tmp_path / "k.json").write_text(json.dumps({"fx": 40, "fy": 40, "cx": 24, "cy": 16}))
    assert cli_main(["pair", str(bad), str(bad), "--intrinsics", str(tmp_path / "k.json"), "--out", str(tmp_path / "o")]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    (tmp_path / "k2.json").write_text(json.dumps({"fx": 40, "cx": 24}))
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((32, 48, 3), np.float32))
    assert cli_main(["pair", str(good), str(good), "--intrinsics", str(tmp_path / "k2.json"), "--out", str(tmp_path / "o")]) == 2
    assert "missing ['fy', 'cy']" in capsys.readouterr().err
    # a checkpoint that does not fit the model: one clear error, exit 1
    assert cli_main(["pair", str(good), str(good), "--intrinsics", str(tmp_path / "k.json"),
                     "--checkpoint", str(conformance_dir / "noposplat_tiny_weights.safetensors"),
                     "--device", "cpu", "--out", str(tmp_path / "o")]) == 1
    assert "shape mismatch" in capsys.readouterr().err


CALIB_YAML = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [500.0, 0.0, 320.5, 0.0, 505.0, 240.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [500.0, 0.0, 320.5, 0.0, 0.0, 505.0, 240.5, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def test_intrinsics_file_formats(tmp_path):
    from noposplat_ros.io.intrinsics_file import IntrinsicsFileError, load_intrinsics

    calib = tmp_path / "calib.yaml"
    calib.write_text(CALIB_YAML)
    c0, c1 = load_intrinsics([calib])
    img = np.zeros((480, 640, 3), np.uint8)
    _, K = c0.for_image(img)
    np.testing.assert_allclose(K, [[500, 0, 320.5], [0, 505, 240.5], [0, 0, 1]])
    # a CameraInfo message dump with distortion: the image is undistorted, K is the P matrix's
    dump = tmp_path / "info.yaml"
    dump.write_text(
        "height: 480\nwidth: 640\ndistortion_model: plumb_bob\nd: [-0.2, 0.05, 0.0, 0.0, 0.0]\n"
        "k: [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]\nr: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]\n"
        "p: [480.0, 0.0, 321.0, 0.0, 0.0, 480.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0]\n"
    )
    d0, _ = load_intrinsics([dump])
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    und, K = d0.for_image(raw)
    np.testing.assert_allclose(K, [[480, 0, 321], [0, 480, 241], [0, 0, 1]])
    assert und.shape == raw.shape and not np.array_equal(und, raw)
    # per-image simple sets, and two files
    per = tmp_path / "per.json"
    per.write_text(json.dumps({"image0": {"fx": 1, "fy": 2, "cx": 3, "cy": 4}, "image1": {"K": [[5, 0, 6], [0, 7, 8], [0, 0, 1]]}}))
    a, b = load_intrinsics([per])
    assert a.K_px[1, 2] == 4 and b.K_px[0, 0] == 5
    one = tmp_path / "one.yaml"
    one.write_text("fx: 9\nfy: 9\ncx: 1\ncy: 1\n")
    a, b = load_intrinsics([calib, one])
    assert a.camera is not None and b.K_px[0, 0] == 9
    with pytest.raises(IntrinsicsFileError, match="image0 and image1"):
        (tmp_path / "half.json").write_text(json.dumps({"image0": {"fx": 1, "fy": 1, "cx": 1, "cy": 1}}))
        load_intrinsics([tmp_path / "half.json"])
    with pytest.raises(IntrinsicsFileError, match="cannot read"):
        load_intrinsics([tmp_path / "absent.yaml"])
