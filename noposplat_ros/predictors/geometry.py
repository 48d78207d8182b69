"""Training-free predictor backend: relative pose from features, per-pixel Gaussians from dense flow.

Same output type, frame and scale convention as the ``noposplat`` backend (``PairReconstruction``):
both views' Gaussians in camera 0's optical frame, view 0 first, each view row-major over
``grid_hw``; unit baseline (|t| = 1); ``T_cam0_from_cam1`` with quality and a covariance.

Stages (each timed in ``timings_s``):
1. ``resize``: both views to one grid (longest side ``grid_long_side``), K adjusted per view.
2. ``features``: SIFT (OpenCV) on the (capped) full-resolution images, ratio test (+ mutual nearest
   neighbours).
3. ``pose``: ``pose.two_view.estimate_two_view``: PoseLib LO-RANSAC + Cauchy bundle refinement with
   each view's own intrinsics, rotation-only model selection, covariance from the refined problem.
4. ``flow``: OpenCV DIS optical flow both ways on the grid's grey images. Not rectified: rectifying
   breaks down for forward motion (epipole inside the image), which is common on robots, while 2D
   flow works for any motion; the epipolar distance of each flow match is checked instead.
5. ``triangulate``: closed-form closest points of the two viewing rays per pixel (vectorised) under the
   refined pose; view 0 keeps the point on its own ray, view 1 (from the backward flow) likewise.
6. ``gaussians``: centre from depth; scale from the pixel footprint; opacity from consistency;
   colour as SH DC.

The pose never depends on the splats: a pair whose flow or triangulation fails still returns its pose
(status from the pose's own evidence) with zero Gaussians. A pure rotation returns its rotation
(DEGRADED, no splats). Only a pair with no pose at all (too few matches, no consistent model) raises
PredictionError.

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
from noposplat_ros.pose.two_view import (
    TwoViewOptions,
    estimate_two_view,
    sampson_residuals,
    triangulate_midpoint,
)
from noposplat_ros.transforms import matrix_to_quat_xyzw
from noposplat_ros.types import (
    Frame,
    Gaussians,
    KeyframePair,
    PairReconstruction,
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


@dataclasses.dataclass
class GeometryConfig:
    """Parameters of the geometry backend (lengths in pixels of the named image, angles in degrees).

    grid_long_side: longest side of each view's Gaussian grid (256 gives ~2x256x170 splats for a
      3:2 image, like the network's 2x256^2); 0 keeps the input resolution. Never upsamples.
    feature_long_side: images larger than this are downscaled for SIFT (0: never). 480: SIFT is most
      of the CPU time; on the 640x480 Motorcycle crop 480 took 1.24 CPU-s per pair vs 1.49 at full
      size with rotation error 0.007 vs 0.029 deg (741x500: translation direction 0.29 vs 0.16 deg).
    max_features: SIFT keypoints per image.
    contrast_threshold: SIFT's contrast threshold (OpenCV's default 0.04). 0.01 keeps low-contrast
      keypoints: on the 33 fixture pairs ~1.6x the matches, median rotation error 0.016 vs 0.022 deg,
      p95 0.065 vs 0.095, AUC@5 97.6 vs 97.4, and every pair with baseline/depth >= 0.03 within 2 % depth
      (the two pose-limited pairs at 0.04: 2.5 % and 5 %); on the real Motorcycle pair 741x500 t-dir
      0.09 vs 0.29 deg, 640x480 rotation 0.021 vs 0.007 deg; SIFT ~0.1 s more per 640x480 pair.
    ratio: Lowe's ratio test threshold (on distances).
    mutual: also require mutual nearest neighbours.
    two_view: PoseLib / covariance / model-selection options (``pose.two_view.TwoViewOptions``). Its
      covariance_inflation is 10 here (1 in TwoViewOptions): the residual-based covariance is
      consistent on synthetic matches (NEES test) but does not see a real camera's calibration error
      or SIFT's correlated errors; on the real Motorcycle pair the true error was ~120 (Mahalanobis^2,
      6 DoF) under the uninflated covariance.
    flow_prior: start DIS from the flow that the refined pose and the inliers' sparse depths predict
      (without it DIS loses motions beyond a few tens of grid pixels).
    flow_preset: DIS preset ("ultrafast", "fast", "medium"); flow_finest_scale: DIS finest pyramid
      level (0 = full grid resolution, more accurate).
    flow_long_side / flow_fine_below_px: when the inliers' median parallax (rotation removed) is below
      flow_fine_below_px grid pixels, the flow is computed at flow_long_side (capped at the input size)
      and averaged down to the grid. Depth error is flow error / parallax: DIS's ~0.05-0.1 px error is
      2-3 % of a 2-3 px parallax (forward motion at baseline/depth 0.03, measured with the true pose);
      the finer flow at 480 px brings those pairs from 2.1 / 2.5 % to 1.3 / 1.4 % and costs ~2x flow
      time, so only small-parallax pairs pay it. 0 disables.
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
    feature_long_side: int = 480
    max_features: int = 4000
    contrast_threshold: float = 0.01
    ratio: float = 0.8
    mutual: bool = True
    two_view: TwoViewOptions = dataclasses.field(default_factory=lambda: TwoViewOptions(covariance_inflation=10.0))
    flow_prior: bool = True
    flow_preset: str = "medium"
    flow_finest_scale: int = 0
    flow_long_side: int = 480
    flow_fine_below_px: float = 8.0
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
        if self.flow_finest_scale < 0:
            raise ValueError("flow_finest_scale must be >= 0")
        if self.flow_preset not in _DIS_PRESETS:
            raise ValueError(f"flow_preset must be one of {sorted(_DIS_PRESETS)}, got {self.flow_preset!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio}")
        if not 0.0 <= self.opacity_invalid < self.opacity_valid < 1.0:
            raise ValueError("need 0 <= opacity_invalid < opacity_valid < 1")
        if self.sh_degree < 0 or self.sh_degree > 4:
            raise ValueError(f"sh_degree must be in 0..4, got {self.sh_degree}")
        if not isinstance(self.two_view, TwoViewOptions):
            raise ValueError(f"two_view must be a TwoViewOptions, got {type(self.two_view).__name__}")
        self.two_view.validate()
        for name in ("fb_threshold_px", "epipolar_threshold_px", "splat_sigma_px", "flatten", "max_depth"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------
def grid_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) of the Gaussian grid: longest side ``long_side`` (never upsampled; 0 = unchanged)."""
    s = 1.0 if long_side <= 0 else min(1.0, long_side / max(height, width))
    return max(1, int(round(height * s))), max(1, int(round(width * s)))


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


# Closed-form midpoint triangulation, shared with the two-view pose (kept under its old name).
triangulate_rays = triangulate_midpoint


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
def prior_flow(
    X_a: np.ndarray, K_a: np.ndarray, K_b: np.ndarray, R_b_from_a: np.ndarray, t_b_from_a: np.ndarray,
    hw: tuple[int, int],
) -> np.ndarray | None:
    """(H, W, 2) float32 flow a->b predicted by sparse 3-D points X_a (M, 3) in camera a and the pose.

    Their inverse depths are spread to every grid pixel of view a (nearest point, then smoothed), each
    pixel's point is moved into camera b and projected with K_b. None when fewer than 8 points project.
    """
    h, w = hw
    if len(X_a) < 8:
        return None
    x = X_a @ K_a.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = np.rint(x[:, 0] / x[:, 2]).astype(np.int64), np.rint(x[:, 1] / x[:, 2]).astype(np.int64)
    ok = (X_a[:, 2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    if ok.sum() < 8:
        return None
    inv = np.zeros((h, w), np.float32)
    has = np.zeros((h, w), bool)
    inv[v[ok], u[ok]] = 1.0 / X_a[ok, 2]
    has[v[ok], u[ok]] = True
    inv = _fill_nearest(inv, has)
    k = max(3, (max(h, w) // 32) | 1)
    inv = cv2.GaussianBlur(inv, (k, k), 0)
    z = 1.0 / np.maximum(inv.ravel().astype(np.float64), 1e-6)
    pts = _pixel_rays(K_a, hw) * z[:, None]
    Xb = pts @ R_b_from_a.T + t_b_from_a
    xb = Xb @ K_b.T
    with np.errstate(divide="ignore", invalid="ignore"):
        ub, vb = xb[:, 0] / xb[:, 2], xb[:, 1] / xb[:, 2]
    vv, uu = np.mgrid[0:h, 0:w]
    flow = np.stack([ub - uu.ravel(), vb - vv.ravel()], 1)
    flow[~np.isfinite(flow).all(1) | (Xb[:, 2] <= 0)] = 0.0
    return np.ascontiguousarray(flow.reshape(h, w, 2).astype(np.float32))


def views_at(frames: tuple[Frame, Frame], hw: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Both views resized to (H, W) = hw (INTER_AREA; unchanged when already that size) -> ([2 x
    (H, W, 3) uint8 contiguous], (2, 3, 3) intrinsics following per axis)."""
    imgs, Ks = [], []
    for f in frames:
        img = f.rgb if (f.height, f.width) == hw else cv2.resize(f.rgb, hw[::-1], interpolation=cv2.INTER_AREA)
        imgs.append(np.ascontiguousarray(img))
        Ks.append(scale_intrinsics(f.K, hw[1] / f.width, hw[0] / f.height))
    return imgs, np.stack(Ks)


