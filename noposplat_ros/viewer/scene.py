"""Gaussians -> the arrays a browser splat viewer draws, display thinning and camera geometry (no rclpy).

Everything here is display-only: thinning picks which Gaussians to *send*, it never changes the data
the node publishes or a PLY holds. Frames follow the project: cameras are OpenCV optical (+x right,
+y down, +z forward), poses are ``T_world_from_cam`` (4, 4).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from noposplat_ros.transforms import matrix_to_quat_xyzw
from noposplat_ros.types import Gaussians, sh_dc_to_rgb


@dataclasses.dataclass
class SplatArrays:
    """What ``viser``'s ``scene.add_gaussian_splats`` takes, all float32.

    centers: (N, 3). covariances: (N, 3, 3). rgbs: (N, 3) in [0, 1]. opacities: (N, 1) in [0, 1].
    """

    centers: np.ndarray
    covariances: np.ndarray
    rgbs: np.ndarray
    opacities: np.ndarray

    @property
    def num(self) -> int:
        return int(self.centers.shape[0])

    def take(self, index: np.ndarray) -> "SplatArrays":
        """Rows by integer index (M,) or boolean mask (N,)."""
        return SplatArrays(self.centers[index], self.covariances[index], self.rgbs[index], self.opacities[index])

    @staticmethod
    def concat(parts: "list[SplatArrays]") -> "SplatArrays":
        if not parts:
            return empty_splats()
        return SplatArrays(*(np.concatenate([getattr(p, f.name) for p in parts], 0)
                             for f in dataclasses.fields(SplatArrays)))

    def transformed(self, T_world_from_local: np.ndarray) -> "SplatArrays":
        """The same splats expressed in another frame: centres R x + t, covariances R C R^T."""
        T = np.asarray(T_world_from_local, np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"T_world_from_local must be (4, 4), got {T.shape}")
        R = T[:3, :3].astype(np.float32)
        t = T[:3, 3].astype(np.float32)
        cov = np.einsum("ij,njk,lk->nil", R, self.covariances, R, optimize=True)
        return SplatArrays(self.centers @ R.T + t, cov.astype(np.float32), self.rgbs, self.opacities)


def empty_splats() -> SplatArrays:
    z = np.zeros
    return SplatArrays(z((0, 3), np.float32), z((0, 3, 3), np.float32), z((0, 3), np.float32), z((0, 1), np.float32))


def gaussians_to_splats(gaussians: Gaussians) -> SplatArrays:
    """Gaussians (any device) -> SplatArrays with the view-independent (SH DC) colour.

    Non-finite Gaussians (centre, covariance or opacity) are dropped: WebGL cannot draw them.
    """
    n = gaussians.num
    if n == 0:
        return empty_splats()  # e.g. the node's map before its first pair
    centers = gaussians.means.detach().cpu().float().numpy().reshape(n, 3)
    cov = gaussians.covariances.detach().cpu().float().numpy().reshape(n, 3, 3)
    dc = gaussians.harmonics.detach().cpu().float().numpy().reshape(n, 3, -1)[:, :, 0]
    rgbs = np.clip(sh_dc_to_rgb(dc), 0.0, 1.0).astype(np.float32)
    opac = np.clip(gaussians.opacities.detach().cpu().float().numpy().reshape(n, 1), 0.0, 1.0)
    out = SplatArrays(np.ascontiguousarray(centers), np.ascontiguousarray(cov), rgbs, opac.astype(np.float32))
    finite = (np.isfinite(centers).all(1) & np.isfinite(cov).reshape(n, 9).all(1)
              & np.isfinite(dc).all(1) & np.isfinite(opac[:, 0]))
    return out if finite.all() else out.take(finite)


def display_score(splats: SplatArrays) -> np.ndarray:
    """(N,) how much each Gaussian shows: opacity x its size (sqrt of the covariance trace, a length)."""
    size = np.sqrt(np.maximum(np.trace(splats.covariances, axis1=1, axis2=2), 0.0))
    return splats.opacities[:, 0] * size


def thin_for_display(splats: SplatArrays, max_splats: int) -> SplatArrays:
    """At most ``max_splats`` Gaussians: the ones that show most (opacity x size), in input order.

    max_splats <= 0 means no limit. Display-only: the caller's data is not modified.
    """
    if max_splats <= 0 or splats.num <= max_splats:
        return splats
    keep = np.argpartition(-display_score(splats), max_splats - 1)[:max_splats]
    return splats.take(np.sort(keep))


def wxyz_from_rotation(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (4,) quaternion (w, x, y, z), viser's order."""
    x, y, z, w = matrix_to_quat_xyzw(np.asarray(R, np.float64))
    return np.array([w, x, y, z])


