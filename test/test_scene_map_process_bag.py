"""process-bag writes the scene map: OUT/map.ply and /noposplat/map in the output bag (the last map
message equals map.ply), from a real-image bag (Motorcycle moving sequence, geometry backend)."""
from __future__ import annotations

import numpy as np
import pytest

from noposplat_ros.cli import main as cli_main
from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence
from noposplat_ros.io import bag_io
from noposplat_ros.io.ply import read_ply

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_process_bag_writes_map_ply_and_map_topic(tmp_path):
    frames = MotorcycleSequence(scale=0.5, frames_per_view=4).frames(14)
    bag_io.frames_to_bag(tmp_path / "in", frames, storage="mcap")
    rc = cli_main(["process-bag", str(tmp_path / "in"), str(tmp_path / "out"), "--predictor", "geometry"])
    assert rc == 0
    g = read_ply(tmp_path / "out" / "map.ply")
    assert g.num > 1000

    from rosbags.highlevel import AnyReader

    maps = []
    with AnyReader([tmp_path / "out" / "bag"], default_typestore=bag_io.make_typestore()) as reader:
        conns = [c for c in reader.connections if c.topic == bag_io.MAP_TOPIC]
        assert conns and conns[0].msgtype == "sensor_msgs/msg/PointCloud2"
        for conn, log_ns, raw in reader.messages(connections=conns):
            maps.append((log_ns, reader.deserialize(raw, conn.msgtype)))
    assert maps
    stamps = {f.stamp_ns for f in frames}
    for log_ns, m in maps:
        assert m.header.frame_id == "odom"
        assert bag_io.stamp_ns(m.header) == log_ns and log_ns in stamps
    last = maps[-1][1]
    assert last.width == g.num
    xyz = np.frombuffer(bytes(last.data), dtype="<f4").reshape(last.width, -1)[:, :3]
    np.testing.assert_allclose(g.means.numpy(), xyz, rtol=1e-6, atol=1e-6)
