"""Camera model from sensor_msgs/CameraInfo fields: validation, undistortion, binning and ROI (no rclpy).

Semantics (REP 104, as implemented by ROS's image_geometry / image_proc):
- ``k``, ``d``, ``r``, ``p`` describe the full-resolution, unbinned sensor of size ``width`` x ``height``.
- ``roi`` (x_offset, y_offset, width, height) is a window of that full-resolution raw image; all zeros
  means the full image. ``binning_x/y`` (0 counts as 1) then shrink the window by integer factors.
  The published image is therefore ``(roi_height // binning_y, roi_width // binning_x)``.
- Intrinsics of the published image (image_geometry's convention):
  ``fx' = fx / bx``, ``fy' = fy / by``, ``cx' = (cx - roi_x) / bx``, ``cy' = (cy - roi_y) / by``
  (skew also divided by bx). Distortion coefficients act on normalised coordinates and do not change.
- Undistortion follows image_proc's rectify: ``cv2.initUndistortRectifyMap(K', d, R, P'[:3,:3])``, so the
  output equals ``image_rect`` and its intrinsics are the adjusted ``P[:3,:3]`` (``K'`` when ``p`` is all
  zero). With a stereo rectification ``R`` != I the output is in the rectified camera's frame, as
  ``image_rect`` is. The output has the size of the input image; ``roi_do_rectify`` is stored but does
  not change that (no separate rectified ROI is computed).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np


class CameraInfoError(ValueError):
    """CameraInfo fields are invalid or do not match the image."""


# Number of coefficients ROS defines for each distortion model.
DISTORTION_MODELS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
# Models that mean "no distortion" when d is empty or all zero (uncalibrated/simulated drivers).
_NO_DISTORTION_NAMES = ("", "none")


def scale_intrinsics(K_px: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(3, 3) K of an image resized by (sx, sy) (as cv2.resize), OpenCV pixel centres at integers.

    In corner coordinates a resize is a plain scale, so u' = (u + 0.5) * s - 0.5 in pixel-centre ones.
    """
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return S @ np.asarray(K_px, dtype=np.float64)


