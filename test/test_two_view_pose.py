"""Two-view pose (pose/two_view.py) and the geometry backend on the general-motion fixture: accuracy
against the true pose, splats at their true depth, degenerate geometry reported (not refused), and a
covariance whose normalised error squared (NEES) matches the noise."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from noposplat_ros.fixtures.general_motion import pure_rotation_pair, standard_pairs
from noposplat_ros.pose.metrics import rotation_error_deg
from noposplat_ros.pose.two_view import TwoViewOptions, estimate_two_view, gauge_basis
from noposplat_ros.predictors.geometry import GeometryPredictor
from noposplat_ros.transforms import direction_angle_deg, make_T
from noposplat_ros.types import Frame, KeyframePair, PoseStatus, PredictionError


def _pair(p) -> KeyframePair:
    return KeyframePair(p.frame0, p.frame1)


@pytest.fixture(scope="module")
def fixture_results():
    """Every standard pair through the geometry backend once: (pair, reconstruction or exception)."""
    pred = GeometryPredictor()
    out = []
    for p in standard_pairs():
        try:
            out.append((p, pred.predict(_pair(p))))
        except PredictionError as e:  # counted as LOST by the tests below
            out.append((p, e))
    return out


def _errors(p, r) -> tuple[float, float]:
    T = r.pose.T_cam0_from_cam1
    return rotation_error_deg(T, p.T_cam0_from_cam1), direction_angle_deg(T[:3, 3], p.T_cam0_from_cam1[:3, 3])


def test_pose_accuracy_and_nothing_lost(fixture_results):
    assert len(fixture_results) >= 30
    lost = [p.name for p, r in fixture_results if isinstance(r, Exception) or r.pose.status == PoseStatus.LOST]
    assert not [n for n, (p, _) in zip(lost, fixture_results) if p.baseline_over_depth >= 0.01], lost
    rot, tdir = np.array([_errors(p, r) for p, r in fixture_results if not isinstance(r, Exception)]).T
    print(f"\nrotation error median {np.median(rot):.3f} p95 {np.percentile(rot, 95):.3f} deg; "
          f"translation direction median {np.median(tdir):.3f} deg, max {tdir.max():.3f}")
    assert np.median(rot) <= 0.1 and np.percentile(rot, 95) <= 0.3
    assert np.median(tdir) <= 1.0
    for p, r in fixture_results:  # every truly translating pair gets a translation, |t| = 1
        assert np.linalg.norm(r.pose.T_cam0_from_cam1[:3, 3]) == pytest.approx(1.0, abs=1e-9), p.name


def _true_depth_on_grid(depth_m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H*W,) true depth at the grid pixels' centres (nearest input pixel; NaN = no data)."""
    H, W = depth_m.shape
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ui = np.clip(np.rint((u + 0.5) * W / w - 0.5), 0, W - 1).astype(int)
    vi = np.clip(np.rint((v + 0.5) * H / h - 0.5), 0, H - 1).astype(int)
    return depth_m[vi, ui].ravel()


def test_splats_at_true_depth(fixture_results):
    """Median relative depth error of the opaque view-0 splats (unit baseline scaled by the true one),
    on every pair with baseline/depth >= 0.03: <= 2 % each (measured 0.1-1.8 %).

    What it took: small-parallax pairs get the finer flow (forward/backward 0.03 were 2.1-2.5 % on the
    grid's flow, limited by the flow even under the true pose), and SIFT's contrast threshold 0.01
    gives the pose more matches (diagonal 0.05 and the 14-deg camera at 0.03 were pose-limited at
    2.5 % and 5 % with OpenCV's 0.04: rotation errors ~0.09 deg, a pixel or two of their parallax)."""
    rels = {}
    for p, r in fixture_results:
        if p.baseline_over_depth < 0.03:
            continue
        n = r.grid_hw[0] * r.grid_hw[1]
        assert r.gaussians.num == 2 * n, p.name
        z = r.gaussians.means[:n, 2].double().numpy() * p.baseline_m  # unit baseline -> metres
        z_true = _true_depth_on_grid(p.depth0_m, r.grid_hw)
        ok = (r.gaussians.opacities[:n].numpy() >= 0.5) & np.isfinite(z_true)
        assert ok.mean() > 0.2, p.name
        rels[p.name] = float(np.median(np.abs(z[ok] - z_true[ok]) / z_true[ok]))
    print("\nmedian depth error per pair (%): " + ", ".join(f"{k} {100 * v:.1f}" for k, v in rels.items()))
    assert len(rels) >= 20
    assert np.median(list(rels.values())) <= 0.02
    assert {k: v for k, v in rels.items() if v > 0.02} == {}


def test_evidence_for_the_trajectory(fixture_results):
    """matches_px / points_cam0: the pose's inliers and their unit-baseline points reproject onto them."""
    p, r = next((p, r) for p, r in fixture_results if p.name.startswith("08_forward"))
    m, X = r.matches_px, r.points_cam0
    assert m.shape[1] == 4 and X.shape == (len(m), 3) and len(m) == r.pose.num_inliers
    good = np.isfinite(X).all(1)
    assert good.mean() > 0.8
    K0, K1 = p.frame0.K, p.frame1.K
    x0 = X[good] @ K0.T
    np.testing.assert_allclose(x0[:, :2] / x0[:, 2:], m[good, :2], atol=1.0)
    T10 = np.linalg.inv(r.pose.T_cam0_from_cam1)
    x1 = (X[good] @ T10[:3, :3].T + T10[:3, 3]) @ K1.T
    err1 = np.linalg.norm(x1[:, :2] / x1[:, 2:] - m[good, 2:], axis=1)
    # Inliers reach 3 x the 1 px threshold (refine window) and each point sits on view 0's ray, so
    # view 1 carries the whole residual: most within 1 px, all within 2 x 3 px.
    assert np.percentile(err1, 95) < 1.0 and err1.max() < 6.0


