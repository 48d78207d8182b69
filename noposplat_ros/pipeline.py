"""The shared pipeline core of both shells (live node, bag runner): keyframes -> predictor ->
trajectory/scale -> splat cloud. No rclpy, no message types.

    pipe = Pipeline(PipelineConfig(predictor="geometry"))
    for frame in frames:                      # types.Frame, undistorted RGB + K
        pair = pipe.offer(frame)              # cheap: keyframe test only
        if pair is not None:
            result = pipe.process(pair)       # expensive: predictor + trajectory + cloud

``offer`` and ``process`` are separate so that a shell can run the keyframe test on its input
thread and hand the (rare) pair to a worker thread. ``process`` never raises for a pair the
predictor cannot reconstruct: it returns a LOST result (identity pose, huge covariance, no splats
unless the predictor made some).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import numpy as np
import torch

from noposplat_ros.outputs import pointcloud
from noposplat_ros.keyframes.selector import KeyframeConfig, KeyframeSelector
from noposplat_ros.mapping.scene_map import MapConfig, SceneMap
from noposplat_ros.pose.trajectory import Trajectory, TrajectoryStep
from noposplat_ros.types import (
    LOST_POSE_VARIANCE,
    Frame,
    Gaussians,
    KeyframePair,
    PairReconstruction,
    PoseEstimate,
    PoseStatus,
    PredictionError,
    ScaleKind,
)

BACKENDS = ("geometry", "noposplat")


@dataclasses.dataclass
class PipelineConfig:
    """Everything the core needs; the node maps its parameters onto this, the bag runner its CLI.

    predictor: "geometry" (training-free, default) or "noposplat" (needs ``checkpoint``).
    predictor_options: extra keyword arguments for ``make_predictor`` (e.g. ``device``,
      ``precision``, ``model_config`` for noposplat; a config object for geometry).
    checkpoint: NoPoSplat checkpoint path; setting it with ``predictor="auto"`` selects noposplat.
    metric_baseline_m: known distance between the two cameras of every pair (metres), e.g. a stereo
      rig; turns unit-baseline output into metres. None: chained (or metric from odometry).
    refine: photometric pose refinement of the noposplat backend (None = the backend's default).
    include_sh: also put the higher-order SH coefficients into the splat cloud.
    min_opacity: splats below this opacity are dropped from the published cloud (0 keeps all).
    map: the scene map's settings (mapping.scene_map.MapConfig); map_enabled: fuse pairs into it.
    """

    keyframes: KeyframeConfig = dataclasses.field(default_factory=KeyframeConfig)
    predictor: str = "geometry"
    predictor_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint: str | None = None
    metric_baseline_m: float | None = None
    refine: bool | None = None
    include_sh: bool = False
    min_opacity: float = 0.0
    map: MapConfig = dataclasses.field(default_factory=MapConfig)
    map_enabled: bool = True

    def resolved_backend(self) -> str:
        """"auto" -> noposplat when a checkpoint is configured, else geometry."""
        name = self.predictor.strip().lower()
        if name == "auto":
            return "noposplat" if self.checkpoint else "geometry"
        if name not in BACKENDS:
            raise ValueError(f"unknown predictor backend {self.predictor!r}; expected one of {BACKENDS} or 'auto'")
        return name

    def validate(self) -> None:
        """Raises ValueError with a clear message for an inconsistent configuration."""
        backend = self.resolved_backend()
        if backend == "noposplat" and not (self.checkpoint or self.predictor_options.get("checkpoint")):
            raise ValueError("predictor 'noposplat' needs a checkpoint (parameter/option 'checkpoint')")
        if self.metric_baseline_m is not None and not (np.isfinite(self.metric_baseline_m) and self.metric_baseline_m > 0):
            raise ValueError(f"metric_baseline_m must be a positive number of metres, got {self.metric_baseline_m}")
        if not 0.0 <= self.min_opacity < 1.0:
            raise ValueError(f"min_opacity must be in [0, 1), got {self.min_opacity}")
        self.map.validate()

    def predictor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``make_predictor(self.resolved_backend(), **kwargs)``."""
        kwargs = dict(self.predictor_options)
        if self.resolved_backend() == "noposplat":
            if self.checkpoint:
                kwargs.setdefault("checkpoint", self.checkpoint)
            if self.refine is not None:
                kwargs.setdefault("refine", self.refine)
        return kwargs


@dataclasses.dataclass
class PairResult:
    """The output of one keyframe pair, in the scale of the trajectory step.

    status: pose quality after the trajectory's checks (LOST: the predictor failed, or the pose or
      the scale could not be trusted; then the pose is identity with LOST_POSE_VARIANCE).
    T_cam0_from_cam1: (4, 4) float64 relative pose, translation in ``scale_kind`` units.
    covariance: (6, 6) float64 over (tx, ty, tz, rx, ry, rz) in camera-0 axes, same units.
    T_world_from_cam0, T_world_from_cam1: (4, 4) float64 poses in the trajectory's world frame
      (camera 0 of the first pair since start/reset; OpenCV optical axes).
    covariance_world: (6, 6) of T_world_from_cam1 (translation in world axes, rotation about world
      axes), accumulated along the trajectory segment; None = unknown (outputs then use
      ``covariance`` rotated into world axes).
    gaussians: splats in camera 0's optical frame, scaled (None when the predictor made none). A LOST
      pair keeps the predictor's own units (scale 1, ``scale_kind`` unit_baseline).
    cloud: structured array, splat PointCloud2 schema v1 (``pointcloud.splat_fields()``), (N,).
    scale_factor: factor applied to the predictor's unit-baseline lengths.
    segment_metric: the trajectory segment is in metres (a metric pair anchored it), even when this
      pair's scale is chained from it.
    timings_s: per-stage wall times ("predict", "trajectory", "cloud", "process", plus the
      predictor's own stages).
    """

    index: int
    stamp0_ns: int
    stamp1_ns: int
    frame_id: str
    status: PoseStatus
    scale_kind: ScaleKind
    scale_factor: float
    backend: str
    T_cam0_from_cam1: np.ndarray
    covariance: np.ndarray
    T_world_from_cam0: np.ndarray
    T_world_from_cam1: np.ndarray
    gaussians: Gaussians | None
    cloud: np.ndarray
    covariance_world: np.ndarray | None = None
    segment_metric: bool = False
    num_inliers: int = 0
    residual_px: float = float("nan")
    message: str = ""
    recon: PairReconstruction | None = None
    step: TrajectoryStep | None = None
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != PoseStatus.LOST

    @property
    def num_splats(self) -> int:
        return int(self.cloud.shape[0])


@dataclasses.dataclass
class PipelineStats:
    frames_offered: int = 0
    pairs: int = 0
    pairs_ok: int = 0
    pairs_degraded: int = 0
    pairs_lost: int = 0
    last_offer_s: float = 0.0
    last_timings_s: dict[str, float] = dataclasses.field(default_factory=dict)
    last_message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _empty_gaussians() -> Gaussians:
    z = torch.zeros
    return Gaussians(z(0, 3), z(0, 3), z(0, 4), z(0), z(0, 3, 1), z(0, 3, 3))


class Pipeline:
    """Keyframe selection, prediction, scale/trajectory and the splat cloud, for one camera.

    Thread-safety: ``offer`` may run on one thread while ``process`` runs on another (the node's
    executor and worker); ``reset`` is safe from either.
    """

    def __init__(self, cfg: PipelineConfig | None = None, predictor: Any = None) -> None:
        self.cfg = cfg or PipelineConfig()
        self.cfg.validate()
        self.backend = self.cfg.resolved_backend()
        if predictor is None:
            from noposplat_ros.predictors import make_predictor  # heavy import, only when needed

            predictor = make_predictor(self.backend, **self.cfg.predictor_kwargs())
        self.predictor = predictor
        self.selector = KeyframeSelector(self.cfg.keyframes)
        self.trajectory = Trajectory(metric_baseline_m=self.cfg.metric_baseline_m)
        self.stats = PipelineStats()
        self.scene_map = SceneMap(self.cfg.map)
        self._lock = threading.Lock()  # guards trajectory + stats between worker and resets

    # -- input thread ---------------------------------------------------------------------------
    def offer(self, frame: Frame) -> KeyframePair | None:
        """Keyframe test on one frame (cheap). Returns a pair when ``frame`` became a keyframe."""
        t0 = time.perf_counter()
        pair = self.selector.offer(frame)
        self.stats.frames_offered += 1
        self.stats.last_offer_s = time.perf_counter() - t0
        return pair

    # -- worker thread --------------------------------------------------------------------------
    def process(self, pair: KeyframePair, odom_baseline_m: float | None = None) -> PairResult:
        """Reconstruct one pair. Never raises for predictor failures: those give a LOST result.

        odom_baseline_m: distance between the two keyframes' cameras measured by the robot's
          odometry (metres), if known: makes this pair metric.
        """
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            recon = self.predictor.predict(pair)
        except PredictionError as exc:
            recon = self._lost_recon(pair, f"prediction failed: {exc}")
        timings["predict"] = time.perf_counter() - t0
        for k, v in (recon.timings_s or {}).items():
            timings.setdefault(f"predict.{k}", float(v))

        t0 = time.perf_counter()
        with self._lock:
            step = self.trajectory.add_pair(recon, odom_baseline_m=odom_baseline_m, K_px=(pair.kf0.K, pair.kf1.K))
        timings["trajectory"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        status = PoseStatus(int(step.status))
        if status == PoseStatus.LOST:
            # never a confident pose; the splats (if the predictor made any) stay in its own units
            s, scale_kind = 1.0, ScaleKind(recon.scale_kind)
            T_rel, covariance = np.eye(4), np.eye(6) * LOST_POSE_VARIANCE
            covariance_world = np.eye(6) * LOST_POSE_VARIANCE
        else:
            s, scale_kind = float(step.scale), ScaleKind(step.scale_kind)
            T_rel = np.asarray(step.T_cam0_from_cam1, dtype=np.float64)
            covariance = np.asarray(step.covariance, dtype=np.float64)
            covariance_world = np.asarray(step.covariance_world, dtype=np.float64)
        gaussians = None
        if recon.gaussians.num > 0:
            gaussians = recon.gaussians.scaled(s) if s != 1.0 else recon.gaussians
            if self.cfg.min_opacity > 0:
                gaussians = gaussians.subset(gaussians.opacities >= self.cfg.min_opacity)
        cloud = pointcloud.gaussians_to_structured(gaussians if gaussians is not None else _empty_gaussians(),
                                                   include_sh=self.cfg.include_sh)
        timings["cloud"] = time.perf_counter() - t0
        if self.cfg.map_enabled and status != PoseStatus.LOST and gaussians is not None and gaussians.num:
            t0 = time.perf_counter()
            self._fuse_into_map(gaussians, recon, step)
            timings["map"] = time.perf_counter() - t0
        timings["process"] = time.perf_counter() - t_start

        result = PairResult(
            index=pair.index,
            stamp0_ns=int(pair.kf0.stamp_ns),
            stamp1_ns=int(pair.kf1.stamp_ns),
            frame_id=pair.kf0.frame_id,
            status=status,
            scale_kind=scale_kind,
            scale_factor=s,
            backend=recon.backend or self.backend,
            T_cam0_from_cam1=T_rel,
            covariance=covariance,
            T_world_from_cam0=np.asarray(step.T_world_from_cam0, dtype=np.float64),
            T_world_from_cam1=np.asarray(step.T_world_from_cam1, dtype=np.float64),
            covariance_world=covariance_world,
            segment_metric=bool(step.segment_metric),
            gaussians=gaussians,
            cloud=cloud,
            num_inliers=int(recon.pose.num_inliers),
            residual_px=float(recon.pose.residual_px),
            message="; ".join(m for m in (recon.pose.message, step.message) if m),
            recon=recon,
            step=step,
            timings_s=timings,
        )
        with self._lock:
            st = self.stats
            st.pairs += 1
            st.pairs_ok += status == PoseStatus.OK
            st.pairs_degraded += status == PoseStatus.DEGRADED
            st.pairs_lost += status == PoseStatus.LOST
            st.last_timings_s = dict(timings)
            st.last_message = result.message
        return result

    def _fuse_into_map(self, gaussians: Gaussians, recon: PairReconstruction, step: TrajectoryStep) -> None:
        """Current keyframe poses first (a re-optimised trajectory moves the map), then the pair in
        its keyframe 0's frame at its step's pose and segment."""
        with self._lock:
            poses = self.trajectory.poses()
        self.scene_map.update_poses(poses)
        self.scene_map.insert(
            gaussians, np.asarray(recon.K_grid[0]), tuple(recon.grid_hw), int(step.stamp0_ns),
            np.asarray(step.T_world_from_cam0, dtype=np.float64), segment=int(step.segment),
            pose_covariance=np.asarray(step.covariance, dtype=np.float64))

    def _lost_recon(self, pair: KeyframePair, message: str) -> PairReconstruction:
        H, W = pair.kf0.height, pair.kf0.width
        return PairReconstruction(
            gaussians=_empty_gaussians(),
            pose=PoseEstimate.lost(message),
            scale_kind=ScaleKind.UNIT_BASELINE,
            backend=self.backend,
            stamp0_ns=int(pair.kf0.stamp_ns),
            stamp1_ns=int(pair.kf1.stamp_ns),
            frame_id=pair.kf0.frame_id,
            grid_hw=(H, W),
            K_grid=np.stack([pair.kf0.K, pair.kf1.K]).astype(np.float64),
        )

    # -- control --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget keyframes and the trajectory (the next frame starts a new world frame)."""
        with self._lock:
            self.selector.reset()
            self.trajectory.reset()
        self.scene_map.reset()

    def close(self) -> None:
        """Free the predictor's resources (GPU memory)."""
        close = getattr(self.predictor, "close", None)
        if callable(close):
            close()
        self.predictor = None
