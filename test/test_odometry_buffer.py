"""Metric scale from robot odometry: camera motion between two keyframe stamps."""
from __future__ import annotations

import numpy as np
import pytest

from noposplat_ros.ros.odometry_buffer import OdometryBuffer
from noposplat_ros.transforms import make_T, matrix_to_quat_xyzw

S = 1_000_000_000


def yaw(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def test_straight_motion_interpolated():
    buf = OdometryBuffer()
    for i in range(11):  # base drives +x at 0.5 m/s, samples every 0.1 s
        buf.add(i * S // 10, [0.05 * i, 0, 0], [0, 0, 0, 1])
    # keyframe stamps between samples: 0.05 s and 0.85 s -> 0.4 m
    assert buf.camera_baseline_m(S // 20, 17 * S // 20) == pytest.approx(0.4, abs=1e-9)
    assert buf.camera_baseline_m(0, S) == pytest.approx(0.5)
    # outside the history or across a gap larger than allowed: unknown
    assert buf.camera_baseline_m(0, 2 * S) is None
    assert buf.camera_baseline_m(S // 20, S // 2, max_gap_ns=S // 20) is None


def test_lever_arm_of_the_camera_mount():
    """A base turning in place moves a camera mounted 0.5 m ahead of it along a circle."""
    buf = OdometryBuffer()
    for i, a in enumerate((0.0, np.pi / 2)):
        buf.add(i * S, [0, 0, 0], matrix_to_quat_xyzw(yaw(a)))
    T_base_cam = make_T(np.eye(3), [0.5, 0, 0])
    assert buf.camera_baseline_m(0, S, T_base_cam) == pytest.approx(0.5 * np.sqrt(2))
    assert buf.camera_baseline_m(0, S) == pytest.approx(0.0)  # the base itself did not move


def test_out_of_order_and_replay():
    D = S // 10
    buf = OdometryBuffer(max_samples=5, reorder_window_ns=3 * D)
    for t in (3, 1, 2):  # 0.3 s, 0.1 s, 0.2 s: late samples within the window are put in order
        buf.add(t * D, [t, 0, 0], [0, 0, 0, 1])
    assert buf.camera_baseline_m(1 * D, 3 * D, max_gap_ns=D) == pytest.approx(2.0)
    assert buf.camera_baseline_m(15 * D // 10, 25 * D // 10, max_gap_ns=D) == pytest.approx(1.0)
    for t in range(4, 10):
        buf.add(t * D, [t, 0, 0], [0, 0, 0, 1])
    assert len(buf) == 5 and buf.pose_at(1 * D, D) is None  # oldest dropped
    buf.add(0, [0, 0, 0], [0, 0, 0, 1])  # far older than the newest: a replayed bag restarts the history
    assert len(buf) == 1
