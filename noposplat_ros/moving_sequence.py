"""A moving-camera image sequence built from real images (no downloads): the Motorcycle stereo pair.

The camera alternates between the left and the right position of the rectified Middlebury rig
(a real 0.193 m translation with real parallax) every ``frames_per_view`` frames, while the crop
window slides slowly sideways (a small pan: for a pure rotation of a few tenths of a degree the
image motion is close to a shift). All frames share one calibration: the crop's intrinsics at the
middle of the slide, which is what a camera_info topic would carry. Used by the bag tests, the
soak publisher and demos.
"""
from __future__ import annotations

import numpy as np

from noposplat_ros.datasets import (
    MOTORCYCLE_CX0_PX,
    MOTORCYCLE_CY_PX,
    MOTORCYCLE_DOFFS_PX,
    MOTORCYCLE_FOCAL_PX,
)
from noposplat_ros.types import Frame

_DOFFS_INT_PX = int(round(MOTORCYCLE_DOFFS_PX))  # right crop shifted by this: both cx agree to 0.09 px
_FULL_W, _FULL_H = 741, 500


def _views() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data  # lazily: only callers that build sequences need scikit-image's data

    left, right, _ = data.stereo_motorcycle()
    return np.ascontiguousarray(left), np.ascontiguousarray(right)


class MotorcycleSequence:
    """Frame ``i`` of an endless sequence (deterministic in ``i``).

    width, height: crop size in full-resolution pixels (at most 710 x 500).
    scale: resize factor applied after cropping (e.g. 0.5 for small, fast test frames).
    frames_per_view: frames spent at each rig position before moving to the other one.
    slide_px: amplitude of the sideways slide of the crop window (full-resolution pixels).
    """

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        *,
        scale: float = 1.0,
        frames_per_view: int = 6,
        slide_px: int = 8,
        slide_period: int = 48,
        start_ns: int = 1_700_000_000_000_000_000,
        period_ns: int = 33_333_333,
        frame_id: str = "camera_optical_frame",
    ) -> None:
        max_w = _FULL_W - _DOFFS_INT_PX
        if not (0 < width <= max_w and 0 < height <= _FULL_H):
            raise ValueError(f"crop {width}x{height} must fit in {max_w}x{_FULL_H}")
        self.width, self.height, self.scale = int(width), int(height), float(scale)
        self.frames_per_view = max(int(frames_per_view), 1)
        margin = max_w - self.width
        self.slide_px = int(min(slide_px, margin // 2))
        self.slide_period = max(int(slide_period), 2)
        self.x_mid = margin // 2
        self.y0 = (_FULL_H - self.height) // 2
        self.start_ns, self.period_ns, self.frame_id = int(start_ns), int(period_ns), frame_id
        self._left, self._right = _views()
        K = np.array(
            [
                [MOTORCYCLE_FOCAL_PX, 0.0, MOTORCYCLE_CX0_PX - self.x_mid],
                [0.0, MOTORCYCLE_FOCAL_PX, MOTORCYCLE_CY_PX - self.y0],
                [0.0, 0.0, 1.0],
            ]
        )
        K[:2] *= self.scale
        self.K = K  # (3, 3) float64, of the output frames
        self.out_hw = (int(round(self.height * self.scale)), int(round(self.width * self.scale)))

    def offset_px(self, i: int) -> int:
        """Sideways crop offset of frame i (triangle wave around the middle)."""
        phase = (i % self.slide_period) / self.slide_period
        tri = 4.0 * abs(phase - 0.5) - 1.0  # 1 -> -1 -> 1
        return int(round(self.x_mid + tri * self.slide_px))

    def rgb(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of frame i."""
        import cv2

        right = (i // self.frames_per_view) % 2 == 1
        x = self.offset_px(i) + (_DOFFS_INT_PX if right else 0)
        src = self._right if right else self._left
        crop = src[self.y0 : self.y0 + self.height, x : x + self.width]
        if self.scale != 1.0:
            crop = cv2.resize(crop, self.out_hw[::-1], interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(crop)

    def frame(self, i: int) -> Frame:
        return Frame(self.rgb(i), self.K.copy(), self.start_ns + i * self.period_ns, self.frame_id)

    def frames(self, n: int) -> list[Frame]:
        return [self.frame(i) for i in range(n)]
