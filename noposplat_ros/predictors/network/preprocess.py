"""Input preparation for the NoPoSplat network, and its inverse.

Per view (official recipe, our code): scale s = max(H/H0, W/W0), resize to (round(H0 s), round(W0 s)),
centre-crop to (H, W) with offset floor((size - target) / 2), normalise RGB to [-1, 1] and K by W, H.

Deviations from the official code (documented in docs/readme_network.md):
- Resampling: PIL is not a dependency; OpenCV INTER_AREA when shrinking (anti-aliased like PIL's
  LANCZOS, whose kernel widens with the factor; OpenCV's LANCZOS4 does not and aliases on 2-3x
  reductions) and INTER_LANCZOS4 when enlarging (where PIL's kernel does not widen either).
- Principal point: the official code leaves cx_n, cy_n unchanged, exact only for a centred principal
  point; we use cx_n' = (cx_n W_scaled - col_offset) / W (and likewise for y), exact for any K.

Pixel conventions: pixel K (``K_px``, ``K_grid_px``) is OpenCV/ROS (pixel centres at integer
coordinates); the normalised K fed to the network is pixelSplat's (pixel centres at (i + 0.5) / W,
the image corner at 0), so cx_n = (cx + 0.5) / W and fx_n = fx / W. In corner coordinates a resize
scales coordinates exactly and a crop shifts them, which makes the formula above exact.
- An image already at the model resolution is used as is.
- Portrait cameras (H0 > W0) are centre-cropped to the model's (square) grid like any other aspect
  ratio, so the network never sees a portrait input with the released models.
"""
from __future__ import annotations

import dataclasses
import warnings

import cv2
import numpy as np
import torch

from noposplat_ros.ingest.camera_model import scale_intrinsics

# normalised fx/fy of the two views differing by more than this triggers a warning (official issue #44)
INTRINSICS_MISMATCH_TOL = 0.05


