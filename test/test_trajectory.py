"""Trajectory on synthetic pairs with known poses: scale carried by PnP, metric scale, pose graph, loss handling."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from noposplat_ros.pose.se3 import exp_se3_np
from noposplat_ros.pose.trajectory import Trajectory, TrajectoryConfig
from noposplat_ros.transforms import invert_T, rotation_angle_deg
from noposplat_ros.types import Gaussians, PairReconstruction, PoseEstimate, PoseStatus, ScaleKind

H, W = 12, 16
K = np.array([[14.0, 0, 7.5], [0, 14.0, 5.5], [0, 0, 1]])
STAMP0 = 1_700_000_000_123_456_789


def depth_map(T_world_from_cam: np.ndarray) -> np.ndarray:
    """Ray-cast the world plane z = 6 (plus gentle bumps) from a camera: (H, W) camera depth."""
    v, u = np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij")
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    R, c = T_world_from_cam[:3, :3], T_world_from_cam[:3, 3]
    rw = rays_cam @ R.T
    lam = (6.0 - c[2]) / rw[..., 2]
    X = c + lam[..., None] * rw
    lam = (6.0 + 0.5 * np.sin(X[..., 0]) * np.cos(X[..., 1]) - c[2]) / rw[..., 2]  # one fixed-point step
    return lam


def grid_points(T_world_from_cam: np.ndarray) -> np.ndarray:
    z = depth_map(T_world_from_cam)
    v, u = np.meshgrid(np.arange(H, dtype=float), np.arange(W, dtype=float), indexing="ij")
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)


def make_pair(T_w0, T_w1, stamp0, stamp1, rng, noise=0.01, extra_scale=1.0, status=PoseStatus.OK) -> PairReconstruction:
    """What a predictor would output: both grids in camera 0, unit baseline times ``extra_scale``."""
    T01 = invert_T(T_w0) @ T_w1
    s = extra_scale / np.linalg.norm(T01[:3, 3])
    P0 = grid_points(T_w0)
    P1_cam1 = grid_points(T_w1)
    P1 = P1_cam1 @ T01[:3, :3].T + T01[:3, 3]
    means = np.concatenate([P0, P1]) * s * (1 + noise * rng.standard_normal((2 * H * W, 1)))
    n = means.shape[0]
    g = Gaussians(
        torch.tensor(means, dtype=torch.float32),
        torch.full((n, 3), 0.01),
        torch.tensor([[0, 0, 0, 1.0]]).repeat(n, 1),
        torch.full((n,), 0.9),
        torch.zeros(n, 3, 1),
        torch.eye(3).repeat(n, 1, 1) * 1e-4,
    )
    Tu = T01.copy()
    Tu[:3, 3] *= s
    pose = PoseEstimate(Tu, np.eye(6) * 1e-6, status, num_inliers=100, residual_px=0.3)
    if status == PoseStatus.LOST:
        pose = PoseEstimate.lost("synthetic loss")
    return PairReconstruction(g, pose, ScaleKind.UNIT_BASELINE, "synthetic", stamp0, stamp1, "cam", (H, W), np.stack([K, K]))


def true_path(n: int, rng, spacing=None) -> list[np.ndarray]:
    Ts = [np.eye(4)]
    for i in range(n):
        step = spacing if spacing is not None else rng.uniform(0.1, 0.5)
        d = np.array([1.0, 0.15 * rng.standard_normal(), 0.3 * rng.standard_normal()])
        d *= step / np.linalg.norm(d)
        dT = exp_se3_np(np.zeros(3), rng.normal(scale=0.02, size=3))
        dT[:3, 3] = d
        Ts.append(Ts[-1] @ dT)
    return Ts


def run(Ts, rng, traj: Trajectory, odom=False, **kw):
    steps = []
    for k in range(len(Ts) - 1):
        pair = make_pair(Ts[k], Ts[k + 1], STAMP0 + k * 10**8, STAMP0 + (k + 1) * 10**8, rng,
                         extra_scale=rng.uniform(0.5, 2.0), **kw)
        ob = float(np.linalg.norm((invert_T(Ts[k]) @ Ts[k + 1])[:3, 3])) if odom else None
        steps.append(traj.add_pair(pair, odom_baseline_m=ob))
    return steps


def path_error(steps, Ts, fit_scale: bool) -> tuple[float, float]:
    est = np.array([s.T_world_from_cam1[:3, 3] for s in steps])
    tru = np.array([T[:3, 3] for T in Ts[1:]])
    g = float((est * tru).sum() / (est * est).sum()) if fit_scale else 1.0
    err = np.linalg.norm(g * est - tru, axis=1) / np.linalg.norm(tru, axis=1)
    rot = max(rotation_angle_deg(s.T_world_from_cam1[:3, :3].T @ T[:3, :3]) for s, T in zip(steps, Ts[1:]))
    return float(err.max()), rot


def test_chained_scale_equals_truth_up_to_one_global_scale():
    rng = np.random.default_rng(0)
    Ts = true_path(12, rng)
    steps = run(Ts, rng, Trajectory())
    assert all(s.status == PoseStatus.OK for s in steps)
    assert all(s.scale_kind == ScaleKind.CHAINED for s in steps)
    assert [s.scale_source for s in steps] == ["first"] + ["pnp_dense"] * 11
    err, rot = path_error(steps, Ts, fit_scale=True)
    # 1% depth noise on both sides of the dense lookup (the previous pair's points and the new pair's
    # own projections) biases each PnP scale low by ~0.3% (errors in variables): 4% after 11 pairs.
    assert err < 0.06, err
    assert rot < 0.3  # the graph also weighs the k-2 PnP edges, whose rotations carry the depth noise
    # Without chaining (each pair at its own unit scale) the same path is far off: the test can fail.
    naive = []
    T = np.eye(4)
    for s in steps:
        T01 = s.T_cam0_from_cam1.copy()
        T01[:3, 3] /= np.linalg.norm(T01[:3, 3])
        T = T @ T01
        naive.append(T[:3, 3])
    naive = np.array(naive)
    tru = np.array([T[:3, 3] for T in Ts[1:]])
    g = (naive * tru).sum() / (naive * naive).sum()
    assert np.max(np.linalg.norm(g * naive - tru, axis=1) / np.linalg.norm(tru, axis=1)) > 0.05


def test_grids_of_different_intrinsics_are_looked_up_through_K():
    rng = np.random.default_rng(1)
    Ts = true_path(6, rng)
    traj = Trajectory()
    steps = []
    for k in range(6):
        pair = make_pair(Ts[k], Ts[k + 1], STAMP0 + k, STAMP0 + k + 1, rng, extra_scale=rng.uniform(0.5, 2))
        pair.K_grid = pair.K_grid.copy()
        pair.K_grid[1, 0, 0] *= 1.001 + k * 0.001  # view-1 grid differs from the next pair's view-0 grid
        steps.append(traj.add_pair(pair))
    assert [s.scale_source for s in steps[1:]] == ["pnp_dense"] * 5
    err, _ = path_error(steps, Ts, fit_scale=True)
    assert err < 0.05  # the grids' K disagree slightly with the data: coarser, still carried


def test_odometry_baseline_gives_metric_trajectory():
    rng = np.random.default_rng(2)
    Ts = true_path(10, rng)
    steps = run(Ts, rng, Trajectory(), odom=True)
    assert all(s.scale_kind == ScaleKind.METRIC for s in steps)
    err, _ = path_error(steps, Ts, fit_scale=False)
    assert err < 0.01, err


def test_configured_baseline_gives_metric_trajectory():
    rng = np.random.default_rng(3)
    Ts = true_path(8, rng, spacing=0.25)
    steps = run(Ts, rng, Trajectory(metric_baseline_m=0.25))
    assert all(s.scale_kind == ScaleKind.METRIC for s in steps)
    err, _ = path_error(steps, Ts, fit_scale=False)
    assert err < 0.01
    # A wrong configured baseline is off by exactly its ratio (the scale really comes from it).
    rng = np.random.default_rng(3)
    steps = run(true_path(8, rng, spacing=0.25), rng, Trajectory(metric_baseline_m=0.5))
    assert path_error(steps, Ts, fit_scale=False)[0] > 0.5


def test_lost_pose_gap_and_uncarried_scale_are_never_confident(tmp_path):
    rng = np.random.default_rng(4)
    Ts = true_path(6, rng, spacing=0.3)
    traj = Trajectory()
    s0 = traj.add_pair(make_pair(Ts[0], Ts[1], 0, 1, rng))
    s1 = traj.add_pair(make_pair(Ts[1], Ts[2], 1, 2, rng, status=PoseStatus.LOST))
    assert s1.status == PoseStatus.LOST
    assert np.all(np.diag(s1.covariance_world) >= 1e6) and np.all(np.diag(s1.covariance) >= 1e6)
    np.testing.assert_array_equal(s1.T_world_from_cam1, s1.T_world_from_cam0)
    # After a loss, a new segment starts; its world placement is flagged as unknown.
    s2 = traj.add_pair(make_pair(Ts[2], Ts[3], 2, 3, rng))
    assert s2.segment == s0.segment + 1 and s2.scale_source == "first"
    assert np.all(np.diag(s2.covariance_world) >= 1e6)
    # Stamp gap: another segment.
    s3 = traj.add_pair(make_pair(Ts[3], Ts[4], 5, 6, rng))
    assert s3.segment == s2.segment + 1
    # No shared geometry (the predictor made no Gaussians): the scale is not carried -> DEGRADED
    # with a large scale variance along t, never LOST (the pose itself is fine).
    pair = make_pair(Ts[4], Ts[5], 6, 7, rng)
    pair.gaussians = pair.gaussians.subset(torch.zeros(pair.gaussians.num, dtype=torch.bool))
    s4 = traj.add_pair(pair)
    assert s4.status == PoseStatus.DEGRADED and "scale not carried" in s4.message and s4.scale_source == "none"
    t = s4.T_cam0_from_cam1[:3, 3]
    var_along_t = t @ s4.covariance[:3, :3] @ t / (t @ t)
    assert var_along_t > 0.1 * (t @ t)  # log-scale sigma 0.5: the length is known to ~50%
    # TUM export: every keyframe with a pose (segment starts included), LOST kf1 skipped; parses back.
    n = traj.to_tum(tmp_path / "traj.tum")
    rows = [l.split() for l in (tmp_path / "traj.tum").read_text().splitlines()]
    assert [r[0] for r in rows] == [f"0.00000000{k}" for k in (0, 1, 2, 3, 5, 6, 7)] and n == 7
    assert all(len(r) == 8 for r in rows)
    q = np.array([float(x) for x in rows[1][4:]])
    assert abs(np.linalg.norm(q) - 1) < 1e-6
    assert len(traj.poses(include_lost=True)) == 8
    traj.reset()
    assert traj.steps == [] and traj.to_tum(tmp_path / "empty.tum") == 0


def test_sparse_matches_carry_the_scale_and_poses_are_the_latest_optimised():
    """With matches_px/points_cam0 (the geometry backend's evidence) the sparse PnP carries the scale;
    poses() returns every keyframe at the graph's latest estimate."""
    rng = np.random.default_rng(6)
    Ts = true_path(6, rng)
    # The synthetic grids are 1 px apart: look matches up exactly (real keypoints detected on the
    # same image coincide; the default radius is 0.5 px).
    traj = Trajectory(config=TrajectoryConfig(match_radius_px=1e-3))
    steps = []
    for k in range(6):
        pair = make_pair(Ts[k], Ts[k + 1], STAMP0 + k, STAMP0 + k + 1, rng, noise=0.0, extra_scale=rng.uniform(0.5, 2))
        T01u = pair.pose.T_cam0_from_cam1
        X0 = grid_points(Ts[k]) * np.linalg.norm(T01u[:3, 3]) / np.linalg.norm((invert_T(Ts[k]) @ Ts[k + 1])[:3, 3])
        X1 = X0 @ invert_T(T01u)[:3, :3].T + invert_T(T01u)[:3, 3]
        uv0 = X0[:, :2] / X0[:, 2:] * K[0, 0] + K[:2, 2]
        uv1 = X1[:, :2] / X1[:, 2:] * K[0, 0] + K[:2, 2]
        pair.matches_px, pair.points_cam0 = np.concatenate([uv0, uv1], 1), X0
        # the next pair's kf0 pixels must be this pair's kf1 pixels: use the kf1 grid as well
        X1b = grid_points(Ts[k + 1]) * np.linalg.norm(T01u[:3, 3]) / np.linalg.norm((invert_T(Ts[k]) @ Ts[k + 1])[:3, 3])
        X1b0 = X1b @ T01u[:3, :3].T + T01u[:3, 3]
        uvb1 = X1b[:, :2] / X1b[:, 2:] * K[0, 0] + K[:2, 2]
        uvb0 = X1b0[:, :2] / X1b0[:, 2:] * K[0, 0] + K[:2, 2]
        pair.matches_px = np.concatenate([pair.matches_px, np.concatenate([uvb0, uvb1], 1)])
        pair.points_cam0 = np.concatenate([pair.points_cam0, X1b0])
        steps.append(traj.add_pair(pair, K_px=(K, K)))
    assert [s.scale_source for s in steps] == ["first"] + ["pnp_sparse"] * 5
    assert all(s.pnp_inliers >= 100 for s in steps[1:])
    err, _ = path_error(steps, Ts, fit_scale=True)
    assert err < 1e-3, err
    poses = traj.poses()
    assert [p[0] for p in poses] == [STAMP0] + [STAMP0 + k + 1 for k in range(6)]
    np.testing.assert_allclose(poses[-1][1], steps[-1].T_world_from_cam1, atol=1e-9)


def test_world_covariance_grows_along_the_chain():
    rng = np.random.default_rng(5)
    Ts = true_path(5, rng, spacing=0.3)
    steps = run(Ts, rng, Trajectory())
    tr = [np.trace(s.covariance_world[:3, :3]) for s in steps]
    assert all(b > a for a, b in zip(tr, tr[1:]))
    assert all(np.all(np.linalg.eigvalsh(s.covariance_world) > -1e-12) for s in steps)


def test_bad_metric_baseline_raises():
    with pytest.raises(ValueError):
        Trajectory(metric_baseline_m=-1.0)
    with pytest.raises(ValueError):
        Trajectory(metric_baseline_m=math.nan)


def test_pure_rotation_is_placed_with_its_rotation_not_lost():
    """A pure rotation between two translating pairs (geometry backend on the general-motion
    fixture): DEGRADED with its rotation and an unknown translation, in the same segment; the pair
    after it cannot carry the scale through it (DEGRADED) but keeps the chain and its direction."""
    from noposplat_ros.fixtures import general_motion as gm
    from noposplat_ros.pose.metrics import rotation_error_deg
    from noposplat_ros.predictors.geometry import GeometryPredictor
    from noposplat_ros.transforms import direction_angle_deg
    from noposplat_ros.types import Frame, KeyframePair, LOST_POSE_VARIANCE

    hw = (240, 320)
    K = gm.camera_K(34.0, hw)
    zc = gm.load_scene().median_depth_m
    R_a, R_b = gm.rotation("y", -1.5), gm.rotation("y", 1.5)
    poses = [gm.pose(R_a, np.array([-0.1 * zc, 0, 0])), gm.pose(R_a, np.array([-0.05 * zc, 0, 0])),
             gm.pose(R_b, np.array([-0.05 * zc, 0, 0])), gm.pose(R_b, np.array([0.0, 0, 0]))]
    frames = [Frame(gm.render_view(T, K, hw, noise_std=1.0, seed=i).rgb, K, 10**9 * (i + 1), "cam")
              for i, T in enumerate(poses)]
    pred, traj = GeometryPredictor(), Trajectory()
    steps = [traj.add_pair(pred.predict(KeyframePair(a, b)), K_px=(K, K)) for a, b in zip(frames, frames[1:])]
    assert [s.status for s in steps] == [PoseStatus.OK, PoseStatus.DEGRADED, PoseStatus.DEGRADED]
    assert [s.segment for s in steps] == [0, 0, 0]
    rot = steps[1]
    T_true = np.linalg.inv(poses[1]) @ poses[2]
    assert rotation_error_deg(rot.T_cam0_from_cam1, T_true) <= 0.1
    assert np.allclose(rot.T_cam0_from_cam1[:3, 3], 0.0) and rot.scale_source == "rotation"
    assert np.all(np.diag(rot.covariance)[:3] >= LOST_POSE_VARIANCE / 10)
    assert np.all(np.sqrt(np.diag(rot.covariance)[3:]) < np.radians(0.2))
    # the world poses: kf2 at kf1's centre, turned; kf3 continues sideways from there
    T_w1, T_w2 = steps[0].T_world_from_cam1, rot.T_world_from_cam1
    assert np.linalg.norm(T_w2[:3, 3] - T_w1[:3, 3]) < 1e-6 * max(1.0, np.linalg.norm(T_w1[:3, 3]))
    after = steps[2]
    assert after.scale_source == "none"
    T_true_after = np.linalg.inv(poses[2]) @ poses[3]
    assert direction_angle_deg(after.T_cam0_from_cam1[:3, 3], T_true_after[:3, 3]) < 2.0
    assert len(traj.poses()) == 4
