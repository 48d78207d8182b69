"""KeyframeSelector on image sequences with known motion: crop windows sliding over a real photo
(scikit-image's astronaut, upscaled), stamps as a camera would send them.

A sliding crop of a photo is a flat scene: it has no rotation-compensated parallax (a plane seen by
a camera that shifts is what a camera that turns sees, up to the perspective at the edges). Tests of
coverage, blur and timing therefore set ``min_parallax_deg=0``; the parallax rule itself is tested
on the general-motion tour (test_keyframes_tour.py), which has real depth."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from skimage import data

from noposplat_ros.keyframes.selector import Decision, KeyframeConfig, KeyframeSelector
from noposplat_ros.types import Frame

CROP_W, CROP_H = 480, 360  # wider than the 320-px tracking image: exercises the downscale
T0_NS = 1_700_000_000_000_000_000
K = np.array([[400.0, 0.0, 240.0], [0.0, 400.0, 180.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return cv2.resize(data.astronaut(), (1400, 1400), interpolation=cv2.INTER_CUBIC)


_NOISE: dict[int, np.ndarray] = {}


def _noise(seed: int, shape) -> np.ndarray:
    """Zero-mean noise (sigma 2 grey levels) as int16; a few fixed patterns, cycled (cheap)."""
    if seed not in _NOISE:
        _NOISE[seed] = np.rint(np.random.default_rng(seed).normal(0, 2.0, shape)).astype(np.int16)
    return _NOISE[seed]


def _frame(scene, x: int, y: int, i: int, period_ns: int = 33_333_333, noise_seed: int | None = None) -> Frame:
    rgb = scene[y : y + CROP_H, x : x + CROP_W]
    if noise_seed is not None:  # sensor noise, so that a still camera does not give identical images
        rgb = cv2.add(rgb, _noise(noise_seed % 5, rgb.shape), dtype=cv2.CV_8U)
    return Frame(np.ascontiguousarray(rgb), K, T0_NS + i * period_ns, "cam")


def _run(selector, frames):
    """Offer all frames; return [(frame index, pair)] for the pairs and the decisions."""
    pairs, decisions = [], []
    for i, f in enumerate(frames):
        pair = selector.offer(f)
        decisions.append(selector.last_decision)
        if pair is not None:
            pairs.append((i, pair))
    return pairs, decisions


def test_still_camera_makes_no_keyframe(scene):
    sel = KeyframeSelector(KeyframeConfig(min_interval_s=0.0))
    frames = [_frame(scene, 300, 400, i, noise_seed=i) for i in range(60)]  # 2 s at 30 Hz
    pairs, decisions = _run(sel, frames)
    assert pairs == []
    assert decisions[0] == Decision.FIRST and set(decisions[1:]) == {Decision.NO_PARALLAX}
    assert sel.stats.keyframes == 1 and sel.stats.no_parallax == 59 and sel.stats.frames == 60
    assert sel.last_metrics.parallax_deg < 0.01 and sel.last_metrics.overlap > 0.99


def test_constant_speed_gives_regular_spacing_by_coverage(scene):
    """4 px per frame over 480 px, target overlap 0.9: a keyframe every 12th frame, pairs chained."""
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, target_overlap=0.9, min_interval_s=0.0))
    frames = [_frame(scene, 100 + 4 * i, 450, i) for i in range(100)]
    pairs, decisions = _run(sel, frames)
    kf_frames = [i for i, _ in pairs]
    assert kf_frames == list(range(12, 100, 12))
    assert decisions[11] == Decision.OVERLAP_ABOVE_TARGET and decisions[12] == Decision.KEYFRAME
    for n, (i, pair) in enumerate(pairs):
        assert pair.index == n and pair.kf1 is frames[i] and pair.kf0 is frames[i - 12]
    assert sel.stats.pairs == len(pairs) and sel.stats.keyframes == len(pairs) + 1
    sel2 = KeyframeSelector(KeyframeConfig(min_parallax_deg=30.0, min_interval_s=0.0, target_overlap=1.0))
    sel2.offer(frames[0])
    sel2.offer(frames[12])  # 48 px: overlap 1 - 48/480 = 0.9
    assert sel2.last_metrics.overlap == pytest.approx(0.9, abs=0.01)


def test_diagonal_motion_target_overlap(scene):
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, target_overlap=0.848, min_interval_s=0.0))
    frames = [_frame(scene, 200 + 5 * i, 300 + 5 * i, i) for i in range(30)]
    pairs, decisions = _run(sel, frames)
    # overlap(i) = (1 - 5i/480) (1 - 5i/360): i = 6: 0.859, i = 7: 0.837 -> keyframes every 7 frames
    assert [i for i, _ in pairs] == [7, 14, 21, 28]
    assert decisions[3] == Decision.OVERLAP_ABOVE_TARGET


def test_blurred_frames_skipped(scene):
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, min_interval_s=0.0))
    blurred = {6, 12, 13, 30}
    frames = []
    for i in range(40):
        f = _frame(scene, 100 + 4 * i, 450, i)
        if i in blurred:
            f.rgb = cv2.GaussianBlur(f.rgb, (0, 0), 3.0)
        frames.append(f)
    pairs, decisions = _run(sel, frames)
    assert [decisions[i] for i in sorted(blurred)] == [Decision.BLURRED] * len(blurred)
    assert sel.stats.blurred == len(blurred)
    kf_frames = [i for i, _ in pairs]
    assert not blurred & set(kf_frames)
    assert kf_frames[0] == 14  # 12 and 13 (due keyframes) are blurred; 14 is the next sharp one
    assert sel.last_metrics.sharpness_ratio > 0.5


def test_a_blurred_stretch_does_not_lower_its_own_bar(scene):
    """10 blurred frames in a row (shorter than blur_window) are all skipped: blurred frames do not
    enter the sharpness reference."""
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, min_interval_s=0.0))
    frames = []
    for i in range(40):
        f = _frame(scene, 100 + 4 * i, 450, i)
        if 14 <= i < 24:
            f.rgb = cv2.GaussianBlur(f.rgb, (0, 0), 3.0)
        frames.append(f)
    pairs, decisions = _run(sel, frames)
    assert decisions[14:24] == [Decision.BLURRED] * 10
    assert [i for i, _ in pairs] == [12, 24, 36]


def test_min_interval_by_stamps(scene):
    """10 px per frame at 25 Hz passes the 0.98 overlap target every frame; 0.1 s makes it every 3rd."""
    cfg = KeyframeConfig(min_parallax_deg=0.0, target_overlap=0.98, min_interval_s=0.1)
    sel = KeyframeSelector(cfg)
    frames = [_frame(scene, 100 + 10 * i, 450, i, period_ns=40_000_000) for i in range(30)]
    pairs, decisions = _run(sel, frames)
    assert [i for i, _ in pairs] == list(range(3, 30, 3))
    assert decisions[1:3] == [Decision.TOO_SOON, Decision.TOO_SOON]
    for _, p in pairs:
        assert p.kf1.stamp_ns - p.kf0.stamp_ns >= 100_000_000
    assert sel.stats.too_soon == 2 * len(pairs) + 2  # frames 28, 29 after the last pair at 27


def test_max_interval_forces_a_keyframe_only_with_parallax(scene):
    frames = [_frame(scene, 300, 400, i, period_ns=40_000_000, noise_seed=i) for i in range(60)]
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, max_interval_s=1.0, min_interval_s=0.0, rest_s=0.0))
    pairs, decisions = _run(sel, frames)
    assert [i for i, _ in pairs] == [25, 50]  # 25 frames * 40 ms = 1.0 s
    assert decisions[25] == Decision.FORCED and sel.stats.forced == 2
    # With the parallax rule (default) a still camera never makes a pair, forced or not.
    assert _run(KeyframeSelector(KeyframeConfig(max_interval_s=1.0, min_interval_s=0.0)), frames)[0] == []
    # 0 disables forcing
    sel0 = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, max_interval_s=0.0, min_interval_s=0.0))
    assert _run(sel0, frames)[0] == []


def test_rest_after_moving_makes_a_keyframe(scene):
    """Moving 2 px per frame (overlap stays above target), then still: a keyframe once at rest for rest_s."""
    cfg = KeyframeConfig(min_parallax_deg=0.0, min_interval_s=0.0, rest_s=0.2)
    sel = KeyframeSelector(cfg)
    frames = [_frame(scene, 100 + 2 * i, 450, i, noise_seed=i) for i in range(10)]
    frames += [_frame(scene, 118, 450, i, noise_seed=i) for i in range(10, 40)]
    pairs, decisions = _run(sel, frames)
    # at rest from frame 11 (its motion since frame 10 is below the tracking noise), 0.2 s = 6 frames later
    assert [i for i, _ in pairs] == [17]
    assert decisions[17] == Decision.REST and sel.stats.at_rest == 1
    assert Decision.REST not in decisions[18:]  # at rest again, but it has not moved since
    assert _run(KeyframeSelector(dataclasses.replace(cfg, rest_s=0.0)), frames)[0] == []


def test_lost_overlap_reinitialises(scene):
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, min_interval_s=0.0))
    frames = [_frame(scene, 100 + 4 * i, 450, i) for i in range(14)]
    # A jump to another part of the scene (e.g. frames dropped, camera whipped round).
    frames += [_frame(scene, 800 + 4 * j, 900, 14 + j) for j in range(14)]
    pairs, decisions = _run(sel, frames)
    assert decisions[14] in (Decision.TRACKING_FAILED, Decision.OVERLAP_BELOW_MIN)
    assert sel.stats.reinitialised == 1
    assert sel.stats.tracking_failed + sel.stats.overlap_below_min >= 1
    assert [i for i, _ in pairs] == [12, 26]  # the chain restarts at frame 14: next pair 12 frames later
    assert pairs[1][1].kf0 is frames[14] and pairs[1][1].index == 1


def test_stamps_backwards_resets(scene):
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, min_interval_s=0.0))
    frames = [_frame(scene, 100 + 4 * i, 450, i) for i in range(25)]
    pairs, _ = _run(sel, frames)
    assert [p.index for _, p in pairs] == [0, 1]
    back = [_frame(scene, 100 + 4 * i, 450, i - 100) for i in range(25)]  # a bag looping
    pairs2, decisions = _run(sel, back)
    assert decisions[0] == Decision.STAMP_BACKWARDS and sel.stats.stamps_backwards == 1
    assert [p.index for _, p in pairs2] == [0, 1] and pairs2[0][1].kf0 is back[0]
    # Equal stamps are not "backwards".
    sel.offer(dataclasses.replace(back[-1]))
    assert sel.stats.stamps_backwards == 1


def test_size_change_resets(scene):
    sel = KeyframeSelector(KeyframeConfig(min_interval_s=0.0))
    sel.offer(_frame(scene, 100, 450, 0))
    small = Frame(np.ascontiguousarray(scene[:240, :320]), K, T0_NS + 1, "cam")
    assert sel.offer(small) is None and sel.last_decision == Decision.SIZE_CHANGED
    assert sel.keyframe is small and sel.stats.size_changed == 1


def test_textureless_frames_do_not_crash():
    sel = KeyframeSelector()
    flat = [Frame(np.full((240, 320, 3), 128, np.uint8), K, T0_NS + i * 200_000_000, "cam") for i in range(5)]
    pairs, decisions = _run(sel, flat)
    assert pairs == [] and Decision.TRACKING_FAILED in decisions


def test_reset_clears_state(scene):
    sel = KeyframeSelector(KeyframeConfig(min_parallax_deg=0.0, min_interval_s=0.0))
    _run(sel, [_frame(scene, 100 + 4 * i, 450, i) for i in range(13)])
    assert sel.stats.pairs == 1
    sel.reset()
    assert sel.keyframe is None
    sel.offer(_frame(scene, 100, 450, 50))
    assert sel.last_decision == Decision.FIRST and sel.stats.pairs == 1  # counters are cumulative


def test_defaults_accept_motorcycle_pair(motorcycle):
    """The node's demo: the Motorcycle stereo pair offered as two frames gives exactly one pair."""
    sel = KeyframeSelector()
    assert sel.offer(motorcycle.left) is None
    pair = sel.offer(motorcycle.right)
    assert pair is not None and pair.index == 0
    assert pair.kf0 is motorcycle.left and pair.kf1 is motorcycle.right
    assert sel.last_decision == Decision.KEYFRAME
    assert sel.last_metrics.parallax_deg > 0.05  # a real stereo baseline over a deep scene


