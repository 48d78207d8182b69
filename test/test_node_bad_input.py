"""Bad input through DDS never kills the node: each kind is counted in /diagnostics with a clear
log line. One node process (default sensor-data QoS), this test process as the one publisher. A
second node with a checkpoint that cannot load shows that the configure transition fails with the
reason, and that the node stays up and reports it.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from node_harness import STARTUP_TIMEOUT_S, node_command, spin_until, start_process, stop_process  # noqa: E402
from noposplat_ros.ros import conversions as conv  # noqa: E402
from noposplat_ros.ros.diagnostics import diagnostics_values  # noqa: E402
from noposplat_ros.ros.node import RELIABLE_QOS  # noqa: E402

NAME = "bad_input_node"
BAD_CKPT_NAME = "bad_checkpoint_node"
FRAME = "cam_optical"
STAMP0 = 1_800_000_000_000_000_000


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 4, 0), 4, 1)[:h, :w])


def K_for(w: int, h: int) -> np.ndarray:
    return np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1.0]])


class Diag:
    def __init__(self) -> None:
        self.status: dict[str, dict] = {}

    def __call__(self, msg: DiagnosticArray) -> None:
        self.status.update(diagnostics_values(msg))

    def get(self, node: str, part: str) -> dict:
        return self.status.get(f"{node}: {part}", {})

    def fault(self, kind: str) -> int:
        return int(self.get(NAME, "input").get(f"fault.{kind}", 0))


@pytest.fixture(scope="module")
def rcl():
    rclpy.init()
    node = rclpy.create_node("test_bad_input_publisher")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_bad_input_counted_and_node_survives(rcl, tmp_path):
    bad_ckpt = tmp_path / "broken_weights.safetensors"
    bad_ckpt.write_bytes(b"\x00this is not a checkpoint\xff" * 16)
    diag = Diag()
    sub = rcl.create_subscription(DiagnosticArray, "/diagnostics", diag, RELIABLE_QOS)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    img_pub = rcl.create_publisher(Image, "image", qos)
    info_pub = rcl.create_publisher(CameraInfo, "camera_info", qos)
    logs = (tmp_path / "node.log", tmp_path / "bad_ckpt_node.log")
    node = start_process(node_command(NAME, {
        "predictor": "geometry", "camera_info_timeout_s": 1.0, "diagnostics_period_s": 0.2,
        "keyframe.max_interval_s": 0.0}), logs[0])
    ckpt_node = start_process(node_command(BAD_CKPT_NAME, {
        "predictor": "noposplat", "checkpoint": str(bad_ckpt), "device": "cpu", "diagnostics_period_s": 0.2}), logs[1])
    stamp = [STAMP0]

    def next_stamp() -> int:
        stamp[0] += 100_000_000
        return stamp[0]

    def image(rgb: np.ndarray, stamp_ns: int, **override) -> Image:
        msg = conv.rgb_to_image_msg(rgb, stamp_ns, FRAME)
        for k, v in override.items():
            setattr(msg, k, v)
        return msg

    def info(w: int, h: int, K: np.ndarray | None = None, stamp_ns: int = STAMP0) -> CameraInfo:
        return conv.camera_info_msg(K_for(w, h) if K is None else K, w, h, stamp_ns, FRAME)

    def wait_fault(kind: str, send, at_least: int = 1) -> None:
        spin_until(rcl, lambda: diag.fault(kind) >= at_least, 30.0, f"fault.{kind} >= {at_least}",
                   (node,), logs, every=send)
        assert node.poll() is None, f"the node died on {kind}"

    try:
        spin_until(rcl, lambda: img_pub.get_subscription_count() >= 1 and info_pub.get_subscription_count() >= 1
                   and diag.get(NAME, "pipeline").get("state") == "active",
                   STARTUP_TIMEOUT_S, "the node to subscribe", (node,), logs)
        rgb = textured(48, 64)

        # 1. images without camera_info for longer than camera_info_timeout_s -> warning + count
        wait_fault("camera_info_missing", lambda: img_pub.publish(image(rgb, next_stamp())), 1)
        assert "camera_info" in diag.get(NAME, "input")["_message"]

        # a valid stream: camera_info then an image -> used
        def good() -> None:
            info_pub.publish(info(64, 48))
            time.sleep(0.02)
            img_pub.publish(image(rgb, next_stamp()))

        spin_until(rcl, lambda: int(diag.get(NAME, "input").get("frames_used", 0)) >= 1, 30.0, "a good frame used",
                   (node,), logs, every=good)

        # 2. unknown encoding
        wait_fault("unknown_encoding", lambda: img_pub.publish(image(rgb, next_stamp(), encoding="weird_fmt42")))
        # 3. data shorter than height * step
        def short() -> None:
            msg = image(rgb, next_stamp())
            msg.data = bytes(msg.data)[: len(msg.data) // 2]
            img_pub.publish(msg)

        wait_fault("short_data", short)
        # 4. zero and NaN intrinsics
        wait_fault("bad_intrinsics", lambda: info_pub.publish(info(64, 48, K=np.zeros((3, 3)))), 1)
        n = diag.fault("bad_intrinsics")
        K_nan = K_for(64, 48)
        K_nan[0, 0] = np.nan
        wait_fault("bad_intrinsics", lambda: info_pub.publish(info(64, 48, K=K_nan)), n + 1)
        # the stream recovers with a valid camera_info
        used = int(diag.get(NAME, "input")["frames_used"])
        spin_until(rcl, lambda: int(diag.get(NAME, "input")["frames_used"]) > used, 30.0, "recovery", (node,), logs,
                   every=good)

        # 5. image size changing mid-stream (with a matching camera_info)
        big = textured(60, 80, seed=1)

        def resized() -> None:
            info_pub.publish(info(80, 60))
            time.sleep(0.02)
            img_pub.publish(image(big, next_stamp()))

        wait_fault("size_change", resized)
        # 6. stamps going backwards
        wait_fault("stamp_backwards", lambda: img_pub.publish(image(big, STAMP0 - 1_000_000_000)))

        # the node is still alive and still processes good input
        used = int(diag.get(NAME, "input")["frames_used"])
        spin_until(rcl, lambda: int(diag.get(NAME, "input")["frames_used"]) > used, 30.0, "frames after faults",
                   (node,), logs, every=resized)
        assert node.poll() is None

        # lifecycle: deactivate unsubscribes (and frees the predictor), activate comes back
        change_ok = rcl.create_client(ChangeState, f"/{NAME}/change_state")
        assert change_ok.wait_for_service(timeout_sec=30.0)
        for tid, subs_expected in ((Transition.TRANSITION_DEACTIVATE, 0), (Transition.TRANSITION_ACTIVATE, 1)):
            fut = change_ok.call_async(ChangeState.Request(transition=Transition(id=tid)))
            rclpy.spin_until_future_complete(rcl, fut, timeout_sec=60.0)
            assert fut.result() is not None and fut.result().success, f"transition {tid} failed"
            spin_until(rcl, lambda: (img_pub.get_subscription_count() >= 1) == bool(subs_expected), 30.0,
                       f"subscriptions after transition {tid}", (node,), logs)

        # run-time parameters: ranges and cross-field rules are enforced, valid changes apply
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        set_params = rcl.create_client(SetParameters, f"/{NAME}/set_parameters")
        assert set_params.wait_for_service(timeout_sec=30.0)
        for name, value, ok in (("keyframe.min_overlap", 0.99, False),  # above target_overlap 0.9
                                ("keyframe.min_parallax_deg", -1.0, False),  # out of range
                                ("refine", "sometimes", False),  # read-only (and not a choice)
                                ("keyframe.min_parallax_deg", 1.0, True)):
            fut = set_params.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
            rclpy.spin_until_future_complete(rcl, fut, timeout_sec=30.0)
            res = fut.result().results[0]
            assert res.successful == ok, (name, value, res.reason)
            assert ok or res.reason
        assert node.poll() is None

        # 7. a checkpoint that fails to load: configure fails with the reason; the node stays up
        spin_until(rcl, lambda: diag.get(BAD_CKPT_NAME, "pipeline").get("_level") == 2, STARTUP_TIMEOUT_S,
                   "the bad-checkpoint node to report ERROR", (ckpt_node,), logs)
        pipe = diag.get(BAD_CKPT_NAME, "pipeline")
        assert pipe["state"] == "unconfigured"
        assert "configure failed" in pipe["_message"] and bad_ckpt.name in pipe["_message"]
        assert int(diag.get(BAD_CKPT_NAME, "input")["fault.checkpoint_load"]) >= 1
        get_state = rcl.create_client(GetState, f"/{BAD_CKPT_NAME}/get_state")
        change = rcl.create_client(ChangeState, f"/{BAD_CKPT_NAME}/change_state")
        assert get_state.wait_for_service(timeout_sec=30.0) and change.wait_for_service(timeout_sec=30.0)
        fut = get_state.call_async(GetState.Request())
        rclpy.spin_until_future_complete(rcl, fut, timeout_sec=30.0)
        assert fut.result().current_state.label == "unconfigured"
        fut = change.call_async(ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
        rclpy.spin_until_future_complete(rcl, fut, timeout_sec=60.0)
        assert fut.result() is not None and fut.result().success is False
        assert ckpt_node.poll() is None
        assert int(diag.get(BAD_CKPT_NAME, "input").get("fault.checkpoint_load", 0)) >= 1
    finally:
        stop_process(node)
        stop_process(ckpt_node)
        rcl.destroy_subscription(sub)

    # a clear log line for each kind
    log = logs[0].read_text(errors="replace")
    for kind, words in [("camera_info_missing", "camera_info"), ("unknown_encoding", "weird_fmt42"),
                        ("short_data", "expected height 48"), ("bad_intrinsics", "camera_info"),
                        ("size_change", "switched to 80x60"), ("stamp_backwards", "not after the previous")]:
        lines = [ln for ln in log.splitlines() if f"[{kind}]" in ln]
        assert lines and any(words in ln for ln in lines), f"no clear log line for {kind}:\n{log[-3000:]}"
    # the confirmed (persistent) size change restarts the keyframes, with its own line
    assert "image size changed from 64x48 to 80x60" in log
    # zero and NaN intrinsics are different reasons: both logged (throttling is per kind and reason)
    assert len({ln.split("] ", 2)[-1] for ln in log.splitlines() if "[bad_intrinsics]" in ln}) >= 2
    ckpt_log = logs[1].read_text(errors="replace")
    assert "configure failed" in ckpt_log and bad_ckpt.name in ckpt_log
