"""/diagnostics for the node: input rate, stamp age, per-stage latency, keyframes, faults by kind.

``NodeHealth`` is the thread-safe bookkeeping (executor thread and worker write to it);
``health_to_diagnostics`` turns a snapshot into a ``diagnostic_msgs/DiagnosticArray`` with two
statuses, ``<node>: input`` and ``<node>: pipeline``. Fault counters are published as
``fault.<kind>`` key/values so tools (and our tests) can read them. ``diagnostic_updater`` is not on
PyPI; this is the small part of it the node needs.
"""
from __future__ import annotations

import collections
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from noposplat_ros.ros.conversions import ns_to_time

# Every fault kind the node counts (always published, 0 included, so consumers see the schema).
FAULT_KINDS = (
    "unknown_encoding",  # Image.encoding not decodable
    "short_data",  # len(data) < height * step
    "decode_error",  # other undecodable payloads (corrupt JPEG, zero size, ...)
    "bad_intrinsics",  # camera_info with zero / NaN / inconsistent intrinsics
    "size_change",  # image size changed mid-stream (keyframes reset)
    "stamp_backwards",  # image stamp not after the previous one (frame dropped)
    "camera_info_missing",  # images arrive but no valid camera_info for camera_info_timeout_s
    "invalid_parameters",  # configure rejected the parameters (reason in the message)
    "checkpoint_load",  # the predictor / checkpoint failed to load on configure
    "prediction_lost",  # the predictor could not reconstruct a pair (LOST result)
    "scale_odometry_missing",  # scale_odometry_topic set but no samples around the keyframe stamps
    "extrinsic_missing",  # base_frame set but no static base_frame <- camera transform on /tf_static
    "worker_error",  # unexpected exception in the worker (bug): logged with traceback
)

LEVEL_NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


class NodeHealth:
    """Counters and recent timings; every method is cheap and thread-safe."""

    def __init__(self, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._rate_window_s = rate_window_s
        self._arrivals: collections.deque[float] = collections.deque(maxlen=1000)
        self.faults: dict[str, int] = {k: 0 for k in FAULT_KINDS}
        self.last_fault_message: dict[str, str] = {}
        self.frames_in = 0
        self.frames_used = 0
        self.keyframes = 0  # accepted keyframes (incl. fresh keyframes 0)
        self.pairs_selected = 0  # keyframe pairs handed to the worker
        self.pairs_published = 0
        self.pairs_dropped = 0  # superseded by a newer pair before the worker took them
        self.last_stamp_age_s = float("nan")
        self.stage_s: dict[str, float] = {}
        self.backend = ""
        self.state = "unconfigured"
        self.error = ""  # last configure error (ERROR level while set)
        self.warning = ""  # current warning (e.g. camera_info missing)
        self.map: dict[str, float | int] = {}  # scene map: gaussians, memory_mib, fusion_s, submaps, ...

    def set_map(self, **values: float | int) -> None:
        with self._lock:
            self.map.update(values)

    def frame_arrived(self, stamp_age_s: float) -> None:
        with self._lock:
            self.frames_in += 1
            self._arrivals.append(time.monotonic())
            self.last_stamp_age_s = float(stamp_age_s)

    def fault(self, kind: str, message: str) -> int:
        """Count one fault; returns the new count of that kind."""
        with self._lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1
            self.last_fault_message[kind] = message
            return self.faults[kind]

    def stage(self, name: str, seconds: float) -> None:
        with self._lock:
            self.stage_s[name] = float(seconds)

    def input_rate_hz(self) -> float:
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._arrivals if now - t <= self._rate_window_s]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict:
        rate = self.input_rate_hz()
        with self._lock:
            return dict(
                faults=dict(self.faults), last_fault_message=dict(self.last_fault_message),
                frames_in=self.frames_in, frames_used=self.frames_used, keyframes=self.keyframes,
                pairs_selected=self.pairs_selected,
                pairs_published=self.pairs_published, pairs_dropped=self.pairs_dropped,
                stamp_age_s=self.last_stamp_age_s, stage_s=dict(self.stage_s), backend=self.backend,
                state=self.state, error=self.error, warning=self.warning, input_rate_hz=rate,
                map=dict(self.map),
            )


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.6g}"
    return KeyValue(key=key, value=str(value))


def health_to_diagnostics(snap: dict, node_name: str, hardware_id: str, stamp_ns: int) -> DiagnosticArray:
    """DiagnosticArray with an input status and a pipeline status.

    Levels: ERROR while a configure error is set; WARN while a warning is active or input faults
    occurred since start; OK otherwise.
    """
    f = snap["faults"]
    input_faults = sum(v for k, v in f.items() if k not in ("checkpoint_load", "invalid_parameters", "prediction_lost", "worker_error",
                                                             "scale_odometry_missing", "extrinsic_missing"))
    inp = DiagnosticStatus(name=f"{node_name}: input", hardware_id=hardware_id)
    if snap["warning"]:
        inp.level, inp.message = DiagnosticStatus.WARN, snap["warning"]
    elif input_faults:
        inp.level, inp.message = DiagnosticStatus.WARN, f"{input_faults} bad input messages since start"
    else:
        inp.level, inp.message = DiagnosticStatus.OK, "receiving" if snap["frames_in"] else "waiting for images"
    inp.values = [
        _kv("input_rate_hz", float(snap["input_rate_hz"])),
        _kv("stamp_age_s", float(snap["stamp_age_s"])),
        _kv("frames_in", snap["frames_in"]),
        _kv("frames_used", snap["frames_used"]),
    ] + [_kv(f"fault.{k}", v) for k, v in sorted(f.items())]
    inp.values += [_kv(f"last_fault.{k}", m) for k, m in sorted(snap["last_fault_message"].items())]

    pipe = DiagnosticStatus(name=f"{node_name}: pipeline", hardware_id=hardware_id)
    if snap["error"]:
        pipe.level, pipe.message = DiagnosticStatus.ERROR, snap["error"]
    elif f.get("worker_error") or f.get("prediction_lost"):
        pipe.level, pipe.message = DiagnosticStatus.WARN, f"state {snap['state']}; some pairs failed"
    else:
        pipe.level, pipe.message = DiagnosticStatus.OK, f"state {snap['state']}"
    pipe.values = [
        _kv("state", snap["state"]),
        _kv("backend", snap["backend"] or "(not loaded)"),
        _kv("keyframes", snap["keyframes"]),
        _kv("pairs_selected", snap["pairs_selected"]),
        _kv("pairs_published", snap["pairs_published"]),
        _kv("pairs_dropped", snap["pairs_dropped"]),
    ] + [_kv(f"latency_s.{k}", float(v)) for k, v in sorted(snap["stage_s"].items())]
    pipe.values += [_kv(f"map.{k}", v) for k, v in sorted(snap.get("map", {}).items())]
    for s in (inp, pipe):
        s.level = bytes([int(s.level[0] if isinstance(s.level, bytes) else s.level)])
    arr = DiagnosticArray()
    arr.header.stamp = ns_to_time(stamp_ns)
    arr.status = [inp, pipe]
    return arr


def diagnostics_values(arr: DiagnosticArray) -> dict[str, dict[str, str]]:
    """{status name: {key: value, "_level": int, "_message": str}} (used by tests and tools)."""
    out: dict[str, dict[str, str]] = {}
    for s in arr.status:
        d = {kv.key: kv.value for kv in s.values}
        lvl = s.level
        d["_level"] = int(lvl[0]) if isinstance(lvl, (bytes, bytearray)) else int(lvl)
        d["_message"] = s.message
        out[s.name] = d
    return out