def median_parallax_px(X0: np.ndarray, R: np.ndarray, t: np.ndarray, K1: np.ndarray) -> float:
    """Median parallax of points X0 (M, 3) (camera 0, finite) in view 1's pixels of K1 (3, 3), rotation
    removed; (R, t) = T_cam0_from_cam1. Parallax = distance between a point's projection in view 1 and
    the projection of the same ray at infinity (what the rotation alone predicts): the displacement
    that carries depth. 0 for no points.
    """
    if len(X0) == 0:
        return 0.0
    R10 = R.T
    x = (X0 - t) @ R10.T @ K1.T  # the points in camera 1 (R10 (X - t)), projected
    x_inf = X0 @ R10.T @ K1.T
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.linalg.norm(x[:, :2] / x[:, 2:] - x_inf[:, :2] / x_inf[:, 2:], axis=1)
    d = d[np.isfinite(d)]
    return float(np.median(d)) if len(d) else 0.0


def _empty_gaussians(sh_degree: int) -> Gaussians:
    """Zero Gaussians (a pose without splats)."""
    k = (sh_degree + 1) ** 2
    z = torch.zeros
    return Gaussians(z(0, 3), z(0, 3), z(0, 4), z(0), z(0, 3, k), z(0, 3, 3))


def sift_matches(sift: cv2.SIFT, f0: Frame, f1: Frame, cfg: GeometryConfig) -> tuple[np.ndarray, np.ndarray]:
    """SIFT matches of two frames -> (pts0_px, pts1_px), each (N, 2) float64 input-image pixels.

    Images larger than ``cfg.feature_long_side`` are downscaled for detection; Lowe's ratio test
    (``cfg.ratio``) and, with ``cfg.mutual``, mutual nearest neighbours, on one distance matrix.
    Fewer than 2 features in a view gives 0 matches (the pose is then LOST, not an exception here).
    """
    kps, descs = [], []
    for f in (f0, f1):
        grey = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY)
        s = 1.0
        if cfg.feature_long_side > 0 and max(grey.shape) > cfg.feature_long_side:
            s = cfg.feature_long_side / max(grey.shape)
            grey = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        kp, desc = sift.detectAndCompute(grey, None)
        pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2)
        kps.append((pts + 0.5) / s - 0.5)  # back to input pixels (centre convention)
        descs.append(desc if desc is not None else np.zeros((0, 128), np.float32))
    if min(len(descs[0]), len(descs[1])) < 2:
        return np.zeros((0, 2)), np.zeros((0, 2))
    d0 = torch.from_numpy(descs[0])
    d1 = torch.from_numpy(descs[1])
    dist = torch.cdist(d0, d1)
    best2 = torch.topk(dist, 2, dim=1, largest=False)
    nn01 = best2.indices[:, 0]
    keep = best2.values[:, 0] < cfg.ratio * best2.values[:, 1]
    if cfg.mutual:
        keep &= torch.argmin(dist, dim=0)[nn01] == torch.arange(len(d0))
    i0 = np.nonzero(keep.numpy())[0]
    i1 = nn01.numpy()[i0]
    return kps[0][i0], kps[1][i1]


