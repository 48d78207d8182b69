"""Geometry backend: real Motorcycle pair against ground truth, a ray-cast synthetic scene with known
poses for the frame/scale convention, degenerate pairs, and backend selection."""
from __future__ import annotations

import functools
import warnings

import cv2
import numpy as np
import pytest
import torch

from noposplat_ros.predictors import make_predictor
from noposplat_ros.ingest.camera_model import scale_intrinsics
from noposplat_ros.predictors.geometry import GeometryConfig, GeometryPredictor, triangulate_rays
from noposplat_ros.transforms import direction_angle_deg, invert_T, make_T, rotation_angle_deg
from noposplat_ros.types import Frame, KeyframePair, PoseStatus, PredictionError, ScaleKind


# ----------------------------------------------------------------------------------------------
# Motorcycle (real, with ground truth)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def motorcycle_recon(motorcycle):
    return GeometryPredictor().predict(KeyframePair(motorcycle.left, motorcycle.right))


def test_motorcycle_pose(motorcycle_recon, motorcycle):
    T = motorcycle_recon.pose.T_cam0_from_cam1
    T_true = motorcycle.T_cam0_from_cam1
    rot_err = rotation_angle_deg(T[:3, :3].T @ T_true[:3, :3])
    dir_err = direction_angle_deg(T[:3, 3], T_true[:3, 3])
    print(f"Motorcycle: rotation error {rot_err:.4f} deg, translation direction error {dir_err:.3f} deg")
    assert rot_err < 1.0
    assert dir_err < 3.0
    assert np.linalg.norm(T[:3, 3]) == pytest.approx(1.0, abs=1e-9)
    pose = motorcycle_recon.pose
    assert pose.status == PoseStatus.OK and pose.num_inliers >= 60 and pose.residual_px < 1.5
    cov = pose.covariance
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.all(np.sqrt(np.diag(cov)[3:]) < np.radians(1.0))
    # The covariance is honest: the true error (tx ty tz rx ry rz; rotation about camera 0's axes)
    # is plausible under it (chi-square 6 dof, 99.9 %: 22.5).
    w = cv2.Rodrigues(T_true[:3, :3] @ T[:3, :3].T)[0].ravel()
    err = np.concatenate([T_true[:3, 3] / np.linalg.norm(T_true[:3, 3]) - T[:3, 3], w])
    assert err @ np.linalg.solve(cov, err) < 22.5


def test_motorcycle_metric_depth(motorcycle_recon, motorcycle):
    r = motorcycle_recon
    h, w = r.grid_hw
    H, W = motorcycle.left.height, motorcycle.left.width
    assert max(h, w) == 256 and abs(h / w - H / W) < 0.01
    # Ground-truth depth at each grid pixel's centre (nearest original pixel; NaN = invalid).
    gt = motorcycle.depth_left_m()
    v, u = np.mgrid[0:h, 0:w]
    U = np.clip(np.round((u + 0.5) * W / w - 0.5).astype(int), 0, W - 1)
    V = np.clip(np.round((v + 0.5) * H / h - 0.5).astype(int), 0, H - 1)
    gt_grid = gt[V, U].ravel()
    z_m = r.gaussians.means[: h * w, 2].double().numpy() * motorcycle.baseline_m  # unit baseline -> m
    valid = np.isfinite(gt_grid)
    assert valid.mean() > 0.8
    rel = np.abs(z_m[valid] - gt_grid[valid]) / gt_grid[valid]
    opaque = r.gaussians.opacities[: h * w].numpy()[valid] > 0.5
    print(
        f"Motorcycle: median metric depth error {100 * np.median(rel):.2f}% on all valid GT pixels, "
        f"{100 * np.median(rel[opaque]):.2f}% on opaque splats ({100 * opaque.mean():.0f}% opaque)"
    )
    assert np.median(rel) < 0.05
    assert np.median(rel[opaque]) < 0.05
    # Opacity carries information: opaque splats are more accurate than the low-opacity ones.
    assert np.median(rel[opaque]) < np.median(rel[~opaque])

    # View 1's opaque splats (from the backward flow, mapped into camera 0) sit at the true depth too:
    # project them into the left image and compare with the ground truth there.
    X = r.gaussians.means[h * w :].double().numpy() * motorcycle.baseline_m
    p = X @ motorcycle.left.K.T
    ui, vi = np.round(p[:, 0] / p[:, 2]).astype(int), np.round(p[:, 1] / p[:, 2]).astype(int)
    seen = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (r.gaussians.opacities[h * w :].numpy() > 0.5)
    gt1 = gt[vi[seen], ui[seen]]
    ok1 = np.isfinite(gt1)
    assert ok1.sum() > 0.5 * h * w
    rel1 = np.abs(X[seen, 2][ok1] - gt1[ok1]) / gt1[ok1]
    print(f"Motorcycle: view 1 splats, median metric depth error {100 * np.median(rel1):.2f}%")
    assert np.median(rel1) < 0.05


