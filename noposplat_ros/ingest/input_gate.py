"""The input rules of a camera stream: CameraInfo and Image / CompressedImage fields -> Frames.

One place for the rules the live node (``ros/node.py``) and the bag reader (``bag_io.FrameSource``)
both apply, so a bag yields the Frames the node would have offered:

One bad message never breaks the chain of keyframes: it is dropped and counted once, by one kind,
and the keyframe state is not touched. Only a *persistent* change restarts the keyframes.

- the latest valid camera_info is used; an invalid one is counted (``bad_intrinsics``) and the last
  valid model stays in use; :data:`BAD_INFO_CLEAR_COUNT` invalid ones in a row clear it, and images
  are then dropped until a valid one arrives (``camera_info_missing``);
- undecodable images are dropped (``unknown_encoding``, ``short_data``, ``decode_error``);
- an image whose size is not the camera_info's (e.g. a second camera misconfigured onto the topic)
  is dropped (``size_change``); a camera_info of a new size is held as a candidate and becomes the
  model only when :data:`SIZE_CHANGE_CONFIRM_COUNT` images in a row agree with it: then the keyframes
  restart (a new trajectory segment) and that frame is kept (the frames before it count as
  ``size_change``);
- a stamp not after the previous one drops the frame (``stamp_backwards``); the
  :data:`BACKWARDS_RESTART_COUNT`-th in a row is taken as a restarted stream (e.g. a bag loop):
  the keyframes restart and the frame is kept.

Fed plain message fields (no rclpy, no rosbags): the callers extract them. A dropped frame comes
back as :class:`Rejected` (kind and a log message); faults that keep the frame go to ``on_fault``
and restarts to ``on_reset``, called in that order before the frame is returned.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from noposplat_ros.ingest import image_decode
from noposplat_ros.ingest.camera_model import CameraInfoError, CameraModel
from noposplat_ros.types import Frame, format_stamp

# The fault kinds of these rules (a subset of ros/diagnostics.FAULT_KINDS, same names).
INPUT_FAULT_KINDS = (
    "unknown_encoding", "short_data", "decode_error", "bad_intrinsics", "size_change", "stamp_backwards",
    "camera_info_missing",
)
# After this many consecutive backwards stamps the stream is taken as restarted (bag loop).
BACKWARDS_RESTART_COUNT = 3
# Images in a row that must agree with a camera_info of a new size before it replaces the model.
SIZE_CHANGE_CONFIRM_COUNT = 3
# Invalid camera_infos in a row after which the last valid model is no longer trusted.
BAD_INFO_CLEAR_COUNT = 3


@dataclasses.dataclass(frozen=True)
class Rejected:
    """An image (or camera_info) that did not become a Frame; kind: one of :data:`INPUT_FAULT_KINDS`."""

    stamp_ns: int
    kind: str
    message: str


class InputGate:
    """Stateful input rules of one camera stream (see the module docstring).

    on_fault(kind, message): a fault that keeps the frame (the restarting ``stamp_backwards``).
    on_reset(): the keyframes must restart (confirmed size change, restarted stream).
    on_restart_message(message): the log line of a confirmed size change (no fault: its frames were).
    """

    def __init__(self, on_fault: Callable[[str, str], None] | None = None,
                 on_reset: Callable[[], None] | None = None,
                 on_restart_message: Callable[[str], None] | None = None) -> None:
        self.on_fault = on_fault
        self.on_reset = on_reset
        self.on_restart_message = on_restart_message  # log line of a confirmed size change
        self.model: CameraModel | None = None
        self.last_info_error = ""  # why the last camera_info was rejected ("" when it was valid)
        self._candidate: CameraModel | None = None  # a camera_info of a new size, not yet confirmed
        self._candidate_run = 0  # images in a row that agree with the candidate
        self._bad_info_run = 0
        self._last_stamp_ns: int | None = None
        self._backwards_run = 0

    # ------------------------------------------------------------------ camera_info
    def camera_info(self, fields: Mapping[str, Any], stamp_ns: int, source: str = "camera_info") -> Rejected | None:
        """fields: keyword arguments of ``CameraModel.from_camera_info_fields``. None when valid;
        Rejected (``bad_intrinsics``) when not: the last valid model stays in use (cleared after
        :data:`BAD_INFO_CLEAR_COUNT` in a row). ``source`` names the message in the rejection text."""
        try:
            model = CameraModel.from_camera_info_fields(**fields)
        except CameraInfoError as exc:
            self._bad_info_run += 1
            self.last_info_error = str(exc)
            if self._bad_info_run >= BAD_INFO_CLEAR_COUNT:
                self.model = None  # persistently invalid: frames are dropped until a valid one
            return Rejected(int(stamp_ns), "bad_intrinsics", f"{source} rejected: {exc}")
        self._bad_info_run = 0
        self.last_info_error = ""
        if self.model is not None and model.image_size_hw != self.model.image_size_hw:
            # A new size: only images that agree with it for a while make it the model.
            if self._candidate is None or model.calibration_key() != self._candidate.calibration_key():
                self._candidate, self._candidate_run = model, 0
            return None
        self._candidate, self._candidate_run = None, 0
        if self.model is None or model.calibration_key() != self.model.calibration_key():
            self.model = model  # only on a change: keeps the cached undistortion maps
        return None

    # ------------------------------------------------------------------ images
    def image(self, *, encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: Any,
              stamp_ns: int, frame_id: str) -> Frame | Rejected:
        """sensor_msgs/Image fields -> Frame, or Rejected when the frame is dropped."""
        ns = int(stamp_ns)
        supported = image_decode.SUPPORTED_ENCODINGS
        if encoding not in supported and encoding.lower() not in supported and encoding.upper() not in supported:
            return Rejected(ns, "unknown_encoding", f"image encoding {encoding!r} is not supported; frame dropped "
                            f"(supported: {', '.join(supported)})")
        need = int(height) * int(step)
        if len(data) < need:
            return Rejected(ns, "short_data", f"image data has {len(data)} bytes, expected height {height} * "
                            f"step {step} = {need}; frame dropped")
        try:
            rgb = image_decode.decode_image(encoding, height, width, step, bool(is_bigendian), data)
        except image_decode.ImageDecodeError as exc:
            return Rejected(ns, "decode_error", f"cannot decode image: {exc}; frame dropped")
        return self._frame(rgb, ns, frame_id)

    def compressed(self, *, format: str, data: Any, stamp_ns: int, frame_id: str) -> Frame | Rejected:  # noqa: A002
        """sensor_msgs/CompressedImage fields -> Frame, or Rejected when the frame is dropped."""
        ns = int(stamp_ns)
        try:
            rgb = image_decode.decode_compressed(format, data)
        except image_decode.ImageDecodeError as exc:
            kind = "unknown_encoding" if isinstance(exc, image_decode.UnsupportedEncodingError) else "decode_error"
            return Rejected(ns, kind, f"cannot decode compressed image: {exc}; frame dropped")
        return self._frame(rgb, ns, frame_id)

    def forget_stamp(self) -> None:
        """After a restart from outside (e.g. a reset service): any next stamp is accepted."""
        self._last_stamp_ns = None

    # ------------------------------------------------------------------ shared tail
    def _restart(self) -> None:
        self.forget_stamp()
        if self.on_reset is not None:
            self.on_reset()

    def _log_restart(self, message: str) -> None:
        """A confirmed size change: restart without counting another fault (its frames were counted)."""
        if self.on_restart_message is not None:
            self.on_restart_message(message)
        self._restart()

    def _fault(self, kind: str, message: str) -> None:
        if self.on_fault is not None:
            self.on_fault(kind, message)

    def _frame(self, rgb: np.ndarray, ns: int, frame_id: str) -> Frame | Rejected:
        """Decoded (H, W, 3) uint8 RGB -> camera, size and stamp rules, undistortion."""
        if self.model is None:
            why = f"invalid camera_info: {self.last_info_error}" if self.last_info_error else "no camera_info yet"
            return Rejected(ns, "camera_info_missing", f"{why}; frame dropped")
        hw = (int(rgb.shape[0]), int(rgb.shape[1]))
        if hw != self.model.image_size_hw:
            cand = self._candidate
            if cand is None or hw != cand.image_size_hw:
                self._candidate_run = 0
                eh, ew = self.model.image_size_hw
                return Rejected(ns, "size_change", f"image {hw[1]}x{hw[0]} does not match camera_info {ew}x{eh}; "
                                "frame dropped (keyframes kept)")
            self._candidate_run += 1
            if self._candidate_run < SIZE_CHANGE_CONFIRM_COUNT:
                return Rejected(ns, "size_change", f"image and camera_info switched to {hw[1]}x{hw[0]}; frame "
                                f"dropped until {SIZE_CHANGE_CONFIRM_COUNT} in a row agree")
            old_h, old_w = self.model.image_size_hw
            self.model, self._candidate, self._candidate_run = cand, None, 0
            self._log_restart(f"image size changed from {old_w}x{old_h} to {hw[1]}x{hw[0]} "
                              f"({SIZE_CHANGE_CONFIRM_COUNT} frames agree with camera_info); keyframes restarted")
        if self._last_stamp_ns is not None and ns <= self._last_stamp_ns:
            self._backwards_run += 1
            if self._backwards_run < BACKWARDS_RESTART_COUNT:
                return Rejected(ns, "stamp_backwards", f"image stamp {format_stamp(ns)} s is not after the previous "
                                f"{format_stamp(self._last_stamp_ns)} s; frame dropped")
            self._fault("stamp_backwards", f"{self._backwards_run} frames went back in time: taking the stream as "
                        "restarted (e.g. a bag loop); keyframes and trajectory reset")
            self._restart()
        self._backwards_run = 0
        self._last_stamp_ns = ns
        try:
            rgb_u, K = self.model.undistort(rgb)
        except CameraInfoError as exc:
            return Rejected(ns, "bad_intrinsics", f"camera_info does not fit the image: {exc}; frame dropped")
        return Frame(rgb=np.ascontiguousarray(rgb_u), K=np.asarray(K, dtype=np.float64), stamp_ns=ns,
                     frame_id=frame_id)