def _array(name: str, values: Sequence[float] | np.ndarray, size: int | None) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise CameraInfoError(f"camera_info {name} is not numeric: {exc}") from exc
    if size is not None and a.size != size:
        raise CameraInfoError(f"camera_info {name} must have {size} values, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise CameraInfoError(f"camera_info {name} contains NaN or inf: {a.tolist()}")
    return a


def _check_intrinsics(name: str, M: np.ndarray) -> None:
    fx, fy, cx, cy = M[0, 0], M[1, 1], M[0, 2], M[1, 2]
    if not (fx > 0 and fy > 0):
        raise CameraInfoError(
            f"camera_info {name} has a non-positive focal length (fx={fx}, fy={fy}); "
            "k[0] == 0 means an uncalibrated camera"
        )
    if not (M[2, 2] != 0 and math.isfinite(cx) and math.isfinite(cy)):
        raise CameraInfoError(f"camera_info {name} is not a pinhole matrix: {M.tolist()}")


@dataclasses.dataclass(eq=False)
class CameraModel:
    """Validated CameraInfo. Build with :meth:`from_camera_info_fields`.

    K: (3, 3) float64 raw intrinsics at full resolution; R: (3, 3) rectification rotation;
    P3: (3, 3) float64 intrinsics of the rectified image at full resolution (``p[:, :3]``, or K);
    d: (n,) distortion coefficients (zeros when none).
    """

    width: int
    height: int
    distortion_model: str
    d: np.ndarray
    K: np.ndarray
    R: np.ndarray
    P3: np.ndarray
    binning_x: int
    binning_y: int
    roi_xywh: tuple[int, int, int, int]
    roi_do_rectify: bool
    _maps: dict = dataclasses.field(default_factory=dict, repr=False)
    _identity: bool | None = dataclasses.field(default=None, repr=False)
    _K_out: np.ndarray | None = dataclasses.field(default=None, repr=False)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def from_camera_info_fields(
        width: int,
        height: int,
        distortion_model: str,
        d: Sequence[float] | np.ndarray,
        k: Sequence[float] | np.ndarray,
        r: Sequence[float] | np.ndarray,
        p: Sequence[float] | np.ndarray,
        binning_x: int = 0,
        binning_y: int = 0,
        roi_x_offset: int = 0,
        roi_y_offset: int = 0,
        roi_width: int = 0,
        roi_height: int = 0,
        roi_do_rectify: bool = False,
    ) -> "CameraModel":
        """Validate CameraInfo fields; raises CameraInfoError with the reason.

        Empty ``d`` means no distortion for any model; ``r`` all zero means identity; ``p`` all zero
        means "use K" (both are the message defaults).
        """
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise CameraInfoError(f"camera_info has zero or negative size {width}x{height}")
        model = (distortion_model or "").strip()
        d_arr = _array("d", d, None)
        if model in DISTORTION_MODELS:
            n = DISTORTION_MODELS[model]
            if d_arr.size == 0:
                d_arr = np.zeros(n)
            elif d_arr.size != n:
                raise CameraInfoError(f"distortion model {model!r} needs {n} coefficients in d, got {d_arr.size}")
        elif model.lower() in _NO_DISTORTION_NAMES:
            if np.any(d_arr != 0):
                raise CameraInfoError(f"d has non-zero coefficients {d_arr.tolist()} but no distortion model")
            model, d_arr = "plumb_bob", np.zeros(5)
        else:
            raise CameraInfoError(
                f"unknown distortion model {distortion_model!r}; supported: {', '.join(DISTORTION_MODELS)}"
            )
        K = _array("k", k, 9).reshape(3, 3)
        _check_intrinsics("k", K)
        R = _array("r", r, 9).reshape(3, 3)
        if not np.any(R):
            R = np.eye(3)
        elif not (np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0):
            raise CameraInfoError(f"camera_info r is not a rotation matrix: {R.tolist()}")
        P = _array("p", p, 12).reshape(3, 4)
        if np.any(P):
            P3 = P[:, :3].copy()
            _check_intrinsics("p", P3)
        else:
            P3 = K.copy()
        bx, by = max(int(binning_x), 1), max(int(binning_y), 1)
        roi = tuple(int(v) for v in (roi_x_offset, roi_y_offset, roi_width, roi_height))
        if any(v < 0 for v in roi):
            raise CameraInfoError(f"camera_info roi has negative values {roi}")
        if roi == (0, 0, 0, 0):
            roi = (0, 0, width, height)
        x, y, w, h = roi
        if w == 0 or h == 0 or x + w > width or y + h > height:
            raise CameraInfoError(f"camera_info roi {roi} (x, y, w, h) does not lie inside {width}x{height}")
        if w // bx == 0 or h // by == 0:
            raise CameraInfoError(f"binning {bx}x{by} leaves an empty image from roi {w}x{h}")
        return CameraModel(width, height, model, d_arr, K, R, P3, bx, by, roi, bool(roi_do_rectify))

    # ------------------------------------------------------------------ geometry
    @property
    def image_size_hw(self) -> tuple[int, int]:
        """(height, width) of the image this camera_info describes, after ROI and binning."""
        _, _, w, h = self.roi_xywh
        return h // self.binning_y, w // self.binning_x

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.d != 0))

    @property
    def is_identity(self) -> bool:
        """True when undistortion is a no-op: no distortion, R = I and P's intrinsics equal K."""
        if self._identity is None:  # cached: checked on every frame
            self._identity = bool(
                not self.has_distortion
                and np.allclose(self.R, np.eye(3), atol=1e-9)
                and np.allclose(self.P3, self.K, rtol=1e-9, atol=1e-9)
            )
        return self._identity

    def calibration_key(self) -> bytes:
        """Bytes that differ whenever anything affecting :meth:`undistort` differs (cheap change test)."""
        head = repr((self.width, self.height, self.distortion_model, self.binning_x, self.binning_y, self.roi_xywh))
        return head.encode() + b"".join(a.tobytes() for a in (self.d, self.K, self.R, self.P3))

    def _adjust(self, M: np.ndarray) -> np.ndarray:
        """Full-resolution intrinsics -> intrinsics of the ROI'd, binned image (image_geometry rule)."""
        x, y = self.roi_xywh[:2]
        out = M.astype(np.float64).copy()
        out[0, 2] -= x * out[2, 2]
        out[1, 2] -= y * out[2, 2]
        out[0, :] /= self.binning_x
        out[1, :] /= self.binning_y
        return out

    def _check_size(self, h: int, w: int) -> None:
        if (h, w) != self.image_size_hw:
            eh, ew = self.image_size_hw
            raise CameraInfoError(
                f"image is {w}x{h} but camera_info describes {ew}x{eh} (calibrated {self.width}x{self.height},"
                f" roi {self.roi_xywh}, binning {self.binning_x}x{self.binning_y})"
            )

    def K_raw_for_image(self, h: int, w: int) -> np.ndarray:
        """(3, 3) float64 intrinsics of the raw (distorted) published image of size (h, w)."""
        self._check_size(h, w)
        return self._adjust(self.K)

    def K_for_image(self, h: int, w: int) -> np.ndarray:
        """(3, 3) float64 intrinsics of the image :meth:`undistort` returns for a (h, w) input."""
        self._check_size(h, w)
        if self._K_out is None:
            self._K_out = self._adjust(self.K if self.is_identity else self.P3)
        return self._K_out.copy()

    # ------------------------------------------------------------------ undistortion
    def _rectify_maps(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        maps = self._maps.get((h, w))
        if maps is None:
            K_in, K_out = self._adjust(self.K), self._adjust(self.P3)
            if self.distortion_model == "equidistant":
                maps = cv2.fisheye.initUndistortRectifyMap(
                    K_in, self.d.reshape(4, 1), self.R, K_out, (w, h), cv2.CV_16SC2
                )
            else:
                maps = cv2.initUndistortRectifyMap(K_in, self.d, self.R, K_out, (w, h), cv2.CV_16SC2)
            self._maps[(h, w)] = maps
        return maps

    def undistort(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 raw image -> (undistorted (H, W, 3) uint8, K_px (3, 3) float64).

        Identity calibrations return ``rgb`` itself (no remap, no copy). Otherwise bilinear remap
        with maps cached per image size; pixels with no source are black.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise CameraInfoError(f"undistort expects an (H, W, 3) image, got shape {rgb.shape}")
        h, w = int(rgb.shape[0]), int(rgb.shape[1])
        K_out = self.K_for_image(h, w)
        if self.is_identity:
            return rgb, K_out
        m1, m2 = self._rectify_maps(h, w)
        out = cv2.remap(rgb, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return out, K_out
