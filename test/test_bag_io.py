"""bag_io: reading real-image bags (MCAP + sqlite3), topic selection, rejections, and the output bag
read back with rosbags and with rclpy's real typesupport."""
from __future__ import annotations

import json
import pathlib
import sqlite3

import numpy as np
import pytest
import torch

from noposplat_ros.ingest import input_gate
from noposplat_ros.io import bag_io
from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence
from noposplat_ros.types import Frame, Gaussians, PoseStatus, ScaleKind, covariances_from_scales_rotations


@pytest.fixture(scope="module")
def seq_frames() -> list[Frame]:
    return MotorcycleSequence(scale=0.25, frames_per_view=3).frames(8)


# ------------------------------------------------------------------------------ topic selection

TOPICS = {
    "/cam/image_raw": (bag_io.IMAGE_TYPE, 10),
    "/cam/camera_info": (bag_io.CAMERA_INFO_TYPE, 10),
    "/other/camera_info": (bag_io.CAMERA_INFO_TYPE, 3),
    "/odom": ("nav_msgs/msg/Odometry", 5),
}


def test_select_topics_auto_pairs_camera_info_next_to_image():
    t = bag_io.select_topics(TOPICS)
    assert (t.image, t.image_type, t.camera_info, t.image_count) == ("/cam/image_raw", bag_io.IMAGE_TYPE, "/cam/camera_info", 10)


def test_select_topics_compressed_and_given_topics():
    topics = {"/c/image_raw/compressed": (bag_io.COMPRESSED_TYPE, 4), "/c/camera_info": (bag_io.CAMERA_INFO_TYPE, 4)}
    assert bag_io.select_topics(topics).camera_info == "/c/camera_info"
    t = bag_io.select_topics(TOPICS, camera_info_topic="/other/camera_info")
    assert t.camera_info == "/other/camera_info"


@pytest.mark.parametrize(
    "topics, kwargs, words",
    [
        (TOPICS, {"image_topic": "/nope"}, ["/nope", "not in the bag"]),
        ({**TOPICS, "/cam/image_raw": (bag_io.IMAGE_TYPE, 0)}, {}, ["empty", "/cam/image_raw"]),
        ({"/odom": ("nav_msgs/msg/Odometry", 1)}, {}, ["no Image"]),
        (TOPICS, {"image_topic": "/odom"}, ["/odom", "Odometry"]),
        ({"/cam/image_raw": (bag_io.IMAGE_TYPE, 5)}, {}, ["no CameraInfo"]),
        ({**TOPICS, "/cam/camera_info": (bag_io.CAMERA_INFO_TYPE, 0)}, {}, ["camera_info", "empty"]),
        (TOPICS, {"camera_info_topic": "/x/camera_info"}, ["/x/camera_info", "not in the bag"]),
        ({**TOPICS, "/b/image": (bag_io.IMAGE_TYPE, 2)}, {}, ["several image topics", "--image-topic"]),
    ],
)
def test_select_topics_errors_are_one_line_and_name_the_problem(topics, kwargs, words):
    with pytest.raises(bag_io.BagError) as err:
        bag_io.select_topics(topics, **kwargs)
    text = str(err.value)
    assert "\n" not in text
    for w in words:
        assert w in text


# ------------------------------------------------------------------------------ reading bags


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [False, True])
def test_bag_round_trip_to_frames(tmp_path, seq_frames, storage, compressed):
    path = tmp_path / "in"
    bag_io.frames_to_bag(path, seq_frames, storage=storage, compressed=compressed)
    with bag_io.InputBag(path) as bag:
        topics = bag_io.select_topics(bag.topics())
        assert topics.image_count == len(seq_frames)
        source = bag_io.FrameSource()
        out = []
        for topic, log_ns, msg in bag.messages([topics.image, topics.camera_info]):
            if topic == topics.camera_info:
                assert source.camera_info(msg) is None
            else:
                out.append(source.image(msg, topics.image_type))
    assert len(out) == len(seq_frames)
    for got, want in zip(out, seq_frames):
        assert isinstance(got, Frame)
        assert got.stamp_ns == want.stamp_ns and got.frame_id == want.frame_id
        np.testing.assert_array_equal(got.rgb, want.rgb)  # png is lossless
        np.testing.assert_allclose(got.K, want.K)


