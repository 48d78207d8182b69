"""`noposplat-ros pair` without --checkpoint runs the geometry backend on real images and writes
gaussians.safetensors, splats.ply and pose.json."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import plyfile
import pytest
import torch
import yaml

from noposplat_ros.cli import main as cli_main
from noposplat_ros.io.gaussians_file import load_gaussians, load_gaussians_metadata
from noposplat_ros.io.ply import read_ply
from noposplat_ros.transforms import direction_angle_deg, rotation_angle_deg


def _write_pngs(tmp_path: pathlib.Path, motorcycle) -> list[str]:
    paths = []
    for name, frame in (("left.png", motorcycle.left), ("right.png", motorcycle.right)):
        p = tmp_path / name
        assert cv2.imwrite(str(p), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    return paths


def _simple(K: np.ndarray) -> dict:
    return {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])}


def _camera_info_yaml(K: np.ndarray, width: int, height: int) -> dict:
    """A ROS camera_calibration_parsers file of an undistorted camera."""
    P = np.hstack([K, np.zeros((3, 1))])
    return {
        "image_width": width, "image_height": height, "camera_name": "cam",
        "camera_matrix": {"rows": 3, "cols": 3, "data": K.ravel().tolist()},
        "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": P.ravel().tolist()},
    }


def _entry_point() -> list[str]:
    exe = pathlib.Path(sys.executable).parent / "noposplat-ros"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "noposplat_ros.cli"]


def test_pair_command_geometry_on_motorcycle(tmp_path, motorcycle):
    images = _write_pngs(tmp_path, motorcycle)
    intr = tmp_path / "intrinsics.json"
    intr.write_text(json.dumps({"image0": _simple(motorcycle.left.K), "image1": _simple(motorcycle.right.K)}))
    out = tmp_path / "out"
    proc = subprocess.run(
        [*_entry_point(), "pair", *images, "--intrinsics", str(intr), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "geometry" in proc.stdout
    for name in ("gaussians.safetensors", "splats.ply", "pose.json"):
        assert (out / name).is_file(), name

    pose = json.loads((out / "pose.json").read_text())
    assert pose["backend"] == "geometry" and pose["scale_kind"] == "unit_baseline"
    assert pose["status"] == "OK"
    T = np.array(pose["T_cam0_from_cam1"])
    assert T.shape == (4, 4) and np.linalg.norm(T[:3, 3]) == pytest.approx(1.0, abs=1e-6)
    assert rotation_angle_deg(T[:3, :3]) < 1.0
    assert direction_angle_deg(T[:3, 3], [1.0, 0.0, 0.0]) < 3.0
    assert np.array(pose["covariance"]).shape == (6, 6)
    # Each image's own intrinsics reached the predictor (the right camera's cx is 31.086 px larger).
    h, w = pose["grid_hw"]
    K_grid = np.array(pose["K_grid"])
    assert K_grid[1, 0, 2] - K_grid[0, 0, 2] == pytest.approx(31.086 * w / motorcycle.left.width, rel=1e-6)

    g = load_gaussians(out / "gaussians.safetensors")
    assert g.num == 2 * h * w == pose["num_gaussians"]
    meta = load_gaussians_metadata(out / "gaussians.safetensors")
    assert meta["backend"] == "geometry" and meta["scale_kind"] == "unit_baseline"
    # View 0's splats at the true metric depth (baseline 193.001 mm), via the saved file.
    gt = motorcycle.depth_left_m()
    H, W = gt.shape
    v, u = np.mgrid[0:h, 0:w]
    gt_grid = gt[np.clip(np.round((v + 0.5) * H / h - 0.5).astype(int), 0, H - 1),
                 np.clip(np.round((u + 0.5) * W / w - 0.5).astype(int), 0, W - 1)].ravel()
    ok = np.isfinite(gt_grid)
    z_m = g.means[: h * w, 2].double().numpy() * motorcycle.baseline_m
    assert np.median(np.abs(z_m[ok] - gt_grid[ok]) / gt_grid[ok]) < 0.05

    # The PLY holds the same splats in the viewers' conventions.
    v_ply = plyfile.PlyData.read(str(out / "splats.ply"))["vertex"]
    assert {"opacity", "scale_0", "rot_0", "f_dc_0"} <= {p.name for p in v_ply.properties}
    back = read_ply(out / "splats.ply")
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.opacities, g.opacities, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(v_ply.data["opacity"], np.log(g.opacities.numpy() / (1 - g.opacities.numpy())), rtol=1e-4, atol=1e-4)


def test_pair_command_geometry_with_camera_info_files(tmp_path, motorcycle, capsys):
    """Two ROS camera_info YAML files (one per image), in-process; then a degenerate pair fails cleanly."""
    images = _write_pngs(tmp_path, motorcycle)
    files = []
    for name, f in (("left.yaml", motorcycle.left), ("right.yaml", motorcycle.right)):
        p = tmp_path / name
        p.write_text(yaml.safe_dump(_camera_info_yaml(f.K, f.width, f.height)))
        files.append(str(p))
    out = tmp_path / "out"
    assert cli_main(["pair", *images, "--intrinsics", *files, "--out", str(out)]) == 0
    pose = json.loads((out / "pose.json").read_text())
    assert pose["backend"] == "geometry"
    assert direction_angle_deg(np.array(pose["T_cam0_from_cam1"])[:3, 3], [1.0, 0.0, 0.0]) < 3.0

    # Same image twice: no parallax -> the rotation-only pose (DEGRADED) is written, exit 0, no splats.
    out2 = tmp_path / "out2"
    capsys.readouterr()
    assert cli_main(["pair", images[0], images[0], "--intrinsics", files[0], "--out", str(out2)]) == 0
    pose2 = json.loads((out2 / "pose.json").read_text())
    assert pose2["status"] == "DEGRADED" and "rotation" in pose2["message"] and pose2["num_gaussians"] == 0
    assert not (out2 / "splats.ply").exists()

    # Nothing to match (blank images): no pose -> exit code 1 with a clear message, no output files.
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((motorcycle.left.height, motorcycle.left.width, 3), 128, np.uint8))
    out3 = tmp_path / "out3"
    assert cli_main(["pair", str(blank), str(blank), "--intrinsics", files[0], "--out", str(out3)]) == 1
    assert "matches" in capsys.readouterr().err
    assert not (out3 / "pose.json").exists()
