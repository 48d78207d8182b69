"""Chain relative pair poses into camera poses over time, with one honest scale.

Every pair comes in its own unit-baseline scale. Consecutive pairs share a keyframe (pair k's kf1 is
pair k+1's kf0, same stamp), and both pairs predict that keyframe's geometry: pair k's view-1
Gaussians expressed in its camera 1, and pair k+1's view-0 Gaussians in its camera 0 — the same camera.
The robust median of their per-pixel depth ratios (when both grids are the same image grid, i.e. equal
``grid_hw`` and ``K_grid``) or the ratio of their median depths (otherwise) carries the scale from pair
k to pair k+1: s_{k+1} = s_k * median(z_k / z_{k+1}). The first pair of a segment defines the unit
(its camera baseline = 1): scale kind CHAINED.

Metric scale: when an odometry baseline is given for a pair (``odom_baseline_m``, the distance the
camera travelled between the two keyframe stamps) or a fixed ``metric_baseline_m`` is configured, the
pair's scale is baseline_m / |t_pair| and its kind is METRIC; pairs chained from a metric pair carry
metres too (with drift) and say CHAINED, with ``segment_metric = True``.

World frame = camera frame of the first keyframe of the first segment. A pair whose kf0 stamp is not
the previous pair's kf1 stamp, or which follows a LOST step, starts a new segment: its kf0 is placed at
the last known pose with a "do not use" world covariance (the motion across the gap is unknown) and its
scale restarts (unit baseline of that pair, unless metric).

Tracking loss — PnP LOST, a scale jump beyond ``max_scale_jump``, no shared geometry to chain the
scale — gives a LOST step: T_world_from_cam1 = T_world_from_cam0 (no motion) and covariances of
LOST_POSE_VARIANCE, never a confident pose. A spread-out depth-ratio distribution gives DEGRADED.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Iterable

import numpy as np

from noposplat_ros.transforms import T_to_translation_quat_xyzw, invert_T, is_rigid
from noposplat_ros.types import LOST_POSE_VARIANCE, PairReconstruction, PoseStatus, ScaleKind, format_stamp


@dataclasses.dataclass
class TrajectoryConfig:
    """max_scale_jump: allowed factor between consecutive pair scales (beyond = LOST).
    min_shared_px: minimum number of valid shared pixels for the per-pixel ratio.
    opacity_min: Gaussians below this opacity do not vote for the scale.
    degraded_log_spread: MAD of log depth ratios above this marks the scale DEGRADED.
    degraded_covariance_factor: covariance inflation of a DEGRADED scale."""

    max_scale_jump: float = 4.0
    min_shared_px: int = 64
    opacity_min: float = 0.3
    degraded_log_spread: float = 0.15
    degraded_covariance_factor: float = 100.0


@dataclasses.dataclass
class TrajectoryStep:
    """One pair placed in the world.

    T_world_from_cam0 / T_world_from_cam1: (4, 4) float64 keyframe poses in the world frame.
    T_cam0_from_cam1: (4, 4) the pair's relative pose with ``scale`` applied.
    scale: factor applied to this pair's unit-baseline output (means, scales x s; covariances x s^2).
    scale_kind: METRIC (measured for this pair) or CHAINED (carried from the segment's first pair).
    segment_metric: True when the segment's unit is metres (anchored by a metric pair).
    status: OK / DEGRADED / LOST.
    covariance: (6, 6) of T_cam0_from_cam1 (tx, ty, tz, rx, ry, rz), scaled, incl. scale uncertainty.
    covariance_world: (6, 6) of T_world_from_cam1, first-order propagation along the segment.
    scale_source: "metric", "pixel" (per-pixel ratios), "median" (depth statistics), "first" or "none".
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


def _view_split(recon: PairReconstruction) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(means0 (HW, 3), opac0 (HW,), means1 (HW, 3), opac1 (HW,)) in camera 0, or None if the
    Gaussians are not two per-pixel grids."""
    H, W = recon.grid_hw
    g = recon.gaussians
    if g.num != 2 * H * W:
        return None
    m = g.means.detach().cpu().double().numpy()
    o = g.opacities.detach().cpu().double().numpy()
    n = H * W
    return m[:n], o[:n], m[n:], o[n:]


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=np.float64)


def _scale_cov(cov: np.ndarray, s: float) -> np.ndarray:
    S = np.diag([s, s, s, 1.0, 1.0, 1.0])
    return S @ cov @ S


def _compose_cov(cov_w0: np.ndarray, T_w0: np.ndarray, T_01: np.ndarray, cov_01: np.ndarray) -> np.ndarray:
    """Covariance of T_w0 @ T_01 (translation in the parent frame, rotation left-perturbed about the
    parent's axes), first order."""
    R = T_w0[:3, :3]
    Rt01 = R @ T_01[:3, 3]
    J0 = np.eye(6)
    J0[:3, 3:] = -_skew(Rt01)
    J1 = np.zeros((6, 6))
    J1[:3, :3] = R
    J1[3:, 3:] = R
    out = J0 @ cov_w0 @ J0.T + J1 @ cov_01 @ J1.T
    return 0.5 * (out + out.T)


class Trajectory:
    """Accumulates PairReconstructions into world poses (see module docstring)."""

    def __init__(self, metric_baseline_m: float | None = None, config: TrajectoryConfig | None = None):
        if metric_baseline_m is not None and not (math.isfinite(metric_baseline_m) and metric_baseline_m > 0):
            raise ValueError(f"metric_baseline_m must be a positive number, got {metric_baseline_m}")
        self.metric_baseline_m = metric_baseline_m
        self.config = config or TrajectoryConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next pair defines the world frame again."""
        self.steps: list[TrajectoryStep] = []
        self._prev: PairReconstruction | None = None
        self._prev_step: TrajectoryStep | None = None
        self._segment = -1
        self._first_stamp_ns: int | None = None

    # ---- scale from the shared keyframe ----
    def _chain_ratio(self, prev: PairReconstruction, cur: PairReconstruction) -> tuple[float, float, str, int]:
        """(ratio z_prev / z_cur, robust spread of log ratios, source, n) for the shared keyframe."""
        cfg = self.config
        a = _view_split(prev)
        b = _view_split(cur)
        if a is None or b is None:
            return float("nan"), float("nan"), "none", 0
        T10 = invert_T(prev.pose.T_cam0_from_cam1)
        m1_cam1 = a[2] @ T10[:3, :3].T + T10[:3, 3]
        z_prev = m1_cam1[:, 2]
        z_cur = b[0][:, 2]
        ok_prev = np.isfinite(z_prev) & (z_prev > 0) & (a[3] > cfg.opacity_min)
        ok_cur = np.isfinite(z_cur) & (z_cur > 0) & (b[1] > cfg.opacity_min)
        same_grid = tuple(prev.grid_hw) == tuple(cur.grid_hw) and np.allclose(
            np.asarray(prev.K_grid)[1], np.asarray(cur.K_grid)[0], rtol=1e-6, atol=1e-6
        )
        if same_grid:
            ok = ok_prev & ok_cur
            n = int(ok.sum())
            if n >= cfg.min_shared_px:
                lr = np.log(z_prev[ok] / z_cur[ok])
                med = float(np.median(lr))
                mad = float(np.median(np.abs(lr - med))) * 1.4826
                return math.exp(med), mad, "pixel", n
        n = int(min(ok_prev.sum(), ok_cur.sum()))
        if n >= cfg.min_shared_px:
            lp, lc = np.log(z_prev[ok_prev]), np.log(z_cur[ok_cur])
            med_p, med_c = float(np.median(lp)), float(np.median(lc))
            mad = max(float(np.median(np.abs(lp - med_p))), float(np.median(np.abs(lc - med_c)))) * 1.4826
            return math.exp(med_p - med_c), mad, "median", n
        return float("nan"), float("nan"), "none", n

    def add_pair(self, recon: PairReconstruction, odom_baseline_m: float | None = None) -> TrajectoryStep:
        """Place one pair; returns its TrajectoryStep (also appended to ``self.steps``)."""
        cfg = self.config
        prev, prev_step = self._prev, self._prev_step
        T01_unit = np.asarray(recon.pose.T_cam0_from_cam1, dtype=np.float64)
        pose_lost = recon.pose.status == PoseStatus.LOST or not is_rigid(T01_unit, atol=1e-4)
        t_norm = float(np.linalg.norm(T01_unit[:3, 3]))
        msgs: list[str] = []

        continues = (
            prev is not None
            and prev_step is not None
            and prev_step.status != PoseStatus.LOST
            and int(recon.stamp0_ns) == int(prev.stamp1_ns)
        )
        new_segment = not continues
        if new_segment:
            self._segment += 1
            if prev_step is None:
                T_w0 = np.eye(4)
                cov_w0 = np.zeros((6, 6))
                self._first_stamp_ns = int(recon.stamp0_ns)
            else:
                T_w0 = prev_step.T_world_from_cam1.copy()
                cov_w0 = np.eye(6) * LOST_POSE_VARIANCE  # motion across the gap is unknown
                msgs.append("new segment (gap or loss before this pair)")
        else:
            T_w0 = prev_step.T_world_from_cam1.copy()
            cov_w0 = prev_step.covariance_world.copy()

        # ---- scale ----
        status = PoseStatus(int(recon.pose.status))
        metric_b = odom_baseline_m if odom_baseline_m is not None else self.metric_baseline_m
        metric_ok = metric_b is not None and math.isfinite(metric_b) and metric_b > 0 and t_norm > 1e-9
        log_spread = 0.0
        segment_metric = bool(prev_step.segment_metric) if (continues and prev_step is not None) else False
        if metric_ok:
            scale = float(metric_b) / t_norm
            kind, source = ScaleKind.METRIC, "metric"
            segment_metric = True if (new_segment or segment_metric) else False
            if not new_segment and not segment_metric:
                msgs.append("metric scale inside a chained segment: units of earlier poses differ")
        elif new_segment:
            scale, kind, source = 1.0, ScaleKind.CHAINED, "first"
        else:
            ratio, log_spread, source, n = self._chain_ratio(prev, recon)
            kind = ScaleKind.CHAINED
            if source == "none" or not math.isfinite(ratio) or ratio <= 0:
                scale = prev_step.scale
                status = PoseStatus.LOST
                msgs.append(f"no shared geometry to chain the scale ({n} px)")
            else:
                scale = prev_step.scale * ratio
                if prev_step.scale > 0:
                    jump = max(ratio, 1.0 / ratio)
                    if jump > cfg.max_scale_jump:
                        status = PoseStatus.LOST
                        msgs.append(f"scale jump x{jump:.2f} > {cfg.max_scale_jump}")
                if status == PoseStatus.OK and log_spread > cfg.degraded_log_spread:
                    status = PoseStatus.DEGRADED
                    msgs.append(f"depth-ratio spread {log_spread:.3f}")
                if source == "median":
                    log_spread = max(log_spread, 0.05)  # coarser: statistics, not correspondences
        if pose_lost:
            status = PoseStatus.LOST
            msgs.append("pose lost: " + recon.pose.message)

        # ---- pose and covariance ----
        T01 = T01_unit.copy()
        T01[:3, 3] *= scale
        cov = _scale_cov(np.asarray(recon.pose.covariance, dtype=np.float64), scale)
        if source in ("pixel", "median"):
            # Uncertainty of this pair's scale ratio (spread / sqrt(n) of the log ratios) along t.
            n_eff = max(n, 1)
            var_ls = (log_spread**2) / n_eff + 1e-8
            t = T01[:3, 3]
            cov[:3, :3] += var_ls * np.outer(t, t)
        if status == PoseStatus.DEGRADED and recon.pose.status != PoseStatus.DEGRADED:
            cov = cov * cfg.degraded_covariance_factor
        if status == PoseStatus.LOST:
            T01 = np.eye(4)
            cov = np.eye(6) * LOST_POSE_VARIANCE
            T_w1 = T_w0.copy()
            cov_w1 = np.eye(6) * LOST_POSE_VARIANCE
        else:
            T_w1 = T_w0 @ T01
            cov_w1 = _compose_cov(cov_w0, T_w0, T01, cov)
        step = TrajectoryStep(
            index=len(self.steps),
            stamp0_ns=int(recon.stamp0_ns),
            stamp1_ns=int(recon.stamp1_ns),
            T_world_from_cam0=T_w0,
            T_world_from_cam1=T_w1,
            T_cam0_from_cam1=T01,
            scale=float(scale),
            scale_kind=kind,
            status=status,
            covariance=cov,
            covariance_world=cov_w1,
            segment=self._segment,
            segment_metric=segment_metric,
            scale_source=source,
            message="; ".join(msgs),
        )
        self.steps.append(step)
        self._prev, self._prev_step = recon, step
        return step

    def poses(self, include_lost: bool = False) -> list[tuple[int, np.ndarray]]:
        """[(stamp_ns, T_world_from_cam)] of the keyframes: the first kf0, then each step's kf1."""
        out: list[tuple[int, np.ndarray]] = []
        if self._first_stamp_ns is not None:
            out.append((self._first_stamp_ns, np.eye(4)))
        for s in self.steps:
            if s.status == PoseStatus.LOST and not include_lost:
                continue
            out.append((s.stamp1_ns, s.T_world_from_cam1))
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