def test_pure_rotation_is_degraded_with_its_rotation_and_no_splats():
    p = pure_rotation_pair()
    r = GeometryPredictor().predict(_pair(p))
    assert r.pose.status == PoseStatus.DEGRADED and "rotation" in r.pose.message
    assert rotation_error_deg(r.pose.T_cam0_from_cam1, p.T_cam0_from_cam1) <= 0.1
    assert r.gaussians.num == 0
    cov = r.pose.covariance
    assert np.all(np.diag(cov)[:3] >= 1e6)  # translation unknown
    assert np.all(np.sqrt(np.diag(cov)[3:]) < np.radians(0.1))  # rotation known


def test_narrow_fov_small_baseline_is_a_pose_not_lost(fixture_results):
    """14-deg HFOV, baseline/depth 0.01: a real translation, not 'no parallax'; the pose is OK or
    DEGRADED and its true error is plausible under its covariance (5 observable DoF, chi-square 99.9 %)."""
    res = {p.name: (p, r) for p, r in fixture_results}
    p_n, r_n = res["25_sideways_0.010_narrow"]
    assert r_n.pose.status != PoseStatus.LOST and "rotation" not in r_n.pose.message
    assert direction_angle_deg(r_n.pose.T_cam0_from_cam1[:3, 3], p_n.T_cam0_from_cam1[:3, 3]) < 5.0
    assert _nees5(r_n.pose.T_cam0_from_cam1, r_n.pose.covariance, p_n.T_cam0_from_cam1) < 20.5


def test_pose_survives_flow_failing_on_half_the_image():
    p = standard_pairs()[8]  # forward 0.1
    rgb1 = p.frame1.rgb.copy()
    rgb1[:, rgb1.shape[1] // 2:] = 128  # half of view 1 blank: no flow, no features there
    r = GeometryPredictor().predict(KeyframePair(p.frame0, dataclasses.replace(p.frame1, rgb=rgb1)))
    assert r.pose.status != PoseStatus.LOST
    rot, tdir = _errors(p, r)
    assert rot < 0.3 and tdir < 3.0
    n = r.grid_hw[0] * r.grid_hw[1]
    assert 0 < (r.gaussians.opacities[:n] >= 0.5).float().mean() < 0.7  # splats only where flow worked


def test_nothing_determined_is_lost():
    blank = np.full((120, 160, 3), 128, np.uint8)
    K = np.array([[150.0, 0, 80], [0, 150, 60], [0, 0, 1]])
    with pytest.raises(PredictionError, match="matches"):
        GeometryPredictor().predict(KeyframePair(Frame(blank, K, 0, "c"), Frame(blank.copy(), K, 1, "c")))
    rng = np.random.default_rng(1)  # random matches: no consistent model
    r = estimate_two_view(rng.uniform(0, 160, (200, 2)), rng.uniform(0, 160, (200, 2)), K, K, (120, 160), (120, 160))
    assert r.kind == "lost" and r.estimate.status == PoseStatus.LOST


def _nees5(T_est: np.ndarray, cov: np.ndarray, T_true: np.ndarray) -> float:
    """NEES of the 5 observable DoF: error (t_est - t_true, rotvec(R_est R_true^T)) in the subspace
    orthogonal to the gauge direction (t, 0), against the covariance restricted to it."""
    t_true = T_true[:3, 3] / np.linalg.norm(T_true[:3, 3])
    e = np.concatenate([T_est[:3, 3] - t_true, cv2.Rodrigues(T_est[:3, :3] @ T_true[:3, :3].T)[0].ravel()])
    B = gauge_basis(t_true)
    return float((B.T @ e) @ np.linalg.solve(B.T @ cov @ B, B.T @ e))


@pytest.mark.parametrize("sigma_px", [0.5])
def test_covariance_is_consistent_nees(sigma_px):
    """>= 200 synthetic trials, Gaussian pixel noise of known sigma in both views, 5 % outliers:
    mean NEES of the 5 observable DoF within [0.5, 2] x 5."""
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    nees = []
    for _ in range(200):
        R = cv2.Rodrigues(rng.normal(0, 0.1, 3))[0]
        t = rng.normal(0, 1, 3) * [1, 1, 0.3]
        t /= np.linalg.norm(t)
        X0 = rng.uniform([-3, -2, 4], [3, 2, 10], (150, 3))
        X1 = (X0 - t) @ R  # T_cam0_from_cam1 = (R, t)
        u0 = X0[:, :2] / X0[:, 2:] * 500 + [320, 240] + rng.normal(0, sigma_px, (150, 2))
        u1 = X1[:, :2] / X1[:, 2:] * 500 + [320, 240] + rng.normal(0, sigma_px, (150, 2))
        u1[:8] = rng.uniform([0, 0], [640, 480], (8, 2))  # outliers
        r = estimate_two_view(u0, u1, K, K, (480, 640), (480, 640), TwoViewOptions())
        assert r.kind == "general"
        nees.append(_nees5(r.estimate.T_cam0_from_cam1, r.estimate.covariance, make_T(R, t)))
    print(f"\nmean NEES {np.mean(nees):.2f} (5 DoF), median {np.median(nees):.2f}")
    assert 2.5 <= np.mean(nees) <= 10.0
