"""Keyframe poses over time with one scale carried by geometry, and a small pose graph (no rclpy).

Every pair comes in its own unit-baseline scale. Consecutive pairs share a keyframe (pair k's kf1 is
pair k+1's kf0, same stamp). The scale is carried by *placing* the new keyframe against the previous
pair's 3-D points (PnP, PoseLib's ``estimate_absolute_pose``), so consecutive pairs share one scale
by construction:

- sparse (when both pairs carry ``matches_px``/``points_cam0`` and the input intrinsics are given):
  the previous pair's triangulated matches, looked up at the new pair's kf0 match pixels (same image,
  within ``match_radius_px``), against the new pair's kf1 pixels;
- dense (the noposplat backend, or as a fallback): the previous pair's view-1 Gaussian means (the
  shared keyframe, per pixel) looked up at a grid of the new pair's view-0 pixels, against those
  pixels' projections into the new kf1 through the new pair's own geometry.

The PnP gives ``T_cam(k)_from_cam(k-2)`` in the trajectory's scale: the new pair's scale is the
baseline it implies for k-1 -> k over the pair's unit baseline. A scale that cannot be carried (too
few inliers, a PnP that disagrees with the pair's direction) keeps the previous pair's baseline with
a log-scale standard deviation of ``degraded_log_scale_sigma``: DEGRADED, never LOST. LOST only when
the pair's pose itself is lost.

Pose graph (``pose_graph.PoseGraph``, GTSAM): one variable per keyframe; a Huber-robust
BetweenFactor k-1 -> k (the pair's pose at the carried scale; covariance = the pair's, scaled, plus
the scale's uncertainty along t) and k-2 -> k (the PnP pose; covariance from the reprojection
Jacobian). Correlated edges: both come from data that share keyframe k-1's geometry (the scale of
the k-1 -> k edge *is* the PnP), and their cross-covariance is not modelled; the k-2 -> k edge's
covariance is doubled (a covariance-intersection weight of 1/2), so the two together never claim
more than the independent information. Odometry (``odom_baseline_m``: the distance the camera
travelled between the keyframe stamps) adds a distance factor (std ``odom_sigma_rel`` x distance,
at least ``odom_sigma_min_m``) and makes the segment metric. A fixed ``metric_baseline_m`` (stereo
rig) sets every pair's scale directly. The newest keyframe's optimised pose and marginal covariance
are published; ``poses()`` returns every keyframe at its latest optimised pose.

World frame = camera frame of the first keyframe of the first segment. A pair whose kf0 stamp is not
the previous pair's kf1 stamp, or which follows a LOST step, starts a new segment (a new graph): its
kf0 is placed at the last known pose, with LOST_POSE_VARIANCE added to the world covariance (the
motion across the gap is unknown), and its scale restarts (unit baseline of that pair, unless metric).
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Iterable

import numpy as np
import poselib
from scipy.spatial import cKDTree

from noposplat_ros.pose.pose_graph import PoseGraph
from noposplat_ros.transforms import T_to_translation_quat_xyzw, direction_angle_deg, invert_T, is_rigid
from noposplat_ros.types import LOST_POSE_VARIANCE, PairReconstruction, PoseStatus, ScaleKind, format_stamp


@dataclasses.dataclass
class TrajectoryConfig:
    """window: keyframes in the pose graph's sliding window. huber_k: robust loss threshold (sigmas).
    pnp_max_reproj_frac: PnP inlier threshold as a fraction of the image width (resolution-free).
    min_pnp_inliers: fewer PnP inliers: the scale is not carried (DEGRADED).
    max_pnp_direction_deg: a PnP whose k-1 -> k direction differs more from the pair's is not trusted.
    match_radius_px: sparse lookup radius of a kf0 match pixel among the previous pair's kf1 pixels.
    dense_points: grid pixels used by the dense lookup. opacity_min: Gaussians below do not vote.
    odom_sigma_rel / odom_sigma_min_m: std of an odometry distance (relative, floor in metres).
    degraded_log_scale_sigma: std of log scale when the scale could not be carried.
    degraded_covariance_factor: covariance inflation of a DEGRADED step."""

    window: int = 50
    huber_k: float = 1.345
    pnp_max_reproj_frac: float = 0.01
    min_pnp_inliers: int = 20
    max_pnp_direction_deg: float = 30.0
    match_radius_px: float = 0.5
    dense_points: int = 3000
    opacity_min: float = 0.3
    odom_sigma_rel: float = 0.01
    odom_sigma_min_m: float = 0.001
    degraded_log_scale_sigma: float = 0.5
    degraded_covariance_factor: float = 100.0


@dataclasses.dataclass
class TrajectoryStep:
    """One pair placed in the world.

    T_world_from_cam0 / T_world_from_cam1: (4, 4) float64 keyframe poses in the world frame, as
      optimised when this pair was added (``Trajectory.poses()`` has the latest estimates).
    T_cam0_from_cam1: (4, 4) the pair's relative pose with ``scale`` applied.
    scale: factor applied to this pair's unit-baseline output (means, scales x s; covariances x s^2).
    scale_kind: METRIC (metres: configured baseline or odometry in this segment) or CHAINED.
    segment_metric: True when the segment's unit is metres.
    status: OK / DEGRADED / LOST.
    covariance: (6, 6) of T_cam0_from_cam1 (tx, ty, tz, rx, ry, rz), scaled, incl. scale uncertainty.
    covariance_world: (6, 6) marginal of T_world_from_cam1 from the pose graph (translation in world
      axes, rotation about world axes), plus LOST_POSE_VARIANCE after a segment break.
    scale_source: "metric", "pnp_sparse", "pnp_dense", "first", "none" (not carried) or "lost".
    """

    index: int
    stamp0_ns: int
    stamp1_ns: int
    T_world_from_cam0: np.ndarray
    T_world_from_cam1: np.ndarray
    T_cam0_from_cam1: np.ndarray
    scale: float
    scale_kind: ScaleKind
    status: PoseStatus
    covariance: np.ndarray
    covariance_world: np.ndarray
    segment: int
    segment_metric: bool
    scale_source: str
    message: str = ""
    pnp_inliers: int = 0


@dataclasses.dataclass
class _Placement:
    """PnP of the new kf1 against the previous pair's points."""

    T_cam1_from_prev0: np.ndarray  # (4, 4) trajectory scale
    cov_tangent: np.ndarray  # (6, 6) of T_prev0_from_cam1, GTSAM order (rotation first, right perturbation)
    inliers: int
    source: str


