"""`noposplat-ros process-bag`: real-image bags in both storages -> output bag read back with rosbags
and rclpy, the same keyframe pairs as the live node fed the same frames over DDS, clear errors for
bad input, and Ctrl-C leaving a valid partial bag."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from noposplat_ros.io import bag_io
from noposplat_ros.cli import main as cli_main
from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence

# Half-size Motorcycle crops (320x240); the camera moves between the rig's two positions every
# 4 frames, so the keyframe selector makes a pair about every 4 frames.
N_FRAMES = 14


@pytest.fixture(scope="module")
def frames():
    return MotorcycleSequence(scale=0.5, frames_per_view=4).frames(N_FRAMES)


@pytest.fixture(scope="module")
def processed(tmp_path_factory, frames):
    """Both storages: input bag -> process-bag -> OUTPUT dir. {storage: (input, output, exit code)}."""
    out = {}
    for storage in ("mcap", "sqlite3"):
        d = tmp_path_factory.mktemp(f"pb_{storage}")
        bag_io.frames_to_bag(d / "in", frames, storage=storage)
        rc = cli_main(["process-bag", str(d / "in"), str(d / "out"), "--storage", storage, "--predictor", "geometry"])
        out[storage] = (d / "in", d / "out", rc)
    return out


def _read_output(bag_path: pathlib.Path):
    from rosbags.highlevel import AnyReader

    msgs: dict[str, list] = {}
    with AnyReader([bag_path], default_typestore=bag_io.make_typestore()) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype), bytes(raw)))
    return types, msgs


def _ns(t) -> int:
    return int(t.sec) * 10**9 + int(t.nanosec)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_output_bag_topics_types_stamps(processed, frames, storage):
    _, out, rc = processed[storage]
    assert rc == 0
    bag_dir = out / "bag"
    assert any(bag_dir.glob("*.mcap" if storage == "mcap" else "*.db3"))
    types, msgs = _read_output(bag_dir)
    assert types == bag_io.OUTPUT_TOPICS
    stamps = {f.stamp_ns for f in frames}
    pairs = [m for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    assert len(pairs) >= 2, "the moving sequence must give keyframe pairs"
    for log_ns, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]:
        s0, s1 = _ns(m.stamp0), _ns(m.stamp1)
        assert s0 in stamps and s1 in stamps and s0 < s1
        assert log_ns == _ns(m.header.stamp) == s0  # logged at keyframe 0's stamp
        assert m.splats.width > 1000 and m.status in (0, 1) and m.backend == "geometry"
    # chained keyframes: each pair starts where the previous ended
    assert all(_ns(a.stamp1) == _ns(b.stamp0) for a, b in zip(pairs, pairs[1:]))
    assert [t for t, _, _ in msgs[bag_io.SPLATS_TOPIC]] == [_ns(p.stamp0) for p in pairs]
    assert [t for t, _, _ in msgs[bag_io.ODOMETRY_TOPIC]] == [_ns(p.stamp1) for p in pairs]
    for log_ns, m, _ in msgs[bag_io.TF_TOPIC]:
        assert log_ns == _ns(m.transforms[0].header.stamp)
    # the camera moves along +x between the rig's positions: odometry x alternates ~1 step apart
    xs = [m.pose.pose.position.x for _, m, _ in msgs[bag_io.ODOMETRY_TOPIC]]
    assert abs(xs[0]) > 0.5

    # rclpy's real typesupport decodes every payload to the same values
    from nav_msgs.msg import Odometry
    from noposplat_msgs.msg import SplatPair
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    ros_types = {bag_io.SPLATS_TOPIC: PointCloud2, bag_io.SPLAT_PAIR_TOPIC: SplatPair,
                 bag_io.ODOMETRY_TOPIC: Odometry, bag_io.TF_TOPIC: TFMessage}
    for topic, cls in ros_types.items():
        for _, m, raw in msgs[topic]:
            r = deserialize_message(raw, cls)
            if topic == bag_io.SPLAT_PAIR_TOPIC:
                assert (_ns(r.stamp0), _ns(r.stamp1)) == (_ns(m.stamp0), _ns(m.stamp1))
                assert bytes(r.splats.data) == bytes(m.splats.data.tobytes())
                np.testing.assert_array_equal(np.asarray(r.covariance), m.covariance)
            elif topic == bag_io.TF_TOPIC:
                assert r.transforms[0].child_frame_id == m.transforms[0].child_frame_id
            else:
                assert _ns(r.header.stamp) == _ns(m.header.stamp)

    # PLY per pair and the trajectory
    plys = sorted((out / "ply").glob("*.ply"))
    assert len(plys) == sum(p.splats.width > 0 for p in pairs)  # LOST pairs keep their splats (predictor units)
    from noposplat_ros.io.ply import read_ply

    assert read_ply(plys[0]).num == pairs[0].splats.width
    tum = [line.split() for line in (out / "trajectory.tum").read_text().splitlines() if line and not line.startswith("#")]
    assert len(tum) >= len(pairs) and all(len(row) == 8 for row in tum)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == N_FRAMES and summary["pairs"] == len(pairs) and not summary["interrupted"]


def test_both_storages_give_the_same_pairs(processed):
    stamps = {}
    for storage, (_, out, _) in processed.items():
        _, msgs = _read_output(out / "bag")
        stamps[storage] = [(_ns(m.stamp0), _ns(m.stamp1)) for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    assert stamps["mcap"] == stamps["sqlite3"]


# Faults mixed into the stream that is both recorded and sent to the node: (frame index -> fault).
# They hit the frames where the camera moves (4, 8, 12), so they shift the keyframes.
STREAM_FAULTS = {4: "wrong_encoding", 8: "nan_intrinsics", 12: "stamp_backwards", 14: "truncated"}


def _faulty_stream(frames):
    """The same messages for the bag and for DDS: dicts of CameraInfo + Image content."""
    out = []
    for i, f in enumerate(frames):
        fault = STREAM_FAULTS.get(i)
        K = f.K.copy()
        if fault == "nan_intrinsics":
            K[0, 0] = np.nan
        stamp = frames[i - 1].stamp_ns - 1_000_000 if fault == "stamp_backwards" else f.stamp_ns
        out.append(dict(rgb=f.rgb, K=K, stamp_ns=stamp, log_ns=f.stamp_ns, frame_id=f.frame_id,
                        encoding="rgb8_bogus" if fault == "wrong_encoding" else "rgb8", truncate=fault == "truncated"))
    return out


def _write_stream_bag(path, stream):
    """A bag as a recorder would store the stream: log time = arrival order, header stamps as sent."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = bag_io.make_typestore()
    T = ts.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection("/cam/camera_info", bag_io.CAMERA_INFO_TYPE, typestore=ts)
        im = w.add_connection("/cam/image_raw", bag_io.IMAGE_TYPE, typestore=ts)
        for m in stream:
            sec, nsec = divmod(m["stamp_ns"], 10**9)
            header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=m["frame_id"])
            h, wd = m["rgb"].shape[:2]
            P = np.concatenate([m["K"], np.zeros((3, 1))], axis=1)
            info = T[bag_io.CAMERA_INFO_TYPE](
                header=header, height=h, width=wd, distortion_model="plumb_bob", d=np.zeros(5), k=m["K"].reshape(-1),
                r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
                roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            data = m["rgb"].reshape(-1)
            img = T[bag_io.IMAGE_TYPE](header=header, height=h, width=wd, encoding=m["encoding"], is_bigendian=0,
                                       step=3 * wd, data=data[: data.size // 2] if m["truncate"] else data)
            w.write(ci, m["log_ns"], ts.serialize_cdr(info, bag_io.CAMERA_INFO_TYPE))
            w.write(im, m["log_ns"] + 1, ts.serialize_cdr(img, bag_io.IMAGE_TYPE))


def test_same_keyframe_pairs_and_faults_as_the_live_node(tmp_path):
    """The same stream (real moving images with faults mixed in) recorded in a bag and sent to
    noposplat_node over DDS (a separate process): the node publishes exactly the keyframe pairs
    (stamps) of the output bag and counts the same faults by kind."""
    import rclpy
    from rclpy.node import Node

    from node_harness import publish_stream
    from noposplat_ros.ros.soak_nodes import CameraStreamer, OutputMonitor, Spinner

    frames = MotorcycleSequence(scale=0.5, frames_per_view=4).frames(20)
    stream = _faulty_stream(frames)
    _write_stream_bag(tmp_path / "in", stream)
    assert cli_main(["process-bag", str(tmp_path / "in"), str(tmp_path / "out"), "--predictor", "geometry"]) == 0
    _, msgs = _read_output(tmp_path / "out" / "bag")
    bag_pairs = [(_ns(m.stamp0), _ns(m.stamp1)) for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    bag_tf = [(_ns(t.header.stamp), t.header.frame_id, t.child_frame_id) for _, m, _ in msgs[bag_io.TF_TOPIC] for t in m.transforms]
    bag_faults = json.loads((tmp_path / "out" / "summary.json").read_text())["rejected"]
    assert len(bag_pairs) >= 3
    assert {k: bag_faults.get(k, 0) for k in ("unknown_encoding", "short_data", "bad_intrinsics", "stamp_backwards")} \
        == {"unknown_encoding": 1, "short_data": 1, "bad_intrinsics": 1, "stamp_backwards": 1}
    pair_end = {s1 for _, s1 in bag_pairs}

    ns = "/pbtest"
    node_cmd = [str(pathlib.Path(sys.executable).parent / "noposplat_node"), "--ros-args", "-r", f"__ns:={ns}",
                "-p", "predictor:=geometry", "-p", "input_qos:=reliable", "-p", "diagnostics_period_s:=0.2"]
    log_dir = pathlib.Path(os.environ["ROS_LOG_DIR"])
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"pbtest_node_{os.getpid()}.log", "w")
    node_proc = subprocess.Popen(node_cmd, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = Node("pbtest_driver")
    cam = CameraStreamer(node, f"{ns}/image", f"{ns}/camera_info")
    monitor = OutputMonitor(node, f"{ns}/noposplat_node", splat_pairs=True, tf=True)
    spinner = Spinner(node)
    try:
        assert cam.wait_for_subscribers(60), "node did not subscribe"
        deadline = time.monotonic() + 30  # outputs matched too, so the first pair is not missed
        while time.monotonic() < deadline and node.count_publishers(f"{ns}/noposplat_node/splat_pair") == 0:
            time.sleep(0.05)
        time.sleep(0.5)
        publish_stream(cam, monitor, stream, pair_end)  # waits for each pair: the node never supersedes one
        time.sleep(1.0)
        diag, _, pairs = monitor.snapshot()
        node_pairs = [(s0, s1) for _, s0, s1, _ in pairs]
        node_tf = list(monitor.tf)
        assert node_proc.poll() is None, "node died"
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        log.close()
    assert node_pairs == bag_pairs
    assert node_tf == bag_tf  # same /tf edges at the same stamps
    for kind in ("unknown_encoding", "short_data", "bad_intrinsics", "stamp_backwards", "size_change", "decode_error"):
        assert int(diag.get(f"fault.{kind}", -1)) == bag_faults.get(kind, 0), (kind, diag)


# ------------------------------------------------------------------------------ bad input


def _run_cli(args, capsys):
    rc = cli_main(["process-bag", *map(str, args), "--predictor", "geometry"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.fixture(scope="module")
def good_bag(tmp_path_factory, frames):
    path = tmp_path_factory.mktemp("good") / "in"
    bag_io.frames_to_bag(path, frames[:3], storage="mcap")
    return path


def test_missing_topic(tmp_path, good_bag, capsys):
    rc, err = _run_cli([good_bag, tmp_path / "out", "--image-topic", "/nope/image_raw"], capsys)
    assert rc == 1 and len(err) == 1 and "/nope/image_raw" in err[0] and "not in the bag" in err[0]
    assert not (tmp_path / "out").exists()


def test_empty_topic(tmp_path, capsys):
    bag_io.frames_to_bag(tmp_path / "in", [], storage="sqlite3")
    rc, err = _run_cli([tmp_path / "in", tmp_path / "out"], capsys)
    assert rc == 1 and len(err) == 1 and "empty" in err[0] and "/camera/image_raw" in err[0]


def test_camera_info_absent(tmp_path, frames, capsys):
    bag_io.frames_to_bag(tmp_path / "in", frames[:2], camera_info_topic=None)
    rc, err = _run_cli([tmp_path / "in", tmp_path / "out"], capsys)
    assert rc == 1 and len(err) == 1 and "no CameraInfo topic" in err[0]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag(tmp_path, frames, capsys, storage):
    bag_io.frames_to_bag(tmp_path / "in", frames[:4], storage=storage)
    (data,) = [p for p in (tmp_path / "in").iterdir() if p.suffix in (".mcap", ".db3")]
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) * 2 // 3])
    rc, err = _run_cli([tmp_path / "in", tmp_path / "out"], capsys)
    assert rc == 1 and len(err) == 1 and "cannot read bag" in err[0] and str(tmp_path / "in") in err[0]


def test_unreadable_path(tmp_path, capsys):
    rc, err = _run_cli([tmp_path / "nothing", tmp_path / "out"], capsys)
    assert rc == 1 and len(err) == 1 and "does not exist" in err[0]


def test_existing_output_needs_overwrite(tmp_path, good_bag, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    rc, err = _run_cli([good_bag, out], capsys)
    assert rc == 1 and len(err) == 1 and "exists" in err[0] and "--overwrite" in err[0]
    assert (out / "summary.json").read_text() == "{}"  # untouched
    rc, err = _run_cli([good_bag, out, "--overwrite"], capsys)
    assert rc == 0 and (out / "bag" / "metadata.yaml").is_file(), err
    # --overwrite never deletes what process-bag did not write
    (out / "precious.txt").write_text("x")
    rc, err = _run_cli([good_bag, out, "--overwrite"], capsys)
    assert rc == 1 and "precious.txt" in err[0] and (out / "precious.txt").exists()


# ------------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_leaves_a_valid_partial_bag(tmp_path):
    seq = MotorcycleSequence(scale=0.5, frames_per_view=4)
    bag_io.frames_to_bag(tmp_path / "in", seq.frames(120), storage="mcap")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "noposplat-ros"), "process-bag", str(tmp_path / "in"), str(out),
         "--predictor", "geometry", "--progress-interval-s", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    lines = []
    for line in proc.stderr:  # progress lines; interrupt once two pairs are written
        lines.append(line)
        if " pairs 2 " in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    rc = proc.wait(timeout=120)
    assert rc == 130, "".join(lines[-3:]) + rest
    assert "interrupted" in rest and "valid" in rest
    types, msgs = _read_output(out / "bag")
    assert types == bag_io.OUTPUT_TOPICS
    n = len(msgs.get(bag_io.SPLAT_PAIR_TOPIC, []))
    assert 2 <= n < 25  # some pairs written, far from the whole bag
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["frames"] < 120 and summary["pairs"] == n


# ------------------------------------------------------------------------------ node parameters


def test_params_file_of_the_node(tmp_path, frames, capsys):
    """The node's own YAML is accepted; its keyframe settings drive the bag run."""
    repo_yaml = pathlib.Path(__file__).resolve().parents[1] / "config" / "noposplat.yaml"
    bag_io.frames_to_bag(tmp_path / "in", frames, storage="mcap")
    if repo_yaml.is_file():
        rc, err = _run_cli([tmp_path / "in", tmp_path / "o1", "--params-file", repo_yaml, "--max-frames", "2"], capsys)
        assert rc == 0, err
    strict = tmp_path / "strict.yaml"
    strict.write_text("/**:\n  ros__parameters:\n    predictor: geometry\n    keyframe:\n"
                      "      min_parallax_deg: 30.0\n      max_interval_s: 0.0\n")
    rc, err = _run_cli([tmp_path / "in", tmp_path / "o2", "--params-file", strict], capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["frames"] == N_FRAMES and summary["pairs"] == 0  # no pair has 30 deg of parallax
    rc, err = _run_cli([tmp_path / "in", tmp_path / "o3", "--keyframe", "no_such=1"], capsys)
    assert rc == 1 and len(err) == 1 and "no_such" in err[0]


# ------------------------------------------------------------------------------ metric scale from odometry


def _bag_with_odometry(path, frames, seq, child_frame, static_edges=()):
    """Images + camera_info, plus the robot's odometry: the camera sits at the rig's left (x = 0) or
    right (x = baseline) position, as the Motorcycle sequence alternates between them."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from noposplat_ros.fixtures.motorcycle import MOTORCYCLE_BASELINE_M

    bag_io.frames_to_bag(path / "imgs", frames, storage="mcap")
    ts = bag_io.make_typestore()
    T = ts.types
    from rosbags.highlevel import AnyReader

    with AnyReader([path / "imgs"], default_typestore=ts) as r, \
            Writer(path / "in", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.topic: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections}
        for c, log_ns, raw in r.messages():
            w.write(conns[c.topic], log_ns, raw)
        oc = w.add_connection("/robot/odom", "nav_msgs/msg/Odometry", typestore=ts)
        V = T["geometry_msgs/msg/Vector3"]
        if static_edges:  # (parent, child, translation, rotation xyzw): the camera mount
            sc = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
            sec, nsec = divmod(frames[0].stamp_ns, 10**9)
            stamp = T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)
            tfm = T["tf2_msgs/msg/TFMessage"](transforms=[
                T["geometry_msgs/msg/TransformStamped"](
                    header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=parent), child_frame_id=child,
                    transform=T["geometry_msgs/msg/Transform"](
                        translation=V(x=t[0], y=t[1], z=t[2]),
                        rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))
                for parent, child, t, q in static_edges])
            w.write(sc, frames[0].stamp_ns - 1, ts.serialize_cdr(tfm, "tf2_msgs/msg/TFMessage"))
        for i, f in enumerate(frames):
            x = MOTORCYCLE_BASELINE_M if (i // seq.frames_per_view) % 2 == 1 else 0.0
            sec, nsec = divmod(f.stamp_ns, 10**9)
            msg = T["nav_msgs/msg/Odometry"](
                header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id="odom"),
                child_frame_id=child_frame,
                pose=T["geometry_msgs/msg/PoseWithCovariance"](
                    pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=x, y=0.0, z=0.0),
                                                     orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
                    covariance=np.zeros(36)),
                twist=T["geometry_msgs/msg/TwistWithCovariance"](
                    twist=T["geometry_msgs/msg/Twist"](linear=V(x=0.0, y=0.0, z=0.0), angular=V(x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36)),
            )
            w.write(oc, f.stamp_ns + 5_000_000, ts.serialize_cdr(msg, "nav_msgs/msg/Odometry"))  # arrives 5 ms late
    return MOTORCYCLE_BASELINE_M


def test_metric_scale_from_odometry_in_the_bag(tmp_path, motorcycle):
    seq = MotorcycleSequence(scale=0.5, frames_per_view=4)
    frames = seq.frames(10)
    baseline_m = _bag_with_odometry(tmp_path, frames, seq, child_frame=frames[0].frame_id)
    rc = cli_main(["process-bag", str(tmp_path / "in"), str(tmp_path / "out"), "--predictor", "geometry",
                   "--scale-odometry-topic", "/robot/odom"])
    assert rc == 0
    _, msgs = _read_output(tmp_path / "out" / "bag")
    pairs = [m for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    assert len(pairs) >= 2
    for m in pairs:
        assert m.scale_kind == 2  # SCALE_METRIC
        t = m.t_cam0_from_cam1.translation
        assert np.linalg.norm([t.x, t.y, t.z]) == pytest.approx(baseline_m, rel=1e-6)
    # the right camera is at +x of the left one: odometry of the first pair, in metres
    odo = msgs[bag_io.ODOMETRY_TOPIC][0][1]
    assert odo.pose.pose.position.x == pytest.approx(baseline_m, abs=0.03)
    # metric splats: median depth of the first pair (camera 0 = left) near the ground truth's
    from noposplat_ros.outputs import pointcloud

    cloud = pairs[0].splats
    arr = np.frombuffer(cloud.data.tobytes(), dtype=pointcloud.dtype_from_fields(
        [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields], cloud.point_step))
    z = arr["z"][np.isfinite(arr["z"]) & (arr["z"] > 0)]
    gt = np.nanmedian(motorcycle.depth_left_m())
    assert np.median(z) == pytest.approx(gt, rel=0.25)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["rejected"].get("scale_odometry_missing", 0) == 0


def test_odometry_of_another_frame_needs_the_mount(tmp_path):
    seq = MotorcycleSequence(scale=0.5, frames_per_view=4)
    frames = seq.frames(6)
    _bag_with_odometry(tmp_path, frames, seq, child_frame="base_link")  # no /tf_static in the bag
    rc = cli_main(["process-bag", str(tmp_path / "in"), str(tmp_path / "out"), "--predictor", "geometry",
                   "--scale-odometry-topic", "/robot/odom"])
    assert rc == 0
    _, msgs = _read_output(tmp_path / "out" / "bag")
    pairs = [m for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    assert pairs and all(m.scale_kind != 2 for m in pairs)  # not metric without the mount
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rejected"]["scale_odometry_missing"] == len(pairs)
    rc = cli_main(["process-bag", str(tmp_path / "in"), str(tmp_path / "out2"), "--scale-odometry-topic", "/nope"])
    assert rc == 1
    # with the mount on /tf_static (base_link -> camera_link -> optical frame, REP 103 axes) it is metric
    mount = [("base_link", "camera_link", (0.2, 0.0, 0.5), (0.0, 0.0, 0.0, 1.0)),
             ("camera_link", frames[0].frame_id, (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5))]
    (tmp_path / "m").mkdir()
    baseline_m = _bag_with_odometry(tmp_path / "m", frames, seq, child_frame="base_link", static_edges=mount)
    assert cli_main(["process-bag", str(tmp_path / "m" / "in"), str(tmp_path / "m" / "out"), "--predictor", "geometry",
                     "--scale-odometry-topic", "/robot/odom"]) == 0
    _, msgs = _read_output(tmp_path / "m" / "out" / "bag")
    pairs = [m for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    assert pairs and all(m.scale_kind == 2 for m in pairs)
    t = pairs[0].t_cam0_from_cam1.translation
    assert np.linalg.norm([t.x, t.y, t.z]) == pytest.approx(baseline_m, rel=1e-6)


def test_outputs_in_the_robot_base_frame(tmp_path):
    """--base-frame: odometry and tf of base_link in odom, through the mount on the bag's /tf_static."""
    seq = MotorcycleSequence(scale=0.5, frames_per_view=4)
    frames = seq.frames(6)
    cam = frames[0].frame_id
    # camera 0.5 m above base_link, optical axes (z forward = base x, x right = base -y)
    mount = [("base_link", cam, (0.0, 0.0, 0.5), (-0.5, 0.5, -0.5, 0.5))]
    _bag_with_odometry(tmp_path, frames, seq, child_frame=cam, static_edges=mount)
    assert cli_main(["process-bag", str(tmp_path / "in"), str(tmp_path / "out"), "--predictor", "geometry",
                     "--base-frame", "base_link", "--metric-baseline-m", "0.193"]) == 0
    _, msgs = _read_output(tmp_path / "out" / "bag")
    odo = [m for _, m, _ in msgs[bag_io.ODOMETRY_TOPIC]]
    assert odo and all(m.child_frame_id == "base_link" and m.header.frame_id == "odom" for m in odo)
    tf_children = {t.child_frame_id for _, m, _ in msgs[bag_io.TF_TOPIC] for t in m.transforms}
    assert tf_children == {"base_link"}
    # the camera moved +x (right) in optical axes = -y of the base; the base starts at the odom origin
    p = odo[0].pose.pose.position
    assert p.y == pytest.approx(-0.193, abs=0.03) and abs(p.x) < 0.03 and abs(p.z) < 0.03
    # without the mount: no odometry / tf, a fault per pair
    assert cli_main(["process-bag", str(tmp_path / "imgs"), str(tmp_path / "out2"), "--predictor", "geometry",
                     "--base-frame", "base_link", "--no-tf"]) == 0
    summary = json.loads((tmp_path / "out2" / "summary.json").read_text())
    assert summary["output_counts"][bag_io.ODOMETRY_TOPIC] == 0 and summary["output_counts"][bag_io.TF_TOPIC] == 0
    assert summary["rejected"]["extrinsic_missing"] == summary["pairs"] > 0
