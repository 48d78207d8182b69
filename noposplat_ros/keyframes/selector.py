"""Keyframe selection on a camera stream: coverage, rotation-compensated parallax, rest, blur (no rclpy).

``KeyframeSelector.offer(frame)`` looks at each incoming frame once and returns a ``KeyframePair``
when the frame becomes a keyframe that pairs with the previous one. Every threshold is in units that
do not depend on the image resolution (angles, fractions, seconds). The rule, in order:

1. Stamps going backwards (bag loop, clock reset) or a change of image size reset the selector's
   state (keyframes, history, pair index; the cumulative ``stats`` are kept): the frame becomes a
   fresh keyframe 0. (The input gate drops single bad frames before they get here.)
2. The first frame (after start/reset) becomes keyframe 0; no pair yet.
3. Sooner than ``min_interval_s`` after the last keyframe (by frame stamps, never wall clock): skip.
4. Blurred: the variance of the Laplacian of the downscaled grey image is below ``blur_threshold``
   times the median of the last ``blur_window`` frames: skip.
5. Features of the last keyframe (Shi-Tomasi, on a grey image downscaled to ``tracking_width_px``)
   are tracked into the frame with pyramidal Lucas-Kanade. Fewer than ``min_tracked_features``
   survivors, or fewer than that agreeing with one similarity transform (RANSAC): tracking is lost
   and the frame becomes a fresh keyframe 0 (re-initialisation: the chain of pairs breaks).
6. Measures against the last keyframe (K of the tracking image turns pixels into bearings):
   - overlap: area shared by the two views under the similarity transform fitted to the tracks
     (its scale sees forward/backward motion), over the larger of the two view areas (1 = same view);
   - parallax (deg): the rotation that best maps the keyframe's bearings onto the frame's (Kabsch)
     is removed; parallax is the median angle left. A camera that only rotates has ~0 parallax
     however far it turns; translation leaves depth-dependent angles.
   - motion (deg): median bearing change since the previous tracked frame (is the camera at rest?).
   Overlap below ``min_overlap``: the views drifted too far apart; fresh keyframe 0 (as in 5).
7. No pair without parallax >= ``min_parallax_deg`` (no pair is spent on a rotation). With it, a
   keyframe and a pair when
   - coverage: overlap <= ``target_overlap``, or
   - rest: the camera moved since the last keyframe and has now been at rest (motion below ~5x the
     tracking noise) for ``rest_s`` (the last motion gets covered before the camera sits still), or
   - ``max_interval_s`` > 0 and at least that long since the last keyframe (forced).
   Otherwise skip (``no_parallax`` / ``overlap_above_target``).

The selector keeps a reference to the keyframes' ``Frame`` objects; callers must not modify their
images afterwards.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import math
import statistics
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
# Frame-to-frame bearing change below which the camera is at rest: ~5x the LK noise of a still, noisy
# camera (0.001 deg measured on the general-motion fixture), below any motion worth a keyframe.
_REST_MOTION_DEG = 0.005
# A pan adds rotation-compensated parallax of ~0.2% of its angle (tracking noise); a sideways move,
# part of which the fitted rotation absorbs, leaves >= 3% (measured on the general-motion tour).
# Below 2% of the fitted rotation the pair would be mostly rotation: no pair.
_MIN_PARALLAX_PER_ROTATION = 0.02


def _param(default: Any, lo: float, hi: float, description: str) -> Any:
    return dataclasses.field(default=default, metadata={"range": (lo, hi), "description": description})


@dataclasses.dataclass
class KeyframeConfig:
    """Keyframe selection parameters; every field has a default and a valid range (see ``ranges()``)."""

    min_parallax_deg: float = _param(
        0.05, 0.0, 30.0, "rotation-compensated median parallax since the last keyframe needed for any pair, degrees"
    )
    target_overlap: float = _param(
        0.9, 0.0, 1.0, "coverage: a keyframe when the overlap with the last keyframe falls to this fraction"
    )
    min_overlap: float = _param(
        0.3, 0.0, 1.0, "below this overlap tracking re-initialises (fresh keyframe 0, new segment)"
    )
    rest_s: float = _param(
        0.2, 0.0, 3600.0, "a keyframe when the camera has rested this long after moving (0 = off)"
    )
    blur_threshold: float = _param(
        0.5, 0.0, 1.0, "skip frames whose sharpness is below this fraction of the recent median (0 = off)"
    )
    blur_window: int = _param(15, 1, 1000, "number of recent frames whose median sharpness is the reference")
    min_interval_s: float = _param(0.1, 0.0, 3600.0, "never make a keyframe sooner than this after the last")
    max_interval_s: float = _param(
        5.0, 0.0, 3600.0, "force a keyframe after this long when there is parallax, whatever the overlap (0 = never)"
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
        if self.min_overlap > self.target_overlap:
            raise ValueError(f"min_overlap {self.min_overlap} > target_overlap {self.target_overlap}")
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
    KEYFRAME = "keyframe"  # coverage: overlap fell to target_overlap
    REST = "keyframe_at_rest"
    FORCED = "keyframe_max_interval"
    TOO_SOON = "too_soon"
    BLURRED = "blurred"
    NO_PARALLAX = "no_parallax"  # still, or rotation only
    OVERLAP_ABOVE_TARGET = "overlap_above_target"
    OVERLAP_BELOW_MIN = "overlap_below_min_reinit"
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
    at_rest: int = 0  # pairs made when the camera came to rest
    blurred: int = 0
    too_soon: int = 0
    no_parallax: int = 0
    overlap_above_target: int = 0
    overlap_below_min: int = 0
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
    parallax_deg: float = float("nan")  # rotation-compensated median parallax since the keyframe
    rotation_deg: float = float("nan")  # rotation fitted between keyframe and frame
    motion_deg: float = float("nan")  # median bearing change since the previous tracked frame
    overlap: float = float("nan")
    since_keyframe_s: float = float("nan")
    rest_s: float = 0.0  # how long the camera has been at rest


@dataclasses.dataclass
class _Keyframe:
    frame: Frame
    grey: np.ndarray  # (h, w) uint8 tracking image
    points: np.ndarray  # (M, 1, 2) float32 features in tracking-image pixels
    bearings: np.ndarray  # (M, 3) float64 unit bearings of ``points``
    K_inv: np.ndarray  # (3, 3) inverse intrinsics of the tracking image


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
        self._blurred_run = 0
        self._forget_motion()

    def _forget_motion(self) -> None:
        self._prev_bearings: np.ndarray | None = None  # (M, 3) bearings of the keyframe's features, last tracked
        self._prev_good: np.ndarray | None = None  # (M,) bool
        self._rest_since_ns: int | None = None

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
            reference = float(statistics.median(self._sharpness))  # = np.median, at ~1/50 of its cost
            m.sharpness_ratio = m.sharpness / reference if reference > 0 else float("inf")
            blurred = m.sharpness_ratio < cfg.blur_threshold
        # Blurred frames stay out of the reference (else a blurred stretch lowers its own bar), until
        # they fill a whole window: then the scene itself has changed and the reference restarts.
        self._blurred_run = self._blurred_run + 1 if blurred else 0
        if self._blurred_run >= cfg.blur_window:
            self._sharpness.clear()
            self._blurred_run = 0
        if not blurred:
            self._sharpness.append(m.sharpness)

        if self._kf is None:  # start or reset: there is no sharpness history to call it blurred
            self._accept(frame, grey, scale)
            self.last_decision = reset_reason or Decision.FIRST
            return None

        dt_ns = stamp - int(self._kf.frame.stamp_ns)
        m.since_keyframe_s = dt_ns * 1e-9
        if dt_ns < round(cfg.min_interval_s * 1e9):
            st.too_soon += 1
            return self._skip(Decision.TOO_SOON)
        if blurred:
            st.blurred += 1
            self._forget_motion()  # a blurred frame breaks the at-rest run
            self._moved = True  # motion blur is motion: the frames after it may need covering
            return self._skip(Decision.BLURRED)

        p0, p1, tracks, good = self._track(grey)
        bearings = _bearings(tracks, self._kf.K_inv)  # (M, 3) of every tracked position, once per frame
        m.tracked = int(p0.shape[0])
        transform = inliers = None
        if m.tracked >= cfg.min_tracked_features:
            transform, inliers = cv2.estimateAffinePartial2D(
                p0, p1, method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_THRESHOLD_FRAC * grey.shape[1]
            )
            # Wrong tracks (e.g. into a region the keyframe never saw) agree on no common motion.
            if transform is not None and int(inliers.sum()) < cfg.min_tracked_features:
                transform = None
        if transform is None:
            st.tracking_failed += 1
            return self._reinit(frame, grey, scale, Decision.TRACKING_FAILED)
        m.overlap = _similarity_overlap(transform, grey.shape[1], grey.shape[0])
        keep = inliers[:, 0].astype(bool)
        b0 = self._kf.bearings[good][keep]
        b1 = bearings[good][keep]
        m.parallax_deg, m.rotation_deg = _rotation_compensated_parallax_deg(b0, b1)
        m.motion_deg = self._motion_deg(bearings, good)
        if math.isfinite(m.motion_deg) and m.motion_deg >= _REST_MOTION_DEG:
            self._moved = True
        if m.motion_deg < _REST_MOTION_DEG:
            if self._rest_since_ns is None:
                self._rest_since_ns = stamp
            m.rest_s = (stamp - self._rest_since_ns) * 1e-9
        else:
            self._rest_since_ns = None
        if m.overlap < cfg.min_overlap:
            st.overlap_below_min += 1
            return self._reinit(frame, grey, scale, Decision.OVERLAP_BELOW_MIN)

        if not (m.parallax_deg >= max(cfg.min_parallax_deg, _MIN_PARALLAX_PER_ROTATION * m.rotation_deg)):
            st.no_parallax += 1
            return self._skip(Decision.NO_PARALLAX)
        if m.overlap <= cfg.target_overlap:
            decision = Decision.KEYFRAME
        elif cfg.rest_s > 0 and self._moved and self._rest_since_ns is not None and m.rest_s >= cfg.rest_s:
            decision = Decision.REST
            st.at_rest += 1
        elif cfg.max_interval_s > 0 and dt_ns >= round(cfg.max_interval_s * 1e9):
            decision = Decision.FORCED
            st.forced += 1
        else:
            st.overlap_above_target += 1
            return self._skip(Decision.OVERLAP_ABOVE_TARGET)

        pair = KeyframePair(kf0=self._kf.frame, kf1=frame, index=self._pair_index)
        self._pair_index += 1
        st.pairs += 1
        self._accept(frame, grey, scale)
        self.last_decision = decision
        return pair

    # ------------------------------------------------------------------ helpers
    def _skip(self, decision: Decision) -> None:
        self.last_decision = decision
        return None

    def _reinit(self, frame: Frame, grey: np.ndarray, scale: float, decision: Decision) -> None:
        self.stats.reinitialised += 1
        self._accept(frame, grey, scale)
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

    def _accept(self, frame: Frame, grey: np.ndarray, scale: float) -> None:
        points = cv2.goodFeaturesToTrack(
            grey,
            maxCorners=int(self.cfg.max_features),
            qualityLevel=0.01,
            minDistance=max(3.0, grey.shape[1] / 60.0),
            blockSize=7,
        )
        if points is None:
            points = np.zeros((0, 1, 2), np.float32)
        K_t = np.asarray(frame.K, dtype=np.float64).copy()
        K_t[:2] /= scale  # intrinsics of the tracking image
        K_inv = np.linalg.inv(K_t)
        self._kf = _Keyframe(frame, grey, points, _bearings(points[:, 0], K_inv), K_inv)
        self._forget_motion()
        self._moved = False  # has the camera moved since this keyframe (for the rest rule)?
        self.stats.keyframes += 1

    def _track(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Keyframe features -> (p0 (G, 2), p1 (G, 2)) float32 good tracks, tracking px; all tracked
        positions (M, 2) and the good mask (M,)."""
        kf = self._kf
        assert kf is not None
        if kf.points.shape[0] == 0:
            empty = np.zeros((0, 2), np.float32)
            return empty, empty, empty, np.zeros(0, bool)
        lk = dict(winSize=_LK_WIN, maxLevel=_LK_LEVELS, criteria=_LK_CRITERIA)
        # One forward pass only: a forward-backward check would double the cost; parallax and motion
        # are medians and the overlap model is fitted with RANSAC, so the few wrong tracks do not matter.
        p1, ok, err = cv2.calcOpticalFlowPyrLK(kf.grey, grey, kf.points, None, **lk)
        p0, p1 = kf.points[:, 0], p1[:, 0]
        h, w = grey.shape
        good = (
            (ok[:, 0] == 1)
            & (err[:, 0] < _LK_MAX_ERR)
            & (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
        )
        return p0[good], p1[good], p1, good

    def _motion_deg(self, bearings: np.ndarray, good: np.ndarray) -> float:
        """Median bearing change of the keyframe's features since the previous tracked frame (deg).

        bearings: (M, 3) bearings of all the keyframe's features as tracked into this frame; good: (M,)."""
        prev, prev_good = self._prev_bearings, self._prev_good
        self._prev_bearings, self._prev_good = bearings, good
        if prev is None or prev.shape != bearings.shape:
            return float("inf")
        both = good & prev_good
        if not both.any():
            return float("inf")
        return math.degrees(_median(_row_norms(bearings[both] - prev[both])))


# The per-frame helpers below run on ~100 points: NumPy's per-call overhead (np.median ~0.1 ms,
# np.linalg.norm, np.linalg.det, np.concatenate) cost more than the arithmetic, so they use the
# cheapest calls that give the same values.


def _row_norms(x: np.ndarray) -> np.ndarray:
    """(M, k) -> (M,) Euclidean norms; the same operations (and values) as np.linalg.norm(x, axis=1)."""
    return np.sqrt(np.add.reduce(x * x, axis=1))


def _median(x: np.ndarray) -> float:
    """Median of a non-empty 1-D array; the value np.median gives (mean of the two middle values
    for an even count, NaN if any value is NaN), without its overhead."""
    s = np.sort(x)
    n = s.shape[0]
    if math.isnan(s[-1]):
        return float("nan")
    k = n // 2
    return float(s[k]) if n % 2 else float((s[k - 1] + s[k]) / 2.0)


def _bearings(points_px: np.ndarray, K_inv: np.ndarray) -> np.ndarray:
    """(M, 2) pixels -> (M, 3) float64 unit bearing vectors."""
    x = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    b = np.empty((x.shape[0], 3))
    b[:, :2] = x @ K_inv[:2, :2].T + K_inv[:2, 2]
    b[:, 2] = 1.0
    return b / _row_norms(b)[:, None]


def _rotation_compensated_parallax_deg(b0: np.ndarray, b1: np.ndarray) -> tuple[float, float]:
    """(M, 3) matched unit bearings -> (median angle left after the best rotation b1 ~ R b0, angle
    of R), degrees. Kabsch by hand: a 3x3 SVD is all it takes (no library call needed)."""
    if b0.shape[0] < 3:
        return float("nan"), float("nan")
    U, _, Vt = np.linalg.svd(b1.T @ b0)
    R = U @ Vt
    (a, b, c), (d, e, f), (g, h, i) = R.tolist()
    if a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g) < 0:  # a reflection: flip U's last axis
        U[:, 2] = -U[:, 2]
        R = U @ Vt
    residual = _row_norms(b1 - b0 @ R.T)  # chord ~ angle for small angles
    angle = math.degrees(math.acos(min(1.0, max(-1.0, (float(R[0, 0] + R[1, 1] + R[2, 2]) - 1.0) / 2.0))))
    return math.degrees(_median(residual)), angle


def _similarity_overlap(A: np.ndarray, w: int, h: int) -> float:
    """Shared area of the image rectangle and its image under the (2, 3) transform A, over the larger area."""
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    mapped = (corners @ A[:, :2].T.astype(np.float32) + A[:, 2].astype(np.float32)).astype(np.float32)
    area_mapped = abs(float(cv2.contourArea(mapped)))
    area = float(w * h)
    inter, _ = cv2.intersectConvexConvex(corners, mapped)
    return float(inter) / max(area, area_mapped, 1e-9)