def test_motorcycle_output_structure(motorcycle_recon, motorcycle):
    r = motorcycle_recon
    h, w = r.grid_hw
    g = r.gaussians
    assert g.num == 2 * h * w and r.backend == "geometry" and r.scale_kind == ScaleKind.UNIT_BASELINE
    assert (r.stamp0_ns, r.stamp1_ns) == (motorcycle.left.stamp_ns, motorcycle.right.stamp_ns)
    assert r.frame_id == motorcycle.left.frame_id
    for name in ("means", "scales", "rotations_xyzw", "opacities", "harmonics", "covariances"):
        t = getattr(g, name)
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name
    assert ((g.opacities > 0) & (g.opacities < 1)).all()
    torch.testing.assert_close(g.rotations_xyzw.norm(dim=1), torch.ones(g.num))
    # K_grid follows each view's own principal point (the right camera's cx is 31 px larger).
    sx = w / motorcycle.left.width
    assert r.K_grid[1, 0, 2] - r.K_grid[0, 0, 2] == pytest.approx(31.086 * sx, rel=1e-6)
    # Colour from the pixel: SH DC reproduces the grid image.
    grid0 = cv2.resize(motorcycle.left.rgb, (w, h), interpolation=cv2.INTER_AREA)
    rgb = g.harmonics[: h * w, :, 0].numpy() * 0.28209479 + 0.5
    np.testing.assert_allclose(rgb, grid0.reshape(-1, 3) / 255.0, atol=1e-5)
    # Covariances are R diag(s)^2 R^T.
    from noposplat_ros.transforms import quat_xyzw_to_matrix

    R = torch.from_numpy(quat_xyzw_to_matrix(g.rotations_xyzw.double().numpy()))
    cov = R @ torch.diag_embed(g.scales.double() ** 2) @ R.transpose(1, 2)
    torch.testing.assert_close(g.covariances.double(), cov, rtol=1e-4, atol=1e-9)
    assert set(r.timings_s) >= {"features", "pose", "flow", "triangulate", "gaussians", "total"}


# ----------------------------------------------------------------------------------------------
# Synthetic scene, ray-cast with known geometry and cameras
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _texture(seed: int, size: int = 512) -> np.ndarray:
    """(size, size, 3) float32 multi-scale blob texture in [0, 1] (SIFT and DIS need texture)."""
    rng = np.random.default_rng(seed)
    tex = np.zeros((size, size, 3), np.float32)
    for sigma, weight in ((1.5, 0.5), (4.0, 1.0), (10.0, 1.0)):
        noise = rng.standard_normal((size, size, 3)).astype(np.float32)
        # Periodic blur (the texture wraps): blur a 3x3 tiling, keep the centre tile.
        blurred = cv2.GaussianBlur(np.tile(noise, (3, 3, 1)), (0, 0), sigma)[size : 2 * size, size : 2 * size]
        tex += weight * blurred / blurred.std()
    return np.clip(0.5 + 0.15 * tex, 0, 1)


