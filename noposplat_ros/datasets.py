"""Real test data that ships inside an installed dependency (no downloads).

The Middlebury 2014 "Motorcycle" rectified stereo pair from scikit-image's wheel, with its
calibration (quarter resolution, 741x500) and ground-truth disparity of the left view.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from noposplat_ros.types import Frame

# Middlebury 2014 Motorcycle calib.txt, divided by 4 for scikit-image's quarter-size images.
MOTORCYCLE_FOCAL_PX = 994.978
MOTORCYCLE_CX0_PX = 311.193
MOTORCYCLE_CY_PX = 254.877
MOTORCYCLE_DOFFS_PX = 31.086  # cx1 - cx0
MOTORCYCLE_BASELINE_M = 0.193001
# Stamps of the two frames as if captured 0.5 s apart (any increasing values would do).
_MOTORCYCLE_STAMP0_NS = 1_700_000_000_000_000_000


@dataclasses.dataclass
class StereoGroundTruth:
    """A calibrated pair with ground truth.

    left, right: Frames (right camera is translated by +baseline_m along camera-0's x axis).
    disparity_left: (H, W) float32, left-view disparity in px at ``left``'s grid; non-finite = invalid.
    T_cam0_from_cam1: (4, 4) float64, metric.
    """

    left: Frame
    right: Frame
    disparity_left: np.ndarray
    baseline_m: float
    T_cam0_from_cam1: np.ndarray

    def depth_left_m(self) -> np.ndarray:
        """(H, W) float64 metric depth of the left view; NaN where disparity is invalid."""
        d = self.disparity_left.astype(np.float64)
        f = float(self.left.K[0, 0])
        doffs = float(self.right.K[0, 2] - self.left.K[0, 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = f * self.baseline_m / (d + doffs)
        z[~np.isfinite(d) | (d <= 0)] = np.nan
        return z


def motorcycle_K(cx: float) -> np.ndarray:
    return np.array(
        [[MOTORCYCLE_FOCAL_PX, 0.0, cx], [0.0, MOTORCYCLE_FOCAL_PX, MOTORCYCLE_CY_PX], [0.0, 0.0, 1.0]]
    )


def load_motorcycle(frame_id: str = "camera_optical_frame") -> StereoGroundTruth:
    """The Motorcycle pair from ``skimage.data.stereo_motorcycle()`` with calibration and truth."""
    from skimage import data  # imported lazily: only tests, benchmarks and the demo need it

    left, right, disparity = data.stereo_motorcycle()
    T = np.eye(4)
    T[0, 3] = MOTORCYCLE_BASELINE_M
    return StereoGroundTruth(
        left=Frame(np.ascontiguousarray(left), motorcycle_K(MOTORCYCLE_CX0_PX), _MOTORCYCLE_STAMP0_NS, frame_id),
        right=Frame(
            np.ascontiguousarray(right),
            motorcycle_K(MOTORCYCLE_CX0_PX + MOTORCYCLE_DOFFS_PX),
            _MOTORCYCLE_STAMP0_NS + 500_000_000,
            frame_id,
        ),
        disparity_left=disparity,
        baseline_m=MOTORCYCLE_BASELINE_M,
        T_cam0_from_cam1=T,
    )
