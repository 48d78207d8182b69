"""The keyframe rule on the general-motion tour: a real scene with true depth and poses (still ->
slow sideways -> faster sideways -> pan -> forward -> blur -> still, 10 s at 30 Hz, 240x320)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from noposplat_ros.fixtures.general_motion import tour_sequence
from noposplat_ros.keyframes.selector import KeyframeSelector
from noposplat_ros.types import Frame


@pytest.fixture(scope="module")
def tour():
    return tour_sequence()  # cached per process (shared with other tests that use the tour)


def run(frames) -> tuple[list[int], list]:
    """-> (keyframe frame indices incl. the first, pairs)."""
    sel = KeyframeSelector()
    kf, pairs = [0], []
    for i, f in enumerate(frames):
        p = sel.offer(f)
        if p is not None:
            kf.append(i)
            pairs.append(p)
    return kf, pairs


def segment(tour, label: str) -> tuple[int, int]:
    return next((a, b) for lab, a, b in tour.segments() if lab == label)


def true_overlap(tour, i_kf: int, i: int) -> float:
    """Fraction of frame i's pixels with depth that keyframe i_kf also sees (true depth and poses)."""
    depth = tour.depth_m[i]
    K = tour.frames[i].K
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W]
    ok = np.isfinite(depth)
    z = depth[ok]
    X = np.stack([(u[ok] - K[0, 2]) / K[0, 0] * z, (v[ok] - K[1, 2]) / K[1, 1] * z, z], 1)
    T = np.linalg.inv(tour.T_world_from_cam[i_kf]) @ tour.T_world_from_cam[i]
    Xk = X @ T[:3, :3].T + T[:3, 3]
    uk = K[0, 0] * Xk[:, 0] / Xk[:, 2] + K[0, 2]
    vk = K[1, 1] * Xk[:, 1] / Xk[:, 2] + K[1, 2]
    seen = (Xk[:, 2] > 0) & (uk >= 0) & (uk <= W - 1) & (vk >= 0) & (vk <= H - 1)
    return float(seen.mean())


def test_tour_keyframes_cover_the_path(tour):
    kf, pairs = run(tour.frames)
    still0, still1 = tour.segments()[0], tour.segments()[-1]
    assert still0[0] == still1[0] == "still"
    assert [i for i in kf if i < still0[2]] == [0]  # no keyframe while still after the first
    assert len([i for i in kf if still1[1] <= i < still1[2]]) <= 1  # at most the one at rest
    b0, b1 = segment(tour, "blur")
    assert not [i for i in kf if b0 <= i < b1], kf  # none on blurred frames
    f0, f1 = segment(tour, "forward")
    assert len([i for i in kf if f0 <= i < f1]) >= 1, kf
    for label in ("sideways", "sideways_fast"):
        a, b = segment(tour, label)
        assert any(a <= i < b for i in kf), (label, kf)
    # no pair spent on a rotation: each pair's cameras are apart by >= 1% of the scene depth
    depth_m = float(np.nanmedian(tour.depth_m[0]))
    for a, b in zip(kf, kf[1:]):
        baseline = np.linalg.norm(tour.T_world_from_cam[b][:3, 3] - tour.T_world_from_cam[a][:3, 3])
        assert baseline / depth_m >= 0.01, (a, b, baseline / depth_m)
    # the end of the stream is covered by the last keyframe
    assert true_overlap(tour, kf[-1], len(tour.frames) - 1) >= 0.8
    assert 6 <= len(pairs) <= 20  # dense enough to cover, sparse enough to be cheap


def test_a_pure_pan_makes_no_pair(tour):
    a, b = segment(tour, "pan")
    kf, pairs = run(tour.frames[a:b])  # 1 s turning about the camera centre, 6 degrees
    assert pairs == []


def test_same_keyframes_at_320_and_1280_px(tour):
    """The same motion at 4x the resolution (frames upscaled, K scaled) gives the same keyframes
    within one frame. Frames up to the blurred stretch: a threshold crossing right before it may
    fall on either side of the blur, by design (blurred frames are never keyframes)."""
    end = segment(tour, "blur")[0]
    frames = tour.frames[:end]
    big = []
    for f in frames:
        K = f.K.copy()
        K[:2] *= 4.0
        big.append(Frame(cv2.resize(f.rgb, (4 * f.width, 4 * f.height), interpolation=cv2.INTER_LINEAR), K,
                         f.stamp_ns, f.frame_id))
    kf_small, _ = run(frames)
    kf_big, _ = run(big)
    # a threshold crossing in the window's last frames may fall just after it at the other resolution
    # (measured: overlap 0.899 at 320 px and 0.908 at 1280 px on frame 224, the last before the blur)
    kf_small = [i for i in kf_small if i < end - 2]
    kf_big = [i for i in kf_big if i < end - 2]
    assert len(kf_small) == len(kf_big) >= 5, (kf_small, kf_big)
    assert all(abs(a - b) <= 1 for a, b in zip(kf_small, kf_big)), (kf_small, kf_big)
