"""tf without tf2_ros (not on PyPI): a TFMessage publisher on /tf and a small /tf_static buffer.

What tf2_ros's broadcasters do, in a few lines: dynamic transforms go to ``/tf`` (reliable, volatile,
depth 100); static ones are read from ``/tf_static`` (reliable, transient-local, so a late joiner
gets the robot_state_publisher's mounts). The static buffer answers ``lookup(target, source)`` by
chaining edges through the tree; it holds no history (static edges have none).
"""
from __future__ import annotations

import threading

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage

from noposplat_ros.outputs.records import TransformRecord
from noposplat_ros.ros.conversions import ns_to_time, time_to_ns
from noposplat_ros.transforms import invert_T, translation_quat_xyzw_to_T

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                    history=HistoryPolicy.KEEP_LAST)
TF_STATIC_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)


def transform_record_to_msg(rec: TransformRecord) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = ns_to_time(rec.header.stamp_ns)
    msg.header.frame_id = rec.header.frame_id
    msg.child_frame_id = rec.child_frame_id
    t, q = rec.translation, rec.rotation_xyzw
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in t)
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def transform_msg_to_T(msg: TransformStamped) -> np.ndarray:
    """TransformStamped -> (4, 4) T_parent_from_child."""
    t, r = msg.transform.translation, msg.transform.rotation
    return translation_quat_xyzw_to_T(np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w]))


class TfPublisher:
    """Publishes TransformRecords on /tf; each (child frame, stamp) once (avoids TF_REPEATED_DATA)."""

    def __init__(self, node: Node, topic: str = "/tf") -> None:
        self._pub = node.create_publisher(TFMessage, topic, TF_QOS)
        self._last: dict[str, int] = {}
        self._node = node

    def publish(self, records: list[TransformRecord]) -> int:
        """Returns how many transforms went out."""
        fresh = [r for r in records if self._last.get(r.child_frame_id, -1) < r.header.stamp_ns]
        if not fresh:
            return 0
        self._pub.publish(TFMessage(transforms=[transform_record_to_msg(r) for r in fresh]))
        for r in fresh:
            self._last[r.child_frame_id] = r.header.stamp_ns
        return len(fresh)

    def reset(self) -> None:
        self._last.clear()

    def destroy(self) -> None:
        self._node.destroy_publisher(self._pub)


class StaticTfBuffer:
    """Latest static edges from /tf_static; ``lookup(target, source) -> T_target_from_source``."""

    def __init__(self, node: Node, topic: str = "/tf_static") -> None:
        self._edges: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_from_child)
        self._lock = threading.Lock()
        self._node = node
        self._sub = node.create_subscription(TFMessage, topic, self._on_msg, TF_STATIC_QOS)

    def _on_msg(self, msg: TFMessage) -> None:
        with self._lock:
            for tr in msg.transforms:
                self._edges[tr.child_frame_id] = (tr.header.frame_id, transform_msg_to_T(tr))

    def add(self, parent: str, child: str, T_parent_from_child: np.ndarray) -> None:
        with self._lock:
            self._edges[child] = (parent, np.asarray(T_parent_from_child, dtype=np.float64))

    def _chain_to_root(self, frame: str) -> list[tuple[str, np.ndarray]]:
        """[(frame, T_frame_from_frame)=identity, (parent, T_parent_from_frame), ...] up to the root."""
        out = [(frame, np.eye(4))]
        seen = {frame}
        while out[-1][0] in self._edges:
            parent, T = self._edges[out[-1][0]]
            if parent in seen:  # a cycle in someone's static tf: stop instead of looping
                break
            seen.add(parent)
            out.append((parent, T @ out[-1][1]))
        return out

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """T_target_from_source through the static tree, or None if they are not connected."""
        if target == source:
            return np.eye(4)
        with self._lock:
            up_src = self._chain_to_root(source)  # T_ancestor_from_source
            up_tgt = {f: T for f, T in self._chain_to_root(target)}  # T_ancestor_from_target
        for ancestor, T_a_from_src in up_src:
            if ancestor in up_tgt:
                return invert_T(up_tgt[ancestor]) @ T_a_from_src
        return None

    @property
    def frames(self) -> list[str]:
        with self._lock:
            return sorted(set(self._edges) | {p for p, _ in self._edges.values()})

    def destroy(self) -> None:
        self._node.destroy_subscription(self._sub)


__all__ = ["TfPublisher", "StaticTfBuffer", "transform_record_to_msg", "transform_msg_to_T", "time_to_ns",
           "TF_QOS", "TF_STATIC_QOS"]
