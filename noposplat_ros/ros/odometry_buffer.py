"""Metric scale from the robot's own odometry: how far the camera moved between two keyframes.

The node subscribes to a ``nav_msgs/Odometry`` topic (wheel / IMU odometry, parameter
``scale_odometry_topic``) and keeps a short history of base poses. For a keyframe pair it returns the
distance between the camera centres at the two stamps, with the camera mounted at
``T_base_from_cam`` (from /tf_static; identity when the odometry is of the camera frame itself).
Positions are interpolated linearly between the two bracketing odometry samples; the rotation is
taken from the nearer sample (the lever arm of a camera mount is short, and odometry comes at
tens of Hz). Plain NumPy: no rclpy here.
"""
from __future__ import annotations

import bisect
import threading

import numpy as np

from noposplat_ros.transforms import quat_xyzw_to_matrix


class OdometryBuffer:
    """(stamp_ns, position (3,), quaternion xyzw (4,)) samples of T_odom_from_base, in stamp order."""

    def __init__(self, max_samples: int = 4000, reorder_window_ns: int = 1_000_000_000) -> None:
        self._stamps: list[int] = []
        self._p: list[np.ndarray] = []
        self._q: list[np.ndarray] = []
        self._max = int(max_samples)
        self._reorder_ns = int(reorder_window_ns)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, position: np.ndarray, q_xyzw: np.ndarray) -> None:
        """Append one sample; a sample up to ``reorder_window_ns`` older than the newest is inserted
        in place, an older one (a replayed bag, a clock reset) clears the history first."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            if self._stamps and stamp_ns < self._stamps[-1] - self._reorder_ns:
                self._stamps.clear(), self._p.clear(), self._q.clear()
            i = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(i, stamp_ns)
            self._p.insert(i, np.asarray(position, dtype=np.float64).reshape(3))
            self._q.insert(i, np.asarray(q_xyzw, dtype=np.float64).reshape(4))
            if len(self._stamps) > self._max:
                drop = len(self._stamps) - self._max
                del self._stamps[:drop], self._p[:drop], self._q[:drop]

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear(), self._p.clear(), self._q.clear()

    def pose_at(self, stamp_ns: int, max_gap_ns: int) -> np.ndarray | None:
        """(4, 4) T_odom_from_base at ``stamp_ns``, or None when no samples bracket it within
        ``max_gap_ns`` (an exact sample also counts)."""
        with self._lock:
            s = self._stamps
            i = bisect.bisect_left(s, int(stamp_ns))
            if i < len(s) and s[i] == stamp_ns:
                j = k = i
            elif 0 < i < len(s) and s[i] - s[i - 1] <= max_gap_ns:
                j, k = i - 1, i
            else:
                return None
            if j == k:
                p, q = self._p[j], self._q[j]
            else:
                w = (stamp_ns - s[j]) / (s[k] - s[j])
                p = (1.0 - w) * self._p[j] + w * self._p[k]
                q = self._q[j] if w < 0.5 else self._q[k]
        T = np.eye(4)
        T[:3, :3] = quat_xyzw_to_matrix(q)
        T[:3, 3] = p
        return T

    def camera_baseline_m(self, stamp0_ns: int, stamp1_ns: int, T_base_from_cam: np.ndarray | None = None,
                          max_gap_ns: int = 500_000_000) -> float | None:
        """Distance (m) between the camera centres at the two stamps, or None if not covered."""
        T0, T1 = self.pose_at(stamp0_ns, max_gap_ns), self.pose_at(stamp1_ns, max_gap_ns)
        if T0 is None or T1 is None:
            return None
        c_base = np.zeros(3) if T_base_from_cam is None else np.asarray(T_base_from_cam, dtype=np.float64)[:3, 3]
        c0 = T0[:3, :3] @ c_base + T0[:3, 3]
        c1 = T1[:3, :3] @ c_base + T1[:3, 3]
        return float(np.linalg.norm(c1 - c0))
