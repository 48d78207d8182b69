"""One bad frame never breaks the chain (issue 10), through DDS: the streams of
``test_bad_frames_bag`` (one foreign-size frame, and separately one stamp going back, one camera_info
with bad intrinsics, every 10 frames) sent as raw Image + CameraInfo to a real ``noposplat_node``
process give the keyframe pairs (stamps, statuses) that process-bag gives on the clean stream, and
the node's /diagnostics count each bad frame once, by its kind.

One node process for the clean stream and the three faulty ones, ``~/reset`` between them (the
counters are cumulative: each stream's share is the difference). Reliable input QoS, and the
publisher waits for each expected pair (``node_harness.publish_stream``), so no frame or pair is
dropped on the way.
"""
from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.node import Node  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from node_harness import STARTUP_TIMEOUT_S, node_command, publish_stream, start_process, stop_process, tail  # noqa: E402
from noposplat_ros.ros.diagnostics import FAULT_KINDS  # noqa: E402
from noposplat_ros.ros.soak_nodes import CameraStreamer, OutputMonitor, Spinner  # noqa: E402
from test_bad_frames_bag import N, _run, _stream, frames  # noqa: E402,F401  (frames: the module fixture)

NAME = "bad_frames_node"
KINDS = (None, "size_change", "stamp_backwards", "bad_intrinsics")


def _wait(cond, timeout_s: float, what: str, node_proc, log, detail=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        assert node_proc.poll() is None, f"the node exited while waiting for {what}\n" + tail((log,))
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} {detail()}\n" + tail((log,)))


def _call_reset(node: Node) -> None:
    """~/reset through the background executor (the Spinner spins ``node``)."""
    client = node.create_client(Trigger, f"/{NAME}/reset")
    try:
        assert client.wait_for_service(timeout_sec=30.0), "~/reset not available"
        fut = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 30.0
        while not fut.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fut.done() and fut.result().success, "~/reset failed"
    finally:
        node.destroy_client(client)


def test_one_bad_frame_every_10_frames_keeps_the_keyframes_over_dds(tmp_path, frames):
    clean_pairs, clean = _run(tmp_path, "clean", _stream(frames, None))  # process-bag: the reference
    assert len(clean_pairs) >= 3 and sum(clean["rejected"].values()) == 0
    pair_end = {s1 for _, s1, _ in clean_pairs}
    n_bad = len([i for i in range(N) if i % 10 == 5])

    log = tmp_path / "node.log"
    node_proc = start_process(node_command(NAME, {
        "predictor": "geometry", "input_qos": "reliable", "diagnostics_period_s": 0.2}, params_file=None), log)
    rclpy.init()
    node = Node("bad_frames_dds_driver")
    cam = CameraStreamer(node, "image", "camera_info")
    monitor = OutputMonitor(node, f"/{NAME}", splat_pairs=True)
    spinner = Spinner(node)
    results = {}
    try:
        assert cam.wait_for_subscribers(STARTUP_TIMEOUT_S), "the node did not subscribe\n" + tail((log,))
        # its outputs matched here too, so the first pair is not missed
        _wait(lambda: node.count_publishers(f"/{NAME}/splat_pair") >= 1 and monitor.snapshot()[0], 30.0,
              "the node's outputs and diagnostics", node_proc, log)
        time.sleep(0.5)
        used = 0
        for kind in KINDS:
            diag0, _, pairs0 = monitor.snapshot()
            publish_stream(cam, monitor, _stream(frames, kind), pair_end)
            used += N  # every clean frame is used (the bad-intrinsics frame with the last valid model)
            # diagnostics after the last frame: all frames seen, every selected pair published
            _wait(lambda: int(monitor.snapshot()[0].get("frames_used", 0)) >= used
                  and int(monitor.snapshot()[0].get("pairs_published", 0)) >= int(monitor.snapshot()[0].get("pairs_selected", 1)),
                  30.0, f"the node to finish the {kind or 'clean'} stream ({used} frames used)", node_proc, log,
                  lambda: f"pairs {monitor.snapshot()[2][len(pairs0):]}, diagnostics {monitor.snapshot()[0]}")
            time.sleep(0.5)  # one more diagnostics period
            diag1, _, pairs1 = monitor.snapshot()
            results[kind] = (
                [(s0, s1, status) for _, s0, s1, status in pairs1[len(pairs0):]],
                {k: int(diag1.get(f"fault.{k}", 0)) - int(diag0.get(f"fault.{k}", 0)) for k in FAULT_KINDS},
                int(diag1["frames_used"]) - int(diag0.get("frames_used", 0)),
                int(diag1.get("pairs_dropped", 0)),
            )
            _call_reset(node)
        assert node_proc.poll() is None, "the node died"
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        stop_process(node_proc)

    for kind in KINDS:
        pairs, faults, frames_used, dropped = results[kind]
        assert pairs == clean_pairs, (kind, pairs, clean_pairs)  # same keyframes, same pairs, same statuses
        assert frames_used == N and dropped == 0, (kind, frames_used, dropped)
        expected = {} if kind is None else {kind: n_bad}
        assert {k: v for k, v in faults.items() if v} == expected, (kind, faults)
