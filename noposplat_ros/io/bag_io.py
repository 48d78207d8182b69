"""rosbag2 input and output with ``rosbags`` (no ROS install needed; MCAP and sqlite3 storage).

Input: ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` plus ``sensor_msgs/CameraInfo``,
topics auto-detected or given, turned into :class:`~noposplat_ros.types.Frame` by the same decode
(``image_decode``) and camera (``camera_model``) modules the live node uses.

Output: a rosbag2 v9 bag with the node's topics (names below), every message logged at its own
header stamp (the keyframe stamp of its pair):

=========================  ==============================  ==========================
topic                      type                            node equivalent
=========================  ==============================  ==========================
``/noposplat/splats``      sensor_msgs/msg/PointCloud2     ``~/splats``
``/noposplat/splat_pair``  noposplat_msgs/msg/SplatPair    ``~/splat_pair``
``/noposplat/odometry``    nav_msgs/msg/Odometry           ``~/odometry``
``/tf``                    tf2_msgs/msg/TFMessage          ``/tf``
=========================  ==============================  ==========================

``noposplat_msgs/msg/SplatPair`` is registered in the rosbags typestore from our ``.msg`` file, so
its RIHS01 hash equals the one of the rosidl-built package.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from noposplat_ros.ingest.input_gate import BACKWARDS_RESTART_COUNT, INPUT_FAULT_KINDS, InputGate, Rejected  # noqa: F401 (re-exported)
from noposplat_ros.types import Frame, split_stamp_ns

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

SPLATS_TOPIC = "/noposplat/splats"
SPLAT_PAIR_TOPIC = "/noposplat/splat_pair"
ODOMETRY_TOPIC = "/noposplat/odometry"
TF_TOPIC = "/tf"
MAP_TOPIC = "/noposplat/map"  # the fused scene map (the node's ~/map), odom frame
SPLAT_PAIR_TYPE = "noposplat_msgs/msg/SplatPair"
OUTPUT_TOPICS: dict[str, str] = {
    SPLATS_TOPIC: "sensor_msgs/msg/PointCloud2",
    SPLAT_PAIR_TOPIC: SPLAT_PAIR_TYPE,
    ODOMETRY_TOPIC: "nav_msgs/msg/Odometry",
    TF_TOPIC: "tf2_msgs/msg/TFMessage",
    MAP_TOPIC: "sensor_msgs/msg/PointCloud2",
}
STORAGES = ("mcap", "sqlite3")

_REPO_MSG = pathlib.Path(__file__).resolve().parents[2] / "msg" / "msg" / "SplatPair.msg"


class BagError(RuntimeError):
    """A bag cannot be used as asked; ``str(err)`` is one line naming the problem."""


# ----------------------------------------------------------------------------------------- types


def _splat_pair_msg_path() -> pathlib.Path:
    """Our SplatPair.msg: the source tree first, else an installed noposplat_msgs (ament share)."""
    candidates = [_REPO_MSG]
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(pathlib.Path(prefix) / "share" / "noposplat_msgs" / "msg" / "SplatPair.msg")
    for path in candidates:
        if path.is_file():
            return path
    raise BagError(f"noposplat_msgs/msg/SplatPair.msg not found (looked in {', '.join(map(str, candidates))})")


def make_typestore() -> Any:
    """rosbags typestore for ROS 2 Kilted plus ``noposplat_msgs/msg/SplatPair``."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    text = _splat_pair_msg_path().read_text()
    typestore.register(get_types_from_msg(text, SPLAT_PAIR_TYPE))
    return typestore


# ------------------------------------------------------------------------------------ input side


@dataclasses.dataclass(frozen=True)
class InputTopics:
    """The image and camera_info topics a run reads."""

    image: str
    image_type: str  # IMAGE_TYPE or COMPRESSED_TYPE
    camera_info: str
    image_count: int  # messages on the image topic (for progress / ETA)


def _camera_info_guess(image_topic: str) -> str:
    """`/cam/image_raw[/compressed]` -> `/cam/camera_info` (the image_transport convention)."""
    parts = image_topic.rstrip("/").split("/")
    if parts and parts[-1] == "compressed":
        parts = parts[:-1]
    return "/".join(parts[:-1] + ["camera_info"])