# (normal n, offset d: n . X = d in camera-0 coordinates, texture axes (i, j), extent check, texture id)
_PLANES = [
    (np.array([0.0, 0.0, 1.0]), 6.0, (0, 1), None, 0),  # back wall z = 6
    (np.array([0.0, 1.0, 0.0]), 1.2, (0, 2), None, 1),  # floor y = 1.2 (y points down)
    (np.array([0.0, 0.0, 1.0]), 3.0, (0, 1), ((-1.6, 0.2), (-1.0, 0.6)), 2),  # box face, x and y limits
    (np.array([1.0, 0.0, 0.4]), 1.9, (1, 2), ((-1.0, 0.8), (2.0, 4.5)), 1),  # slanted wall, y and z limits
]


def render_scene(K: np.ndarray, T_cam0_from_cam: np.ndarray, hw: tuple[int, int]):
    """Ray-cast the plane scene. Returns rgb (H, W, 3) uint8, points in camera 0 (H*W, 3), depth (H*W,)."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_cam = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], 1) @ np.linalg.inv(K).T
    D = rays_cam @ T_cam0_from_cam[:3, :3].T
    C = T_cam0_from_cam[:3, 3]
    best = np.full(h * w, np.inf)
    colour = np.zeros((h * w, 3), np.float32)
    texels_per_m = 60.0
    for n, d, (i, j), extent, tex_id in _PLANES:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (d - n @ C) / (D @ n)
            X = C + s[:, None] * D
        ok = (s > 0) & np.isfinite(s)
        if extent is not None:
            (a0, a1), (b0, b1) = extent
            ok &= (X[:, i] >= a0) & (X[:, i] <= a1) & (X[:, j] >= b0) & (X[:, j] <= b1)
        closer = ok & (s < best)
        tex = _texture(tex_id)
        mx = (X[:, i] * texels_per_m).astype(np.float32).reshape(h, w)
        my = (X[:, j] * texels_per_m).astype(np.float32).reshape(h, w)
        sampled = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).reshape(-1, 3)
        best = np.where(closer, s, best)
        colour[closer] = sampled[closer]
    assert np.all(np.isfinite(best)), "every ray must hit the scene"
    pts = C + best[:, None] * D
    depth = best * rays_cam[:, 2]
    rgb = (colour.reshape(h, w, 3) * 255 + 0.5).astype(np.uint8)
    return rgb, pts, depth


HW = (240, 320)
K0 = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])
K1 = np.array([[310.0, 0, 166.0], [0, 310.0, 118.0], [0, 0, 1]])  # a different camera on purpose
# True T_cam0_from_cam1 of camera 1: mostly sideways, and mostly forward (epipole inside the image).
MOTIONS = {
    "sideways": make_T(cv2.Rodrigues(np.array([0.02, -0.05, 0.01]))[0], [0.45, -0.06, 0.12]),
    "forward": make_T(cv2.Rodrigues(np.array([0.01, 0.02, 0.0]))[0], [0.08, 0.02, 0.5]),
}


@pytest.fixture(scope="module", params=sorted(MOTIONS))
def synthetic(request):
    T_true = MOTIONS[request.param]
    rgb0, pts0, _ = render_scene(K0, np.eye(4), HW)
    rgb1, pts1_in_cam0, _ = render_scene(K1, T_true, HW)
    pair = KeyframePair(Frame(rgb0, K0, 1000, "cam"), Frame(rgb1, K1, 2000, "cam"))
    recon = GeometryPredictor(GeometryConfig(grid_long_side=320)).predict(pair)
    return pair, recon, pts0, pts1_in_cam0, T_true


def test_synthetic_pose_and_unit_baseline(synthetic):
    _, r, _, _, T_true = synthetic
    T = r.pose.T_cam0_from_cam1
    assert rotation_angle_deg(T[:3, :3].T @ T_true[:3, :3]) < 0.3
    assert direction_angle_deg(T[:3, 3], T_true[:3, 3]) < 1.5
    assert np.linalg.norm(T[:3, 3]) == pytest.approx(1.0, abs=1e-9)
    w = cv2.Rodrigues(T_true[:3, :3] @ T[:3, :3].T)[0].ravel()
    err = np.concatenate([T_true[:3, 3] / np.linalg.norm(T_true[:3, 3]) - T[:3, 3], w])
    assert err @ np.linalg.solve(r.pose.covariance, err) < 22.5  # chi-square 6 dof, 99.9 %
    assert r.scale_kind == ScaleKind.UNIT_BASELINE and r.grid_hw == HW
    np.testing.assert_allclose(r.K_grid, np.stack([K0, K1]), atol=1e-9)  # native grid: K unchanged


def test_synthetic_frame_order_and_scale_convention(synthetic):
    """View 0 first, then view 1, each row-major, all in camera 0's frame, in baseline units."""
    _, r, pts0, pts1_in_cam0, T_true = synthetic
    n = HW[0] * HW[1]
    g = r.gaussians
    assert g.num == 2 * n
    baseline = np.linalg.norm(T_true[:3, 3])
    means = g.means.double().numpy()
    op = g.opacities.numpy()
    v, u = np.mgrid[0 : HW[0], 0 : HW[1]]
    own_pixel = np.stack([u.ravel(), v.ravel()], 1)

    # View 0: each Gaussian lies on its own pixel's ray of camera 0 (row-major order).
    proj0 = means[:n] @ K0.T
    np.testing.assert_allclose(proj0[:, :2] / proj0[:, 2:], own_pixel, atol=1e-3)
    # View 1: mapped back into camera 1 with the estimated pose, each lies on its own pixel's ray.
    T_1_0 = invert_T(r.pose.T_cam0_from_cam1)
    in1 = means[n:] @ T_1_0[:3, :3].T + T_1_0[:3, 3]
    proj1 = in1 @ K1.T
    np.testing.assert_allclose(proj1[:, :2] / proj1[:, 2:], own_pixel, atol=1e-3)

    # Positions match the true scene divided by the true baseline (unit-baseline convention).
    for sl, truth in ((slice(0, n), pts0), (slice(n, 2 * n), pts1_in_cam0)):
        opaque = op[sl] > 0.5
        assert opaque.mean() > 0.5
        err = np.linalg.norm(means[sl] - truth / baseline, axis=1) / np.linalg.norm(truth / baseline, axis=1)
        assert np.median(err[opaque]) < 0.03
    # Splat size follows the pixel footprint at its depth (0.5 px lateral std by default).
    z0 = means[:n, 2]
    np.testing.assert_allclose(g.scales[:n, 0].double().numpy(), 0.5 * z0 / K0[0, 0], rtol=1e-4)


