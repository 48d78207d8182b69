"""Core data types shared by every stage of the pipeline (no rclpy, no I/O).

Conventions (see README "Frames and units"):
- Camera frames are OpenCV/ROS optical: +x right, +y down, +z forward.
- ``T_a_from_b`` is a (4, 4) float64 rigid transform mapping points in frame b to frame a.
- Quaternions are (x, y, z, w) wherever the name says ``xyzw``.
- Time is integer nanoseconds.
- A pair's output lives in camera 0's optical frame, stamped with keyframe 0's stamp.
"""
from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np
import torch


class ScaleKind(str, enum.Enum):
    """Which units a translation / splat position carries."""

    UNIT_BASELINE = "unit_baseline"  # distance between the pair's two cameras is 1
    CHAINED = "chained"  # one common, unknown scale over a trajectory
    METRIC = "metric"  # metres


class PoseStatus(enum.IntEnum):
    """Quality flag of a relative pose; values match noposplat_msgs/SplatPair STATUS_*."""

    OK = 0
    DEGRADED = 1  # few inliers or large residual: usable, covariance inflated
    LOST = 2  # failed: identity transform with a huge covariance, never a confident pose


# Covariance diagonal published for a failed pose: "do not use" for any consumer.
LOST_POSE_VARIANCE = 1.0e6


@dataclasses.dataclass
class Frame:
    """One undistorted camera image with its pinhole intrinsics.

    rgb: (H, W, 3) uint8, RGB order, C-contiguous.
    K: (3, 3) float64 pixel intrinsics of ``rgb`` (after undistortion, binning and ROI).
    """

    rgb: np.ndarray
    K: np.ndarray
    stamp_ns: int
    frame_id: str

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


@dataclasses.dataclass
class KeyframePair:
    """Two consecutive keyframes; kf0 defines the output frame."""

    kf0: Frame
    kf1: Frame
    index: int = 0  # sequence number of the pair since start/reset


NS_PER_S = 1_000_000_000


def split_stamp_ns(stamp_ns: int) -> tuple[int, int]:
    """Stamp in int nanoseconds -> (sec, nanosec), as builtin_interfaces/Time holds it."""
    return divmod(int(stamp_ns), NS_PER_S)


def format_stamp(stamp_ns: int) -> str:
    """Stamp in int nanoseconds -> ``"<sec>.<nanosec, 9 digits>"`` (seconds, exact)."""
    sec, nsec = split_stamp_ns(stamp_ns)
    return f"{sec}.{nsec:09d}"


# Degree-0 real SH basis value Y_0^0. With the 3DGS / NoPoSplat colour convention
# (colour = SH(dir) + 0.5), the view-independent colour of a Gaussian is SH_C0 * dc + 0.5.
SH_C0 = 0.28209479177387814


def rgb_to_sh_dc(rgb01):
    """(..., 3) colour in [0, 1] (tensor or array) -> the degree-0 SH coefficient that renders it."""
    return (rgb01 - 0.5) / SH_C0


def sh_dc_to_rgb(dc):
    """(..., 3) degree-0 SH coefficient (tensor or array) -> colour (unclamped) it renders."""
    return SH_C0 * dc + 0.5


def _rotmat_entries(q_xyzw: torch.Tensor, dim: int) -> list[torch.Tensor]:
    """The 9 entries (row-major) of the rotations of quaternions with (x, y, z, w) along ``dim``."""
    x, y, z, w = q_xyzw.unbind(dim)
    t = 2.0 / ((q_xyzw * q_xyzw).sum(dim) + 1e-8)
    return [
        1 - t * (y * y + z * z), t * (x * y - z * w), t * (x * z + y * w),
        t * (x * y + z * w), 1 - t * (x * x + z * z), t * (y * z - x * w),
        t * (x * z - y * w), t * (y * z + x * w), 1 - t * (x * x + y * y),
    ]


