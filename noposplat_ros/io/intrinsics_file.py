"""Read camera intrinsics for the ``pair`` command.

Accepted files (YAML or JSON; JSON is YAML):
1. A ROS camera_info calibration file (camera_calibration_parsers): ``image_width``,
   ``image_height``, ``camera_matrix: {rows, cols, data}``, ``distortion_model``,
   ``distortion_coefficients``, ``rectification_matrix``, ``projection_matrix``.
2. A sensor_msgs/CameraInfo message dump (``ros2 topic echo --once``): ``width``, ``height``, ``k``,
   ``d``, ``distortion_model``, ``r``, ``p`` (optionally ``binning_*``, ``roi``).
3. A small file with pixel intrinsics: ``{fx, fy, cx, cy}`` (one set for both images), or
   ``{"image0": {...}, "image1": {...}}``, or a list of two sets; ``K`` (3x3 or 9 values) is accepted
   in place of fx/fy/cx/cy.
Two files may be given (one per image). Pixel K follows OpenCV/ROS: pixel centres at integers.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np
import yaml

from noposplat_ros.ingest.camera_model import CameraInfoError, CameraModel


class IntrinsicsFileError(ValueError):
    """The intrinsics file cannot be read or has no usable intrinsics."""


@dataclasses.dataclass(frozen=True)
class ImageIntrinsics:
    """K_px: (3, 3) float64 of the image as stored; camera: the full calibration when the file had one."""

    K_px: np.ndarray
    camera: CameraModel | None = None

    def for_image(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rgb undistorted if the calibration has distortion, its (3, 3) K). rgb: (H, W, 3)."""
        if self.camera is None:
            return rgb, self.K_px
        h, w = rgb.shape[:2]
        if self.camera.is_identity:
            return rgb, self.camera.K_for_image(h, w)
        if rgb.dtype != np.uint8:
            rgb = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)  # remap path works on 8-bit images
        return self.camera.undistort(rgb)


def _K_from_simple(d: dict[str, Any], where: str) -> np.ndarray:
    if "K" in d or "k" in d:
        K = np.asarray(d.get("K", d.get("k")), dtype=np.float64).reshape(3, 3)
    else:
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in d]
        if missing:
            raise IntrinsicsFileError(f"{where}: missing {missing} (need fx, fy, cx, cy or K)")
        K = np.array([[d["fx"], d.get("skew", 0.0), d["cx"]], [0.0, d["fy"], d["cy"]], [0.0, 0.0, 1.0]], dtype=np.float64)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise IntrinsicsFileError(f"{where}: invalid intrinsics {K.tolist()}")
    return K


def _parse_one(d: Any, where: str) -> ImageIntrinsics:
    if not isinstance(d, dict):
        raise IntrinsicsFileError(f"{where}: expected a mapping, got {type(d).__name__}")
    try:
        if "camera_matrix" in d:  # camera_calibration_parsers YAML
            k = d["camera_matrix"]["data"]
            cam = CameraModel.from_camera_info_fields(
                width=d["image_width"], height=d["image_height"],
                distortion_model=d.get("distortion_model", "plumb_bob") or "plumb_bob",
                d=(d.get("distortion_coefficients") or {}).get("data", []),
                k=k, r=(d.get("rectification_matrix") or {}).get("data", [0.0] * 9),
                p=(d.get("projection_matrix") or {}).get("data", [0.0] * 12),
            )
            return ImageIntrinsics(np.asarray(k, dtype=np.float64).reshape(3, 3), cam)
        if "k" in d and "width" in d and "height" in d:  # sensor_msgs/CameraInfo dump
            roi = d.get("roi") or {}
            cam = CameraModel.from_camera_info_fields(
                width=d["width"], height=d["height"], distortion_model=d.get("distortion_model", ""),
                d=d.get("d", []) or [], k=d["k"], r=d.get("r", [0.0] * 9) or [0.0] * 9, p=d.get("p", [0.0] * 12) or [0.0] * 12,
                binning_x=d.get("binning_x", 0), binning_y=d.get("binning_y", 0),
                roi_x_offset=roi.get("x_offset", 0), roi_y_offset=roi.get("y_offset", 0),
                roi_width=roi.get("width", 0), roi_height=roi.get("height", 0),
            )
            return ImageIntrinsics(np.asarray(d["k"], dtype=np.float64).reshape(3, 3), cam)
    except (CameraInfoError, KeyError, TypeError, ValueError) as exc:
        raise IntrinsicsFileError(f"{where}: invalid camera_info: {exc}") from exc
    return ImageIntrinsics(_K_from_simple(d, where))


def _parse_file(path: pathlib.Path) -> list[ImageIntrinsics]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise IntrinsicsFileError(f"cannot read intrinsics file {path}: {exc}") from exc
    if isinstance(data, list):
        return [_parse_one(d, f"{path}[{i}]") for i, d in enumerate(data)]
    if isinstance(data, dict) and ("image0" in data or "image1" in data):
        if not ("image0" in data and "image1" in data):
            raise IntrinsicsFileError(f"{path}: give both image0 and image1 (or one set for both)")
        return [_parse_one(data["image0"], f"{path}:image0"), _parse_one(data["image1"], f"{path}:image1")]
    return [_parse_one(data, str(path))]


def load_intrinsics(paths: list[str | pathlib.Path]) -> tuple[ImageIntrinsics, ImageIntrinsics]:
    """One file (one set for both images, or per-image sets) or two files (one per image)."""
    if not 1 <= len(paths) <= 2:
        raise IntrinsicsFileError("give one intrinsics file, or two (one per image)")
    sets = [s for p in paths for s in _parse_file(pathlib.Path(p))]
    if len(sets) == 1:
        return sets[0], sets[0]
    if len(sets) == 2:
        return sets[0], sets[1]
    raise IntrinsicsFileError(f"expected intrinsics for 2 images, found {len(sets)} sets in {[str(p) for p in paths]}")