def _image_msg(ts, frame: Frame, **override):
    T = ts.types
    sec, nsec = divmod(frame.stamp_ns, 10**9)
    fields = dict(
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id="cam"),
        height=frame.height, width=frame.width, encoding="rgb8", is_bigendian=0, step=3 * frame.width,
        data=frame.rgb.reshape(-1),
    )
    fields.update(override)
    return T[bag_io.IMAGE_TYPE](**fields)


def _info_msg(ts, frame: Frame, K=None, width=None):
    T = ts.types
    K = frame.K if K is None else K
    return T[bag_io.CAMERA_INFO_TYPE](
        header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="cam"),
        height=frame.height, width=frame.width if width is None else width, distortion_model="plumb_bob",
        d=np.zeros(5), k=np.asarray(K, float).reshape(-1), r=np.eye(3).reshape(-1), p=np.zeros(12),
        binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def test_frame_source_applies_the_node_input_rules(seq_frames):
    ts = bag_io.make_typestore()
    f = seq_frames[0]
    resets = []
    src = bag_io.FrameSource(on_reset=lambda: resets.append(1))

    def img(frame=f, stamp=None, **kw):
        fr = frame if stamp is None else Frame(frame.rgb, frame.K, stamp, frame.frame_id)
        return src.image(_image_msg(ts, fr, **kw), bag_io.IMAGE_TYPE)

    assert img().kind == "camera_info_missing"
    K_nan = f.K.copy()
    K_nan[0, 0] = np.nan
    bad = src.camera_info(_info_msg(ts, f, K=K_nan))
    assert bad is not None and bad.kind == "bad_intrinsics" and "NaN" in bad.message
    assert img().kind == "camera_info_missing"
    assert src.camera_info(_info_msg(ts, f)) is None
    assert isinstance(img(), Frame)
    assert img(stamp=f.stamp_ns + 1, encoding="bogus16").kind == "unknown_encoding"
    assert img(stamp=f.stamp_ns + 2, data=f.rgb.reshape(-1)[: f.rgb.size // 2]).kind == "short_data"
    # stamps: equal/backwards frames are dropped; the third in a row restarts the stream
    assert img(stamp=f.stamp_ns).kind == "stamp_backwards"
    assert img(stamp=f.stamp_ns - 5).kind == "stamp_backwards"
    assert isinstance(img(stamp=f.stamp_ns - 10), Frame) and resets == [1]
    assert isinstance(img(stamp=f.stamp_ns + 10), Frame)
    # one frame of a foreign size (e.g. another camera on the topic) is dropped and counted once; no restart
    small = Frame(np.ascontiguousarray(f.rgb[:-4, :-4]), f.K, f.stamp_ns + 20, f.frame_id)
    assert img(small).kind == "size_change" and resets == [1]
    assert isinstance(img(stamp=f.stamp_ns + 30), Frame)
    # a persistent change: camera_info and images agree on the new size -> the keyframes restart once
    # the confirming frames arrive (the frames before are dropped as size_change)
    assert src.camera_info(_info_msg(ts, small)) is None
    got = [img(Frame(small.rgb, small.K, f.stamp_ns + 40 + 10 * i, f.frame_id)) for i in range(input_gate.SIZE_CHANGE_CONFIRM_COUNT)]
    assert [getattr(g, "kind", None) for g in got[:-1]] == ["size_change"] * (input_gate.SIZE_CHANGE_CONFIRM_COUNT - 1)
    assert isinstance(got[-1], Frame) and got[-1].rgb.shape == small.rgb.shape and resets == [1, 1]
    assert src.faults == {"camera_info_missing": 2, "bad_intrinsics": 1, "unknown_encoding": 1, "short_data": 1,
                          "stamp_backwards": 3, "size_change": input_gate.SIZE_CHANGE_CONFIRM_COUNT}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_a_one_line_error(tmp_path, seq_frames, storage):
    path = tmp_path / "in"
    bag_io.frames_to_bag(path, seq_frames, storage=storage)
    (data_file,) = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3")]
    raw = data_file.read_bytes()
    data_file.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(bag_io.BagError) as err:
        with bag_io.InputBag(path) as bag:
            t = bag_io.select_topics(bag.topics())
            for _ in bag.messages([t.image, t.camera_info]):
                pass
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_not_a_bag(tmp_path):
    with pytest.raises(bag_io.BagError, match="does not exist"):
        bag_io.InputBag(tmp_path / "missing")
    (tmp_path / "file.mcap").write_bytes(b"xx")
    with pytest.raises(bag_io.BagError, match="not a rosbag2 directory"):
        bag_io.InputBag(tmp_path / "file.mcap")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(bag_io.BagError, match="cannot read bag"):
        bag_io.InputBag(tmp_path / "empty_dir")


# ------------------------------------------------------------------------------ writing outputs


def test_splat_pair_type_hash_equals_rosidl_build():
    """Our rosbags registration of SplatPair hashes like the rosidl-built noposplat_msgs package."""
    import os

    ts = bag_io.make_typestore()
    share = pathlib.Path(os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)[0]) / "share/noposplat_msgs/msg/SplatPair.json"
    if not share.is_file():
        pytest.skip(f"rosidl-built noposplat_msgs not found at {share}")
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(share.read_text())["type_hashes"]}
    assert ts.hash_rihs01(bag_io.SPLAT_PAIR_TYPE) == hashes[bag_io.SPLAT_PAIR_TYPE]