class GeometryPredictor:
    """Training-free backend: ``predict(pair) -> PairReconstruction`` (see module doc).

    Raises PredictionError only when no pose exists (too few matches, no consistent model).
    Deterministic for a given input (PoseLib's RANSAC has a fixed seed).
    """

    backend = "geometry"

    def __init__(self, config: GeometryConfig | None = None) -> None:
        self.config = config or GeometryConfig()
        self.config.validate()
        self._sift = cv2.SIFT_create(nfeatures=self.config.max_features,
                                     contrastThreshold=self.config.contrast_threshold)
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.config.flow_preset])
        self._dis.setFinestScale(self.config.flow_finest_scale)

    def close(self) -> None:
        """Nothing to free (CPU only); present for interface parity with the noposplat backend."""

    # -- public ---------------------------------------------------------------------------------
    def predict(self, pair: KeyframePair) -> PairReconstruction:
        """Reconstruct a pair: Gaussians (2 * H * W, view 0 first, camera-0 frame, unit baseline) + pose.

        The views may differ in size and intrinsics; view 1 is resized to view 0's grid. Zero Gaussians
        when the pose has no parallax (rotation only) or no pixel triangulates; the pose is kept.
        Raises ValueError for malformed frames, PredictionError when no pose is determined.
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
        grids, K_grid_arr = views_at((f0, f1), hw)
        timings["resize"] = time.perf_counter() - t

        # 2. + 3. relative pose from its own evidence (never from the splats)
        t = time.perf_counter()
        pts0, pts1 = sift_matches(self._sift, f0, f1, cfg)
        timings["features"] = time.perf_counter() - t
        t = time.perf_counter()
        tv = estimate_two_view(pts0, pts1, f0.K, f1.K, (f0.height, f0.width), (f1.height, f1.width), cfg.two_view)
        timings["pose"] = time.perf_counter() - t
        if tv.kind == "lost":
            raise PredictionError(f"geometry: {tv.estimate.message}")
        est = tv.estimate
        inl = tv.inliers
        matches_px = np.concatenate([pts0[inl], pts1[inl]], 1)
        points_cam0 = tv.points_cam0[inl]

        gaussians = _empty_gaussians(cfg.sh_degree)
        valid_frac = 0.0
        if tv.kind == "general":
            # 4. dense flow both ways
            t = time.perf_counter()
            flow01, flow10 = self._flow(f0, f1, grids, K_grid_arr, tv, hw)
            timings["flow"] = time.perf_counter() - t

            # 5. triangulation per pixel, both views, under the refined pose
            t = time.perf_counter()
            depth0, opac0 = self._dense_depth(flow01, flow10, K_grid_arr[0], K_grid_arr[1], tv.R, tv.t, True)
            depth1, opac1 = self._dense_depth(flow10, flow01, K_grid_arr[1], K_grid_arr[0], tv.R, tv.t, False)
            valid_frac = float(np.mean(np.concatenate([opac0, opac1]) > cfg.opacity_invalid))
            timings["triangulate"] = time.perf_counter() - t

            # 6. Gaussians (none when no pixel triangulated: the pose stands on its own)
            if valid_frac > 0.0:
                t = time.perf_counter()
                g0 = self._view_gaussians(grids[0], K_grid_arr[0], depth0, opac0, np.eye(3), np.zeros(3))
                g1 = self._view_gaussians(grids[1], K_grid_arr[1], depth1, opac1, tv.R, tv.t)
                gaussians = Gaussians.concat([g0, g1])
                timings["gaussians"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start

        if tv.kind == "general":
            est.message += f", {100 * valid_frac:.0f}% pixels consistent"
            if valid_frac == 0.0:
                est.message += " (flow failed: no splats)"
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
            matches_px=matches_px,
            points_cam0=points_cam0,
        )

    # -- stages ---------------------------------------------------------------------------------
    def _flow(self, f0: Frame, f1: Frame, grids: list[np.ndarray], K_grid: np.ndarray, tv, hw: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray]:
        """DIS flow 0->1 and 1->0 as (H, W, 2) float32 in grid pixels.

        With ``flow_long_side`` above the grid's, the flow is computed at that resolution and averaged
        down to the grid (sub-pixel noise shrinks with the averaging), else on the grid itself.
        """
        cfg = self.config
        X0 = tv.points_cam0[tv.inliers]
        X0 = X0[np.isfinite(X0).all(1)]  # the inliers' sparse 3-D points (camera 0, unit baseline)
        hw_f = hw
        if cfg.flow_long_side > max(hw) and median_parallax_px(X0, tv.R, tv.t, K_grid[1]) < cfg.flow_fine_below_px:
            hw_f = grid_shape(f0.height, f0.width, cfg.flow_long_side)
        imgs, K_f = (grids, K_grid) if hw_f == hw else views_at((f0, f1), hw_f)
        grey = [cv2.cvtColor(g, cv2.COLOR_RGB2GRAY) for g in imgs]
        flow01 = flow10 = None
        if cfg.flow_prior:
            # Start DIS from the flow the refined pose + the inliers' sparse depth predict: DIS
            # alone loses large motions (measured: 0 % of pixels consistent at baseline/depth 0.2).
            X1 = (X0 - tv.t) @ tv.R  # the same points in camera 1
            flow01 = prior_flow(X0, K_f[0], K_f[1], tv.R.T, -tv.R.T @ tv.t, hw_f)
            flow10 = prior_flow(X1, K_f[1], K_f[0], tv.R, tv.t, hw_f)
        # DIS starts from the flow passed in when it is (H, W, 2) float32 (OpenCV's input-flow rule)
        flow01 = self._dis.calc(grey[0], grey[1], flow01)
        flow10 = self._dis.calc(grey[1], grey[0], flow10)
        if hw_f != hw:
            s = np.array([hw[1] / hw_f[1], hw[0] / hw_f[0]], np.float32)
            flow01 = cv2.resize(flow01, hw[::-1], interpolation=cv2.INTER_AREA) * s
            flow10 = cv2.resize(flow10, hw[::-1], interpolation=cv2.INTER_AREA) * s
        return np.ascontiguousarray(flow01), np.ascontiguousarray(flow10)

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

