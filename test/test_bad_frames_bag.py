"""One bad frame never breaks the chain (issue 10), through process-bag: a stream with one foreign-size
frame (and, separately, one stamp going back, one camera_info with bad intrinsics) every 10 frames
gives the same keyframe pairs as the clean stream, each bad frame counted once by its kind."""
from __future__ import annotations

import json

import numpy as np
import pytest

from noposplat_ros.cli import main as cli_main
from noposplat_ros.fixtures.moving_sequence import MotorcycleSequence
from noposplat_ros.io import bag_io
from test_process_bag import _ns, _read_output, _write_stream_bag

N = 24


@pytest.fixture(scope="module")
def frames():
    return MotorcycleSequence(scale=0.5, frames_per_view=4).frames(N)


def _message(f, **over):
    m = dict(rgb=f.rgb, K=f.K.copy(), stamp_ns=f.stamp_ns, log_ns=f.stamp_ns, frame_id=f.frame_id,
             encoding="rgb8", truncate=False)
    m.update(over)
    return m


def _stream(frames, bad: str | None):
    """Clean messages, with a bad one after every 10th frame (extra messages: the clean ones stay)."""
    out = []
    for i, f in enumerate(frames):
        if bad == "bad_intrinsics" and i % 10 == 5:
            K = f.K.copy()
            K[0, 0] = np.nan  # this frame's camera_info is broken; the frame itself is fine
            out.append(_message(f, K=K))
            continue
        out.append(_message(f))
        if i % 10 == 5 and bad == "size_change":  # a 2x bigger stranger with its own camera_info
            big = np.ascontiguousarray(np.tile(f.rgb, (2, 2, 1)))
            K = f.K.copy()
            K[:2] *= 2
            out.append(_message(f, rgb=big, K=K, stamp_ns=f.stamp_ns + 1_000_000, log_ns=f.stamp_ns + 1_000_000))
        if i % 10 == 5 and bad == "stamp_backwards":
            out.append(_message(f, stamp_ns=f.stamp_ns - 20_000_000, log_ns=f.stamp_ns + 1_000_000))
    return out


def _run(tmp_path, name, stream):
    _write_stream_bag(tmp_path / f"{name}_in", stream)
    assert cli_main(["process-bag", str(tmp_path / f"{name}_in"), str(tmp_path / f"{name}_out"),
                     "--predictor", "geometry"]) == 0
    _, msgs = _read_output(tmp_path / f"{name}_out" / "bag")
    pairs = [(_ns(m.stamp0), _ns(m.stamp1), int(m.status)) for _, m, _ in msgs[bag_io.SPLAT_PAIR_TOPIC]]
    summary = json.loads((tmp_path / f"{name}_out" / "summary.json").read_text())
    return pairs, summary


def test_one_bad_frame_every_10_frames_keeps_the_keyframes(tmp_path, frames):
    clean_pairs, clean = _run(tmp_path, "clean", _stream(frames, None))
    assert len(clean_pairs) >= 3 and sum(clean["rejected"].values()) == 0
    n_bad = len([i for i in range(N) if i % 10 == 5])
    for kind in ("size_change", "stamp_backwards", "bad_intrinsics"):
        pairs, summary = _run(tmp_path, kind, _stream(frames, kind))
        assert pairs == clean_pairs, kind  # same keyframes, same pairs, same statuses
        assert {k: v for k, v in summary["rejected"].items() if v} == {kind: n_bad}, (kind, summary["rejected"])
