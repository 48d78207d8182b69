"""ROS side of the soak test (``noposplat-ros soak``) and of the bag-vs-node checks.

- :class:`CameraStreamer`: publishes Image + CameraInfo like a camera driver, with faults on demand.
- :func:`publisher_main`: the soak's publisher *process*: a real moving image sequence at a fixed
  rate with faults mixed in at random; prints what it injected as one JSON line on stdout. Streams:
  ``room`` (a closed loop over the general-motion scene, replayed lap after lap: real parallax, so
  the node makes keyframe pairs and fills its scene map) or ``slide`` (the Motorcycle image sliding
  across the frame).
- :class:`OutputMonitor`: subscribes to the node's ``/diagnostics``, ``~/odometry`` and (optionally)
  ``~/splat_pair``, recording receive times, stamps and the latest diagnostic values.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from noposplat_ros.ros import conversions as conv
from noposplat_ros.types import Frame

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

# Fault kinds the publisher injects -> the node's /diagnostics counter they must show up in, and how
# many counts one injection makes (a size-change episode changes the size twice: there and back).
FAULTS = {
    "wrong_encoding": ("unknown_encoding", 1),
    "truncated_data": ("short_data", 1),
    "nan_intrinsics": ("bad_intrinsics", 1),
    "size_change": ("size_change", 2),
    "stamp_backwards": ("stamp_backwards", 1),
    "burst": (None, 0),  # no fault counter: the node must just keep up (latest frame wins)
}


class CameraStreamer:
    """Image (rgb8) + CameraInfo publisher on ``image_topic`` / ``info_topic``."""

    def __init__(self, node: Node, image_topic: str, info_topic: str, qos: QoSProfile = RELIABLE) -> None:
        self.node = node
        self.image_pub = node.create_publisher(Image, image_topic, qos)
        self.info_pub = node.create_publisher(CameraInfo, info_topic, qos)

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0:
                return True
            time.sleep(0.05)
        return False

    def publish_info(self, K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> None:
        self.info_pub.publish(conv.camera_info_msg(K, width, height, stamp_ns, frame_id))

    def publish_image(self, rgb: np.ndarray, stamp_ns: int, frame_id: str, *, encoding: str = "rgb8",
                      truncate: bool = False) -> None:
        msg = conv.rgb_to_image_msg(rgb, stamp_ns, frame_id)
        msg.encoding = encoding
        if truncate:
            msg.data = bytes(msg.data[: len(msg.data) // 2])
        self.image_pub.publish(msg)

    def publish_frame(self, frame: Frame) -> None:
        """CameraInfo then Image of one Frame (K and size from the frame)."""
        self.publish_info(frame.K, frame.width, frame.height, frame.stamp_ns, frame.frame_id)
        self.publish_image(frame.rgb, frame.stamp_ns, frame.frame_id)


def _diag_values(arr: DiagnosticArray) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for s in arr.status:
        out[s.name] = {kv.key: kv.value for kv in s.values}
    return out


class OutputMonitor:
    """Records what the node publishes. ``node_ns``: the node's fully qualified name, e.g.
    ``/soak/noposplat_node`` (its private topics live under it)."""

    def __init__(self, node: Node, node_fqn: str, splat_pairs: bool = False, tf: bool = False) -> None:
        self.node = node
        self.node_fqn = node_fqn.rstrip("/")
        self._lock = threading.Lock()
        self.diagnostics: dict[str, str] = {}  # merged key/values of the node's statuses (latest)
        self.diagnostics_count = 0
        self.odometry: list[tuple[int, int]] = []  # (receive wall ns, header stamp ns)
        self.splat_pairs: list[tuple[int, int, int, int]] = []  # (receive ns, stamp0, stamp1, status)
        self.tf: list[tuple[int, str, str]] = []  # (stamp ns, parent, child) of every /tf transform
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)
        node.create_subscription(Odometry, f"{self.node_fqn}/odometry", self._on_odom, RELIABLE)
        if splat_pairs:
            from noposplat_msgs.msg import SplatPair

            node.create_subscription(SplatPair, f"{self.node_fqn}/splat_pair", self._on_pair, RELIABLE)
        if tf:
            from tf2_msgs.msg import TFMessage

            tf_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
            node.create_subscription(TFMessage, "/tf", self._on_tf, tf_qos)

    def _on_diag(self, arr: DiagnosticArray) -> None:
        name = self.node_fqn.rsplit("/", 1)[-1]
        merged: dict[str, str] = {}
        for status_name, values in _diag_values(arr).items():
            if status_name.startswith(f"{name}:"):
                merged.update(values)
        if merged:
            with self._lock:
                self.diagnostics = merged
                self.diagnostics_count += 1

    def _on_odom(self, msg: Odometry) -> None:
        now = time.time_ns()
        with self._lock:
            self.odometry.append((now, conv.time_to_ns(msg.header.stamp)))

    def _on_pair(self, msg) -> None:  # noposplat_msgs/SplatPair
        now = time.time_ns()
        with self._lock:
            self.splat_pairs.append((now, conv.time_to_ns(msg.stamp0), conv.time_to_ns(msg.stamp1), int(msg.status)))

    def _on_tf(self, msg) -> None:  # tf2_msgs/TFMessage
        with self._lock:
            self.tf.extend((conv.time_to_ns(t.header.stamp), t.header.frame_id, t.child_frame_id) for t in msg.transforms)

    def snapshot(self) -> tuple[dict[str, str], list[tuple[int, int]], list[tuple[int, int, int, int]]]:
        with self._lock:
            return dict(self.diagnostics), list(self.odometry), list(self.splat_pairs)


class Spinner:
    """rclpy executor on a background thread (for tests and the soak's monitor)."""

    def __init__(self, node: Node) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor()
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._stop = False
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop and rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------- publisher process


def _fault_schedule(rng: random.Random, n_frames: int, fault_prob: float, kinds: list[str]) -> dict[int, str]:
    """frame index -> fault; faults are at least 8 frames apart (so each one hits a settled node)."""
    out: dict[int, str] = {}
    i = 15  # let the node see a clean start
    while i < n_frames - 20:
        if rng.random() < fault_prob:
            out[i] = rng.choice(kinds)
            i += 8 + (6 if out[i] in ("size_change", "burst") else 0)
        else:
            i += 1
    return out


STREAMS = ("room", "slide")


def stream_cycle(stream: str, width: int, height: int, rate_hz: float, room_lap_s: float = 20.0,
                 ) -> tuple[list[np.ndarray], np.ndarray, str]:
    """One cycle of the soak's image stream, rendered once and replayed cyclically.

    room: ``round(room_lap_s * rate_hz)`` views of one lap of ``fixtures.room_loop``; slide: the
    Motorcycle sequence's full cycle. Returns (images: list of (H, W, 3) uint8, K: (3, 3) float64,
    frame_id).
    """
    if stream == "room":
        from noposplat_ros.fixtures.room_loop import room_loop

        lap = room_loop((height, width), n_frames=max(8, int(round(room_lap_s * rate_hz))))
        return list(lap.rgb), lap.K.copy(), "camera_optical_frame"
    if stream == "slide":
        from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence

        seq = MotorcycleSequence(width, height, frames_per_view=15)
        cycle = 2 * seq.frames_per_view * seq.slide_period // np.gcd(2 * seq.frames_per_view, seq.slide_period)
        return [seq.rgb(i) for i in range(cycle)], seq.K.copy(), seq.frame_id
    raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")


def publisher_main(argv: list[str] | None = None) -> int:
    """The soak's publisher process. Prints {"published": N, "injected": {fault: n}, ...} on stdout."""
    import cv2

    p = argparse.ArgumentParser(prog="soak-publisher")
    p.add_argument("--duration-s", type=float, required=True)
    p.add_argument("--rate-hz", type=float, default=30.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fault-prob", type=float, default=0.02, help="chance per frame slot of starting a fault")
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated fault kinds to inject")
    p.add_argument("--burst-frames", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stream", choices=STREAMS, default="room")
    p.add_argument("--room-lap-s", type=float, default=20.0, help="room stream: seconds per lap of the loop")
    p.add_argument("--image-topic", default="/soak/image")
    p.add_argument("--camera-info-topic", default="/soak/camera_info")
    p.add_argument("--wait-subscriber-s", type=float, default=30.0)
    args = p.parse_args(argv)

    kinds = [k for k in args.faults.split(",") if k]
    unknown = sorted(set(kinds) - set(FAULTS))
    if unknown:
        print(f"soak-publisher: unknown fault kinds {unknown}; known: {sorted(FAULTS)}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    period_s = 1.0 / args.rate_hz
    n_slots = int(args.duration_s * args.rate_hz)
    schedule = _fault_schedule(rng, n_slots, args.fault_prob, kinds)
    # one cycle of the stream, rendered before streaming; replaying it costs nothing
    t0 = time.monotonic()
    images, K_full, frame_id = stream_cycle(args.stream, args.width, args.height, args.rate_hz, args.room_lap_s)
    cycle = len(images)
    print(f"soak-publisher: {args.stream} stream, {cycle} frames per cycle rendered in {time.monotonic() - t0:.1f} s",
          file=sys.stderr, flush=True)
    small_hw = (args.height // 2, args.width // 2)
    K_small = K_full.copy()
    K_small[:2] *= 0.5

    rclpy.init()
    node = Node("soak_publisher")
    cam = CameraStreamer(node, args.image_topic, args.camera_info_topic)
    if not cam.wait_for_subscribers(args.wait_subscriber_s):
        print("soak-publisher: no subscriber on the image topics", file=sys.stderr)
        node.destroy_node()
        rclpy.try_shutdown()
        return 3
    injected: Counter[str] = Counter()
    published = 0
    last_stamp = 0
    t_next = time.monotonic()
    size_episode_left = 0
    size_back = False
    try:
        for slot in range(n_slots):
            fault = schedule.get(slot)
            now_ns = time.time_ns()
            stamp = max(now_ns, last_stamp + 1)
            rgb = images[slot % cycle]
            K, (h, w) = K_full, (args.height, args.width)
            if fault:
                injected[fault] += 1
            if fault == "size_change":
                size_episode_left = 5
                # a lone camera_info announces the new size first (as a reconfigured driver would),
                # so the node never pairs an image with the camera_info of the other size
                cam.publish_info(K_small, small_hw[1], small_hw[0], stamp, frame_id)
                time.sleep(min(period_s / 2, 0.02))
            elif size_back:
                cam.publish_info(K, w, h, stamp, frame_id)
                time.sleep(min(period_s / 2, 0.02))
            size_back = False
            if size_episode_left > 0:
                rgb = cv2.resize(rgb, small_hw[::-1], interpolation=cv2.INTER_AREA)
                K, (h, w) = K_small, small_hw
                size_episode_left -= 1
                size_back = size_episode_left == 0
            if fault == "nan_intrinsics":
                K = K.copy()
                K[0, 0] = float("nan")
            if fault == "stamp_backwards":
                stamp = last_stamp - 50_000_000
            if fault == "burst":
                for b in range(args.burst_frames):
                    bstamp = max(time.time_ns(), last_stamp + 1)
                    brgb = images[(slot + b) % cycle]
                    cam.publish_info(K, w, h, bstamp, frame_id)
                    cam.publish_image(brgb, bstamp, frame_id)
                    last_stamp = bstamp
                    published += 1
            else:
                cam.publish_info(K, w, h, stamp, frame_id)
                cam.publish_image(
                    rgb, stamp, frame_id,
                    encoding="rgb8_bogus" if fault == "wrong_encoding" else "rgb8",
                    truncate=fault == "truncated_data",
                )
                published += 1
                if fault != "stamp_backwards":
                    last_stamp = stamp
            t_next += period_s
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                t_next = time.monotonic()  # fell behind: do not try to catch up with a burst
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    expected: Counter[str] = Counter()
    for fault, n in injected.items():
        counter, per = FAULTS[fault]
        if counter:
            expected[counter] += per * n
    print(json.dumps({"published": published, "slots": n_slots, "stream": args.stream, "cycle_frames": cycle,
                      "injected": dict(injected),
                      "expected_counts": dict(expected)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(publisher_main())
