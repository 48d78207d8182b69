"""rclpy messages <-> core types and output records (the only place that knows both).

Bulk data never goes through Python lists: image payloads are read with ``np.frombuffer`` by the
decoder, PointCloud2 ``data`` is filled with ``array.array('B').frombytes(memoryview)`` (a memcpy;
assigning a NumPy array element-wise costs ~50x more).
"""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Transform
from nav_msgs.msg import Odometry
from noposplat_msgs.msg import SplatPair
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from noposplat_ros.outputs.records import CloudRecord, HeaderRecord, OdometryRecord, SplatPairRecord
from noposplat_ros.types import NS_PER_S, split_stamp_ns


def time_to_ns(t: Time) -> int:
    return int(t.sec) * NS_PER_S + int(t.nanosec)


def ns_to_time(ns: int) -> Time:
    sec, nanosec = split_stamp_ns(ns)
    return Time(sec=int(sec), nanosec=int(nanosec))


def header_to_msg(h: HeaderRecord) -> Header:
    return Header(stamp=ns_to_time(h.stamp_ns), frame_id=h.frame_id)


def bytes_to_array(buf: np.ndarray | bytes | memoryview) -> array.array:
    """Contiguous bytes -> array.array('B') for a uint8[] message field (one memcpy)."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(buf).reshape(-1).view(np.uint8)) if isinstance(buf, np.ndarray) else buf)
    return out


def cloud_to_msg(rec: CloudRecord) -> PointCloud2:
    msg = PointCloud2()
    msg.header = header_to_msg(rec.header)
    msg.height = rec.height
    msg.width = rec.width
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in rec.fields]
    msg.is_bigendian = rec.is_bigendian
    msg.point_step = rec.point_step
    msg.row_step = rec.row_step
    msg.data = bytes_to_array(rec.data)
    msg.is_dense = rec.is_dense
    return msg


def cloud_msg_to_structured(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 -> structured array (N,) viewing its data (float32 / uint32 fields)."""
    kinds = {7: "<f4", 6: "<u4", 5: "<i4", 8: "<f8", 2: "u1", 1: "i1", 4: "<u2", 3: "<i2"}
    dtype = np.dtype({
        "names": [f.name for f in msg.fields],
        "formats": [(kinds[f.datatype], (f.count,)) if f.count > 1 else kinds[f.datatype] for f in msg.fields],
        "offsets": [f.offset for f in msg.fields],
        "itemsize": msg.point_step,
    })
    return np.frombuffer(memoryview(msg.data), dtype=dtype, count=msg.width * msg.height)


def _transform(translation: np.ndarray, rotation_xyzw: np.ndarray) -> Transform:
    tr = Transform()
    tr.translation.x, tr.translation.y, tr.translation.z = (float(v) for v in translation)
    tr.rotation.x, tr.rotation.y, tr.rotation.z, tr.rotation.w = (float(v) for v in rotation_xyzw)
    return tr


def splat_pair_to_msg(rec: SplatPairRecord, cloud_msg: PointCloud2 | None = None) -> SplatPair:
    """cloud_msg: the already-built PointCloud2 of ``rec.splats`` (avoids a second copy)."""
    msg = SplatPair()
    msg.header = header_to_msg(rec.header)
    msg.stamp0 = ns_to_time(rec.stamp0_ns)
    msg.stamp1 = ns_to_time(rec.stamp1_ns)
    msg.splats = cloud_msg if cloud_msg is not None else cloud_to_msg(rec.splats)
    msg.schema_version = int(rec.schema_version)
    msg.t_cam0_from_cam1 = _transform(rec.translation, rec.rotation_xyzw)
    msg.covariance = np.asarray(rec.covariance, dtype=np.float64).reshape(36)
    msg.scale_kind = int(rec.scale_kind)
    msg.status = int(rec.status)
    msg.backend = rec.backend
    msg.num_inliers = int(rec.num_inliers)
    msg.residual_px = float(rec.residual_px)
    return msg


def odometry_to_msg(rec: OdometryRecord) -> Odometry:
    msg = Odometry()
    msg.header = header_to_msg(rec.header)
    msg.child_frame_id = rec.child_frame_id
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in rec.position)
    q.x, q.y, q.z, q.w = (float(v) for v in rec.orientation_xyzw)
    msg.pose.covariance = np.asarray(rec.pose_covariance, dtype=np.float64).reshape(36)
    msg.twist.covariance = np.asarray(rec.twist_covariance, dtype=np.float64).reshape(36)
    return msg


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return Image(header=Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id), height=h, width=w,
                 encoding="rgb8", is_bigendian=0, step=w * 3, data=rgb.tobytes())


def camera_info_fields(msg: CameraInfo) -> dict:
    """Keyword arguments of ``CameraModel.from_camera_info_fields`` from a CameraInfo."""
    return dict(
        width=int(msg.width),
        height=int(msg.height),
        distortion_model=str(msg.distortion_model),
        d=np.asarray(msg.d, dtype=np.float64),
        k=np.asarray(msg.k, dtype=np.float64),
        r=np.asarray(msg.r, dtype=np.float64),
        p=np.asarray(msg.p, dtype=np.float64),
        binning_x=int(msg.binning_x),
        binning_y=int(msg.binning_y),
        roi_x_offset=int(msg.roi.x_offset),
        roi_y_offset=int(msg.roi.y_offset),
        roi_width=int(msg.roi.width),
        roi_height=int(msg.roi.height),
        roi_do_rectify=bool(msg.roi.do_rectify),
    )


def camera_info_msg(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str,
                    d: np.ndarray | None = None, distortion_model: str = "plumb_bob") -> CameraInfo:
    """A CameraInfo for a pinhole camera with intrinsics K (3, 3) and optional distortion."""
    K = np.asarray(K, dtype=np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg = CameraInfo()
    msg.header = Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id)
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = distortion_model
    msg.d = [float(v) for v in (np.zeros(5) if d is None else np.asarray(d, dtype=np.float64).reshape(-1))]
    msg.k = K.reshape(9)
    msg.r = np.eye(3).reshape(9)
    msg.p = P.reshape(12)
    return msg