def test_view_order_swaps_with_the_pair(synthetic):
    """Swapping the inputs gives the inverse pose: the first keyframe always defines the frame."""
    pair, r, _, _, _ = synthetic
    r_swapped = GeometryPredictor(GeometryConfig(grid_long_side=320)).predict(KeyframePair(pair.kf1, pair.kf0))
    T, Ts = r.pose.T_cam0_from_cam1, r_swapped.pose.T_cam0_from_cam1
    assert rotation_angle_deg(Ts[:3, :3] @ T[:3, :3]) < 0.3
    assert direction_angle_deg(Ts[:3, 3], -T[:3, :3].T @ T[:3, 3]) < 1.5
    assert r_swapped.frame_id == pair.kf1.frame_id and r_swapped.stamp0_ns == pair.kf1.stamp_ns


def test_downscaled_grid_keeps_the_geometry(synthetic):
    pair, r_full, _, _, _ = synthetic
    r = GeometryPredictor(GeometryConfig(grid_long_side=160)).predict(pair)
    assert r.grid_hw == (120, 160)
    np.testing.assert_allclose(r.K_grid[0], scale_intrinsics(K0, 0.5, 0.5))
    # Same scene depth at a pixel centre whether the grid is full or half resolution.
    z_half = r.gaussians.means[: 120 * 160, 2].numpy().reshape(120, 160)
    z_full = r_full.gaussians.means[: 240 * 320, 2].numpy().reshape(240, 320)
    op = r.gaussians.opacities[: 120 * 160].numpy().reshape(120, 160) > 0.5
    ref = cv2.resize(z_full, (160, 120), interpolation=cv2.INTER_AREA)
    assert np.median(np.abs(z_half - ref)[op] / ref[op]) < 0.03


