"""Helpers for the tests that run the real node in a separate process over DDS (loopback).

The node and the player are started as subprocesses with the test process's environment (the
per-pytest-process ROS_DOMAIN_ID from conftest); the test process listens with rclpy.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from typing import Callable

import rclpy
from rclpy.node import Node

REPO = pathlib.Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "noposplat.yaml"
# generous but bounded: CI has 2 cores shared with other jobs
STARTUP_TIMEOUT_S = 90.0


def node_command(name: str, params: dict[str, object], params_file: pathlib.Path | None = PARAMS_FILE) -> list[str]:
    """The node's console script (as installed in the venv) with --ros-args."""
    exe = pathlib.Path(sys.executable).with_name("noposplat_node")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "noposplat_ros.ros.node"]
    cmd += ["--ros-args", "-r", f"__node:={name}"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for k, v in params.items():
        v = ("true" if v else "false") if isinstance(v, bool) else v
        cmd += ["-p", f"{k}:={v}"]
    return cmd


def start_process(cmd: list[str], log_path: pathlib.Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=str(REPO))
    proc._log_file = log  # type: ignore[attr-defined]
    return proc


def stop_process(proc: subprocess.Popen | None, timeout_s: float = 20.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = getattr(proc, "_log_file", None)
    if log is not None:
        log.close()


def spin_until(node: Node, cond: Callable[[], bool], timeout_s: float, what: str,
               procs: tuple[subprocess.Popen, ...] = (), logs: tuple[pathlib.Path, ...] = (),
               every: Callable[[], None] | None = None, every_s: float = 0.5) -> None:
    """Spin ``node`` until ``cond()``; fail with the subprocess logs on timeout or if one died.

    every: called every ``every_s`` seconds while waiting (e.g. to re-send a message).
    """
    deadline = time.monotonic() + timeout_s
    next_every = 0.0
    while time.monotonic() < deadline:
        if every is not None and time.monotonic() >= next_every:
            every()
            next_every = time.monotonic() + every_s
        rclpy.spin_once(node, timeout_sec=0.05)
        if cond():
            return
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                raise AssertionError(f"process {p.args[:3]} exited with {p.returncode} while waiting for {what}\n"
                                     + tail(logs))
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n" + tail(logs))


def tail(logs: tuple[pathlib.Path, ...], n: int = 40) -> str:
    out = []
    for path in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            continue
        out.append(f"--- {path.name} ---\n" + "\n".join(lines))
    return "\n".join(out)


def publish_stream(cam, monitor, stream: list[dict], pair_end: set[int], pace_s: float = 0.1,
                   pair_timeout_s: float = 60.0) -> None:
    """Send a recorded stream to a node like a camera driver: each message's CameraInfo, then its Image.

    cam: ``soak_nodes.CameraStreamer``; monitor: ``soak_nodes.OutputMonitor`` with ``splat_pairs``;
    stream: dicts with rgb, K, stamp_ns, frame_id, encoding, truncate (as written to the test bags).
    After an image whose stamp is in ``pair_end`` (the kf1 stamps of the pairs expected), wait until
    that pair is published, so the node never supersedes a pair (latest pair wins) and no frame is
    dropped; after any other image wait ``pace_s``. Only pairs received after the call count (a
    stream may repeat the stamps of an earlier one, e.g. after ``~/reset``).
    """
    seen = len(monitor.snapshot()[2])
    for m in stream:
        cam.publish_info(m["K"], m["rgb"].shape[1], m["rgb"].shape[0], m["stamp_ns"], m["frame_id"])
        time.sleep(0.05)  # separate topics: let the camera_info arrive first, as in the bag's order
        cam.publish_image(m["rgb"], m["stamp_ns"], m["frame_id"], encoding=m["encoding"], truncate=m["truncate"])
        if m["stamp_ns"] in pair_end:
            t_end = time.monotonic() + pair_timeout_s
            while time.monotonic() < t_end and not any(p[2] == m["stamp_ns"] for p in monitor.snapshot()[2][seen:]):
                time.sleep(0.05)
        else:
            time.sleep(pace_s)
