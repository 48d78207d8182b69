"""The node's scene map over DDS on loopback (three processes, no mocks): the player plays the real
Motorcycle pair, the node fuses it into its map; this process subscribes to ``~/map`` only *after*
the map was published (transient local must deliver it), saves it with ``~/save_map`` and checks the
PLY equals the published cloud, then ``~/reset`` empties the map.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from node_harness import STARTUP_TIMEOUT_S, node_command, spin_until, start_process, stop_process  # noqa: E402
from noposplat_ros.io.ply import read_ply  # noqa: E402
from noposplat_ros.outputs import pointcloud  # noqa: E402
from noposplat_ros.ros import conversions as conv  # noqa: E402
from noposplat_ros.ros.diagnostics import diagnostics_values  # noqa: E402
from noposplat_ros.ros.node import LATCHED_QOS, RELIABLE_QOS  # noqa: E402
from test_node_e2e import call_trigger  # noqa: E402


@pytest.fixture(scope="module")
def listener():
    rclpy.init()
    node = rclpy.create_node("test_node_map_listener")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_map_late_subscriber_save_and_reset(listener, tmp_path):
    name = "map_node"
    diag: dict = {}

    def on_diag(msg: DiagnosticArray) -> None:
        d = diagnostics_values(msg).get(f"{name}: pipeline")
        if d:
            diag.update(d)

    subs = [listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag, RELIABLE_QOS)]
    logs = (tmp_path / "node.log", tmp_path / "player.log")
    node = player = None
    try:
        node = start_process(node_command(name, {"predictor": "geometry", "save_dir": str(tmp_path / "saved"),
                                                 "map_publish_period_s": 0.2, "metric_baseline_m": 0.193001}), logs[0])
        spin_until(listener, lambda: diag.get("state") == "active", STARTUP_TIMEOUT_S, "the node to become active",
                   (node,), logs)
        player = start_process([sys.executable, "-m", "noposplat_ros.cli", "play", "--rate", "2", "--linger", "2",
                                "--wait-subscribers", "60"], logs[1])
        # the pair is fused and the map published before anyone here subscribes to it
        spin_until(listener, lambda: int(diag.get("map.gaussians", 0)) > 0 and "latency_s.map_publish" in diag,
                   STARTUP_TIMEOUT_S + 60, "the map to be fused and published", (node, player), logs)
        assert float(diag["map.memory_mib"]) > 0 and float(diag["latency_s.map"]) > 0
        maps: list[PointCloud2] = []
        subs.append(listener.create_subscription(PointCloud2, f"/{name}/map", maps.append, LATCHED_QOS))
        # The latched sample is the newest published map; the diagnostics can report a fused pair a
        # moment before its map is re-published (an earlier, empty map may be what arrives first).
        spin_until(listener, lambda: bool(maps) and maps[-1].width > 0, 30.0, "the latched map at a late subscriber",
                   (node,), logs)
        cloud = maps[-1]
        assert cloud.header.frame_id == "odom" and cloud.height == 1
        assert [f.name for f in cloud.fields][:4] == ["x", "y", "z", "rgb"]
        assert cloud.point_step == pointcloud.point_step(include_sh=False)
        assert cloud.width == int(diag["map.gaussians"]) > 10_000

        saved = call_trigger(listener, f"/{name}/save_map")
        assert saved.success, saved.message
        assert saved.message.endswith("map.ply")
        for _ in range(20):
            rclpy.spin_once(listener, timeout_sec=0.05)
        cloud = maps[-1]  # the published map the PLY must equal
        arr = conv.cloud_msg_to_structured(cloud)
        g = read_ply(saved.message)
        assert g.num == cloud.width
        xyz = np.stack([arr["x"], arr["y"], arr["z"]], 1)
        np.testing.assert_allclose(g.means.numpy(), xyz, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g.opacities.numpy(), arr["opacity"], atol=1e-5)
        np.testing.assert_allclose(g.scales.numpy(), np.stack([arr["scale_x"], arr["scale_y"], arr["scale_z"]], 1),
                                   rtol=1e-5, atol=1e-7)

        n_before = len(maps)
        assert call_trigger(listener, f"/{name}/reset").success
        spin_until(listener, lambda: len(maps) > n_before and maps[-1].width == 0, 30.0,
                   "an empty map after ~/reset", (node,), logs)
        assert node.poll() is None, "the node exited"
    finally:
        stop_process(player)
        stop_process(node)
        for s in subs:
            listener.destroy_subscription(s)
