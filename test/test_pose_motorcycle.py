"""Real data with ground truth: the Middlebury Motorcycle pair (scikit-image), metric calibration.

Gaussians are built from the ground-truth disparity of the left view (quarter resolution for speed);
the right camera is +0.193 m along x with its own K (cx larger by 31.086 px).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from noposplat_ros.pose.metrics import rotation_error_deg, translation_direction_error_deg
from noposplat_ros.pose.pnp import solve_pnp_official
from noposplat_ros.ingest.camera_model import scale_intrinsics
from noposplat_ros.pose.refine import RefineConfig, refine_pose
from noposplat_ros.pose.se3 import perturbed_pose_np
from noposplat_ros.render import render
from noposplat_ros.render.from_depth import gaussians_from_depth
from noposplat_ros.types import PoseStatus


# small renders: single-threaded torch (see conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

F = 4  # downsampling factor of the test scene


@pytest.fixture(scope="module")
def scene(motorcycle):
    m = motorcycle
    H, W = m.left.rgb.shape[:2]
    h, w = H // F, W // F
    L = cv2.resize(m.left.rgb, (w, h), interpolation=cv2.INTER_AREA)
    R = cv2.resize(m.right.rgb, (w, h), interpolation=cv2.INTER_AREA)
    KL = scale_intrinsics(m.left.K, w / W, h / H)
    KR = scale_intrinsics(m.right.K, w / W, h / H)
    z = m.depth_left_m()
    zs = z[(np.arange(h) * F + F // 2)[:, None], (np.arange(w) * F + F // 2)[None, :]]
    gs = gaussians_from_depth(L, zs, KL, footprint_px=0.4)
    return dict(gs=gs, L=L, R=R, KL=KL, KR=KR, h=h, w=w, T=m.T_cam0_from_cam1)


def psnr_valid(rgb: torch.Tensor, alpha: torch.Tensor, img_u8: np.ndarray) -> float:
    ref = torch.as_tensor(img_u8, dtype=torch.float32) / 255.0
    v = alpha > 0.9
    mse = ((rgb - ref) ** 2).mean(-1)[v].mean()
    return float(10 * torch.log10(1.0 / mse))


def test_render_at_true_right_camera_matches_right_image(scene):
    s = scene
    T_true = torch.as_tensor(np.linalg.inv(s["T"]))
    out = render(s["gs"], s["KR"], T_true, s["h"], s["w"])
    p_true = psnr_valid(out.rgb, out.alpha, s["R"])
    # Same Gaussians seen from the left camera, compared with the right image: the wrong viewpoint.
    out_left = render(s["gs"], s["KL"], torch.eye(4), s["h"], s["w"])
    p_left = psnr_valid(out_left.rgb, out_left.alpha, s["R"])
    # One pixel of principal-point error is already visible.
    K_off = s["KR"].copy()
    K_off[0, 2] += 1.0
    out_off = render(s["gs"], K_off, T_true, s["h"], s["w"])
    p_off = psnr_valid(out_off.rgb, out_off.alpha, s["R"])
    print(f"Motorcycle right view PSNR: true pose {p_true:.2f} dB, left pose {p_left:.2f} dB, cx+1px {p_off:.2f} dB")
    assert p_true > 22.0
    assert p_true > p_left + 6.0
    assert p_true > p_off + 1.0
    # Depth output is metric camera z of the right camera where covered.
    d = out.depth[out.alpha > 0.9]
    assert 1.5 < float(d.median()) < 5.5


def test_pnp_on_ground_truth_centres_recovers_the_pose(motorcycle):
    m = motorcycle
    z = m.depth_left_m()
    H, W = z.shape
    K0 = m.left.K
    v, u = np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij")
    ok = np.isfinite(z)
    X = np.stack([(u - K0[0, 2]) / K0[0, 0] * z, (v - K0[1, 2]) / K0[1, 1] * z, z], -1)
    # View-1 grid: every left pixel lands at column u - d of the right image (rectified pair).
    ur = np.rint(u - m.disparity_left.astype(float))
    ok &= (ur >= 0) & (ur < W)
    means1 = np.zeros((H, W, 3))
    opac1 = np.zeros((H, W))
    idx = np.nonzero(ok)
    order = np.argsort(-z[idx])  # far first, so nearer points overwrite (occlusion)
    rows, cols = idx[0][order], ur[idx][order].astype(int)
    means1[rows, cols] = X[idx][order]
    opac1[rows, cols] = 1.0
    est = solve_pnp_official(means1, opac1, m.right.K)
    assert est.status == PoseStatus.OK, est.message
    r_err = rotation_error_deg(est.T_cam0_from_cam1, m.T_cam0_from_cam1)
    t_err = translation_direction_error_deg(est.T_cam0_from_cam1, m.T_cam0_from_cam1)
    print(f"PnP on GT centres: rotation {r_err:.4f} deg, translation direction {t_err:.4f} deg, "
          f"baseline {np.linalg.norm(est.T_cam0_from_cam1[:3, 3]):.4f} m, inliers {est.num_inliers}")
    assert r_err < 0.1 and t_err < 0.5
    assert abs(np.linalg.norm(est.T_cam0_from_cam1[:3, 3]) - m.baseline_m) < 0.01 * m.baseline_m
    sd = np.sqrt(np.diag(est.covariance))
    assert np.all(sd > 0) and sd[0] < 0.01  # confident, finite covariance


def test_refinement_from_3deg_20pct_off_converges(scene):
    s = scene
    T0 = perturbed_pose_np(s["T"], 3.0, 0.2, np.random.default_rng(0))
    assert rotation_error_deg(T0, s["T"]) > 2.9
    img = torch.as_tensor(s["R"], dtype=torch.float32) / 255.0
    cfg = RefineConfig(levels=(4, 2, 1))  # default hybrid; the scene is already at quarter resolution
    T, info = refine_pose(s["gs"], img, s["KR"], T0, cfg)
    r_err = rotation_error_deg(T, s["T"])
    t_err = translation_direction_error_deg(T, s["T"])
    print(f"refined: rotation {r_err:.4f} deg, translation direction {t_err:.3f} deg "
          f"(from {translation_direction_error_deg(T0, s['T']):.2f}), steps {info.levels}")
    assert r_err < 0.2
    assert t_err < 3.0
    assert info.final_loss < info.initial_loss
    # Switched off: the initial pose comes back untouched.
    T_off, info_off = refine_pose(s["gs"], img, s["KR"], T0, RefineConfig(enabled=False))
    assert info_off.skipped and np.array_equal(T_off, T0)
