"""Keyframe selection on a camera stream: parallax, overlap band, blur, time bounds (no rclpy).

``KeyframeSelector.offer(frame)`` looks at each incoming frame once and returns a ``KeyframePair``
when the frame becomes a keyframe that pairs with the previous one. The rule, in order:

1. Stamps going backwards (bag loop, clock reset) or a change of image size reset the selector's
   state (keyframes, history, pair index; the cumulative ``stats`` are kept): the frame becomes a
   fresh keyframe 0.
2. The first frame (after start/reset) becomes keyframe 0; no pair yet.
3. Sooner than ``min_interval_s`` after the last keyframe (by frame stamps, never wall clock): skip.
4. Blurred: the variance of the Laplacian of the downscaled grey image is below ``blur_threshold``
   times the median of the last ``blur_window`` frames: skip.
5. Features of the last keyframe (Shi-Tomasi, on a grey image downscaled to ``tracking_width_px``)
   are tracked into the frame with pyramidal Lucas-Kanade (status, patch error and image bounds
   checked). Fewer than ``min_tracked_features`` survivors, or fewer than that agreeing with one
   similarity transform (RANSAC): tracking is lost and the frame becomes a fresh keyframe 0
   (re-initialisation: the chain of pairs breaks, the pair index keeps counting).
6. parallax = median displacement of the tracked features, in pixels of the input image.
   overlap = area shared by the two views under a similarity transform fitted to the tracks
   (RANSAC, so that wrong tracks and depth-dependent flow do not bend it), divided by the larger
   of the two view areas (1 = same view, 0 = disjoint).
   Overlap below ``min_overlap``: the views drifted too far apart between two offered frames; the
   frame becomes a fresh keyframe 0 (re-initialisation, as in 5).
7. New keyframe and pair when parallax >= ``min_parallax_px`` and overlap <= ``max_overlap``; or,
   when ``max_interval_s`` > 0 and at least that much time has passed since the last keyframe, a
   forced keyframe (overlap is then within [min_overlap, 1]; a still camera thus yields a pair every
   ``max_interval_s``). Otherwise skip (no parallax / overlap above the band).

Parallax is not rotation-compensated: a camera that only rotates also produces parallax.
The selector keeps a reference to the keyframes' ``Frame`` objects; callers must not modify their
images afterwards.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Any

import cv2
import numpy as np

from noposplat_ros.types import Frame, KeyframePair

# LK settings for a ~320-px-wide image: an 11-px window over 4 pyramid levels follows motions of
# about a quarter of the width between the keyframe and the frame (measured on a pan at 640x480:
# 160 px tracks, 200 px does not); cost grows with the window area and the number of features, so
# both are kept small (the per-frame budget is ~2 ms).
_LK_WIN = (11, 11)
_LK_LEVELS = 3
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)
_LK_MAX_ERR = 30.0  # mean absolute grey difference of a tracked patch (0..255)
_RANSAC_THRESHOLD_FRAC = 0.02  # similarity-model inlier threshold, fraction of the tracking width


def _param(default: Any, lo: float, hi: float, description: str) -> Any:
    return dataclasses.field(default=default, metadata={"range": (lo, hi), "description": description})


@dataclasses.dataclass
class KeyframeConfig:
    """Keyframe selection parameters; every field has a default and a valid range (see ``ranges()``)."""

    min_parallax_px: float = _param(
        20.0, 0.0, 10000.0, "minimum median feature displacement since the last keyframe, input-image pixels"
    )
    min_overlap: float = _param(
        0.3, 0.0, 1.0, "lower end of the overlap band; below it tracking re-initialises (fresh keyframe 0)"
    )
    max_overlap: float = _param(0.97, 0.0, 1.0, "upper end of the overlap band; above it no keyframe is made")
    blur_threshold: float = _param(
        0.5, 0.0, 1.0, "skip frames whose sharpness is below this fraction of the recent median (0 = off)"
    )
    blur_window: int = _param(15, 1, 1000, "number of recent frames whose median sharpness is the reference")
    min_interval_s: float = _param(0.1, 0.0, 3600.0, "never make a keyframe sooner than this after the last")
    max_interval_s: float = _param(
        5.0, 0.0, 3600.0, "force a keyframe after this long if tracking still overlaps (0 = never force)"
    )
    tracking_width_px: int = _param(320, 32, 4096, "width of the grey image used for tracking and sharpness")
    max_features: int = _param(100, 10, 5000, "features detected on each keyframe")
    min_tracked_features: int = _param(
        15, 4, 5000, "fewer surviving tracks than this means tracking is lost (re-initialise)"
    )

    @staticmethod
    def ranges() -> dict[str, tuple[float, float]]:
        """Parameter name -> (min, max), inclusive."""
        return {f.name: f.metadata["range"] for f in dataclasses.fields(KeyframeConfig)}

    @staticmethod
    def descriptions() -> dict[str, str]:
        """Parameter name -> one-line description (for ROS parameter descriptors)."""
        return {f.name: f.metadata["description"] for f in dataclasses.fields(KeyframeConfig)}

    def validate(self) -> "KeyframeConfig":
        """Raise ValueError naming the first invalid parameter; return self."""
        for name, (lo, hi) in self.ranges().items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
                raise ValueError(f"keyframe parameter {name}={value!r} outside [{lo}, {hi}]")
        if self.min_overlap > self.max_overlap:
            raise ValueError(f"min_overlap {self.min_overlap} > max_overlap {self.max_overlap}")
        if 0 < self.max_interval_s < self.min_interval_s:
            raise ValueError(f"max_interval_s {self.max_interval_s} < min_interval_s {self.min_interval_s}")
        return self

    @staticmethod
    def from_dict(values: dict[str, Any]) -> "KeyframeConfig":
        """Build and validate from a mapping; unknown names raise ValueError."""
        known = {f.name: f for f in dataclasses.fields(KeyframeConfig)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown keyframe parameters {unknown}; known: {sorted(known)}")
        kwargs = {k: (int(v) if isinstance(known[k].default, int) else float(v)) for k, v in values.items()}
        return KeyframeConfig(**kwargs).validate()


class Decision(str, enum.Enum):
    """What ``offer`` did with the last frame (for diagnostics)."""

    FIRST = "first_keyframe"
    KEYFRAME = "keyframe"
    FORCED = "keyframe_max_interval"
    TOO_SOON = "too_soon"
    BLURRED = "blurred"
    NO_PARALLAX = "no_parallax"
    OVERLAP_ABOVE_BAND = "overlap_above_band"
    OVERLAP_BELOW_BAND = "overlap_below_band_reinit"
    TRACKING_FAILED = "tracking_failed_reinit"
    STAMP_BACKWARDS = "stamp_backwards_reset"
    SIZE_CHANGED = "size_changed_reset"


@dataclasses.dataclass
class KeyframeStats:
    """Cumulative counters since construction (``reset()`` does not clear them)."""

    frames: int = 0
    keyframes: int = 0  # every accepted keyframe, including fresh keyframes 0
    pairs: int = 0
    forced: int = 0  # pairs made by max_interval_s
    blurred: int = 0
    too_soon: int = 0
    no_parallax: int = 0
    overlap_out_of_band: int = 0  # above the band (skipped) or below it (re-initialised)
    tracking_failed: int = 0
    reinitialised: int = 0  # fresh keyframes 0 after tracking or overlap was lost
    stamps_backwards: int = 0
    size_changed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class KeyframeMetrics:
    """Measurements of the last offered frame (NaN when not measured)."""

    sharpness: float = float("nan")  # variance of the Laplacian of the tracking image
    sharpness_ratio: float = float("nan")  # sharpness / recent median
    tracked: int = 0
    parallax_px: float = float("nan")
    overlap: float = float("nan")
    since_keyframe_s: float = float("nan")


@dataclasses.dataclass
class _Keyframe:
    frame: Frame
    grey: np.ndarray  # (h, w) uint8 tracking image
    points: np.ndarray  # (M, 1, 2) float32 features in tracking-image pixels


class KeyframeSelector:
    """Stateful keyframe test; see the module docstring for the rule. Not thread-safe."""

    def __init__(self, cfg: KeyframeConfig | None = None) -> None:
        self.cfg = (cfg or KeyframeConfig()).validate()
        self.stats = KeyframeStats()
        self.last_decision: Decision | None = None
        self.last_metrics = KeyframeMetrics()
        self.reset()

    def reset(self) -> None:
        """Forget keyframes, sharpness history and stamps; the pair index restarts at 0."""
        self._kf: _Keyframe | None = None
        self._pair_index = 0
        self._last_stamp_ns: int | None = None
        self._sharpness: collections.deque[float] = collections.deque(maxlen=int(self.cfg.blur_window))

    @property
    def keyframe(self) -> Frame | None:
        """The current (last accepted) keyframe, if any."""
        return None if self._kf is None else self._kf.frame

    # ------------------------------------------------------------------ per frame
    def offer(self, frame: Frame) -> KeyframePair | None:
        """Look at one frame; return the new pair when it became a keyframe after another one."""
        cfg, st = self.cfg, self.stats
        st.frames += 1
        stamp = int(frame.stamp_ns)
        self.last_metrics = m = KeyframeMetrics()
        reset_reason = None
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            reset_reason, st.stamps_backwards = Decision.STAMP_BACKWARDS, st.stamps_backwards + 1
        elif self._kf is not None and (frame.height, frame.width) != (self._kf.frame.height, self._kf.frame.width):
            reset_reason, st.size_changed = Decision.SIZE_CHANGED, st.size_changed + 1
        if reset_reason is not None:
            self.reset()
        self._last_stamp_ns = stamp

        grey, scale = self._tracking_image(frame.rgb)
        m.sharpness = float(cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))[1][0, 0] ** 2)
        blurred = False
        if self._sharpness:
            reference = float(np.median(np.fromiter(self._sharpness, float)))
            m.sharpness_ratio = m.sharpness / reference if reference > 0 else float("inf")
            blurred = m.sharpness_ratio < cfg.blur_threshold
        self._sharpness.append(m.sharpness)

        if self._kf is None:  # start or reset: there is no sharpness history to call it blurred
            self._accept(frame, grey)
            self.last_decision = reset_reason or Decision.FIRST
            return None

        dt_ns = stamp - int(self._kf.frame.stamp_ns)
        m.since_keyframe_s = dt_ns * 1e-9
        if dt_ns < round(cfg.min_interval_s * 1e9):
            st.too_soon += 1
            return self._skip(Decision.TOO_SOON)
        if blurred:
            st.blurred += 1
            return self._skip(Decision.BLURRED)

        p0, p1 = self._track(grey)
        m.tracked = int(p0.shape[0])
        transform = None
        if m.tracked >= cfg.min_tracked_features:
            transform, inliers = cv2.estimateAffinePartial2D(
                p0, p1, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_THRESHOLD_FRAC * grey.shape[1]
            )
            # Wrong tracks (e.g. into a region the keyframe never saw) agree on no common motion.
            if transform is not None and int(inliers.sum()) < cfg.min_tracked_features:
                transform = None
        if transform is None:
            st.tracking_failed += 1
            return self._reinit(frame, grey, Decision.TRACKING_FAILED)
        m.parallax_px = float(np.median(np.linalg.norm(p1 - p0, axis=-1))) * scale
        m.overlap = _similarity_overlap(transform, grey.shape[1], grey.shape[0])
        if m.overlap < cfg.min_overlap:
            st.overlap_out_of_band += 1
            return self._reinit(frame, grey, Decision.OVERLAP_BELOW_BAND)

        if m.parallax_px >= cfg.min_parallax_px and m.overlap <= cfg.max_overlap:
            decision = Decision.KEYFRAME
        elif cfg.max_interval_s > 0 and dt_ns >= round(cfg.max_interval_s * 1e9):
            decision = Decision.FORCED
            st.forced += 1
        elif m.parallax_px < cfg.min_parallax_px:
            st.no_parallax += 1
            return self._skip(Decision.NO_PARALLAX)
        else:
            st.overlap_out_of_band += 1
            return self._skip(Decision.OVERLAP_ABOVE_BAND)

        pair = KeyframePair(kf0=self._kf.frame, kf1=frame, index=self._pair_index)
        self._pair_index += 1
        st.pairs += 1
        self._accept(frame, grey)
        self.last_decision = decision
        return pair

    # ------------------------------------------------------------------ helpers
    def _skip(self, decision: Decision) -> None:
        self.last_decision = decision
        return None

    def _reinit(self, frame: Frame, grey: np.ndarray, decision: Decision) -> None:
        self.stats.reinitialised += 1
        self._accept(frame, grey)
        self.last_decision = decision
        return None

    def _tracking_image(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 -> grey (h, w) uint8 at tracking width, and input px per tracking px."""
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        H, W = grey.shape
        tw = int(self.cfg.tracking_width_px)
        if W <= tw:
            return grey, 1.0
        th = max(1, round(H * tw / W))
        return cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA), W / tw

    def _accept(self, frame: Frame, grey: np.ndarray) -> None:
        points = cv2.goodFeaturesToTrack(
            grey,
            maxCorners=int(self.cfg.max_features),
            qualityLevel=0.01,
            minDistance=max(3.0, grey.shape[1] / 60.0),
            blockSize=7,
        )
        if points is None:
            points = np.zeros((0, 1, 2), np.float32)
        self._kf = _Keyframe(frame, grey, points)
        self.stats.keyframes += 1

    def _track(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keyframe features -> (p0 (M, 2), p1 (M, 2)) float32 of the good tracks, tracking px."""
        kf = self._kf
        assert kf is not None
        if kf.points.shape[0] == 0:
            empty = np.zeros((0, 2), np.float32)
            return empty, empty
        lk = dict(winSize=_LK_WIN, maxLevel=_LK_LEVELS, criteria=_LK_CRITERIA)
        # One forward pass only: a forward-backward check would double the cost; the parallax is a
        # median and the overlap model is fitted with RANSAC, so the few wrong tracks do not matter.
        p1, ok, err = cv2.calcOpticalFlowPyrLK(kf.grey, grey, kf.points, None, **lk)
        p0, p1 = kf.points[:, 0], p1[:, 0]
        h, w = grey.shape
        good = (
            (ok[:, 0] == 1)
            & (err[:, 0] < _LK_MAX_ERR)
            & (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
        )
        return p0[good], p1[good]


def _similarity_overlap(A: np.ndarray, w: int, h: int) -> float:
    """Shared area of the image rectangle and its image under the (2, 3) transform A, over the larger area."""
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    mapped = (corners @ A[:, :2].T.astype(np.float32) + A[:, 2].astype(np.float32)).astype(np.float32)
    area_mapped = abs(float(cv2.contourArea(mapped)))
    area = float(w * h)
    inter, _ = cv2.intersectConvexConvex(corners, mapped)
    return float(inter) / max(area, area_mapped, 1e-9)