def quat_xyzw_to_rotmat(q_xyzw: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (x, y, z, w), any norm -> (..., 3, 3) rotations.

    The scale-tolerant form of the official NoPoSplat adapter, t = 2 / (|q|^2 + 1e-8): it equals the
    rotation of q / |q| (a zero quaternion gives the identity), so it also serves unnormalised input.
    """
    return torch.stack(_rotmat_entries(q_xyzw, -1), dim=-1).reshape(q_xyzw.shape[:-1] + (3, 3))


def covariances_from_scales_rotations(scales: torch.Tensor, rotations_xyzw: torch.Tensor) -> torch.Tensor:
    """(..., 3) standard deviations + (..., 4) quaternions xyzw -> (..., 3, 3) = R diag(s)^2 R^T."""
    lead = torch.broadcast_shapes(scales.shape[:-1], rotations_xyzw.shape[:-1])
    q = rotations_xyzw.expand(lead + (4,)).reshape(-1, 4).T.contiguous()
    s = scales.expand(lead + (3,)).reshape(-1, 3).T.contiguous()
    return covariances_from_columns(s, q).reshape(lead + (3, 3))


def covariances_from_columns(scales: torch.Tensor, rotations_xyzw: torch.Tensor) -> torch.Tensor:
    """``covariances_from_scales_rotations`` on column-major input: scales (3, N), quaternions (4, N)
    (x, y, z, w rows) -> (N, 3, 3).

    Entry by entry over contiguous component rows (A = R diag(s), cov_ij = sum_k A_ik A_jk, six
    distinct entries): a batched (N, 3, 3) matmul and strided quaternion components are several times
    slower on the CPU (the scene map builds 1M of these per publish)."""
    R = _rotmat_entries(rotations_xyzw, 0)
    A = [R[3 * i + k].mul_(scales[k]) for i in range(3) for k in range(3)]  # R's entries are fresh tensors

    def entry(i: int, j: int) -> torch.Tensor:
        c = A[3 * i] * A[3 * j]
        return c.addcmul_(A[3 * i + 1], A[3 * j + 1]).addcmul_(A[3 * i + 2], A[3 * j + 2])

    c00, c01, c02, c11, c12, c22 = entry(0, 0), entry(0, 1), entry(0, 2), entry(1, 1), entry(1, 2), entry(2, 2)
    return torch.stack([c00, c01, c02, c01, c11, c12, c02, c12, c22], dim=-1).reshape(-1, 3, 3)


@dataclasses.dataclass
class Gaussians:
    """3D Gaussians of one reconstruction, float32 torch tensors on one device.

    means: (N, 3) centres.
    scales: (N, 3) standard deviations along the local axes.
    rotations_xyzw: (N, 4) unit quaternions, (x, y, z, w).
    opacities: (N,) in (0, 1).
    harmonics: (N, 3, (sh_degree + 1) ** 2) SH coefficients per colour channel (RGB), colour-major.
      Convention: rendered colour = SH(dir) + 0.5, clamped at 0 (NoPoSplat / 3DGS).
    covariances: (N, 3, 3) = R diag(scales)^2 R^T.
    """

    means: torch.Tensor
    scales: torch.Tensor
    rotations_xyzw: torch.Tensor
    opacities: torch.Tensor
    harmonics: torch.Tensor
    covariances: torch.Tensor

    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.harmonics.shape[-1]))) - 1

    def to(self, device: torch.device | str) -> "Gaussians":
        return Gaussians(*(t.to(device) for t in dataclasses.astuple(self)))

    def subset(self, index: torch.Tensor) -> "Gaussians":
        """Select Gaussians by boolean mask (N,) or integer index (M,)."""
        return Gaussians(*(t[index] for t in dataclasses.astuple(self)))

    def scaled(self, s: float) -> "Gaussians":
        """Multiply all lengths by ``s`` (means, scales; covariances by s^2)."""
        return dataclasses.replace(
            self, means=self.means * s, scales=self.scales * s, covariances=self.covariances * (s * s)
        )

    @staticmethod
    def concat(parts: "list[Gaussians]") -> "Gaussians":
        fields = [f.name for f in dataclasses.fields(Gaussians)]
        return Gaussians(**{f: torch.cat([getattr(p, f) for p in parts], 0) for f in fields})


@dataclasses.dataclass
class PoseEstimate:
    """Relative pose of camera 1 in camera 0's frame, with its quality.

    T_cam0_from_cam1: (4, 4) float64.
    covariance: (6, 6) float64 over (tx, ty, tz, rx, ry, rz), rotation as a small-angle vector in
      radians about camera 0's axes, translation in the pose's scale units.
    """

    T_cam0_from_cam1: np.ndarray
    covariance: np.ndarray
    status: PoseStatus
    num_inliers: int = 0
    residual_px: float = float("nan")
    message: str = ""

    @staticmethod
    def lost(message: str) -> "PoseEstimate":
        return PoseEstimate(
            T_cam0_from_cam1=np.eye(4),
            covariance=np.eye(6) * LOST_POSE_VARIANCE,
            status=PoseStatus.LOST,
            message=message,
        )


@dataclasses.dataclass
class PairReconstruction:
    """What a predictor returns for a keyframe pair.

    gaussians: both views' Gaussians in camera 0's optical frame, view 0 first, each view row-major
      over ``grid_hw``; units per ``scale_kind`` (unit_baseline from a predictor).
    grid_hw: (H, W) of each view's per-pixel Gaussian grid (the network resolution for noposplat).
    K_grid: (2, 3, 3) float64 pixel intrinsics of each view at ``grid_hw``.
    matches_px: optional (M, 4) float64 inlier matches [u0, v0, u1, v1] of the pose, in kf0 / kf1
      input-image pixels (the pose's own evidence; None where the backend has none).
    points_cam0: optional (M, 3) float64 points of those matches triangulated in camera 0's frame in
      ``scale_kind`` units (unit baseline from a predictor); NaN rows where not triangulable
      (too little parallax, behind a camera). Same rows as ``matches_px``.
    """

    gaussians: Gaussians
    pose: PoseEstimate
    scale_kind: ScaleKind
    backend: str
    stamp0_ns: int
    stamp1_ns: int
    frame_id: str
    grid_hw: tuple[int, int]
    K_grid: np.ndarray
    timings_s: dict[str, float] = dataclasses.field(default_factory=dict)
    matches_px: np.ndarray | None = None
    points_cam0: np.ndarray | None = None


class PredictionError(RuntimeError):
    """A predictor could not reconstruct a pair (degenerate input, no parallax, ...)."""
