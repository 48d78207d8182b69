"""input_gate.InputGate: each input rule the live node and the bag reader share, fed plain fields."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from noposplat_ros.ingest import input_gate
from noposplat_ros.ingest.input_gate import (
    BACKWARDS_RESTART_COUNT, BAD_INFO_CLEAR_COUNT, SIZE_CHANGE_CONFIRM_COUNT, InputGate, Rejected,
)
from noposplat_ros.types import Frame

H, W = 24, 32
STAMP0 = 1_700_000_000_000_000_000


def textured(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def K_for(w: int = W, h: int = H) -> np.ndarray:
    return np.array([[0.9 * w, 0.0, w / 2], [0.0, 0.9 * w, h / 2], [0.0, 0.0, 1.0]])


def info_fields(w: int = W, h: int = H, K: np.ndarray | None = None) -> dict:
    K = K_for(w, h) if K is None else K
    return dict(width=w, height=h, distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1),
                r=np.eye(3).reshape(-1), p=np.zeros(12))


class Recorder:
    """A gate with its callbacks recorded."""

    def __init__(self) -> None:
        self.faults: list[tuple[str, str]] = []
        self.resets = 0
        self.restarts: list[str] = []
        self.gate = InputGate(on_fault=lambda k, m: self.faults.append((k, m)), on_reset=self._reset,
                              on_restart_message=self.restarts.append)

    def _reset(self) -> None:
        self.resets += 1

    def image(self, rgb: np.ndarray | None = None, stamp_ns: int = STAMP0, **override) -> Frame | Rejected:
        rgb = textured() if rgb is None else rgb
        fields = dict(encoding="rgb8", height=rgb.shape[0], width=rgb.shape[1], step=3 * rgb.shape[1],
                      is_bigendian=False, data=rgb.tobytes(), stamp_ns=stamp_ns, frame_id="cam")
        fields.update(override)
        return self.gate.image(**fields)


@pytest.fixture
def rec() -> Recorder:
    r = Recorder()
    assert r.gate.camera_info(info_fields(), STAMP0) is None
    return r


def test_valid_image_becomes_a_frame(rec):
    rgb = textured()
    out = rec.image(rgb, STAMP0 + 5)
    assert isinstance(out, Frame)
    np.testing.assert_array_equal(out.rgb, rgb)  # no distortion: the image as sent
    np.testing.assert_allclose(out.K, K_for())
    assert out.stamp_ns == STAMP0 + 5 and out.frame_id == "cam"
    assert rec.faults == [] and rec.resets == 0


def test_compressed_image_becomes_a_frame_and_bad_payloads_are_dropped(rec):
    rgb = textured()
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    out = rec.gate.compressed(format="rgb8; png compressed bgr8", data=png.reshape(-1), stamp_ns=STAMP0, frame_id="c")
    assert isinstance(out, Frame)
    np.testing.assert_array_equal(out.rgb, rgb)
    bad = rec.gate.compressed(format="png", data=b"not a png at all", stamp_ns=STAMP0 + 1, frame_id="c")
    assert isinstance(bad, Rejected) and bad.kind == "decode_error" and "frame dropped" in bad.message
    depth = rec.gate.compressed(format="16UC1; compressedDepth", data=png.reshape(-1), stamp_ns=STAMP0 + 2,
                                frame_id="c")
    assert isinstance(depth, Rejected) and depth.kind == "unknown_encoding"


def test_no_camera_info_drops_frames():
    r = Recorder()
    out = r.image()
    assert isinstance(out, Rejected) and out.kind == "camera_info_missing" and "no camera_info yet" in out.message


def test_one_bad_camera_info_is_counted_and_the_last_valid_model_stays(rec):
    model = rec.gate.model
    assert rec.gate.camera_info(info_fields(), STAMP0) is None
    assert rec.gate.model is model  # unchanged calibration: the model (and its cached maps) is kept
    K_nan = K_for()
    K_nan[0, 0] = np.nan
    bad = rec.gate.camera_info(info_fields(K=K_nan), STAMP0 + 1, source="camera_info on '/cam/info'")
    assert isinstance(bad, Rejected) and bad.kind == "bad_intrinsics" and bad.stamp_ns == STAMP0 + 1
    assert bad.message.startswith("camera_info on '/cam/info' rejected:") and "NaN" in bad.message
    assert rec.gate.model is model  # one bad message does not break the stream
    assert isinstance(rec.image(stamp_ns=STAMP0 + 1), Frame) and rec.faults == [] and rec.resets == 0


def test_persistently_bad_camera_info_clears_the_model_and_the_latest_valid_one_is_used(rec):
    K_nan = K_for()
    K_nan[0, 0] = np.nan
    for i in range(BAD_INFO_CLEAR_COUNT):
        assert rec.gate.camera_info(info_fields(K=K_nan), STAMP0 + i).kind == "bad_intrinsics"
    assert rec.gate.model is None
    out = rec.image()
    assert isinstance(out, Rejected) and out.kind == "camera_info_missing" and "invalid camera_info" in out.message
    K2 = K_for() * np.array([[1.1], [1.1], [1.0]])
    assert rec.gate.camera_info(info_fields(K=K2), STAMP0 + 2) is None
    out = rec.image()
    assert isinstance(out, Frame)
    np.testing.assert_allclose(out.K, K2)


@pytest.mark.parametrize("override, kind, words", [
    (dict(encoding="weird_fmt42"), "unknown_encoding", "weird_fmt42"),
    (dict(data=textured().tobytes()[: H * W]), "short_data", f"expected height {H}"),
    (dict(step=3 * W - 1, data=bytes(H * (3 * W - 1))), "decode_error", "cannot decode image"),
])
def test_undecodable_images_are_dropped(rec, override, kind, words):
    out = rec.image(**override)
    assert isinstance(out, Rejected) and out.kind == kind and words in out.message
    assert out.stamp_ns == STAMP0 and "frame dropped" in out.message
    assert rec.faults == [] and rec.resets == 0
    assert isinstance(rec.image(), Frame)  # the stream goes on


def test_a_foreign_size_frame_is_dropped_once_without_touching_the_keyframes(rec):
    """A 2000x1500-like stranger among our frames (here +40 px): one size_change, no restart."""
    assert isinstance(rec.image(stamp_ns=STAMP0), Frame)
    out = rec.image(textured(H + 40, W + 40), stamp_ns=STAMP0 + 1)
    assert isinstance(out, Rejected) and out.kind == "size_change" and "does not match camera_info" in out.message
    assert rec.faults == [] and rec.resets == 0
    assert isinstance(rec.image(stamp_ns=STAMP0 + 2), Frame)  # the stream goes on at its own size
    # even when its camera_info came along once (a second camera on the topic)
    assert rec.gate.camera_info(info_fields(W + 40, H + 40), STAMP0 + 3) is None
    assert rec.image(textured(H + 40, W + 40), stamp_ns=STAMP0 + 3).kind == "size_change"
    assert rec.gate.camera_info(info_fields(), STAMP0 + 4) is None
    assert isinstance(rec.image(stamp_ns=STAMP0 + 4), Frame) and rec.resets == 0


def test_persistent_size_change_restarts_and_keeps_the_frame(rec):
    assert isinstance(rec.image(stamp_ns=STAMP0), Frame)
    assert rec.gate.camera_info(info_fields(W + 8, H + 8), STAMP0) is None
    for i in range(SIZE_CHANGE_CONFIRM_COUNT - 1):  # camera_info and images agree, not yet long enough
        out = rec.image(textured(H + 8, W + 8), stamp_ns=STAMP0 + 1 + i)
        assert isinstance(out, Rejected) and out.kind == "size_change" and rec.resets == 0
    out = rec.image(textured(H + 8, W + 8), stamp_ns=STAMP0 - 100)  # the restart forgets the old stamps
    assert isinstance(out, Frame) and out.rgb.shape == (H + 8, W + 8, 3)
    assert rec.faults == [] and rec.resets == 1 and rec.gate.model.image_size_hw == (H + 8, W + 8)
    assert f"{W}x{H} to {W + 8}x{H + 8}" in rec.restarts[0]


def test_backwards_stamps_are_dropped_and_a_run_restarts_the_stream(rec):
    assert isinstance(rec.image(stamp_ns=STAMP0), Frame)
    for i in range(BACKWARDS_RESTART_COUNT - 1):  # equal or earlier stamps: dropped
        out = rec.image(stamp_ns=STAMP0 - i)
        assert isinstance(out, Rejected) and out.kind == "stamp_backwards" and "not after the previous" in out.message
    assert rec.faults == [] and rec.resets == 0
    out = rec.image(stamp_ns=STAMP0 - 1000)  # the third in a row: a restarted stream (bag loop)
    assert isinstance(out, Frame) and out.stamp_ns == STAMP0 - 1000
    assert [k for k, _ in rec.faults] == ["stamp_backwards"] and rec.resets == 1
    assert isinstance(rec.image(stamp_ns=STAMP0 - 999), Frame)


def test_a_good_frame_ends_a_backwards_run(rec):
    stamp = STAMP0
    assert isinstance(rec.image(stamp_ns=stamp), Frame)
    for _ in range(3):
        for _ in range(BACKWARDS_RESTART_COUNT - 1):
            assert rec.image(stamp_ns=stamp - 1).kind == "stamp_backwards"
        stamp += 1
        assert isinstance(rec.image(stamp_ns=stamp), Frame)
    assert rec.resets == 0 and rec.faults == []


def test_forget_stamp_accepts_an_earlier_stamp(rec):
    assert isinstance(rec.image(stamp_ns=STAMP0), Frame)
    rec.gate.forget_stamp()
    assert isinstance(rec.image(stamp_ns=STAMP0 - 10), Frame)
    assert rec.faults == [] and rec.resets == 0  # an outside reset calls no callback


def test_fault_kinds_are_the_node_diagnostics_names():
    diagnostics = pytest.importorskip("noposplat_ros.ros.diagnostics")
    assert set(input_gate.INPUT_FAULT_KINDS) <= set(diagnostics.FAULT_KINDS)


def test_format_stamp():
    assert input_gate.format_stamp(1_700_000_000_000_000_042) == "1700000000.000000042"
