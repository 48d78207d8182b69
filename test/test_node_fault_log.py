"""The node's fault counter logs warnings and errors from one helper without raising.

rclpy's logger keys its context by the calling line and raises ValueError when one line logs at two
severities; ``_fault`` once did that, so the first ``worker_error`` (logged as an error after
warnings) raised inside the worker's exception handler and killed the worker thread: the node
stayed alive and ``active`` but never published again (found by the 30-minute soak).
"""
from __future__ import annotations

import pytest


def test_fault_logs_warning_then_error_then_warning():
    rclpy = pytest.importorskip("rclpy")
    from noposplat_ros.ros.node import NoPoSplatNode

    rclpy.init()
    try:
        node = NoPoSplatNode("fault_log_check_node")
        node._fault("short_data", "image data has 10 bytes")
        node._fault("worker_error", "ValueError: boom", warn=False)
        node._fault("unknown_encoding", "image encoding 'x' is not supported")
        node._fault("worker_error", "KeyError: other", warn=False)
        faults = node.health.snapshot()["faults"]
        assert faults["short_data"] == 1 and faults["worker_error"] == 2 and faults["unknown_encoding"] == 1
        node.destroy_node()
    finally:
        rclpy.shutdown()