def select_topics(
    topics: Mapping[str, tuple[str, int]],
    image_topic: str | None = None,
    camera_info_topic: str | None = None,
) -> InputTopics:
    """Pick the image and camera_info topics of a bag.

    topics: topic name -> (message type, message count), e.g. from :func:`bag_topics`.
    Raises BagError (one line) for a missing or empty topic, a topic of the wrong type, several
    candidate topics without a choice, or no camera_info.
    """
    listing = ", ".join(f"{name} [{typ}]" for name, (typ, _) in sorted(topics.items())) or "none"
    if image_topic is None:
        candidates = sorted(name for name, (typ, _) in topics.items() if typ in IMAGE_TYPES)
        if not candidates:
            raise BagError(f"no Image or CompressedImage topic in the bag (topics: {listing})")
        non_empty = [name for name in candidates if topics[name][1] > 0]
        if len(non_empty) > 1:
            raise BagError(f"several image topics ({', '.join(non_empty)}): choose one with --image-topic")
        image_topic = (non_empty or candidates)[0]
    if image_topic not in topics:
        raise BagError(f"image topic {image_topic} not in the bag (topics: {listing})")
    image_type, image_count = topics[image_topic]
    if image_type not in IMAGE_TYPES:
        raise BagError(f"topic {image_topic} has type {image_type}, not Image or CompressedImage")
    if image_count <= 0:
        raise BagError(f"image topic {image_topic} is empty (0 messages)")

    if camera_info_topic is None:
        infos = sorted(name for name, (typ, _) in topics.items() if typ == CAMERA_INFO_TYPE)
        guess = _camera_info_guess(image_topic)
        if guess in infos:
            camera_info_topic = guess
        elif len(infos) == 1:
            camera_info_topic = infos[0]
        elif not infos:
            raise BagError(f"no CameraInfo topic in the bag (needed for {image_topic}; topics: {listing})")
        else:
            raise BagError(f"several CameraInfo topics ({', '.join(infos)}): choose one with --camera-info-topic")
    if camera_info_topic not in topics:
        raise BagError(f"camera_info topic {camera_info_topic} not in the bag (topics: {listing})")
    info_type, info_count = topics[camera_info_topic]
    if info_type != CAMERA_INFO_TYPE:
        raise BagError(f"topic {camera_info_topic} has type {info_type}, not CameraInfo")
    if info_count <= 0:
        raise BagError(f"camera_info topic {camera_info_topic} is empty (0 messages)")
    return InputTopics(image_topic, image_type, camera_info_topic, int(image_count))