def _scale_cov(cov: np.ndarray, s: float) -> np.ndarray:
    S = np.diag([s, s, s, 1.0, 1.0, 1.0])
    return S @ cov @ S


def _view_means(recon: PairReconstruction, view: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(means (H*W, 3) in camera 0, opacities (H*W,)) of one view's per-pixel grid, or None."""
    H, W = recon.grid_hw
    g = recon.gaussians
    if g.num != 2 * H * W:
        return None
    sl = slice(view * H * W, (view + 1) * H * W)
    return g.means[sl].detach().cpu().double().numpy(), g.opacities[sl].detach().cpu().double().numpy()


def _pinhole(K: np.ndarray, width: float, height: float) -> dict:
    return {"model": "PINHOLE", "width": int(width), "height": int(height),
            "params": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]}


def _pnp(x2d: np.ndarray, X3d: np.ndarray, K: np.ndarray, width: float, cfg: TrajectoryConfig,
         source: str) -> _Placement | None:
    """PoseLib absolute pose (cam_from_world) + its covariance from the reprojection Jacobian."""
    ok = np.isfinite(x2d).all(1) & np.isfinite(X3d).all(1)
    x2d, X3d = x2d[ok], X3d[ok]
    if x2d.shape[0] < max(cfg.min_pnp_inliers, 4):
        return None
    thr = max(cfg.pnp_max_reproj_frac * width, 1.0)  # at least 1 px on tiny grids
    pose, info = poselib.estimate_absolute_pose(
        x2d, X3d, _pinhole(K, width, 2 * K[1, 2]), {"max_reproj_error": thr}, {"loss_scale": 0.5 * thr}
    )
    inl = np.asarray(info["inliers"], dtype=bool)
    if int(inl.sum()) < cfg.min_pnp_inliers:
        return None
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.asarray(pose.R), np.asarray(pose.t)
    # Covariance of the pose from the inliers' reprojection residuals (PoseLib returns none). Measured
    # T_prev0_from_cam1 = T^-1 with right perturbation xi = (w, v): points in the camera move by
    # X_c -> X_c + [X_c]x w - v; projection Jacobian f/z [[1, 0, -x/z], [0, 1, -y/z]].
    Xc = X3d[inl] @ T[:3, :3].T + T[:3, 3]
    z = Xc[:, 2]
    front = z > 1e-9
    Xc, z, x_obs = Xc[front], z[front], x2d[inl][front]
    n = Xc.shape[0]
    if n < cfg.min_pnp_inliers:
        return None
    proj = np.stack([K[0, 0] * Xc[:, 0] / z + K[0, 2], K[1, 1] * Xc[:, 1] / z + K[1, 2]], 1)
    r = (proj - x_obs).ravel()
    Jp = np.zeros((n, 2, 3))
    Jp[:, 0, 0] = K[0, 0] / z
    Jp[:, 0, 2] = -K[0, 0] * Xc[:, 0] / z**2
    Jp[:, 1, 1] = K[1, 1] / z
    Jp[:, 1, 2] = -K[1, 1] * Xc[:, 1] / z**2
    skew = np.zeros((n, 3, 3))
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -Xc[:, 2], Xc[:, 1], -Xc[:, 0]
    skew[:, 1, 0], skew[:, 2, 0], skew[:, 2, 1] = Xc[:, 2], -Xc[:, 1], Xc[:, 0]
    J = np.concatenate([Jp @ skew, -Jp], axis=2).reshape(2 * n, 6)
    sigma2 = max(float(r @ r) / max(2 * n - 6, 1), (0.1 * thr / 3.0) ** 2)  # floor: never infinitely sure
    try:
        cov = sigma2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return None
    return _Placement(T, 0.5 * (cov + cov.T), int(inl.sum()), source)


