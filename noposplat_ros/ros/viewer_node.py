"""ROS shell of the live splat viewer: subscriptions that store the node's latest outputs in a LiveScene.

Callbacks never convert or push: each stores a zero-copy view of the message data (or a few
numbers) and returns; the viewer's pusher thread builds and sends the scene (``viewer/live.py``).

Topics (relative, so ``--ros-args -r`` and namespaces work; ``node`` is the splat node's name):
``<node>/map`` and ``<node>/splat_pair`` (transient local, so a late viewer gets the last ones),
``<node>/odometry`` (keyframe poses), ``camera_info`` (the node's input camera, for fov and aspect).
"""
from __future__ import annotations

import numpy as np
from nav_msgs.msg import Odometry
from noposplat_msgs.msg import SplatPair
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, PointCloud2

from noposplat_ros.outputs.records import SCALE_KIND_CODES
from noposplat_ros.ros import conversions as conv
from noposplat_ros.ros.node import LATCHED_QOS, RELIABLE_QOS
from noposplat_ros.transforms import translation_quat_xyzw_to_T
from noposplat_ros.types import PoseStatus
from noposplat_ros.viewer.live import LiveScene, PairInput

DEFAULT_SPLAT_NODE = "noposplat_node"
_SCALE_KINDS = {code: kind for kind, code in SCALE_KIND_CODES.items()}


def transform_to_T(tr) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4)."""
    t, q = tr.translation, tr.rotation
    return translation_quat_xyzw_to_T(np.array([t.x, t.y, t.z]), np.array([q.x, q.y, q.z, q.w]))


def splat_pair_input(msg: SplatPair) -> PairInput:
    """SplatPair -> PairInput (the cloud stays a view of the message's data)."""
    kind = _SCALE_KINDS.get(int(msg.scale_kind))
    try:
        status = PoseStatus(int(msg.status)).name
    except ValueError:
        status = f"unknown ({msg.status})"
    return PairInput(
        cloud=conv.cloud_msg_to_structured(msg.splats),
        T_cam0_from_cam1=transform_to_T(msg.t_cam0_from_cam1),
        stamp0_ns=conv.time_to_ns(msg.stamp0), stamp1_ns=conv.time_to_ns(msg.stamp1),
        status=status, scale_kind=kind.value if kind is not None else f"unknown ({msg.scale_kind})",
        backend=str(msg.backend), num_inliers=int(msg.num_inliers),
    )


class ViewerNode(Node):
    """Subscribes to one splat node's outputs and stores them in ``live``."""

    def __init__(self, live: LiveScene, splat_node: str = DEFAULT_SPLAT_NODE, node_name: str = "noposplat_viewer") -> None:
        super().__init__(node_name)
        self.live = live
        prefix = splat_node.strip("/")
        self.map_topic = self.resolve_topic_name(f"{prefix}/map")
        self._last_stamp1_ns = -1
        self._source: bytes | None = None  # DDS participant of the splat node we listen to
        self.create_subscription(PointCloud2, f"{prefix}/map", self._on_map, LATCHED_QOS)
        self.create_subscription(SplatPair, f"{prefix}/splat_pair", self._on_pair, LATCHED_QOS)
        self.create_subscription(Odometry, f"{prefix}/odometry", self._on_odometry, RELIABLE_QOS)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data)
        self.get_logger().info(f"listening to {self.resolve_topic_name(prefix + '/splat_pair')}, "
                               f"{self.map_topic}, {self.resolve_topic_name(prefix + '/odometry')}")

    def _same_source(self, info: dict | None) -> None:
        """Clear the view when the messages come from another process (the splat node restarted: new odom).

        The DDS GUID prefix (first 12 bytes of the publisher GID) is the same for every publisher of
        one participant, so map, pair and odometry of one node agree.
        """
        gid = (info or {}).get("publisher_gid") or {}
        source = bytes(gid.get("data", b""))[:12]
        if not source:
            return
        if self._source is not None and source != self._source:
            self.get_logger().info("messages from a new splat node process (restarted): view cleared")
            self._last_stamp1_ns = -1
            self.live.clear()
        self._source = source

    def _on_map(self, msg: PointCloud2, info: dict) -> None:
        self._same_source(info)
        self.live.set_map(conv.cloud_msg_to_structured(msg))

    def _on_pair(self, msg: SplatPair, info: dict) -> None:
        self._same_source(info)
        pair = splat_pair_input(msg)
        if pair.stamp1_ns <= self._last_stamp1_ns:
            # stamps went back: the input restarted (the node resets its trajectory then)
            self.get_logger().info("pair stamps went back (input restarted): view cleared")
            self.live.clear()
        self._last_stamp1_ns = pair.stamp1_ns
        self.live.add_pair(pair)

    def _on_odometry(self, msg: Odometry, info: dict) -> None:
        self._same_source(info)
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        T = translation_quat_xyzw_to_T(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
        self.live.add_pose(conv.time_to_ns(msg.header.stamp), T)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        K = np.asarray(msg.k, np.float64).reshape(3, 3)
        if K[0, 0] > 0 and K[1, 1] > 0 and msg.height > 0 and msg.width > 0:
            self.live.set_camera(K, int(msg.height), int(msg.width))