@dataclasses.dataclass(frozen=True)
class PreparedView:
    """One view at the network grid.

    rgb01: (H, W, 3) float32 in [0, 1] at the grid. K_norm: (3, 3) float64, row 0 / W, row 1 / H.
    K_grid_px: (3, 3) float64 pixel intrinsics at the grid. scale_xy: (sx, sy) original -> resized
    factors. offset_xy: (col, row) crop offset in resized pixels. original_hw: (H0, W0).
    """

    rgb01: np.ndarray
    K_norm: np.ndarray
    K_grid_px: np.ndarray
    scale_xy: tuple[float, float]
    offset_xy: tuple[int, int]
    original_hw: tuple[int, int]
    grid_hw: tuple[int, int]

    @property
    def resized(self) -> bool:
        return self.original_hw != self.grid_hw

    def grid_to_original(self, uv_grid: np.ndarray) -> np.ndarray:
        """(..., 2) pixel coordinates (u = column, v = row) at the grid -> original image pixels."""
        uv = np.asarray(uv_grid, dtype=np.float64)
        off = np.asarray(self.offset_xy, dtype=np.float64)
        return (uv + 0.5 + off) / np.asarray(self.scale_xy) - 0.5

    def original_to_grid(self, uv_original: np.ndarray) -> np.ndarray:
        """(..., 2) original image pixels -> grid pixel coordinates (may fall outside the crop)."""
        uv = np.asarray(uv_original, dtype=np.float64)
        return (uv + 0.5) * np.asarray(self.scale_xy) - np.asarray(self.offset_xy, dtype=np.float64) - 0.5

    @property
    def K_crop_original_px(self) -> np.ndarray:
        """(3, 3) grid intrinsics in original-resolution pixel units, origin at the crop's corner.

        = the original K with the principal point moved by the crop origin (crop_box_original x0, y0):
        a point projecting to original pixel u projects to u - x0 here; scaling by (sx, sy) in corner
        coordinates gives K_grid_px.
        """
        sx, sy = self.scale_xy
        return scale_intrinsics(self.K_grid_px, 1.0 / sx, 1.0 / sy)

    @property
    def crop_box_original(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the grid's field of view in original pixels (corner convention)."""
        sx, sy = self.scale_xy
        (ox, oy), (h, w) = self.offset_xy, self.grid_hw
        return (ox / sx, oy / sy, (ox + w) / sx, (oy + h) / sy)


@dataclasses.dataclass(frozen=True)
class PreparedPair:
    """Network input for one pair: image (1, 2, 3, H, W) in [-1, 1], intrinsics_norm (1, 2, 3, 3)."""

    image: torch.Tensor
    intrinsics_norm: torch.Tensor
    views: tuple[PreparedView, PreparedView]

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.views[0].grid_hw

    @property
    def K_grid_px(self) -> np.ndarray:
        """(2, 3, 3) float64 pixel intrinsics of each view at the grid."""
        return np.stack([v.K_grid_px for v in self.views])


def _to_float01(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / 255.0
    if np.issubdtype(rgb.dtype, np.floating):
        return np.clip(rgb.astype(np.float32, copy=False), 0.0, 1.0)
    raise ValueError(f"image dtype must be uint8 or float in [0, 1], got {rgb.dtype}")


def _check_inputs(rgb: np.ndarray, K_px: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got {getattr(rgb, 'shape', type(rgb))}")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise ValueError(f"image too small: {rgb.shape}")
    K = np.asarray(K_px, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must be a finite (3, 3) pinhole matrix with fx, fy > 0, got {K.tolist()}")
    return K


def prepare_view(rgb: np.ndarray, K_px: np.ndarray, out_hw: tuple[int, int]) -> PreparedView:
    """rgb (H0, W0, 3) uint8 or float [0, 1]; K_px (3, 3) pixel intrinsics of rgb; out_hw (H, W)."""
    K = _check_inputs(rgb, K_px)
    H0, W0 = rgb.shape[:2]
    H, W = int(out_hw[0]), int(out_hw[1])
    if (H0, W0) == (H, W):
        img = _to_float01(rgb)
        (sx, sy), (ox, oy), (Ws, Hs) = (1.0, 1.0), (0, 0), (W, H)
    else:
        s = max(H / H0, W / W0)
        Hs, Ws = max(H, round(H0 * s)), max(W, round(W0 * s))
        sx, sy = Ws / W0, Hs / H0
        interp = cv2.INTER_AREA if (Ws < W0 or Hs < H0) else cv2.INTER_LANCZOS4
        src = rgb if rgb.dtype == np.uint8 else _to_float01(rgb)
        resized = cv2.resize(src, (Ws, Hs), interpolation=interp)
        oy, ox = (Hs - H) // 2, (Ws - W) // 2
        img = _to_float01(np.ascontiguousarray(resized[oy : oy + H, ox : ox + W]))
    # normalised K of the original image (corner convention), then the exact resize + crop update
    fx_n, fy_n, skew_n = K[0, 0] / W0, K[1, 1] / H0, K[0, 1] / W0
    cx_n, cy_n = (K[0, 2] + 0.5) / W0, (K[1, 2] + 0.5) / H0
    K_norm = np.array([
        [fx_n * Ws / W, skew_n * Ws / W, (cx_n * Ws - ox) / W],
        [0.0, fy_n * Hs / H, (cy_n * Hs - oy) / H],
        [0.0, 0.0, 1.0],
    ])
    Ks = K_norm.copy()
    Ks[0] *= W
    Ks[1] *= H
    Ks[0, 2] -= 0.5  # back to OpenCV pixel centres
    Ks[1, 2] -= 0.5
    return PreparedView(
        rgb01=img, K_norm=K_norm, K_grid_px=Ks, scale_xy=(sx, sy), offset_xy=(int(ox), int(oy)),
        original_hw=(H0, W0), grid_hw=(H, W),
    )


def images_to_network(rgb01: list[np.ndarray]) -> torch.Tensor:
    """[(H, W, 3) float32 [0, 1]] * V -> (1, V, 3, H, W) float32 in [-1, 1]."""
    arr = np.stack(rgb01)  # (V, H, W, 3)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)
    return ((t - 0.5) / 0.5).unsqueeze(0).float()


def prepare_pair(
    rgb0: np.ndarray, rgb1: np.ndarray, K0_px: np.ndarray, K1_px: np.ndarray, out_hw: tuple[int, int]
) -> PreparedPair:
    """Two views -> network input at out_hw. Images (H_i, W_i, 3) uint8 or float [0, 1], any size."""
    v0 = prepare_view(rgb0, K0_px, out_hw)
    v1 = prepare_view(rgb1, K1_px, out_hw)
    f0 = np.array([v0.K_norm[0, 0], v0.K_norm[1, 1]])
    f1 = np.array([v1.K_norm[0, 0], v1.K_norm[1, 1]])
    if np.any(np.abs(f0 - f1) > INTRINSICS_MISMATCH_TOL * np.abs(f0)):
        warnings.warn(
            "the two views have different normalised focal lengths "
            f"({f0.round(4).tolist()} vs {f1.round(4).tolist()}); NoPoSplat was trained on same-intrinsics pairs",
            stacklevel=2,
        )
    image = images_to_network([v0.rgb01, v1.rgb01])
    K = torch.from_numpy(np.stack([v0.K_norm, v1.K_norm])).float().unsqueeze(0)
    return PreparedPair(image=image, intrinsics_norm=K, views=(v0, v1))
