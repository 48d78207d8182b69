"""Two-view relative pose from pixel matches: PoseLib LO-RANSAC + robust bundle refinement, rotation-only
model selection, and a covariance from the refined problem.

Conventions: the result is ``T_cam0_from_cam1`` (PoseLib returns cam2_from_cam1; we invert), unit
baseline (|t| = 1). Covariance order is PoseEstimate's: (tx, ty, tz, rx, ry, rz), rotation as a
small-angle vector about camera 0's axes (R' = exp(w) R), translation in baselines.

Covariance (``relative_pose_covariance``): the robust (Cauchy) Sampson residuals at the solution, the
sandwich estimate A^-1 B A^-1 with A = sum w J^T J (the IRLS normal matrix), B = sum (w r)^2 J^T J
(empirical residual variance, so no noise level is assumed), over the 5 observable DoF. The 6th
direction — the translation's length, along t — is the gauge of a unit-baseline pose: it gets the
variance ``unit_baseline_sigma ** 2`` (documented: +-1 baseline, "the length is not measured here");
a metric scale source (pose/trajectory.py) must replace that term with its own variance.

Degenerate geometry is reported, not refused (``TwoViewResult.kind``):
- "general": essential-matrix model preferred; OK or DEGRADED by inlier count / residual.
- "rotation": a pure rotation explains the matches as well as the essential matrix (GRIC model
  selection, Torr 1998): the rotation is returned, t = 0 with LOST_POSE_VARIANCE on translation,
  status DEGRADED; triangulation is meaningless (no parallax).
- "lost": too few matches or no consistent model: PoseEstimate.lost.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import poselib

from noposplat_ros.transforms import make_T
from noposplat_ros.types import LOST_POSE_VARIANCE, PoseEstimate, PoseStatus


@dataclasses.dataclass
class TwoViewOptions:
    """Options of ``estimate_two_view`` (PoseLib style; lengths in input-image pixels).

    max_epipolar_error_px: LO-RANSAC Sampson inlier threshold.
    success_prob / min_iterations / max_iterations / seed: PoseLib RansacOptions.
    loss_scale_px: Cauchy scale of the final refinement and of the covariance (0: adaptive,
      2.385 x the RANSAC inliers' robust Sampson sigma — Cauchy's 95 %-efficiency tuning — clipped
      to [min_loss_scale_px, max_epipolar_error_px]). Measured on the fixture (sharp renders, sigma
      ~0.04 px): a fixed 0.5 px (PoseLib's default) gave AUC@5 96.2, 0.1 px 98.2; on 1 px noise a
      fixed scale well below sigma made the covariance too small (NEES 33 vs 5), adaptive keeps both.
    bundle_max_iterations: PoseLib BundleOptions.max_iterations.
    refine_window: after LO-RANSAC, refine again (PoseLib, Cauchy) on all matches whose Sampson error
      is below refine_window x max_epipolar_error_px; they are the inliers reported and used for the
      covariance (0: PoseLib's RANSAC inliers only). Measured: makes the covariance consistent.
    min_matches / min_inliers: fewer -> LOST (nothing is determined).
    ok_inliers / ok_residual_px: fewer inliers / larger RMS residual -> DEGRADED.
    degraded_cov_factor: covariance inflation of a DEGRADED pose.
    covariance_inflation: factor on the sandwich covariance (1 = the residuals' own evidence).
    unit_baseline_sigma: standard deviation (baselines) given to the translation's length (the gauge).
    rotation_gric_margin: the rotation-only model is chosen when its GRIC is below the essential
      matrix's GRIC + this margin (> 0 favours "rotation" in ties, e.g. a camera that barely moves).
    gric_sigma_floor_px: lower bound of the noise level in GRIC (rendered / sharp images have
      sub-0.1 px residuals; a floor keeps interpolation error from looking like parallax).
    min_triangulation_deg: ray angle below which a match's 3-D point is NaN.
    """

    max_epipolar_error_px: float = 1.0
    success_prob: float = 0.9999
    min_iterations: int = 100
    max_iterations: int = 10000
    seed: int = 0
    loss_scale_px: float = 0.0
    min_loss_scale_px: float = 0.1
    bundle_max_iterations: int = 100
    refine_window: float = 3.0
    min_matches: int = 20
    min_inliers: int = 15
    ok_inliers: int = 60
    ok_residual_px: float = 1.5
    degraded_cov_factor: float = 10.0
    covariance_inflation: float = 1.0
    unit_baseline_sigma: float = 1.0
    rotation_gric_margin: float = 0.0
    gric_sigma_floor_px: float = 0.05
    min_triangulation_deg: float = 0.1

    def validate(self) -> None:
        if self.loss_scale_px < 0 or self.refine_window < 0:
            raise ValueError("loss_scale_px and refine_window must be >= 0")
        for name in ("max_epipolar_error_px", "min_loss_scale_px", "covariance_inflation", "unit_baseline_sigma",
                     "gric_sigma_floor_px", "degraded_cov_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.success_prob < 1.0:
            raise ValueError(f"success_prob must be in (0, 1), got {self.success_prob}")
        if self.min_inliers < 5 or self.min_matches < self.min_inliers:
            raise ValueError("need 5 <= min_inliers <= min_matches")


@dataclasses.dataclass
class TwoViewResult:
    """R, t: T_cam0_from_cam1 (t unit, or zero for "rotation"/"lost"); inliers: (N,) bool over the
    input matches; points_cam0: (N, 3) triangulated inlier points in camera 0 (unit baseline), NaN for
    outliers and untriangulable matches; kind: "general" | "rotation" | "lost"."""

    R: np.ndarray
    t: np.ndarray
    estimate: PoseEstimate
    inliers: np.ndarray
    points_cam0: np.ndarray
    kind: str
    gric_essential: float = float("nan")
    gric_rotation: float = float("nan")


# --------------------------------------------------------------------------------------------
# Residuals and their Jacobian (hand-written: PoseLib does not return its normal equations)
# --------------------------------------------------------------------------------------------
def skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([z, -w, y, w, z, -x, -y, x, z], -1).reshape(v.shape[:-1] + (3, 3))


def rodrigues(w: np.ndarray) -> np.ndarray:
    """(3,) rotation vector -> (3, 3)."""
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def sampson_residuals(R_10: np.ndarray, t_10: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Signed Sampson distances (N,) of normalised matches x0 (N, 2) <-> x1 (N, 2), x1 ~ R_10 x0 + t_10."""
    E = skew(t_10) @ R_10
    h0 = np.concatenate([x0, np.ones((len(x0), 1))], 1)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    Ex0 = h0 @ E.T
    Etx1 = h1 @ E
    num = np.sum(h1 * Ex0, 1)
    den = np.sqrt(Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2) + 1e-15
    return num / den


def residuals_cam0_from_cam1(R: np.ndarray, t: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sampson residuals (N,) for a pose given as T_cam0_from_cam1 = (R, t)."""
    return sampson_residuals(R.T, -R.T @ t, x0, x1)


def sampson_jacobian(R: np.ndarray, t: np.ndarray, x0: np.ndarray, x1: np.ndarray, step: float = 1e-7) -> np.ndarray:
    """(N, 6) Jacobian of the Sampson residuals w.r.t. (tx, ty, tz, rx, ry, rz) of T_cam0_from_cam1.

    Rotation perturbation R' = exp(w) R (camera 0's axes) as in PoseEstimate.covariance. Central
    differences: 12 vectorised residual evaluations, no per-point loop.
    """
    cols = []
    for i in range(6):
        d = np.zeros(6)
        d[i] = step
        rp = residuals_cam0_from_cam1(rodrigues(d[3:]) @ R, t + d[:3], x0, x1)
        rm = residuals_cam0_from_cam1(rodrigues(-d[3:]) @ R, t - d[:3], x0, x1)
        cols.append((rp - rm) / (2 * step))
    return np.stack(cols, 1)


def gauge_basis(t: np.ndarray) -> np.ndarray:
    """(6, 5) orthonormal basis of the pose tangent space orthogonal to (t, 0): the observable DoF."""
    g = np.zeros(6)
    g[:3] = t / np.linalg.norm(t)
    # complete g to an orthonormal basis; the last 5 columns of Q span its complement
    Q, _ = np.linalg.qr(np.concatenate([g[:, None], np.eye(6)], 1))
    return Q[:, 1:6]


def relative_pose_covariance(
    R: np.ndarray,
    t: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    px_scale: float,
    loss_scale_px: float,
    unit_baseline_sigma: float,
    inflation: float = 1.0,
) -> np.ndarray:
    """(6, 6) covariance of T_cam0_from_cam1 = (R, unit t) from inlier matches x0, x1 (N, 2) normalised.

    Robust sandwich over the 5 observable DoF (see module doc), residuals in pixels (x px_scale), the
    gauge direction (t, 0) with variance unit_baseline_sigma^2. Symmetric positive definite.
    """
    n = len(x0)
    r = residuals_cam0_from_cam1(R, t, x0, x1) * px_scale
    J = sampson_jacobian(R, t, x0, x1) * px_scale
    B6 = gauge_basis(t)
    J5 = J @ B6
    u = (r / loss_scale_px) ** 2
    psi = r / (1.0 + u)  # Cauchy influence rho'(r)
    dpsi = (1.0 - u) / (1.0 + u) ** 2  # rho''(r): the robust problem's curvature (< 0 beyond the scale)
    A = (J5 * dpsi[:, None]).T @ J5
    Bm = (J5 * (psi**2)[:, None]).T @ J5
    A_inv = np.linalg.pinv(A, rcond=1e-12, hermitian=True)
    cov5 = A_inv @ Bm @ A_inv * (n / max(n - 5, 1)) * inflation
    g = np.zeros(6)
    g[:3] = t / np.linalg.norm(t)
    cov = B6 @ cov5 @ B6.T + unit_baseline_sigma**2 * np.outer(g, g)
    return 0.5 * (cov + cov.T)


# --------------------------------------------------------------------------------------------
# Model selection: rotation only vs essential matrix
# --------------------------------------------------------------------------------------------
def _unit_rays(x: np.ndarray) -> np.ndarray:
    h = np.concatenate([x, np.ones((len(x), 1))], 1)
    return h / np.linalg.norm(h, axis=1, keepdims=True)


def fit_rotation(x0: np.ndarray, x1: np.ndarray, scale: float, iterations: int = 10) -> np.ndarray:
    """Robust rotation R_cam0_from_cam1 with r0 ~ R r1 for normalised matches (N, 2): Kabsch (SVD)
    re-weighted with a Cauchy loss of angular scale ``scale`` (radians)."""
    r0, r1 = _unit_rays(x0), _unit_rays(x1)
    w = np.ones(len(r0))
    R = np.eye(3)
    for _ in range(iterations):
        U, _, Vt = np.linalg.svd((r0 * w[:, None]).T @ r1)
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
        R = U @ D @ Vt
        ang = np.linalg.norm(np.cross(r0, r1 @ R.T), axis=1)
        w = 1.0 / (1.0 + (ang / scale) ** 2)
    return R


def rotation_transfer_px(R: np.ndarray, x0: np.ndarray, x1: np.ndarray, px_scale: float) -> np.ndarray:
    """(N, 2) transfer residuals in pixels of x0 predicted from x1 by the rotation r0 ~ R r1."""
    p = np.concatenate([x1, np.ones((len(x1), 1))], 1) @ R.T
    with np.errstate(divide="ignore", invalid="ignore"):
        pred = p[:, :2] / p[:, 2:3]
    return (pred - x0) * px_scale


def gric(residuals_sq_px2: np.ndarray, sigma_px: float, d: int, k: int) -> float:
    """Torr's Geometric Robust Information Criterion of a model (lower is better).

    residuals_sq_px2: (N,) squared residual of each match (its full error, r = 4 dims of a match);
    d: dimension of the model's manifold (2 for a homography/rotation, 3 for E/F); k: model DoF.
    """
    n = len(residuals_sq_px2)
    r = 4
    rho = np.minimum(residuals_sq_px2 / sigma_px**2, 2.0 * (r - d))
    return float(np.sum(rho) + math.log(r) * d * n + math.log(r * n) * k)


# --------------------------------------------------------------------------------------------
# Triangulation of the inlier matches
# --------------------------------------------------------------------------------------------
def triangulate_midpoint(
    rays0: np.ndarray, rays1_in_cam0: np.ndarray, origin1: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest points of ray pairs: camera 0 at the origin, camera 1 at ``origin1`` (3,).

    rays0, rays1_in_cam0: (N, 3) directions in camera 0's frame.
    Returns (lam0 (N,), lam1 (N,), det (N,)): points lam0 * rays0 and origin1 + lam1 * rays1 are the
    mutually closest points (closed-form 2x2 normal equations); det ~ 0 means parallel rays.
    """
    a, b, c = rays0, rays1_in_cam0, origin1[None, :]
    aa = np.sum(a * a, 1)
    bb = np.sum(b * b, 1)
    ab = np.sum(a * b, 1)
    ac = np.sum(a * c, 1)
    bc = np.sum(b * c, 1)
    det = aa * bb - ab * ab
    safe = np.where(np.abs(det) > 1e-12, det, np.nan)  # parallel rays: NaN, never inf
    lam0 = (ac * bb - ab * bc) / safe
    lam1 = (ab * ac - aa * bc) / safe
    return lam0, lam1, det


def triangulate_matches(R: np.ndarray, t: np.ndarray, x0: np.ndarray, x1: np.ndarray, min_angle_deg: float) -> np.ndarray:
    """(N, 3) points in camera 0 of normalised matches under T_cam0_from_cam1 = (R, t); NaN rows where
    the rays meet at less than ``min_angle_deg`` or behind a camera."""
    r0 = np.concatenate([x0, np.ones((len(x0), 1))], 1)
    r1 = np.concatenate([x1, np.ones((len(x1), 1))], 1) @ R.T
    lam0, lam1, _ = triangulate_midpoint(r0, r1, t)
    P = r0 * lam0[:, None]
    v0 = P / np.linalg.norm(P, axis=1, keepdims=True)
    v1 = r1 / np.linalg.norm(r1, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        angle = np.degrees(np.arccos(np.clip(np.sum(v0 * v1, 1), -1.0, 1.0)))
        ok = np.isfinite(lam0) & (lam0 > 0) & (lam1 > 0) & (angle >= min_angle_deg)
    P[~ok] = np.nan
    return P


# --------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------
def pinhole_camera(K: np.ndarray, hw: tuple[int, int]) -> dict:
    """PoseLib PINHOLE camera dict of intrinsics K (3, 3) and image size (H, W)."""
    return {"model": "PINHOLE", "width": int(hw[1]), "height": int(hw[0]),
            "params": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]}


def normalise_points(pts_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 2) normalised image coordinates of camera K (no distortion)."""
    h = np.concatenate([pts_px, np.ones((len(pts_px), 1))], 1) @ np.linalg.inv(np.asarray(K, np.float64)).T
    return h[:, :2] / h[:, 2:3]


def _lost(n: int, message: str) -> TwoViewResult:
    return TwoViewResult(np.eye(3), np.zeros(3), PoseEstimate.lost(message), np.zeros(n, bool),
                         np.full((n, 3), np.nan), "lost")


def estimate_two_view(
    pts0_px: np.ndarray,
    pts1_px: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    hw0: tuple[int, int],
    hw1: tuple[int, int],
    options: TwoViewOptions | None = None,
) -> TwoViewResult:
    """Relative pose T_cam0_from_cam1 of matches pts0_px <-> pts1_px ((N, 2) float pixels of each view,
    each view with its own K (3, 3) and size (H, W)). Never raises for degenerate input: see module doc.
    """
    opt = options or TwoViewOptions()
    opt.validate()
    pts0_px = np.ascontiguousarray(pts0_px, np.float64).reshape(-1, 2)
    pts1_px = np.ascontiguousarray(pts1_px, np.float64).reshape(-1, 2)
    if pts0_px.shape != pts1_px.shape:
        raise ValueError(f"pts0_px {pts0_px.shape} and pts1_px {pts1_px.shape} must have the same shape")
    n = len(pts0_px)
    if n < opt.min_matches:
        return _lost(n, f"too few matches ({n} < {opt.min_matches}); little overlap or texture")

    ransac = {"max_epipolar_error": opt.max_epipolar_error_px, "success_prob": opt.success_prob,
              "min_iterations": opt.min_iterations, "max_iterations": opt.max_iterations, "seed": opt.seed}
    # PoseLib's own default loss scale (0.5 x threshold) inside LO-RANSAC when the scale is adaptive
    ransac_loss_px = opt.loss_scale_px or 0.5 * opt.max_epipolar_error_px
    bundle = {"loss_type": "CAUCHY", "loss_scale": ransac_loss_px, "max_iterations": opt.bundle_max_iterations}
    pose, info = poselib.estimate_relative_pose(
        pts0_px, pts1_px, pinhole_camera(K0, hw0), pinhole_camera(K1, hw1), ransac, bundle
    )
    inl = np.asarray(info["inliers"], bool).reshape(-1)
    n_inl = int(inl.sum())
    if n_inl < opt.min_inliers:
        return _lost(n, f"no consistent model: {n_inl} essential-matrix inliers of {n} < {opt.min_inliers}")
    x0 = normalise_points(pts0_px, K0)
    x1 = normalise_points(pts1_px, K1)
    px_scale = float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))
    loss_scale_px = ransac_loss_px
    if opt.loss_scale_px == 0.0 and opt.refine_window > 0:  # adaptive: Cauchy's 95 %-efficiency constant x the inliers' robust sigma
        r_inl = sampson_residuals(np.asarray(pose.R), np.asarray(pose.t), x0[inl], x1[inl]) * px_scale
        sigma_px = 1.4826 * float(np.median(np.abs(r_inl)))
        loss_scale_px = float(np.clip(2.385 * sigma_px, opt.min_loss_scale_px, opt.max_epipolar_error_px))
    if opt.refine_window > 0:
        # Re-refine on every match within refine_window x the RANSAC threshold: the robust loss, not
        # the hard threshold, decides each match's weight, so the estimate (and the covariance
        # computed on the same set) does not see a truncated noise distribution.
        R_10, t_10 = np.asarray(pose.R), np.asarray(pose.t)
        r_all = np.abs(sampson_residuals(R_10, t_10, x0, x1)) * px_scale
        near = r_all < opt.refine_window * opt.max_epipolar_error_px
        pose, _ = poselib.refine_relative_pose(pts0_px[near], pts1_px[near], pose, pinhole_camera(K0, hw0),
                                               pinhole_camera(K1, hw1), {**bundle, "loss_scale": loss_scale_px})
        R_10, t_10 = np.asarray(pose.R), np.asarray(pose.t)
        r_all = np.abs(sampson_residuals(R_10, t_10, x0, x1)) * px_scale
        inl = r_all < opt.refine_window * opt.max_epipolar_error_px
        n_inl = int(inl.sum())
    R_10, t_10 = np.asarray(pose.R), np.asarray(pose.t)  # PoseLib: x_cam1 = R_10 x_cam0 + t_10
    R = R_10.T
    t = -R_10.T @ t_10
    t = t / np.linalg.norm(t)
    xi0, xi1 = x0[inl], x1[inl]
    r_px = residuals_cam0_from_cam1(R, t, xi0, xi1) * px_scale
    residual_px = float(np.sqrt(np.mean(r_px**2)))

    # Model selection on the essential inliers: Sampson distance is the match's error for E (d = 3),
    # the transfer error (2 coordinates, counted twice for the symmetric 4-dim error) for a rotation.
    R_rot = fit_rotation(xi0, xi1, loss_scale_px / px_scale)
    e_rot = rotation_transfer_px(R_rot, xi0, xi1, px_scale)
    sigma = max(1.4826 * float(np.median(np.abs(r_px))), opt.gric_sigma_floor_px)
    g_ess = gric(r_px**2, sigma, d=3, k=5)
    g_rot = gric(0.5 * np.sum(e_rot**2, 1), sigma, d=2, k=3)
    if g_rot <= g_ess + opt.rotation_gric_margin:
        ang = np.linalg.norm(np.cross(_unit_rays(xi0), _unit_rays(xi1) @ R_rot.T), axis=1)
        r0 = _unit_rays(xi0)
        # rotation covariance of Kabsch: sigma_ang^2 (sum (I - r r^T))^-1 (small-angle, camera 0 axes)
        info_rot = np.sum(np.eye(3)[None] - r0[:, :, None] * r0[:, None, :], 0)
        sigma_ang2 = float(np.sum(ang**2) / max(n_inl - 3, 1))
        cov = np.zeros((6, 6))
        cov[:3, :3] = np.eye(3) * LOST_POSE_VARIANCE
        cov[3:, 3:] = opt.covariance_inflation * opt.degraded_cov_factor * sigma_ang2 * np.linalg.inv(info_rot)
        transfer_rms = float(np.sqrt(np.mean(np.sum(e_rot**2, 1))))
        est = PoseEstimate(
            T_cam0_from_cam1=make_T(R_rot, np.zeros(3)), covariance=cov, status=PoseStatus.DEGRADED,
            num_inliers=n_inl, residual_px=transfer_rms,
            message=f"rotation only (no parallax): a rotation explains {n_inl} matches to {transfer_rms:.2f} px RMS; "
                    f"translation unknown",
        )
        return TwoViewResult(R_rot, np.zeros(3), est, inl, np.full((n, 3), np.nan), "rotation", g_ess, g_rot)

    cov = relative_pose_covariance(R, t, xi0, xi1, px_scale, loss_scale_px, opt.unit_baseline_sigma,
                                   opt.covariance_inflation)
    status = PoseStatus.OK
    if n_inl < opt.ok_inliers or residual_px > opt.ok_residual_px:
        status = PoseStatus.DEGRADED
        cov = cov * opt.degraded_cov_factor
    points = np.full((n, 3), np.nan)
    points[inl] = triangulate_matches(R, t, xi0, xi1, opt.min_triangulation_deg)
    est = PoseEstimate(T_cam0_from_cam1=make_T(R, t), covariance=cov, status=status, num_inliers=n_inl,
                       residual_px=residual_px,
                       message=f"{n_inl} of {n} matches inliers, residual {residual_px:.2f} px")
    return TwoViewResult(R, t, est, inl, points, "general", g_ess, g_rot)