class InputBag:
    """A rosbag2 bag opened for reading with ``rosbags.highlevel.AnyReader``.

    Every rosbags failure (missing path, no metadata, truncated or corrupt storage file, bad CDR)
    comes out as BagError with one line naming the bag.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from rosbags.highlevel import AnyReader

        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise BagError(f"input bag {self.path} does not exist")
        if not self.path.is_dir():
            raise BagError(f"input bag {self.path} is not a rosbag2 directory (expected metadata.yaml + .mcap/.db3)")
        self._reader = None
        try:
            self._reader = AnyReader([self.path], default_typestore=make_typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises AnyReaderError, sqlite3 / mcap / yaml errors
            raise BagError(f"cannot read bag {self.path}: {_one_line(exc)}") from exc

    def __enter__(self) -> "InputBag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader.stack is not None:
            reader.close()

    def topics(self) -> dict[str, tuple[str, int]]:
        """topic -> (message type, message count)."""
        return {name: (info.msgtype or "", int(info.msgcount)) for name, info in self._reader.topics.items()}

    def messages(self, topic_names: list[str]) -> Iterator[tuple[str, int, Any]]:
        """(topic, log time ns, deserialized message) in log-time order over ``topic_names``."""
        connections = [c for c in self._reader.connections if c.topic in topic_names]
        try:
            for conn, log_ns, raw in self._reader.messages(connections=connections):
                yield conn.topic, int(log_ns), self._reader.deserialize(raw, conn.msgtype)
        except BagError:
            raise
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # corrupt chunk / record in the middle of a bag
            raise BagError(f"cannot read bag {self.path}: {_one_line(exc)}") from exc


# Rejection kinds: the node's /diagnostics fault names (ros/diagnostics.FAULT_KINDS) for the same
# input problems. "camera_info_missing" counts frames here (the node counts timeouts instead).
REJECT_KINDS = INPUT_FAULT_KINDS


class FrameSource:
    """Image + CameraInfo messages (rosbags objects; rclpy messages have the same fields) -> Frames,
    with the live node's input rules (``input_gate.InputGate``, shared with the node), so a bag
    yields the Frames the node would have offered. ``on_reset()`` is called when the keyframes must
    restart (size change, restarted stream); every fault, dropped frame or not, is counted in
    ``faults`` (``camera_info_missing`` per dropped frame).
    """

    def __init__(self, on_reset: Callable[[], None] | None = None) -> None:
        self.faults: Counter[str] = Counter()  # kind -> count, every fault seen (dropped or not)
        self.gate = InputGate(on_fault=self._count, on_reset=on_reset)

    def _count(self, kind: str, message: str) -> None:
        self.faults[kind] += 1

    @property
    def model(self) -> Any:
        """The camera model of the latest valid CameraInfo (None: none, or the latest was invalid)."""
        return self.gate.model

    def camera_info(self, msg: Any) -> Rejected | None:
        roi = msg.roi
        fields = dict(
            width=msg.width, height=msg.height, distortion_model=msg.distortion_model, d=msg.d, k=msg.k,
            r=msg.r, p=msg.p, binning_x=msg.binning_x, binning_y=msg.binning_y,
            roi_x_offset=roi.x_offset, roi_y_offset=roi.y_offset, roi_width=roi.width,
            roi_height=roi.height, roi_do_rectify=bool(roi.do_rectify),
        )
        out = self.gate.camera_info(fields, stamp_ns(msg.header))
        if out is not None:
            self._count(out.kind, out.message)
        return out

    def image(self, msg: Any, msgtype: str) -> Frame | Rejected:
        """A Frame, or Rejected when the frame is dropped (counted in ``faults``)."""
        ns, frame_id = stamp_ns(msg.header), msg.header.frame_id
        if msgtype == COMPRESSED_TYPE:
            out = self.gate.compressed(format=msg.format, data=msg.data, stamp_ns=ns, frame_id=frame_id)
        else:
            out = self.gate.image(encoding=msg.encoding, height=msg.height, width=msg.width, step=msg.step,
                                  is_bigendian=bool(msg.is_bigendian), data=msg.data, stamp_ns=ns, frame_id=frame_id)
        if isinstance(out, Rejected):
            self._count(out.kind, out.message)
        return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ----------------------------------------------------------------------------------- output side


def storage_plugin(storage: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    try:
        return {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    except KeyError:
        raise BagError(f"unknown storage {storage!r} (choose from {', '.join(STORAGES)})") from None


def _reliable_qos(depth: int) -> Any:
    """What `ros2 bag record` stores for a reliable, volatile, keep-last publisher."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(sec=0, nsec=0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.VOLATILE,
        deadline=zero,
        lifespan=zero,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


class OutputBag:
    """rosbag2 v9 output bag (``storage`` "mcap" or "sqlite3") with the node's topics.

    ``close()`` writes the storage index and metadata.yaml: a bag closed after an interruption is a
    valid, shorter bag. The path must not exist (rosbags never overwrites).
    """

    def __init__(self, path: str | os.PathLike[str], storage: str = "mcap", typestore: Any = None) -> None:
        from rosbags.rosbag2 import Writer

        self.path = pathlib.Path(path)
        self.typestore = typestore if typestore is not None else make_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=storage_plugin(storage))
        self._writer.open()
        self._connections = {
            topic: self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=[_reliable_qos(100 if topic == TF_TOPIC else 10)]
            )
            for topic, msgtype in OUTPUT_TOPICS.items()
        }
        self.counts: dict[str, int] = {topic: 0 for topic in OUTPUT_TOPICS}
        self._tf_last_ns: dict[str, int] = {}  # child frame -> newest stamp written on /tf

    def reset_tf(self) -> None:
        """Forget the /tf stamps written (after a keyframe restart, as the node's TfPublisher)."""
        self._tf_last_ns.clear()

    def write(self, topic: str, msg: Any, log_ns: int) -> None:
        conn = self._connections[topic]
        self._writer.write(conn, int(log_ns), self.typestore.serialize_cdr(msg, conn.msgtype))
        self.counts[topic] += 1

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> "OutputBag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # close even on an exception: what was written stays readable