def test_same_convention_as_the_noposplat_backend(synthetic):
    """The noposplat backend gets its pose by PnP on view 1's centres (camera-0 frame, unit baseline).

    1. Our view-1 Gaussians through that pose stage give back our T_cam0_from_cam1 (not its inverse).
    2. A perfect network (the true scene at the noposplat grid and K, divided by the baseline)
       through the same stage gives the pose we estimated: same frame, same direction, |t| = 1.
    """
    from noposplat_ros.pose.pnp import solve_pnp_official
    from noposplat_ros.predictors.network.preprocess import prepare_pair

    pair, r, _, _, T_true = synthetic
    h, w = r.grid_hw
    n = h * w
    T = r.pose.T_cam0_from_cam1
    ours = solve_pnp_official(
        r.gaussians.means[n:].reshape(h, w, 3).numpy(), r.gaussians.opacities[n:].reshape(h, w).numpy(), r.K_grid[1]
    )
    assert ours.status != PoseStatus.LOST, ours.message
    assert rotation_angle_deg(ours.T_cam0_from_cam1[:3, :3].T @ T[:3, :3]) < 0.05
    np.testing.assert_allclose(ours.T_cam0_from_cam1[:3, 3], T[:3, 3], atol=5e-3)

    with warnings.catch_warnings():  # a warning about our two different cameras is fine here
        warnings.simplefilter("ignore")
        prepared = prepare_pair(pair.kf0.rgb, pair.kf1.rgb, pair.kf0.K, pair.kf1.K, (256, 256))
    K_net = prepared.K_grid_px
    _, pts1, _ = render_scene(K_net[1], T_true, (256, 256))
    perfect = pts1 / np.linalg.norm(T_true[:3, 3])
    oracle = solve_pnp_official(perfect.reshape(256, 256, 3), np.full((256, 256), 0.9), K_net[1])
    T_net = oracle.T_cam0_from_cam1
    assert np.linalg.norm(T_net[:3, 3]) == pytest.approx(1.0, abs=1e-3)
    assert rotation_angle_deg(T_net[:3, :3].T @ T[:3, :3]) < 0.3
    assert direction_angle_deg(T_net[:3, 3], T[:3, 3]) < 1.5


def test_views_of_different_size():
    """View 1 from a lower-resolution camera is resized to view 0's grid with its K per axis."""
    T_true = MOTIONS["sideways"]
    K1_small = scale_intrinsics(K1, 0.8, 0.8)
    rgb0, pts0, _ = render_scene(K0, np.eye(4), HW)
    rgb1, _, _ = render_scene(K1_small, T_true, (192, 256))
    pair = KeyframePair(Frame(rgb0, K0, 0, "cam"), Frame(rgb1, K1_small, 1, "cam"))
    r = GeometryPredictor(GeometryConfig(grid_long_side=320)).predict(pair)
    assert r.grid_hw == HW
    np.testing.assert_allclose(r.K_grid[1], K1, atol=1e-9)  # 0.8 then 1.25: back to K1 exactly
    T = r.pose.T_cam0_from_cam1
    assert rotation_angle_deg(T[:3, :3].T @ T_true[:3, :3]) < 0.5
    assert direction_angle_deg(T[:3, 3], T_true[:3, 3]) < 2.0
    n = HW[0] * HW[1]
    opaque = r.gaussians.opacities[:n].numpy() > 0.5
    truth = pts0 / np.linalg.norm(T_true[:3, 3])
    err = np.linalg.norm(r.gaussians.means[:n].double().numpy() - truth, axis=1) / np.linalg.norm(truth, axis=1)
    assert opaque.mean() > 0.5 and np.median(err[opaque]) < 0.05


