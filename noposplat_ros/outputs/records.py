"""Message-agnostic output records of one ``PairResult``.

Both shells fill these into their own message classes (rclpy messages in the node, rosbags
dataclasses in the bag writer), so frames, stamps, covariance order and the cloud layout are
decided once, here. Every record carries a keyframe's stamp, never the wall clock:
- the cloud and the SplatPair: keyframe 0's stamp, frame = camera 0's optical frame;
- odometry and tf: the pose of the *current* camera (keyframe 1), so keyframe 1's stamp; the very
  first pair after start/reset also gets the transform at keyframe 0's stamp, so a viewer can place
  the first cloud.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from noposplat_ros.outputs import pointcloud
from noposplat_ros.pipeline import PairResult
from noposplat_ros.transforms import T_to_translation_quat_xyzw, invert_T
from noposplat_ros.types import LOST_POSE_VARIANCE, PoseStatus, ScaleKind

# noposplat_msgs/SplatPair constants
SCALE_KIND_CODES = {ScaleKind.UNIT_BASELINE: 0, ScaleKind.CHAINED: 1, ScaleKind.METRIC: 2}


@dataclasses.dataclass
class HeaderRecord:
    stamp_ns: int
    frame_id: str


@dataclasses.dataclass
class PointFieldRecord:
    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclasses.dataclass
class CloudRecord:
    """sensor_msgs/PointCloud2 content (unorganised: height 1, little-endian).

    data: (point_step * width,) uint8, the structured array's bytes (a view, no copy).
    """

    header: HeaderRecord
    fields: list[PointFieldRecord]
    point_step: int
    width: int
    data: np.ndarray
    height: int = 1
    is_bigendian: bool = False
    is_dense: bool = True

    @property
    def row_step(self) -> int:
        return self.point_step * self.width


@dataclasses.dataclass
class TransformRecord:
    """geometry_msgs/TransformStamped: pose of ``child_frame_id`` in ``header.frame_id``."""

    header: HeaderRecord
    child_frame_id: str
    translation: np.ndarray  # (3,)
    rotation_xyzw: np.ndarray  # (4,)


@dataclasses.dataclass
class OdometryRecord:
    """nav_msgs/Odometry: pose of ``child_frame_id`` in ``header.frame_id`` (odom), twist zero.

    pose_covariance: (36,) row-major over (x, y, z, rot_x, rot_y, rot_z) in the odom frame's axes,
      accumulated along the trajectory (not a per-pair increment).
    twist_covariance: (36,) -1 in [0] ("not estimated", as in REP 105 consumers' convention for
      unknown fields) unless filled.
    """

    header: HeaderRecord
    child_frame_id: str
    position: np.ndarray  # (3,)
    orientation_xyzw: np.ndarray  # (4,)
    pose_covariance: np.ndarray  # (36,)
    twist_covariance: np.ndarray  # (36,)


@dataclasses.dataclass
class SplatPairRecord:
    """noposplat_msgs/SplatPair."""

    header: HeaderRecord
    stamp0_ns: int
    stamp1_ns: int
    splats: CloudRecord
    schema_version: int
    translation: np.ndarray  # (3,) of T_cam0_from_cam1
    rotation_xyzw: np.ndarray  # (4,)
    covariance: np.ndarray  # (36,)
    scale_kind: int
    status: int
    backend: str
    num_inliers: int
    residual_px: float


@dataclasses.dataclass
class PairOutputs:
    cloud: CloudRecord
    splat_pair: SplatPairRecord
    odometry: OdometryRecord | None  # None when the pose is LOST (never publish a confident pose)
    transforms: list[TransformRecord]  # empty when LOST or tf is off


@dataclasses.dataclass
class OutputFrames:
    """Frame names and the static camera mount.

    odom_frame: parent of the published tf edge / odometry.
    base_frame: child; "" = the camera's optical frame (``PairResult.frame_id``).
    T_base_from_cam: (4, 4) static extrinsic (camera optical frame in base_frame), from /tf_static;
      None = identity (base_frame is the camera frame).
    publish_tf: False -> no TransformRecords (odometry is still produced).
    """

    odom_frame: str = "odom"
    base_frame: str = ""
    T_base_from_cam: np.ndarray | None = None
    publish_tf: bool = True


def cloud_record(cloud: np.ndarray, stamp_ns: int, frame_id: str) -> CloudRecord:
    """Structured splat array (N,) -> CloudRecord (bytes are a view on ``cloud``)."""
    arr = np.ascontiguousarray(cloud)
    fields = fields_from_dtype(arr.dtype)
    return CloudRecord(
        header=HeaderRecord(int(stamp_ns), frame_id),
        fields=fields,
        point_step=int(arr.dtype.itemsize),
        width=int(arr.shape[0]),
        data=arr.reshape(-1).view(np.uint8),
    )


# sensor_msgs/PointField datatype codes by (numpy kind, itemsize)
_POINTFIELD_CODES = {("i", 1): 1, ("u", 1): 2, ("i", 2): 3, ("u", 2): 4, ("i", 4): 5, ("u", 4): 6, ("f", 4): 7, ("f", 8): 8}


def fields_from_dtype(dtype: np.dtype) -> list[PointFieldRecord]:
    """PointFields of a structured dtype (the array is the wire layout: offsets and itemsize)."""
    out = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        base = sub.base
        if base.byteorder == ">":
            raise ValueError(f"field {name!r} is big-endian; PointCloud2 here is little-endian")
        count = int(np.prod(sub.shape)) if sub.shape else 1
        out.append(PointFieldRecord(name, int(offset), _POINTFIELD_CODES[(base.kind, base.itemsize)], count))
    return out


def cam_pose_in_odom(T_world_from_cam: np.ndarray, frames: OutputFrames) -> np.ndarray:
    """Pose of base_frame in odom_frame: T_odom_from_base.

    The trajectory's world frame is camera 0 of the first pair; odom is the base frame at that
    moment, so T_odom_from_base = T_base_from_cam @ T_world_from_cam @ T_cam_from_base.
    """
    if frames.T_base_from_cam is None:
        return np.asarray(T_world_from_cam, dtype=np.float64)
    T_bc = np.asarray(frames.T_base_from_cam, dtype=np.float64)
    return T_bc @ np.asarray(T_world_from_cam, dtype=np.float64) @ invert_T(T_bc)


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def odometry_covariance(result: PairResult, frames: OutputFrames) -> np.ndarray:
    """(36,) covariance of the published pose T_odom_from_base (REP 103 order, odom axes).

    The trajectory's ``covariance_world`` is over (translation in world axes, rotation about world
    axes). With a base extrinsic T_bc (T_odom_from_base = T_bc T_wc T_cb), first order:
    d_trans = R_bc d_t - R_bc [R_wc t_cb]x d_rot and d_rot_odom = R_bc d_rot.
    """
    if result.status == PoseStatus.LOST:
        return (np.eye(6) * LOST_POSE_VARIANCE).reshape(36)
    if result.covariance_world is not None:
        cov = np.asarray(result.covariance_world, dtype=np.float64)
    else:  # only the pair's own covariance is known: rotate it from camera-0 into world axes
        R0 = np.asarray(result.T_world_from_cam0, dtype=np.float64)[:3, :3]
        J0 = np.zeros((6, 6))
        J0[:3, :3] = J0[3:, 3:] = R0
        cov = J0 @ np.asarray(result.covariance, dtype=np.float64) @ J0.T
    if frames.T_base_from_cam is not None:
        T_bc = np.asarray(frames.T_base_from_cam, dtype=np.float64)
        R_bc, t_cb = T_bc[:3, :3], invert_T(T_bc)[:3, 3]
        R_wc = np.asarray(result.T_world_from_cam1, dtype=np.float64)[:3, :3]
        J = np.zeros((6, 6))
        J[:3, :3] = R_bc
        J[:3, 3:] = -R_bc @ _skew(R_wc @ t_cb)
        J[3:, 3:] = R_bc
        cov = J @ cov @ J.T
    return (0.5 * (cov + cov.T)).reshape(36)


def build_outputs(result: PairResult, frames: OutputFrames | None = None, *, first_pair: bool = False) -> PairOutputs:
    """All output records for one pair.

    first_pair: also emit the transform at keyframe 0's stamp (start of a trajectory or segment;
      the live node always asks for it and drops repeats of an already published stamp).
    """
    frames = frames or OutputFrames()
    cam_frame = result.frame_id
    child = frames.base_frame or cam_frame
    cloud = cloud_record(result.cloud, result.stamp0_ns, cam_frame)
    t_rel, q_rel = T_to_translation_quat_xyzw(result.T_cam0_from_cam1)
    splat_pair = SplatPairRecord(
        header=HeaderRecord(result.stamp0_ns, cam_frame),
        stamp0_ns=result.stamp0_ns,
        stamp1_ns=result.stamp1_ns,
        splats=cloud,
        schema_version=int(pointcloud.SPLAT_SCHEMA_VERSION),
        translation=t_rel,
        rotation_xyzw=q_rel,
        covariance=np.asarray(result.covariance, dtype=np.float64).reshape(36),
        scale_kind=SCALE_KIND_CODES[ScaleKind(result.scale_kind)],
        status=int(result.status),
        backend=result.backend,
        num_inliers=int(result.num_inliers),
        residual_px=float(result.residual_px),
    )
    if result.status == PoseStatus.LOST:
        return PairOutputs(cloud, splat_pair, None, [])

    T_odom_from_base1 = cam_pose_in_odom(result.T_world_from_cam1, frames)
    p1, q1 = T_to_translation_quat_xyzw(T_odom_from_base1)
    twist_cov = np.zeros(36)
    twist_cov[0] = -1.0
    odometry = OdometryRecord(
        header=HeaderRecord(result.stamp1_ns, frames.odom_frame),
        child_frame_id=child,
        position=p1,
        orientation_xyzw=q1,
        pose_covariance=odometry_covariance(result, frames),
        twist_covariance=twist_cov,
    )
    transforms: list[TransformRecord] = []
    if frames.publish_tf:
        if first_pair:
            p0, q0 = T_to_translation_quat_xyzw(cam_pose_in_odom(result.T_world_from_cam0, frames))
            transforms.append(TransformRecord(HeaderRecord(result.stamp0_ns, frames.odom_frame), child, p0, q0))
        transforms.append(TransformRecord(HeaderRecord(result.stamp1_ns, frames.odom_frame), child, p1, q1))
    return PairOutputs(cloud, splat_pair, odometry, transforms)