# ------------------------------------------------------------------ configuration
def test_config_ranges_and_validation():
    ranges = KeyframeConfig.ranges()
    names = {f.name for f in dataclasses.fields(KeyframeConfig)}
    assert set(ranges) == names == set(KeyframeConfig.descriptions())
    defaults = KeyframeConfig()
    for name, (lo, hi) in ranges.items():
        assert lo <= getattr(defaults, name) <= hi, name
        assert KeyframeConfig.descriptions()[name]
    with pytest.raises(ValueError, match="min_overlap 0.9 > target_overlap 0.5"):
        KeyframeConfig(min_overlap=0.9, target_overlap=0.5).validate()
    with pytest.raises(ValueError, match="blur_threshold=1.5 outside"):
        KeyframeSelector(KeyframeConfig(blur_threshold=1.5))
    with pytest.raises(ValueError, match="max_interval_s 0.5 < min_interval_s 1.0"):
        KeyframeConfig(min_interval_s=1.0, max_interval_s=0.5).validate()
    with pytest.raises(ValueError, match="unknown keyframe parameters"):
        KeyframeConfig.from_dict({"min_parallax_px": 3})
    cfg = KeyframeConfig.from_dict({"max_features": 80.0, "min_overlap": 0})
    assert cfg.max_features == 80 and isinstance(cfg.max_features, int) and cfg.min_overlap == 0.0


@pytest.mark.parametrize("zoom", [1.1, 1.25])
def test_overlap_under_zoom(scene, zoom):
    """Moving forward (zoom about the centre by s) leaves 1/s^2 of the keyframe's view in sight."""
    x, y = 300, 450
    A = cv2.getRotationMatrix2D((x + CROP_W / 2, y + CROP_H / 2), 0.0, zoom)
    zoomed = cv2.warpAffine(scene, A, (scene.shape[1], scene.shape[0]), flags=cv2.INTER_LINEAR)
    # Blur check off: upsampling the photo by warping softens it (a real camera moving forward would not).
    cfg = KeyframeConfig(min_parallax_deg=30.0, min_interval_s=0.0, target_overlap=1.0, blur_threshold=0.0)
    sel = KeyframeSelector(cfg)
    sel.offer(_frame(scene, x, y, 0))
    sel.offer(_frame(zoomed, x, y, 1))
    assert sel.last_decision == Decision.NO_PARALLAX
    assert sel.last_metrics.overlap == pytest.approx(1.0 / zoom**2, abs=0.01)
