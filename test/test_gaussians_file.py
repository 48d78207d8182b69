"""safetensors Gaussians file and pose JSON."""
from __future__ import annotations

import json

import numpy as np
import torch

from noposplat_ros.io.gaussians_file import load_gaussians, load_gaussians_metadata, save_gaussians, write_pose_json
from noposplat_ros.types import Gaussians, PairReconstruction, PoseEstimate, PoseStatus, ScaleKind


def _gaussians(n: int = 7) -> Gaussians:
    g = torch.Generator().manual_seed(1)
    return Gaussians(
        torch.randn(n, 3, generator=g),
        torch.rand(n, 3, generator=g),
        torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1),
        torch.rand(n, generator=g),
        torch.randn(n, 3, 25, generator=g),
        torch.randn(n, 3, 3, generator=g),
    )


def test_safetensors_round_trip(tmp_path):
    g = _gaussians()
    path = tmp_path / "gaussians.safetensors"
    save_gaussians(path, g, metadata={"scale_kind": "unit_baseline"})
    back = load_gaussians(path)
    for name in ("means", "scales", "rotations_xyzw", "opacities", "harmonics", "covariances"):
        a, b = getattr(back, name), getattr(g, name)
        assert a.dtype == torch.float32 and a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    meta = load_gaussians_metadata(path)
    assert meta["sh_degree"] == "4" and meta["quaternion_order"] == "xyzw"
    assert meta["scale_kind"] == "unit_baseline"
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        assert set(f.keys()) == {"means", "scales", "rotations", "opacities", "harmonics", "covariances"}
        assert f.get_tensor("harmonics").shape == (7, 3, 25)


def test_pose_json(tmp_path):
    T = np.eye(4)
    T[:3, 3] = [0.6, 0.0, 0.8]
    cov = np.diag([1.0, 2, 3, 4, 5, 6]) * 1e-3
    recon = PairReconstruction(
        gaussians=_gaussians(4),
        pose=PoseEstimate(T, cov, PoseStatus.DEGRADED, num_inliers=42, residual_px=float("nan")),
        scale_kind=ScaleKind.UNIT_BASELINE,
        backend="geometry",
        stamp0_ns=10,
        stamp1_ns=20,
        frame_id="cam",
        grid_hw=(2, 1),
        K_grid=np.stack([np.eye(3)] * 2),
        timings_s={"pose": 0.5},
    )
    path = tmp_path / "pose.json"
    write_pose_json(path, recon)
    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    d = json.loads(path.read_text(), parse_constant=reject)  # strict JSON: no NaN/Infinity
    np.testing.assert_array_equal(np.array(d["T_cam0_from_cam1"]), T)
    np.testing.assert_array_equal(np.array(d["covariance"]), cov)
    assert d["scale_kind"] == "unit_baseline" and d["backend"] == "geometry"
    assert d["status"] == "DEGRADED" and d["num_inliers"] == 42 and d["residual_px"] is None
    assert (d["stamp0_ns"], d["stamp1_ns"]) == (10, 20)
    assert d["timings_s"] == {"pose": 0.5}
