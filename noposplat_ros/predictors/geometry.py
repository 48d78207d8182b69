"""Training-free predictor backend: relative pose from features, per-pixel Gaussians from dense flow.

Same output type, frame and scale convention as the ``noposplat`` backend (``PairReconstruction``):
both views' Gaussians in camera 0's optical frame, view 0 first, each view row-major over
``grid_hw``; unit baseline (|t| = 1); ``T_cam0_from_cam1`` with quality and a covariance.

Stages (each timed in ``timings_s``):
1. ``resize``: both views to one grid (longest side ``grid_long_side``), K adjusted per view.
2. ``features``: SIFT on the (capped) full-resolution images, mutual nearest neighbours + ratio test.
3. ``pose``: each view's points normalised with ITS OWN K (the views may differ, e.g. the
   Motorcycle pair's cx), essential-matrix RANSAC, cheirality (recoverPose), degeneracy checks,
   robust (Cauchy) Gauss-Newton refinement of the Sampson error, covariance from its Jacobian.
4. ``flow``: OpenCV DIS optical flow both ways on the grid's grey images. Not rectified: rectifying
   breaks down for forward motion (epipole inside the image), which is common on robots, while 2D
   flow works for any motion; the epipolar distance of each flow match is checked instead.
5. ``triangulate``: closed-form closest points of the two viewing rays per pixel (vectorised); view 0
   keeps the point on its own ray, view 1 (from the backward flow) likewise, then maps into camera 0.
6. ``gaussians``: centre from depth; scale from the pixel footprint; opacity from consistency;
   colour as SH DC.

Pixels that fail a check (forward-backward inconsistent, off the epipolar line, behind a camera,
flow leaving the image, too little parallax, too far) are KEPT so the grid stays complete, with
opacity ``opacity_invalid`` (near 0) and the depth of the nearest valid pixel.
"""
from __future__ import annotations

import dataclasses
import math
import time

import cv2
import numpy as np
import torch

from noposplat_ros.ingest.camera_model import scale_intrinsics
from noposplat_ros.transforms import make_T, matrix_to_quat_xyzw
from noposplat_ros.types import (
    Gaussians,
    KeyframePair,
    PairReconstruction,
    PoseEstimate,
    PoseStatus,
    PredictionError,
    ScaleKind,
    covariances_from_scales_rotations,
    rgb_to_sh_dc,
)


_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


_RANSAC_METHODS = {
    "ransac": cv2.RANSAC,
    "magsac": cv2.USAC_MAGSAC,
    "usac_accurate": cv2.USAC_ACCURATE,
}