# ------------------------------------------------ outputs.py records -> rosbags message objects


def _time(T: Mapping[str, Any], ns: int) -> Any:
    sec, nanosec = split_stamp_ns(ns)
    return T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def _header(T: Mapping[str, Any], rec: Any) -> Any:
    """outputs.HeaderRecord (or anything with stamp_ns and frame_id) -> std_msgs/Header."""
    return T["std_msgs/msg/Header"](stamp=_time(T, rec.stamp_ns), frame_id=rec.frame_id)


def _vec3(T: Mapping[str, Any], name: str, v: Any) -> Any:
    return T[name](x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _quat(T: Mapping[str, Any], q_xyzw: Any) -> Any:
    return T["geometry_msgs/msg/Quaternion"](x=float(q_xyzw[0]), y=float(q_xyzw[1]), z=float(q_xyzw[2]), w=float(q_xyzw[3]))


def cloud_msg(typestore: Any, rec: Any) -> Any:
    """outputs.CloudRecord -> rosbags sensor_msgs/msg/PointCloud2."""
    import numpy as np

    T = typestore.types
    fields = [T["sensor_msgs/msg/PointField"](name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in rec.fields]
    return T["sensor_msgs/msg/PointCloud2"](
        header=_header(T, rec.header), height=int(rec.height), width=int(rec.width), fields=fields,
        is_bigendian=bool(rec.is_bigendian), point_step=int(rec.point_step), row_step=int(rec.row_step),
        data=np.ascontiguousarray(rec.data, dtype=np.uint8).reshape(-1), is_dense=bool(rec.is_dense),
    )


def splat_pair_msg(typestore: Any, rec: Any) -> Any:
    """outputs.SplatPairRecord -> rosbags noposplat_msgs/msg/SplatPair."""
    import numpy as np

    T = typestore.types
    return T[SPLAT_PAIR_TYPE](
        header=_header(T, rec.header), stamp0=_time(T, rec.stamp0_ns), stamp1=_time(T, rec.stamp1_ns),
        splats=cloud_msg(typestore, rec.splats), schema_version=int(rec.schema_version),
        t_cam0_from_cam1=T["geometry_msgs/msg/Transform"](
            translation=_vec3(T, "geometry_msgs/msg/Vector3", rec.translation), rotation=_quat(T, rec.rotation_xyzw)
        ),
        covariance=np.asarray(rec.covariance, dtype=np.float64).reshape(36), scale_kind=int(rec.scale_kind),
        status=int(rec.status), backend=str(rec.backend), num_inliers=int(rec.num_inliers),
        residual_px=float(rec.residual_px),
    )


def odometry_msg(typestore: Any, rec: Any) -> Any:
    """outputs.OdometryRecord -> rosbags nav_msgs/msg/Odometry (twist zero)."""
    import numpy as np

    T = typestore.types
    zero3 = [0.0, 0.0, 0.0]
    pose = T["geometry_msgs/msg/Pose"](
        position=_vec3(T, "geometry_msgs/msg/Point", rec.position), orientation=_quat(T, rec.orientation_xyzw)
    )
    twist = T["geometry_msgs/msg/Twist"](
        linear=_vec3(T, "geometry_msgs/msg/Vector3", zero3), angular=_vec3(T, "geometry_msgs/msg/Vector3", zero3)
    )
    return T["nav_msgs/msg/Odometry"](
        header=_header(T, rec.header), child_frame_id=rec.child_frame_id,
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.asarray(rec.pose_covariance, dtype=np.float64).reshape(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.asarray(rec.twist_covariance, dtype=np.float64).reshape(36)),
    )


def tf_msg(typestore: Any, records: list[Any]) -> Any:
    """outputs.TransformRecords -> rosbags tf2_msgs/msg/TFMessage."""
    T = typestore.types
    return T["tf2_msgs/msg/TFMessage"](
        transforms=[
            T["geometry_msgs/msg/TransformStamped"](
                header=_header(T, r.header), child_frame_id=r.child_frame_id,
                transform=T["geometry_msgs/msg/Transform"](
                    translation=_vec3(T, "geometry_msgs/msg/Vector3", r.translation), rotation=_quat(T, r.rotation_xyzw)
                ),
            )
            for r in records
        ]
    )


def write_pair_outputs(bag: "OutputBag", outputs: Any) -> None:
    """Write one outputs.PairOutputs; every message is logged at its header stamp (a keyframe stamp).

    tf: one TFMessage per transform, because the transforms of one pair can carry different stamps
    (keyframe 0 and keyframe 1) and a bag message has one log time. As the node's TfPublisher, a
    transform is written only when its stamp is newer than the last one of its child frame (no
    TF_REPEATED_DATA when the chain continues; ``reset_tf()`` after a restart).
    """
    ts = bag.typestore
    bag.write(SPLATS_TOPIC, cloud_msg(ts, outputs.cloud), outputs.cloud.header.stamp_ns)
    bag.write(SPLAT_PAIR_TOPIC, splat_pair_msg(ts, outputs.splat_pair), outputs.splat_pair.header.stamp_ns)
    if outputs.odometry is not None:
        bag.write(ODOMETRY_TOPIC, odometry_msg(ts, outputs.odometry), outputs.odometry.header.stamp_ns)
    for rec in outputs.transforms:
        if bag._tf_last_ns.get(rec.child_frame_id, -1) < rec.header.stamp_ns:
            bag.write(TF_TOPIC, tf_msg(ts, [rec]), rec.header.stamp_ns)
            bag._tf_last_ns[rec.child_frame_id] = rec.header.stamp_ns


def write_map(bag: "OutputBag", cloud: Any) -> None:
    """Write the scene map (outputs.records.CloudRecord, odom frame) on MAP_TOPIC at its stamp."""
    bag.write(MAP_TOPIC, cloud_msg(bag.typestore, cloud), cloud.header.stamp_ns)


# ------------------------------------------------------------------ writing input bags (tests)


def frames_to_bag(
    path: str | os.PathLike[str],
    frames: list[Frame],
    *,
    storage: str = "mcap",
    image_topic: str = "/camera/image_raw",
    camera_info_topic: str | None = "/camera/camera_info",
    compressed: bool = False,
) -> None:
    """Record ``frames`` as a camera driver would: Image (rgb8) or CompressedImage (png), plus a
    CameraInfo (no distortion, K of the frame) before each image; log time = header stamp.
    For tests, demos and users who want a bag from image files."""
    import cv2
    import numpy as np
    from rosbags.rosbag2 import Writer

    ts = make_typestore()
    T = ts.types
    with Writer(pathlib.Path(path), version=9, storage_plugin=storage_plugin(storage)) as writer:
        img_type = COMPRESSED_TYPE if compressed else IMAGE_TYPE
        img_conn = writer.add_connection(image_topic, img_type, typestore=ts)
        info_conn = (
            writer.add_connection(camera_info_topic, CAMERA_INFO_TYPE, typestore=ts) if camera_info_topic else None
        )
        for frame in frames:
            ns = int(frame.stamp_ns)
            header = _header(T, frame)
            if info_conn is not None:
                K = np.asarray(frame.K, dtype=np.float64)
                P = np.concatenate([K, np.zeros((3, 1))], axis=1)
                info = T[CAMERA_INFO_TYPE](
                    header=header, height=frame.height, width=frame.width, distortion_model="plumb_bob",
                    d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1),
                    binning_x=0, binning_y=0,
                    roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                )
                writer.write(info_conn, ns, ts.serialize_cdr(info, CAMERA_INFO_TYPE))
            rgb = np.ascontiguousarray(frame.rgb, dtype=np.uint8)
            if compressed:
                ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
                assert ok
                msg = T[COMPRESSED_TYPE](header=header, format="rgb8; png compressed bgr8", data=png.reshape(-1))
            else:
                msg = T[IMAGE_TYPE](
                    header=header, height=frame.height, width=frame.width, encoding="rgb8", is_bigendian=0,
                    step=3 * frame.width, data=rgb.reshape(-1),
                )
            writer.write(img_conn, ns, ts.serialize_cdr(msg, img_type))