def _place_sparse(prev: PairReconstruction, prev_scale: float, cur: PairReconstruction, K1_px: np.ndarray,
                  cfg: TrajectoryConfig) -> _Placement | None:
    """Sparse PnP: previous pair's triangulated matches at the new pair's kf0 match pixels."""
    if prev.matches_px is None or prev.points_cam0 is None or cur.matches_px is None:
        return None
    pm, pX, cm = np.asarray(prev.matches_px, float), np.asarray(prev.points_cam0, float), np.asarray(cur.matches_px, float)
    good = np.isfinite(pX).all(1)
    if good.sum() < cfg.min_pnp_inliers or cm.shape[0] < cfg.min_pnp_inliers:
        return None
    tree = cKDTree(pm[good, 2:4])
    dist, idx = tree.query(cm[:, 0:2], k=1, distance_upper_bound=cfg.match_radius_px)
    hit = np.isfinite(dist)
    X = pX[good][idx[hit]] * prev_scale  # previous camera 0 (= keyframe k-2), trajectory scale
    return _pnp(cm[hit, 2:4], X, K1_px, 2 * K1_px[0, 2], cfg, "pnp_sparse")


def _place_dense(prev: PairReconstruction, prev_scale: float, cur: PairReconstruction,
                 cfg: TrajectoryConfig) -> _Placement | None:
    """Dense PnP: previous pair's view-1 Gaussians (shared keyframe) at a grid of the new pair's
    view-0 pixels, against those pixels' projections into the new kf1 through the new pair's pose."""
    a, b = _view_means(prev, 1), _view_means(cur, 0)
    if a is None or b is None:
        return None
    Hp, Wp = prev.grid_hw
    Hc, Wc = cur.grid_hw
    step = max(1, int(math.sqrt(Hc * Wc / max(cfg.dense_points, 1))))
    v, u = np.mgrid[step // 2:Hc:step, step // 2:Wc:step]
    u, v = u.ravel().astype(np.float64), v.ravel().astype(np.float64)
    # Same camera at two grid resolutions: previous view-1 grid pixel = K_prev1 K_cur0^-1 (u, v, 1).
    M = np.asarray(prev.K_grid, float)[1] @ np.linalg.inv(np.asarray(cur.K_grid, float)[0])
    up = np.rint(M[0, 0] * u + M[0, 1] * v + M[0, 2]).astype(np.int64)
    vp = np.rint(M[1, 0] * u + M[1, 1] * v + M[1, 2]).astype(np.int64)
    inside = (up >= 0) & (up < Wp) & (vp >= 0) & (vp < Hp)
    ic = (v.astype(np.int64) * Wc + u.astype(np.int64))[inside]
    ip = (vp * Wp + up)[inside]
    Xp, op = a[0][ip] * prev_scale, a[1][ip]  # previous camera 0 (= keyframe k-2), trajectory scale
    Xc, oc = b[0][ic], b[1][ic]  # new camera 0 (= the shared keyframe), unit baseline
    T10 = invert_T(np.asarray(cur.pose.T_cam0_from_cam1, float))
    X1 = Xc @ T10[:3, :3].T + T10[:3, 3]
    K1 = np.asarray(cur.K_grid, float)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        x1 = np.stack([K1[0, 0] * X1[:, 0] / X1[:, 2] + K1[0, 2], K1[1, 1] * X1[:, 1] / X1[:, 2] + K1[1, 2]], 1)
    Tp10 = invert_T(np.asarray(prev.pose.T_cam0_from_cam1, float))
    zp = (Xp @ Tp10[:3, :3].T)[:, 2] + Tp10[2, 3] * prev_scale  # depth in the shared keyframe
    ok = (op > cfg.opacity_min) & (oc > cfg.opacity_min) & (zp > 0) & (Xc[:, 2] > 0) & (X1[:, 2] > 0)
    return _pnp(x1[ok], Xp[ok], K1, float(Wc), cfg, "pnp_dense")


@dataclasses.dataclass
class _KeyframeRecord:
    stamp_ns: int
    graph: PoseGraph | None  # None: a LOST keyframe (pose of the last known keyframe, never optimised)
    key: int
    T_lost: np.ndarray | None = None


class Trajectory:
    """Accumulates PairReconstructions into keyframe poses (see module docstring)."""

    def __init__(self, metric_baseline_m: float | None = None, config: TrajectoryConfig | None = None):
        if metric_baseline_m is not None and not (math.isfinite(metric_baseline_m) and metric_baseline_m > 0):
            raise ValueError(f"metric_baseline_m must be a positive number, got {metric_baseline_m}")
        self.metric_baseline_m = metric_baseline_m
        self.config = config or TrajectoryConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next pair defines the world frame again."""
        self.steps: list[TrajectoryStep] = []
        self._records: list[_KeyframeRecord] = []
        self._graph: PoseGraph | None = None
        self._prev: PairReconstruction | None = None
        self._prev_step: TrajectoryStep | None = None
        self._prev_key: int = -1  # graph key of the previous pair's kf1
        self._segment = -1
        self._segment_metric = False
        self._last_T = np.eye(4)  # last known keyframe pose (anchor of a new segment)

    def add_pair(self, recon: PairReconstruction, odom_baseline_m: float | None = None,
                 K_px: tuple[np.ndarray, np.ndarray] | None = None) -> TrajectoryStep:
        """Place one pair; returns its TrajectoryStep (also appended to ``self.steps``).

        odom_baseline_m: distance travelled between the keyframe stamps (metres), if known.
        K_px: (K0, K1) (3, 3) input-image intrinsics of the keyframes (for the sparse PnP on
          ``matches_px``); None: only the dense lookup is available.
        """
        cfg = self.config
        prev, prev_step = self._prev, self._prev_step
        T01_unit = np.asarray(recon.pose.T_cam0_from_cam1, dtype=np.float64)
        t_norm = float(np.linalg.norm(T01_unit[:3, 3]))
        rigid = is_rigid(T01_unit, atol=1e-4)
        # A pure rotation (two_view's "rotation" model) is DEGRADED with t = 0: its rotation is known,
        # its translation is not (LOST_POSE_VARIANCE on t). It is placed, not dropped.
        rotation_only = rigid and t_norm < 1e-9 and recon.pose.status == PoseStatus.DEGRADED
        pose_lost = recon.pose.status == PoseStatus.LOST or not rigid or (t_norm < 1e-9 and not rotation_only)
        msgs: list[str] = []
        continues = (
            prev is not None and prev_step is not None and self._graph is not None
            and prev_step.status != PoseStatus.LOST and int(recon.stamp0_ns) == int(prev.stamp1_ns)
        )
        if pose_lost:
            return self._lost_step(recon, "pose lost: " + recon.pose.message, continues)
        if rotation_only:
            return self._rotation_step(recon, continues)

        k0 = self._prev_key if continues else self._start_segment(int(recon.stamp0_ns), msgs)
        graph = self._graph
        assert graph is not None

        # ---- scale ----
        status = PoseStatus(int(recon.pose.status))
        odom_ok = odom_baseline_m is not None and math.isfinite(odom_baseline_m) and odom_baseline_m > 0
        var_log_s = 0.0
        placement: _Placement | None = None
        if self.metric_baseline_m is not None:
            scale, source = self.metric_baseline_m / t_norm, "metric"
            self._segment_metric = True
        elif not continues:
            scale, source = (float(odom_baseline_m) / t_norm, "metric") if odom_ok else (1.0, "first")
            self._segment_metric = bool(odom_ok)
        else:
            s_prev = float(prev_step.scale)
            if K_px is not None:
                placement = _place_sparse(prev, s_prev, recon, np.asarray(K_px[1], float), cfg)
            if placement is None:
                placement = _place_dense(prev, s_prev, recon, cfg)
            scale, source, var_log_s = self._carried_scale(placement, prev_step, T01_unit, msgs)
            if source == "none":
                status = PoseStatus.DEGRADED

        # ---- relative pose, covariance, graph ----
        T01 = T01_unit.copy()
        T01[:3, 3] *= scale
        cov = _scale_cov(np.asarray(recon.pose.covariance, dtype=np.float64), scale)
        t = T01[:3, 3]
        cov[:3, :3] += (var_log_s + 1e-10) * np.outer(t, t)  # the scale's uncertainty along t
        if status == PoseStatus.DEGRADED and recon.pose.status != PoseStatus.DEGRADED and source != "none":
            cov = cov * cfg.degraded_covariance_factor
        T_w1_guess = graph.pose(k0) @ T01
        k1 = graph.add_keyframe(int(recon.stamp1_ns), T_w1_guess)
        graph.add_relative(k0, k1, T01, cov)
        if placement is not None and source != "none" and k0 >= 1:
            graph.add_relative(k0 - 1, k1, invert_T(placement.T_cam1_from_prev0), 2.0 * placement.cov_tangent,
                               tangent=True)
        if odom_ok and source != "metric":
            sigma = max(cfg.odom_sigma_rel * float(odom_baseline_m), cfg.odom_sigma_min_m)
            graph.add_distance(k0, k1, float(odom_baseline_m), sigma)
            self._segment_metric = True
        graph.optimise()

        T_w0, T_w1 = graph.pose(k0), graph.pose(k1)
        scale_opt = float(np.linalg.norm((invert_T(T_w0) @ T_w1)[:3, 3])) / t_norm
        if np.isfinite(scale_opt) and scale_opt > 0 and source not in ("metric", "first"):
            T01[:3, 3] = T01_unit[:3, 3] * scale_opt
            cov = _scale_cov(_scale_cov(cov, 1.0 / scale), scale_opt)
            scale = scale_opt
        return self._placed_step(recon, graph, k0, k1, T01, cov, scale, status, source, msgs,
                                 placement.inliers if placement is not None else 0)

    def _carried_scale(self, placement: _Placement | None, prev_step: TrajectoryStep, T01_unit: np.ndarray,
                       msgs: list[str]) -> tuple[float, str, float]:
        """(scale, source, variance of log scale) of the new pair from the PnP placement."""
        cfg = self.config
        fallback = (float(prev_step.scale), "none", cfg.degraded_log_scale_sigma**2)
        if placement is None:
            msgs.append("scale not carried: too few points shared with the previous pair")
            return fallback
        # k-1 -> k implied by the PnP: T_{k-1 from k} = T_{k-1 from k-2} T_{k-2 from k}
        T_prev_rel = np.asarray(prev_step.T_cam0_from_cam1, float)  # T_{k-2 from k-1}, trajectory scale
        T_km1_k = invert_T(T_prev_rel) @ invert_T(placement.T_cam1_from_prev0)
        t = T_km1_k[:3, 3]
        t_len = float(np.linalg.norm(t))
        angle = direction_angle_deg(t, T01_unit[:3, 3]) if t_len > 0 else 180.0
        if not angle <= cfg.max_pnp_direction_deg:
            msgs.append(f"scale not carried: PnP direction differs by {angle:.1f} deg from the pair's")
            return fallback
        # variance of |t| along its direction from the PnP's translation covariance (right perturbation
        # of T_{k-2 from k}: dt_{k-1,k} = R_{k-1 from k} v)
        u = t / t_len
        A = T_km1_k[:3, :3]
        var_len = float(u @ A @ placement.cov_tangent[3:, 3:] @ A.T @ u)
        return t_len / float(np.linalg.norm(T01_unit[:3, 3])), placement.source, var_len / t_len**2

    def _start_segment(self, stamp0_ns: int, msgs: list[str]) -> int:
        """A new segment's graph anchored at the last known pose; returns kf0's key."""
        self._segment += 1
        if self._segment > 0:
            msgs.append("new segment (gap or loss before this pair)")
        self._graph = PoseGraph(window=self.config.window, huber_k=self.config.huber_k)
        self._segment_metric = False
        k0 = self._graph.add_keyframe(int(stamp0_ns), self._last_T, np.eye(6) * 1e-12)
        self._records.append(_KeyframeRecord(int(stamp0_ns), self._graph, k0))
        return k0

    def _rotation_step(self, recon: PairReconstruction, continues: bool) -> TrajectoryStep:
        """A pure rotation: kf1 at kf0's centre turned by the pair's rotation, in the graph with the
        pair's covariance (translation LOST_POSE_VARIANCE: unconstrained), status DEGRADED. Nothing is
        triangulated, so the next pair's scale cannot be carried through it (that pair is DEGRADED with
        the last scale, see _carried_scale)."""
        msgs = ["rotation only: translation unknown"]
        k0 = self._prev_key if continues else self._start_segment(int(recon.stamp0_ns), msgs)
        graph = self._graph
        assert graph is not None
        T01 = np.asarray(recon.pose.T_cam0_from_cam1, dtype=np.float64).copy()
        cov = np.asarray(recon.pose.covariance, dtype=np.float64).copy()
        k1 = graph.add_keyframe(int(recon.stamp1_ns), graph.pose(k0) @ T01)
        graph.add_relative(k0, k1, T01, cov, robust=False)
        graph.optimise()
        scale = float(self._prev_step.scale) if (continues and self._prev_step is not None) else 1.0
        return self._placed_step(recon, graph, k0, k1, T01, cov, scale, PoseStatus.DEGRADED, "rotation", msgs)

    def _placed_step(self, recon: PairReconstruction, graph: PoseGraph, k0: int, k1: int, T01: np.ndarray,
                     cov: np.ndarray, scale: float, status: PoseStatus, source: str, msgs: list[str],
                     pnp_inliers: int = 0) -> TrajectoryStep:
        """The step of a pair placed in ``graph`` (keys k0 -> k1, optimised): its world poses and kf1's
        marginal covariance (plus LOST_POSE_VARIANCE after a segment break: the segment's offset is
        unknown); recorded as the chain's newest pair."""
        self._records.append(_KeyframeRecord(int(recon.stamp1_ns), graph, k1))
        T_w0, T_w1 = graph.pose(k0), graph.pose(k1)
        cov_w1 = graph.covariance(k1)
        if self._segment > 0:
            cov_w1 = cov_w1 + np.eye(6) * LOST_POSE_VARIANCE
        step = TrajectoryStep(
            index=len(self.steps), stamp0_ns=int(recon.stamp0_ns), stamp1_ns=int(recon.stamp1_ns),
            T_world_from_cam0=T_w0, T_world_from_cam1=T_w1, T_cam0_from_cam1=T01, scale=float(scale),
            scale_kind=ScaleKind.METRIC if self._segment_metric else ScaleKind.CHAINED,
            status=status, covariance=cov, covariance_world=cov_w1, segment=self._segment,
            segment_metric=self._segment_metric, scale_source=source, message="; ".join(msgs),
            pnp_inliers=pnp_inliers,
        )
        self.steps.append(step)
        self._prev, self._prev_step, self._prev_key = recon, step, k1
        self._last_T = T_w1
        return step

    def _lost_step(self, recon: PairReconstruction, message: str, continues: bool) -> TrajectoryStep:
        """A LOST step: no motion, 'do not use' covariances; the next pair starts a new segment."""
        T = self._last_T.copy()
        step = TrajectoryStep(
            index=len(self.steps), stamp0_ns=int(recon.stamp0_ns), stamp1_ns=int(recon.stamp1_ns),
            T_world_from_cam0=T, T_world_from_cam1=T.copy(), T_cam0_from_cam1=np.eye(4),
            scale=float(self._prev_step.scale) if (continues and self._prev_step is not None) else 1.0,
            scale_kind=ScaleKind.METRIC if self._segment_metric else ScaleKind.CHAINED,
            status=PoseStatus.LOST, covariance=np.eye(6) * LOST_POSE_VARIANCE,
            covariance_world=np.eye(6) * LOST_POSE_VARIANCE, segment=max(self._segment, 0),
            segment_metric=self._segment_metric, scale_source="lost", message=message,
        )
        self.steps.append(step)
        self._records.append(_KeyframeRecord(int(recon.stamp1_ns), None, -1, T.copy()))
        self._prev, self._prev_step = recon, step
        return step

    def poses(self, include_lost: bool = False) -> list[tuple[int, np.ndarray]]:
        """[(stamp_ns, T_world_from_cam)] of the keyframes in the order they came, at their latest
        optimised poses (a LOST pair's kf1, which has no pose of its own, only with ``include_lost``)."""
        out: list[tuple[int, np.ndarray]] = []
        for r in self._records:
            if r.graph is not None:
                out.append((r.stamp_ns, r.graph.pose(r.key)))
            elif include_lost:
                out.append((r.stamp_ns, r.T_lost.copy()))
        return out

    def to_tum(self, path: str | pathlib.Path) -> int:
        """Write the keyframe poses as TUM lines ``stamp_s tx ty tz qx qy qz qw`` (LOST steps skipped).
        Returns the number of lines written."""
        return write_tum(path, ((stamp_ns, *T_to_translation_quat_xyzw(T)) for stamp_ns, T in self.poses()))


def write_tum(path: str | pathlib.Path, poses: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> int:
    """Write ``(stamp_ns, t (3,), q_xyzw (4,))`` poses as TUM lines ``stamp_s tx ty tz qx qy qz qw``.

    Stamps are written exactly (``sec.nanosec``). Returns the number of lines written.
    """
    lines = [f"{format_stamp(ns)} " + " ".join(f"{v:.9f}" for v in (*t, *q)) + "\n" for ns, t, q in poses]
    pathlib.Path(path).write_text("".join(lines))
    return len(lines)