@dataclasses.dataclass
class GeometryConfig:
    """Parameters of the geometry backend (lengths in pixels of the named image, angles in degrees).

    grid_long_side: longest side of each view's Gaussian grid (256 gives ~2x256x170 splats for a
      3:2 image, like the network's 2x256^2); 0 keeps the input resolution. Never upsamples.
    feature_long_side: images larger than this are downscaled for SIFT (0: never).
    max_features: SIFT keypoints per image.
    ratio: Lowe's ratio test threshold (on distances), applied with mutual nearest neighbours.
    ransac_threshold_px: essential-matrix RANSAC inlier threshold in input-image pixels.
    ransac_confidence: RANSAC confidence.
    ransac_method: "ransac" (OpenCV RANSAC), "magsac" (USAC MAGSAC++) or "usac_accurate".
    min_matches / min_inliers: fewer raise PredictionError.
    ok_inliers / ok_residual_px: below/above these the pose is DEGRADED (covariance inflated by
      ``degraded_cov_factor``).
    covariance_inflation: factor on the Sampson-error covariance for what that model does not see
      (calibration error, correlated matching errors). Without it the Motorcycle pair's true pose
      error was ~3 sigma (Mahalanobis^2 45 over 5 dof); on noise-free synthetic data 1 was right.
    min_parallax_deg: if a pure rotation explains the inliers to within this median angle, the pair
      has no usable parallax (static camera or pure rotation) and PredictionError is raised.
    refine_iterations: Gauss-Newton iterations on the inliers' Sampson error (0: off); it stops early
      once converged. Depth is very sensitive to rotation (0.1 deg ~ 2 % on the Motorcycle pair),
      and the RANSAC model alone is off by several tenths of a degree.
    robust_scale_px: Cauchy loss scale of that refinement in input pixels (0: plain least squares);
      keeps the wrong matches RANSAC lets through from biasing the pose.
    flow_preset: DIS preset ("ultrafast", "fast", "medium"); flow_finest_scale: DIS finest pyramid
      level (0 = full grid resolution, more accurate).
    fb_threshold_px: forward-backward consistency threshold in grid pixels.
    epipolar_threshold_px: Sampson distance threshold of a dense match in grid pixels.
    min_triangulation_deg: rays meeting at a smaller angle give no reliable depth.
    max_depth: depths beyond this (in baselines) are invalid.
    splat_sigma_px: lateral standard deviation of a splat in pixels of its own view (0.5 px: the
      Gaussian covers its pixel and overlaps its neighbours without gaps).
    flatten: thickness along the viewing ray relative to the lateral size (splats are discs that
      face their camera).
    opacity_valid: opacity of a perfectly consistent pixel (falls off with the forward-backward
      error); opacity_invalid: opacity of a pixel that failed a check.
    sh_degree: degree of the output harmonics (only DC is non-zero; higher ones are zero padding).
    """

    grid_long_side: int = 256
    feature_long_side: int = 1024
    max_features: int = 4000
    ratio: float = 0.8
    ransac_threshold_px: float = 1.0
    ransac_confidence: float = 0.9999
    min_matches: int = 20
    min_inliers: int = 15
    ok_inliers: int = 60
    ok_residual_px: float = 1.5
    degraded_cov_factor: float = 10.0
    covariance_inflation: float = 10.0
    min_parallax_deg: float = 0.15
    refine_iterations: int = 20
    robust_scale_px: float = 0.5
    ransac_method: str = "ransac"
    flow_preset: str = "medium"
    flow_finest_scale: int = 0
    fb_threshold_px: float = 1.0
    epipolar_threshold_px: float = 1.5
    min_triangulation_deg: float = 0.1
    max_depth: float = 200.0
    splat_sigma_px: float = 0.5
    flatten: float = 0.2
    opacity_valid: float = 0.95
    opacity_invalid: float = 0.005
    sh_degree: int = 0

    def validate(self) -> None:
        if self.grid_long_side < 0 or (0 < self.grid_long_side < 16):
            raise ValueError(f"grid_long_side must be 0 or >= 16, got {self.grid_long_side}")
        if self.ransac_method not in _RANSAC_METHODS:
            raise ValueError(f"ransac_method must be one of {sorted(_RANSAC_METHODS)}, got {self.ransac_method!r}")
        if self.robust_scale_px < 0 or self.refine_iterations < 0 or self.flow_finest_scale < 0:
            raise ValueError("robust_scale_px, refine_iterations and flow_finest_scale must be >= 0")
        if self.flow_preset not in _DIS_PRESETS:
            raise ValueError(f"flow_preset must be one of {sorted(_DIS_PRESETS)}, got {self.flow_preset!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if not 0.0 <= self.opacity_invalid < self.opacity_valid < 1.0:
            raise ValueError("need 0 <= opacity_invalid < opacity_valid < 1")
        if self.sh_degree < 0 or self.sh_degree > 4:
            raise ValueError(f"sh_degree must be in 0..4, got {self.sh_degree}")
        for name in ("covariance_inflation", "ransac_threshold_px", "fb_threshold_px", "epipolar_threshold_px", "splat_sigma_px",
                     "flatten", "max_depth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------
def grid_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) of the Gaussian grid: longest side ``long_side`` (never upsampled; 0 = unchanged)."""
    s = 1.0 if long_side <= 0 else min(1.0, long_side / max(height, width))
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([z, -w, y, w, z, -x, -y, x, z], -1).reshape(v.shape[:-1] + (3, 3))


def _rodrigues(w: np.ndarray) -> np.ndarray:
    """(3,) rotation vector -> (3, 3)."""
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def _quat_mul_xyzw(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b of (..., 4) quaternions in (x, y, z, w) order."""
    ax, ay, az, aw = np.moveaxis(a, -1, 0)
    bx, by, bz, bw = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        -1,
    )