# ----------------------------------------------------------------------------------------------
# Degenerate pairs and helpers
# ----------------------------------------------------------------------------------------------
def test_pure_rotation_is_reported_not_refused():
    """No parallax: the rotation is published (DEGRADED), translation unknown, no splats."""
    R_true = cv2.Rodrigues(np.array([0.0, 0.06, 0.01]))[0]
    rgb0, _, _ = render_scene(K0, np.eye(4), HW)
    rgb1, _, _ = render_scene(K0, make_T(R_true, np.zeros(3)), HW)
    r = GeometryPredictor().predict(KeyframePair(Frame(rgb0, K0, 0, "c"), Frame(rgb1, K0, 1, "c")))
    assert r.pose.status == PoseStatus.DEGRADED and "rotation" in r.pose.message
    assert rotation_angle_deg(r.pose.T_cam0_from_cam1[:3, :3].T @ R_true) < 0.1
    assert r.gaussians.num == 0 and np.all(np.diag(r.pose.covariance)[:3] >= 1e6)


def test_identical_images_are_a_static_camera():
    rgb0, _, _ = render_scene(K0, np.eye(4), HW)
    r = GeometryPredictor().predict(KeyframePair(Frame(rgb0, K0, 0, "c"), Frame(rgb0.copy(), K0, 1, "c")))
    assert r.pose.status == PoseStatus.DEGRADED and r.gaussians.num == 0
    assert rotation_angle_deg(r.pose.T_cam0_from_cam1[:3, :3]) < 0.01


def test_blank_images_are_rejected():
    blank = np.full((HW[0], HW[1], 3), 128, np.uint8)
    with pytest.raises(PredictionError, match="features|matches"):
        GeometryPredictor().predict(KeyframePair(Frame(blank, K0, 0, "c"), Frame(blank.copy(), K0, 1, "c")))


def test_bad_input_is_a_value_error():
    grey = np.zeros(HW, np.uint8)
    with pytest.raises(ValueError, match="rgb"):
        GeometryPredictor().predict(KeyframePair(Frame(grey, K0, 0, "c"), Frame(grey, K0, 1, "c")))


def test_triangulate_rays_closed_form():
    rng = np.random.default_rng(3)
    X = rng.uniform([-1, -1, 2], [1, 1, 5], (50, 3))
    c1 = np.array([0.7, 0.1, -0.2])
    lam0, lam1, _ = triangulate_rays(X / X[:, 2:], (X - c1) * 2.0, c1)
    np.testing.assert_allclose(lam0, X[:, 2])
    np.testing.assert_allclose(lam1, 0.5)


def test_make_predictor():
    p = make_predictor("geometry")
    assert isinstance(p, GeometryPredictor) and p.config == GeometryConfig()
    p = make_predictor(
        "Geometry", config=GeometryConfig(grid_long_side=128), max_features=500, checkpoint=None, device="cpu"
    )
    assert p.config.grid_long_side == 128 and p.config.max_features == 500
    with pytest.raises(ValueError, match="unknown predictor backend"):
        make_predictor("colmap")
    with pytest.raises(ValueError, match="checkpoint"):
        make_predictor("noposplat")
    with pytest.raises(ValueError, match="checkpoint"):
        make_predictor("geometry", checkpoint="re10k.ckpt")
    with pytest.raises(ValueError, match="unknown option"):
        make_predictor("geometry", grid_size=3)
    with pytest.raises(ValueError, match="flow_preset"):
        make_predictor("geometry", flow_preset="slow")


def test_make_predictor_noposplat_with_tiny_weights(conformance_dir):
    from noposplat_ros.predictors.network.config import MODEL_DIR
    from noposplat_ros.predictors.noposplat import NoPoSplatPredictor

    weights = conformance_dir / "noposplat_tiny_weights.safetensors"
    tiny = MODEL_DIR / "noposplat_tiny.json"
    p = make_predictor("noposplat", checkpoint=weights, model_config=tiny, device="cpu", precision="fp32", refine=False)
    try:
        assert isinstance(p, NoPoSplatPredictor) and p.backend == "noposplat"
    finally:
        p.close()
    with pytest.raises(ValueError, match="unknown option"):
        make_predictor("noposplat", checkpoint=weights, grid_long_side=256)