@dataclasses.dataclass
class ViewCamera:
    """A browser camera: position, look_at, up (world frame, m or scene units), vertical fov (rad)."""

    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov_rad: float


def view_from_pose(T_world_from_cam: np.ndarray, K_px: np.ndarray, height_px: int,
                   look_distance: float = 1.0) -> ViewCamera:
    """The browser camera that sees what an OpenCV camera sees (+z forward, +y down -> up = -y).

    K_px: (3, 3); the vertical fov comes from fy and the image height. look_distance: how far ahead
    the orbit centre is (e.g. the scene's median depth, so orbiting turns around the scene).
    """
    T = np.asarray(T_world_from_cam, np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"T_world_from_cam must be (4, 4), got {T.shape}")
    fy = float(np.asarray(K_px)[1, 1])
    if not (fy > 0 and height_px > 0 and look_distance > 0):
        raise ValueError(f"need fy > 0, height_px > 0, look_distance > 0 (got {fy}, {height_px}, {look_distance})")
    R, t = T[:3, :3], T[:3, 3]
    return ViewCamera(position=t.copy(), look_at=t + R[:, 2] * look_distance, up=-R[:, 1],
                      fov_rad=2.0 * math.atan(0.5 * height_px / fy))


def fov_from_splats(centers_cam: np.ndarray, coverage: float = 0.99,
                    min_splats: int = 100) -> tuple[float, float] | None:
    """(vertical fov in rad, aspect width / height) of the camera whose image the splats cover, or None.

    centers_cam: (N, 3) splat centres in that camera's optical frame (+x right, +y down, +z forward).
    A pair's splats are per pixel (or per grid cell) of its camera 0's image, so the spread of their
    ray slopes y/z and x/z is the image's: the central ``coverage`` of each slope (a few stray splats
    do not widen it) gives the half-extents about their middle. For the view's fov when the camera's
    ``camera_info`` was not received. None with fewer than ``min_splats`` splats in front.
    """
    c = np.asarray(centers_cam, np.float64).reshape(-1, 3)
    c = c[np.isfinite(c).all(1) & (c[:, 2] > 1e-9)]
    if len(c) < min_splats:
        return None
    q = 50.0 * (1.0 - coverage), 50.0 * (1.0 + coverage)
    x_lo, x_hi = np.percentile(c[:, 0] / c[:, 2], q)
    y_lo, y_hi = np.percentile(c[:, 1] / c[:, 2], q)
    half_w, half_h = 0.5 * (x_hi - x_lo), 0.5 * (y_hi - y_lo)
    if not (half_w > 0 and half_h > 0):
        return None
    return 2.0 * math.atan(half_h), half_w / half_h


def median_depth(splats: SplatArrays, T_world_from_cam: np.ndarray, default: float = 1.0) -> float:
    """Median depth (camera z) of the splats in front of the camera, or ``default`` when none are."""
    T_cam_from_world = np.linalg.inv(np.asarray(T_world_from_cam, np.float64))
    z = splats.centers.astype(np.float64) @ T_cam_from_world[2, :3] + T_cam_from_world[2, 3]
    z = z[z > 0]
    return float(np.median(z)) if z.size else float(default)


def trajectory_segments(positions: np.ndarray) -> np.ndarray:
    """(M, 3) camera positions in order -> (M-1, 2, 3) line segments joining consecutive ones."""
    p = np.asarray(positions, np.float32).reshape(-1, 3)
    if len(p) < 2:
        return np.zeros((0, 2, 3), np.float32)
    return np.stack([p[:-1], p[1:]], axis=1)