def _ray_quats_xyzw(rays: np.ndarray) -> np.ndarray:
    """(N, 3) directions -> (N, 4) quaternions (x, y, z, w) rotating +z onto each direction.

    Half-way quaternion (e_z x d, 1 + e_z . d), normalised; d is never -z for a camera ray.
    """
    d = rays / np.linalg.norm(rays, axis=1, keepdims=True)
    q = np.stack([-d[:, 1], d[:, 0], np.zeros(len(d)), 1.0 + d[:, 2]], 1)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _pixel_rays(K: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H*W, 3) rays K^-1 [u, v, 1] (z = 1) of a row-major pixel grid."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], 1)
    rays = pix @ np.linalg.inv(K).T
    return rays / rays[:, 2:3]


def _normalise_points(pts_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) pixels -> (N, 2) normalised image coordinates of camera K."""
    if len(pts_px) == 0:
        return np.zeros((0, 2))
    return cv2.undistortPoints(pts_px.reshape(-1, 1, 2).astype(np.float64), K, None).reshape(-1, 2)


def sampson_residuals(R_10: np.ndarray, t_10: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sampson distances (N,) of normalised matches x0 (N, 2) <-> x1 (N, 2) for x1 ~ R_10 x0 + t_10."""
    E = _skew(t_10) @ R_10
    h0 = np.concatenate([x0, np.ones((len(x0), 1))], 1)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    Ex0 = h0 @ E.T
    Etx1 = h1 @ E
    num = np.sum(h1 * Ex0, 1)
    den = np.sqrt(Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2) + 1e-15
    return num / den


def _residuals_cam0_from_cam1(R: np.ndarray, t: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Sampson residuals for a pose given as T_cam0_from_cam1 = (R, t)."""
    return sampson_residuals(R.T, -R.T @ t, x0, x1)


def _jacobian(R: np.ndarray, t: np.ndarray, x0: np.ndarray, x1: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """(N, 6) numeric Jacobian of the residuals w.r.t. (tx, ty, tz, rx, ry, rz).

    Rotation perturbation R' = exp(w) R (about camera 0's axes), matching PoseEstimate.covariance.
    Central differences: 12 vectorised residual evaluations, no per-point loop.
    """
    cols = []
    for i in range(6):
        d = np.zeros(6)
        d[i] = step
        rp = _residuals_cam0_from_cam1(_rodrigues(d[3:]) @ R, t + d[:3], x0, x1)
        rm = _residuals_cam0_from_cam1(_rodrigues(-d[3:]) @ R, t - d[:3], x0, x1)
        cols.append((rp - rm) / (2 * step))
    return np.stack(cols, 1)


def refine_relative_pose(
    R: np.ndarray,
    t: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    iterations: int,
    robust_scale: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton on the Sampson error of normalised matches; T_cam0_from_cam1 = (R, t), |t| = 1.

    robust_scale: Cauchy loss scale in normalised units (iteratively reweighted least squares), so
      that the few wrong matches RANSAC lets through do not bias the pose; None = plain least squares.
    Hand-written: OpenCV has no non-linear refinement of a relative pose from an essential matrix.
    Steps that do not lower the (robust) cost are rejected and the loop stops.
    """

    def cost_of(r: np.ndarray) -> float:
        if robust_scale is None:
            return float(np.sum(r**2))
        return float(np.sum(np.log1p((r / robust_scale) ** 2)))

    t = t / np.linalg.norm(t)
    r = _residuals_cam0_from_cam1(R, t, x0, x1)
    cost = cost_of(r)
    for _ in range(iterations):
        w = np.ones_like(r) if robust_scale is None else 1.0 / (1.0 + (r / robust_scale) ** 2)
        sw = np.sqrt(w)
        J = _jacobian(R, t, x0, x1)
        # minimum-norm solution: no step along the scale gauge (t's own direction)
        delta = np.linalg.lstsq(J * sw[:, None], -r * sw, rcond=1e-10)[0]
        R_new = _rodrigues(delta[3:]) @ R
        t_new = t + delta[:3]
        t_new /= np.linalg.norm(t_new)
        r_new = _residuals_cam0_from_cam1(R_new, t_new, x0, x1)
        new_cost = cost_of(r_new)
        if not new_cost < cost:
            break
        converged = cost - new_cost < 1e-10 * max(cost, 1e-30)
        R, t, r, cost = R_new, t_new, r_new, new_cost
        if converged:
            break
    return R, t