def _pair_result(index: int, stamp0_ns: int, stamp1_ns: int, n: int = 50, lost: bool = False):
    from noposplat_ros.outputs import pointcloud
    from noposplat_ros.pipeline import PairResult
    from noposplat_ros.transforms import make_T, quat_xyzw_to_matrix

    gen = torch.Generator().manual_seed(index)
    q = torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=1)
    scales = torch.rand(n, 3, generator=gen) * 0.05 + 0.01
    g = Gaussians(
        means=torch.randn(n, 3, generator=gen) + torch.tensor([0.0, 0.0, 3.0]), scales=scales, rotations_xyzw=q,
        opacities=torch.rand(n, generator=gen) * 0.9 + 0.05, harmonics=torch.rand(n, 3, 1, generator=gen) - 0.5,
        covariances=covariances_from_scales_rotations(scales, q),
    )
    T_rel = make_T(quat_xyzw_to_matrix(np.array([0.0, 0.1, 0.0, 1.0]) / np.sqrt(1.01)), np.array([1.0, 0.0, 0.1]))
    T_w0 = np.eye(4)
    T_w0[0, 3] = index
    return PairResult(
        index=index, stamp0_ns=stamp0_ns, stamp1_ns=stamp1_ns, frame_id="cam_optical", status=PoseStatus.LOST if lost else PoseStatus.OK,
        scale_kind=ScaleKind.CHAINED, scale_factor=1.0, backend="geometry", T_cam0_from_cam1=np.eye(4) if lost else T_rel,
        covariance=np.diag([1e-3, 2e-3, 3e-3, 1e-4, 2e-4, 3e-4]), T_world_from_cam0=T_w0, T_world_from_cam1=T_w0 @ T_rel,
        gaussians=None if lost else g, cloud=pointcloud.gaussians_to_structured(g)[: 0 if lost else n],
        num_inliers=123, residual_px=0.5,
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_output_bag_readable_by_rosbags_and_rclpy(tmp_path, storage):
    from noposplat_ros.outputs.records import build_outputs

    results = [
        _pair_result(0, 10**18, 10**18 + 5 * 10**8),
        _pair_result(1, 10**18 + 5 * 10**8, 10**18 + 9 * 10**8, lost=True),
        _pair_result(2, 10**18 + 9 * 10**8, 10**18 + 14 * 10**8),
        _pair_result(3, 10**18 + 14 * 10**8, 10**18 + 19 * 10**8),
    ]
    path = tmp_path / "out"
    with bag_io.OutputBag(path, storage=storage) as out:
        for r in results:  # as the node: always with keyframe 0's transform, repeats dropped
            bag_io.write_pair_outputs(out, build_outputs(r, first_pair=True))

    from rosbags.highlevel import AnyReader

    raw_by_topic: dict[str, list[tuple[int, bytes]]] = {}
    with AnyReader([path], default_typestore=bag_io.make_typestore()) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == bag_io.OUTPUT_TOPICS
        for conn, log_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == bag_io.TF_TOPIC:
                assert bag_io.stamp_ns(msg.transforms[0].header) == log_ns
            else:
                assert bag_io.stamp_ns(msg.header) == log_ns
            raw_by_topic.setdefault(conn.topic, []).append((log_ns, bytes(raw)))
    s = [(r.stamp0_ns, r.stamp1_ns) for r in results]
    assert [t for t, _ in raw_by_topic[bag_io.SPLATS_TOPIC]] == [a for a, _ in s]
    assert [t for t, _ in raw_by_topic[bag_io.SPLAT_PAIR_TOPIC]] == [a for a, _ in s]
    assert [t for t, _ in raw_by_topic[bag_io.ODOMETRY_TOPIC]] == [s[0][1], s[2][1], s[3][1]]  # LOST: none
    # keyframe 0 of pair 2 starts a new segment after the LOST pair; pair 3's keyframe 0 was sent
    assert [t for t, _ in raw_by_topic[bag_io.TF_TOPIC]] == [s[0][0], s[0][1], s[2][0], s[2][1], s[3][1]]

    # the real ROS 2 typesupport decodes every payload
    from nav_msgs.msg import Odometry
    from noposplat_msgs.msg import SplatPair
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    from noposplat_ros.outputs import pointcloud

    for (_, raw), r in zip(raw_by_topic[bag_io.SPLAT_PAIR_TOPIC], results):
        m = deserialize_message(raw, SplatPair)
        assert (m.stamp0.sec * 10**9 + m.stamp0.nanosec, m.stamp1.sec * 10**9 + m.stamp1.nanosec) == (r.stamp0_ns, r.stamp1_ns)
        assert m.header.frame_id == "cam_optical" and m.status == int(r.status) and m.backend == "geometry"
        assert m.splats.width == r.num_splats
        np.testing.assert_allclose(np.asarray(m.covariance).reshape(6, 6), r.covariance)
        np.testing.assert_allclose([m.t_cam0_from_cam1.translation.x, m.t_cam0_from_cam1.translation.z], r.T_cam0_from_cam1[[0, 2], 3])
    raw0 = raw_by_topic[bag_io.SPLATS_TOPIC][0][1]
    cloud = deserialize_message(raw0, PointCloud2)
    dtype = pointcloud.dtype_from_fields([(f.name, f.offset, f.datatype, f.count) for f in cloud.fields], cloud.point_step)
    arr = np.frombuffer(bytes(cloud.data), dtype=dtype)
    np.testing.assert_array_equal(arr, results[0].cloud)
    odo = deserialize_message(raw_by_topic[bag_io.ODOMETRY_TOPIC][1][1], Odometry)
    np.testing.assert_allclose([odo.pose.pose.position.x, odo.pose.pose.position.z], results[2].T_world_from_cam1[[0, 2], 3])
    tf = deserialize_message(raw_by_topic[bag_io.TF_TOPIC][0][1], TFMessage)
    assert tf.transforms[0].header.frame_id == "odom" and tf.transforms[0].child_frame_id == "cam_optical"


def test_output_bag_refuses_existing_path(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(Exception, match="exists"):
        bag_io.OutputBag(tmp_path / "out")


def test_sqlite_output_is_plain_rosbag2_schema(tmp_path):
    path = tmp_path / "out"
    bag_io.OutputBag(path, storage="sqlite3").close()
    (db,) = path.glob("*.db3")
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"topics", "messages", "metadata", "schema", "message_definitions"} <= tables
