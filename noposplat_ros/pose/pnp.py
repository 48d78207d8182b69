"""Coarse relative pose: PnP on the predicted view-1 centres.

Two methods (``solve_pnp(..., method=)``):
- ``"poselib"`` (default): ``poselib.estimate_absolute_pose`` (P3P LO-RANSAC + Cauchy bundle refinement,
  ``max_reproj_error`` in pixels) on the same candidates (opacity > 0.3, integer pixel indices), then
  the covariance below. Measured better than the official procedure on noisy centres with outliers
  (test/test_pose_golden.py).
- ``"official"``: the official NoPoSplat procedure below, reproducing its golden result.

Official procedure (spec §11): K de-normalised to pixels, 2D points are the integer pixel indices
(u = column, v = row, no +0.5), pixels with opacity > 0.3, ``cv2.solvePnPRansac`` without distortion,
100 iterations, 5 px threshold, SOLVEPNP_SQPNP; the world-to-camera result is inverted into
T_cam0_from_cam1. Differences from the official code: inputs are never modified in place, and a failure
returns ``PoseEstimate.lost(...)`` instead of an assertion.

Covariance: Gauss-Newton normal equations of the reprojection error at the solution (OpenCV's
``projectPoints`` Jacobian over the inliers), scaled by the residual variance, then mapped by a numeric
Jacobian from the (rvec, tvec) world-to-camera parameters to the PoseEstimate convention
(tx, ty, tz, rx, ry, rz) of T_cam0_from_cam1, rotation as a left perturbation about camera 0's axes.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import poselib

from noposplat_ros.pose.se3 import so3_log_np
from noposplat_ros.types import PoseEstimate, PoseStatus

OPACITY_THRESHOLD = 0.3
RANSAC_ITERATIONS = 100
REPROJECTION_ERROR_PX = 5.0
PNP_METHODS = ("poselib", "official")


@dataclasses.dataclass
class PnPQualityConfig:
    """Thresholds that turn a PnP result into a status (not part of the official procedure)."""

    min_points: int = 12  # fewer candidate points: LOST before calling OpenCV
    min_inliers: int = 12  # fewer inliers: LOST
    degraded_inlier_ratio: float = 0.5  # inliers / candidates below this: DEGRADED
    degraded_residual_px: float = 2.0  # RMS inlier residual above this: DEGRADED
    degraded_covariance_factor: float = 100.0  # covariance inflation for DEGRADED


def _w2c_from_rt(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3, 1))
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(tvec, dtype=np.float64).reshape(3)
    return T


def _pose_params_of_c2w(c2w: np.ndarray, c2w_ref: np.ndarray) -> np.ndarray:
    """(tx, ty, tz, rx, ry, rz): translation, and the rotation of c2w relative to c2w_ref about cam-0 axes."""
    return np.concatenate([c2w[:3, 3], so3_log_np(c2w[:3, :3] @ c2w_ref[:3, :3].T)])


def _covariance(obj: np.ndarray, img: np.ndarray, K: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> tuple[np.ndarray, float]:
    """6x6 covariance of T_cam0_from_cam1 and the RMS reprojection residual (px) over the given points."""
    dist = np.zeros(5)
    proj, J = cv2.projectPoints(obj, rvec, tvec, K, dist)
    res = (proj.reshape(-1, 2) - img).reshape(-1)
    n = res.size
    rms = float(np.sqrt(np.mean(res**2))) if n else float("nan")
    Jp = J[:, :6]  # d(uv)/d(rvec, tvec), (2N, 6)
    dof = max(n - 6, 1)
    sigma2 = max(float(res @ res) / dof, 1e-12)
    JTJ = Jp.T @ Jp
    cov_rt = sigma2 * np.linalg.pinv(JTJ)
    # Numeric Jacobian (central differences) from (rvec, tvec) of w2c to the c2w parameters.
    x0 = np.concatenate([rvec.reshape(3), tvec.reshape(3)])
    c2w0 = np.linalg.inv(_w2c_from_rt(x0[:3], x0[3:]))
    G = np.zeros((6, 6))
    h = 1e-6
    for i in range(6):
        xp, xm = x0.copy(), x0.copy()
        xp[i] += h
        xm[i] -= h
        fp = _pose_params_of_c2w(np.linalg.inv(_w2c_from_rt(xp[:3], xp[3:])), c2w0)
        fm = _pose_params_of_c2w(np.linalg.inv(_w2c_from_rt(xm[:3], xm[3:])), c2w0)
        G[:, i] = (fp - fm) / (2 * h)
    cov = G @ cov_rt @ G.T
    return 0.5 * (cov + cov.T), rms


def solve_pnp_official(
    means_hw3: np.ndarray,
    opacities_hw: np.ndarray,
    K_px: np.ndarray,
    quality: PnPQualityConfig | None = None,
) -> PoseEstimate:
    """Pose of camera 1 in camera 0 from its per-pixel Gaussian centres.

    means_hw3: (H, W, 3) view-1 centres in camera 0's frame (any float dtype; not modified).
    opacities_hw: (H, W) opacities in (0, 1).
    K_px: (3, 3) pixel intrinsics of view 1 at the (H, W) grid (OpenCV convention: pixel centres at
      integer coordinates).
    Returns a PoseEstimate (T_cam0_from_cam1, covariance, status, inliers, RMS residual); never raises.
    """
    q = quality or PnPQualityConfig()
    try:
        checked = _candidates(means_hw3, opacities_hw, K_px, q)  # K is copied: never touch the caller's
        if isinstance(checked, PoseEstimate):
            return checked
        obj, img, K = checked
        n = len(obj)
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj,
            img,
            K,
            None,
            iterationsCount=RANSAC_ITERATIONS,
            reprojectionError=REPROJECTION_ERROR_PX,
            flags=cv2.SOLVEPNP_SQPNP,
        )
        if not ok or inliers is None:
            return PoseEstimate.lost("pnp: solvePnPRansac failed")
        inl = inliers.reshape(-1)
        if inl.size < q.min_inliers:
            return PoseEstimate.lost(f"pnp: only {inl.size} inliers")
        w2c = _w2c_from_rt(rvec, tvec)
        c2w = np.linalg.inv(w2c)
        if not np.all(np.isfinite(c2w)):
            return PoseEstimate.lost("pnp: non-finite pose")
        cov, rms = _covariance(obj[inl], img[inl], K, rvec, tvec)
        status = PoseStatus.OK
        msgs = []
        if inl.size / n < q.degraded_inlier_ratio:
            status = PoseStatus.DEGRADED
            msgs.append(f"inlier ratio {inl.size / n:.2f}")
        if rms > q.degraded_residual_px:
            status = PoseStatus.DEGRADED
            msgs.append(f"residual {rms:.2f} px")
        if status == PoseStatus.DEGRADED:
            cov = cov * q.degraded_covariance_factor
        return PoseEstimate(
            T_cam0_from_cam1=c2w,
            covariance=cov,
            status=status,
            num_inliers=int(inl.size),
            residual_px=rms,
            message="pnp: " + (", ".join(msgs) if msgs else "ok"),
        )
    except cv2.error as e:  # OpenCV raises on degenerate configurations
        return PoseEstimate.lost(f"pnp: OpenCV error: {str(e).strip().splitlines()[-1]}")


def _candidates(means_hw3, opacities_hw, K_px, q: PnPQualityConfig):
    """Shared input checks -> (obj (N, 3), img (N, 2) integer pixel indices, K) or a LOST PoseEstimate."""
    means = np.asarray(means_hw3, dtype=np.float64)
    opac = np.asarray(opacities_hw, dtype=np.float64)
    K = np.array(K_px, dtype=np.float64, copy=True)
    if means.ndim != 3 or means.shape[2] != 3:
        return PoseEstimate.lost(f"pnp: means must be (H, W, 3), got {means.shape}")
    H, W = means.shape[:2]
    if opac.shape != (H, W):
        return PoseEstimate.lost(f"pnp: opacities must be {(H, W)}, got {opac.shape}")
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        return PoseEstimate.lost(f"pnp: K must be a finite (3, 3), got {K.shape}")
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    mask = (opac > OPACITY_THRESHOLD) & np.all(np.isfinite(means), axis=-1)
    n = int(mask.sum())
    if n < q.min_points:
        return PoseEstimate.lost(f"pnp: only {n} points with opacity > {OPACITY_THRESHOLD}")
    return np.ascontiguousarray(means[mask]), np.ascontiguousarray(np.stack([u[mask], v[mask]], axis=-1)), K


def solve_pnp_poselib(
    means_hw3: np.ndarray,
    opacities_hw: np.ndarray,
    K_px: np.ndarray,
    quality: PnPQualityConfig | None = None,
    max_reproj_error_px: float = REPROJECTION_ERROR_PX,
) -> PoseEstimate:
    """Like ``solve_pnp_official`` (same inputs, candidates and status rules) through PoseLib's
    LO-RANSAC + robust refinement; never raises."""
    q = quality or PnPQualityConfig()
    cand = _candidates(means_hw3, opacities_hw, K_px, q)
    if isinstance(cand, PoseEstimate):
        return cand
    obj, img, K = cand
    H, W = np.asarray(opacities_hw).shape
    camera = {"model": "PINHOLE", "width": int(W), "height": int(H),
              "params": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]}
    pose, info = poselib.estimate_absolute_pose(
        img, obj, camera, {"max_reproj_error": float(max_reproj_error_px)},
        {"loss_type": "CAUCHY", "loss_scale": 0.5 * float(max_reproj_error_px)},
    )
    inl = np.flatnonzero(np.asarray(info["inliers"], bool))
    if inl.size < q.min_inliers:
        return PoseEstimate.lost(f"pnp: only {inl.size} inliers")
    w2c = np.eye(4)
    w2c[:3, :3] = np.asarray(pose.R)
    w2c[:3, 3] = np.asarray(pose.t)
    c2w = np.linalg.inv(w2c)
    if not np.all(np.isfinite(c2w)):
        return PoseEstimate.lost("pnp: non-finite pose")
    rvec = cv2.Rodrigues(w2c[:3, :3])[0]
    cov, rms = _covariance(obj[inl], img[inl], K, rvec, w2c[:3, 3].reshape(3, 1))
    n = len(obj)
    status = PoseStatus.OK
    msgs = []
    if inl.size / n < q.degraded_inlier_ratio:
        status = PoseStatus.DEGRADED
        msgs.append(f"inlier ratio {inl.size / n:.2f}")
    if rms > q.degraded_residual_px:
        status = PoseStatus.DEGRADED
        msgs.append(f"residual {rms:.2f} px")
    if status == PoseStatus.DEGRADED:
        cov = cov * q.degraded_covariance_factor
    return PoseEstimate(T_cam0_from_cam1=c2w, covariance=cov, status=status, num_inliers=int(inl.size),
                        residual_px=rms, message="pnp (poselib): " + (", ".join(msgs) if msgs else "ok"))


def solve_pnp(
    means_hw3: np.ndarray,
    opacities_hw: np.ndarray,
    K_px: np.ndarray,
    quality: PnPQualityConfig | None = None,
    method: str = "poselib",
) -> PoseEstimate:
    """PnP pose of camera 1 in camera 0 from its per-pixel centres by ``method`` ("poselib" | "official")."""
    if method == "poselib":
        return solve_pnp_poselib(means_hw3, opacities_hw, K_px, quality)
    if method == "official":
        return solve_pnp_official(means_hw3, opacities_hw, K_px, quality)
    raise ValueError(f"pnp method must be one of {PNP_METHODS}, got {method!r}")