def triangulate_rays(
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
    det = ab * ab - aa * bb
    safe = np.where(np.abs(det) > 1e-12, det, np.nan)
    lam0 = (ab * bc - ac * bb) / safe
    lam1 = (aa * bc - ab * ac) / safe
    return lam0, lam1, det


def _fill_nearest(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(H, W) values with invalid pixels replaced by their nearest valid pixel's value."""
    if valid.all():
        return values
    _, labels = cv2.distanceTransformWithLabels(
        (~valid).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    lut = np.zeros(int(labels.max()) + 1, values.dtype)
    lut[labels[valid]] = values[valid]
    return lut[labels]


# --------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _PoseResult:
    R: np.ndarray  # R_cam0_from_cam1
    t: np.ndarray  # unit t_cam0_from_cam1
    estimate: PoseEstimate
    parallax_deg: float


class GeometryPredictor:
    """Training-free backend: ``predict(pair) -> PairReconstruction`` (see module doc).

    Raises PredictionError for degenerate pairs (too few matches, no parallax, pose not found).
    Deterministic for a given input (OpenCV's RANSAC uses a fixed seed).
    """

    backend = "geometry"

    def __init__(self, config: GeometryConfig | None = None) -> None:
        self.config = config or GeometryConfig()
        self.config.validate()
        self._sift = cv2.SIFT_create(nfeatures=self.config.max_features)
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.config.flow_preset])
        self._dis.setFinestScale(self.config.flow_finest_scale)

    def close(self) -> None:
        """Nothing to free (CPU only); present for interface parity with the noposplat backend."""

    # -- public ---------------------------------------------------------------------------------
    def predict(self, pair: KeyframePair) -> PairReconstruction:
        """Reconstruct a pair: Gaussians (2 * H * W, view 0 first, camera-0 frame, unit baseline) + pose.

        The views may differ in size and intrinsics; view 1 is resized to view 0's grid.
        Raises ValueError for malformed frames, PredictionError for degenerate pairs.
        """
        cfg = self.config
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        f0, f1 = pair.kf0, pair.kf1
        for name, f in (("kf0", f0), ("kf1", f1)):
            if f.rgb.ndim != 3 or f.rgb.shape[2] != 3 or f.rgb.dtype != np.uint8:
                raise ValueError(f"{name}.rgb must be (H, W, 3) uint8, got {f.rgb.shape} {f.rgb.dtype}")
            if np.asarray(f.K).shape != (3, 3) or not np.all(np.isfinite(f.K)):
                raise ValueError(f"{name}.K must be a finite (3, 3) matrix")

        # 1. one grid for both views (view 1 resized to view 0's grid; K follows per axis)
        t = time.perf_counter()
        hw = grid_shape(f0.height, f0.width, cfg.grid_long_side)
        grids, K_grid = [], []
        for f in (f0, f1):
            img = f.rgb if (f.height, f.width) == hw else cv2.resize(f.rgb, hw[::-1], interpolation=cv2.INTER_AREA)
            grids.append(np.ascontiguousarray(img))
            K_grid.append(scale_intrinsics(f.K, hw[1] / f.width, hw[0] / f.height))
        K_grid_arr = np.stack(K_grid)
        timings["resize"] = time.perf_counter() - t

        # 2. + 3. relative pose
        t = time.perf_counter()
        x0, x1, px_scale = self._match(f0, f1)
        timings["features"] = time.perf_counter() - t
        t = time.perf_counter()
        pose = self._relative_pose(x0, x1, px_scale)
        timings["pose"] = time.perf_counter() - t

        # 4. dense flow both ways
        t = time.perf_counter()
        grey = [cv2.cvtColor(g, cv2.COLOR_RGB2GRAY) for g in grids]
        flow01 = self._dis.calc(grey[0], grey[1], None)
        flow10 = self._dis.calc(grey[1], grey[0], None)
        timings["flow"] = time.perf_counter() - t

        # 5. triangulation per pixel, both views
        t = time.perf_counter()
        depth0, opac0 = self._dense_depth(flow01, flow10, K_grid_arr[0], K_grid_arr[1], pose.R, pose.t, True)
        depth1, opac1 = self._dense_depth(flow10, flow01, K_grid_arr[1], K_grid_arr[0], pose.R, pose.t, False)
        valid_frac = float(np.mean(np.concatenate([opac0, opac1]) > cfg.opacity_invalid))
        if valid_frac == 0.0:
            raise PredictionError("geometry: no pixel could be triangulated consistently (flow failed)")
        timings["triangulate"] = time.perf_counter() - t

        # 6. Gaussians
        t = time.perf_counter()
        g0 = self._view_gaussians(grids[0], K_grid_arr[0], depth0, opac0, np.eye(3), np.zeros(3))
        g1 = self._view_gaussians(grids[1], K_grid_arr[1], depth1, opac1, pose.R, pose.t)
        gaussians = Gaussians.concat([g0, g1])
        timings["gaussians"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start

        est = pose.estimate
        est.message = (
            f"{est.num_inliers} inliers, residual {est.residual_px:.2f} px, parallax {pose.parallax_deg:.2f} deg, "
            f"{100 * valid_frac:.0f}% pixels consistent"
        )
        return PairReconstruction(
            gaussians=gaussians,
            pose=est,
            scale_kind=ScaleKind.UNIT_BASELINE,
            backend=self.backend,
            stamp0_ns=int(f0.stamp_ns),
            stamp1_ns=int(f1.stamp_ns),
            frame_id=f0.frame_id,
            grid_hw=hw,
            K_grid=K_grid_arr,
            timings_s=timings,
        )

    # -- stages ---------------------------------------------------------------------------------
    def _match(self, f0, f1) -> tuple[np.ndarray, np.ndarray, float]:
        """SIFT matches -> normalised coordinates x0, x1 (N, 2) and the mean focal length in px."""
        cfg = self.config
        kps, descs = [], []
        for f in (f0, f1):
            grey = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY)
            s = 1.0
            if cfg.feature_long_side > 0 and max(grey.shape) > cfg.feature_long_side:
                s = cfg.feature_long_side / max(grey.shape)
                grey = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            kp, desc = self._sift.detectAndCompute(grey, None)
            pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2)
            kps.append((pts + 0.5) / s - 0.5)  # back to input pixels (centre convention)
            descs.append(desc if desc is not None else np.zeros((0, 128), np.float32))
        if min(len(descs[0]), len(descs[1])) < 2:
            raise PredictionError(
                f"geometry: too few features ({len(descs[0])}, {len(descs[1])}); textureless or blank images?"
            )
        # Mutual nearest neighbours with Lowe's ratio test, on one distance matrix (torch matmul).
        d0 = torch.from_numpy(descs[0])
        d1 = torch.from_numpy(descs[1])
        dist = torch.cdist(d0, d1)
        best2 = torch.topk(dist, 2, dim=1, largest=False)
        nn01 = best2.indices[:, 0]
        nn10 = torch.argmin(dist, dim=0)
        mutual = nn10[nn01] == torch.arange(len(d0))
        ratio_ok = best2.values[:, 0] < cfg.ratio * best2.values[:, 1]
        keep = (mutual & ratio_ok).numpy()
        i0 = np.nonzero(keep)[0]
        i1 = nn01.numpy()[i0]
        if len(i0) < cfg.min_matches:
            raise PredictionError(
                f"geometry: too few feature matches ({len(i0)} < {cfg.min_matches}); little overlap or texture"
            )
        x0 = _normalise_points(kps[0][i0], f0.K)
        x1 = _normalise_points(kps[1][i1], f1.K)
        px_scale = float(np.mean([f0.K[0, 0], f0.K[1, 1], f1.K[0, 0], f1.K[1, 1]]))
        return x0, x1, px_scale

    def _relative_pose(self, x0: np.ndarray, x1: np.ndarray, px_scale: float) -> _PoseResult:
        cfg = self.config
        n = len(x0)
        E, mask = cv2.findEssentialMat(
            x0, x1, np.eye(3), method=_RANSAC_METHODS[cfg.ransac_method], prob=cfg.ransac_confidence,
            threshold=cfg.ransac_threshold_px / px_scale,
        )
        if E is None or mask is None or E.shape[0] < 3:
            raise PredictionError(f"geometry: essential matrix not found from {n} matches")
        E = E[:3]  # several solutions may be stacked; RANSAC's best comes first
        mask = mask.ravel().astype(bool)
        if mask.sum() < cfg.min_inliers:
            raise PredictionError(
                f"geometry: too few essential-matrix inliers ({int(mask.sum())} of {n} < {cfg.min_inliers})"
            )
        # Parallax check: can a pure rotation explain the inliers? (Wahba/Kabsch on unit rays.)
        r0 = np.concatenate([x0[mask], np.ones((mask.sum(), 1))], 1)
        r1 = np.concatenate([x1[mask], np.ones((mask.sum(), 1))], 1)
        r0 /= np.linalg.norm(r0, axis=1, keepdims=True)
        r1 /= np.linalg.norm(r1, axis=1, keepdims=True)
        U, _, Vt = np.linalg.svd(r1.T @ r0)
        D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
        R_rot = Vt.T @ D @ U.T  # r0 ~ R_rot r1
        parallax_deg = float(np.degrees(np.median(np.arccos(np.clip(np.sum(r0 * (r1 @ R_rot.T), 1), -1, 1)))))
        if parallax_deg < cfg.min_parallax_deg:
            raise PredictionError(
                f"geometry: no parallax (static camera or pure rotation): a rotation explains the matches "
                f"to {parallax_deg:.3f} deg < min_parallax_deg {cfg.min_parallax_deg}"
            )
        m8 = mask.astype(np.uint8).reshape(-1, 1)
        n_good, R_10, t_10, m_pose = cv2.recoverPose(E, x0, x1, np.eye(3), mask=m8.copy())
        inl = m_pose.ravel().astype(bool) & mask
        if n_good < cfg.min_inliers or inl.sum() < cfg.min_inliers:
            raise PredictionError(
                f"geometry: too few matches in front of both cameras ({int(inl.sum())} < {cfg.min_inliers})"
            )
        R = R_10.T  # T_cam0_from_cam1 = inverse of (R_10, t_10)
        t = (-R_10.T @ t_10).ravel()
        t /= np.linalg.norm(t)
        xi0, xi1 = x0[inl], x1[inl]
        if cfg.refine_iterations > 0:
            robust = cfg.robust_scale_px / px_scale if cfg.robust_scale_px > 0 else None
            R, t = refine_relative_pose(R, t, xi0, xi1, cfg.refine_iterations, robust)

        r_px = _residuals_cam0_from_cam1(R, t, xi0, xi1) * px_scale
        num = int(inl.sum())
        residual_px = float(np.sqrt(np.mean(r_px**2)))
        J = _jacobian(R, t, xi0, xi1) * px_scale
        sigma2 = float(np.sum(r_px**2) / max(num - 5, 1))
        cov = cfg.covariance_inflation * sigma2 * np.linalg.pinv(J.T @ J, rcond=1e-12, hermitian=True)
        # Unit baseline fixes |t| by convention (zero variance along t); keep the matrix positive
        # definite for consumers with a tiny variance there.
        tt = np.zeros(6)
        tt[:3] = t
        cov = 0.5 * (cov + cov.T) + 1e-9 * np.outer(tt, tt)
        status = PoseStatus.OK
        if num < cfg.ok_inliers or residual_px > cfg.ok_residual_px:
            status = PoseStatus.DEGRADED
            cov = cov * cfg.degraded_cov_factor
        est = PoseEstimate(
            T_cam0_from_cam1=make_T(R, t), covariance=cov, status=status, num_inliers=num, residual_px=residual_px
        )
        return _PoseResult(R=R, t=t, estimate=est, parallax_deg=parallax_deg)

    def _dense_depth(
        self,
        flow_ab: np.ndarray,
        flow_ba: np.ndarray,
        K_a: np.ndarray,
        K_b: np.ndarray,
        R: np.ndarray,
        t: np.ndarray,
        a_is_cam0: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Depth along view a's own rays (H*W,) and opacity (H*W,) from flow a->b.

        R, t: T_cam0_from_cam1. Depth is in view a's camera (z of the point in camera a).
        """
        cfg = self.config
        h, w = flow_ab.shape[:2]
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        ub, vb = u + flow_ab[..., 0], v + flow_ab[..., 1]
        back = cv2.remap(flow_ba, ub, vb, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fb_err = np.hypot(flow_ab[..., 0] + back[..., 0], flow_ab[..., 1] + back[..., 1]).ravel()
        inside = ((ub >= 0) & (ub <= w - 1) & (vb >= 0) & (vb <= h - 1)).ravel()

        rays_a = _pixel_rays(K_a, (h, w))
        pix_b = np.stack([ub.ravel(), vb.ravel(), np.ones(h * w)], 1).astype(np.float64)
        rays_b = pix_b @ np.linalg.inv(K_b).T
        rays_b /= rays_b[:, 2:3]
        if a_is_cam0:
            R_a_from_b, t_a_from_b = R, t
        else:
            R_a_from_b, t_a_from_b = R.T, -R.T @ t
        # Epipolar (Sampson) distance of each dense match, in view-a grid pixels.
        R_ba, t_ba = R_a_from_b.T, -R_a_from_b.T @ t_a_from_b
        epi_px = np.abs(sampson_residuals(R_ba, t_ba, rays_a[:, :2], rays_b[:, :2])) * float(
            np.sqrt(K_a[0, 0] * K_a[1, 1])
        )
        lam_a, lam_b, _ = triangulate_rays(rays_a, rays_b @ R_a_from_b.T, t_a_from_b)
        # Triangulation angle between the two rays at the point.
        pa = rays_a * lam_a[:, None]
        va = pa / np.linalg.norm(pa, axis=1, keepdims=True)
        vb_ = pa - t_a_from_b[None, :]
        vb_ /= np.linalg.norm(vb_, axis=1, keepdims=True)
        angle_deg = np.degrees(np.arccos(np.clip(np.sum(va * vb_, 1), -1.0, 1.0)))

        with np.errstate(invalid="ignore"):
            valid = (
                inside
                & (fb_err < cfg.fb_threshold_px)
                & (epi_px < cfg.epipolar_threshold_px)
                & np.isfinite(lam_a) & (lam_a > 0) & (lam_b > 0)
                & (lam_a < cfg.max_depth)
                & (angle_deg >= cfg.min_triangulation_deg)
            )
        if not valid.any():
            return np.ones(h * w), np.full(h * w, cfg.opacity_invalid)
        depth = _fill_nearest(np.where(valid, lam_a, 0.0).reshape(h, w), valid.reshape(h, w)).ravel()
        sigma = 0.5 * cfg.fb_threshold_px
        soft = np.exp(-0.5 * (fb_err / sigma) ** 2)
        opac = np.where(
            valid, cfg.opacity_invalid + (cfg.opacity_valid - cfg.opacity_invalid) * soft, cfg.opacity_invalid
        )
        return depth, opac

    def _view_gaussians(
        self, rgb: np.ndarray, K: np.ndarray, depth: np.ndarray, opac: np.ndarray, R: np.ndarray, t: np.ndarray
    ) -> Gaussians:
        """One view's per-pixel Gaussians (row-major) in camera 0's frame; (R, t) = T_cam0_from_view."""
        cfg = self.config
        h, w = rgb.shape[:2]
        rays = _pixel_rays(K, (h, w))
        pts_view = rays * depth[:, None]
        means = pts_view @ R.T + t[None, :]
        lateral = cfg.splat_sigma_px * depth
        scales = np.stack([lateral / K[0, 0], lateral / K[1, 1], cfg.flatten * lateral / math.sqrt(K[0, 0] * K[1, 1])], 1)
        q_view = _ray_quats_xyzw(rays)  # local z along the pixel's ray: discs facing the camera
        q = _quat_mul_xyzw(np.broadcast_to(matrix_to_quat_xyzw(R), q_view.shape), q_view)
        cov = covariances_from_scales_rotations(torch.from_numpy(scales), torch.from_numpy(np.ascontiguousarray(q))).numpy()
        k = (cfg.sh_degree + 1) ** 2
        sh = np.zeros((h * w, 3, k), np.float32)
        sh[:, :, 0] = rgb_to_sh_dc(rgb.reshape(-1, 3).astype(np.float32) / 255.0)

        def T(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return Gaussians(T(means), T(scales), T(q), T(opac), T(sh), T(cov))

