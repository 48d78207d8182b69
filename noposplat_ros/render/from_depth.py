"""Per-pixel Gaussians from an image with known depth (test scenes, benchmarks, previews).

Each valid pixel becomes an isotropic Gaussian at depth z on its ray (OpenCV pixel centres), with a
standard deviation of ``footprint`` pixels at that depth and its colour as the SH DC term.
"""
from __future__ import annotations

import numpy as np
import torch

from noposplat_ros.types import Gaussians, rgb_to_sh_dc


def gaussians_from_depth(
    rgb_hw3: np.ndarray,
    depth_hw: np.ndarray,
    K_px: np.ndarray,
    *,
    footprint_px: float = 0.6,
    opacity: float = 0.95,
    sh_degree: int = 0,
    keep_invalid: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Gaussians:
    """rgb_hw3: (H, W, 3) uint8 or float in [0, 1]; depth_hw: (H, W) camera z (NaN/<=0 = invalid);
    K_px: (3, 3). Returns Gaussians in the camera's frame, row-major over valid pixels (all pixels if
    ``keep_invalid``, with opacity 0 and depth 1 where invalid, so the grid stays (H*W))."""
    rgb = np.asarray(rgb_hw3)
    rgb = rgb.astype(np.float64) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float64)
    z = np.asarray(depth_hw, dtype=np.float64)
    H, W = z.shape
    if rgb.shape[:2] != (H, W):
        raise ValueError(f"rgb {rgb.shape[:2]} and depth {(H, W)} differ")
    K = np.asarray(K_px, dtype=np.float64)
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    valid = np.isfinite(z) & (z > 0)
    zz = np.where(valid, z, 1.0)
    x = (u - K[0, 2]) / K[0, 0] * zz
    y = (v - K[1, 2]) / K[1, 1] * zz
    means = np.stack([x, y, zz], -1).reshape(-1, 3)
    sigma = (footprint_px * zz / K[0, 0]).reshape(-1)
    op = np.where(valid, opacity, 0.0).reshape(-1)
    cols = rgb.reshape(-1, 3)
    if not keep_invalid:
        m = valid.reshape(-1)
        means, sigma, op, cols = means[m], sigma[m], op[m], cols[m]
    n = means.shape[0]
    k = (sh_degree + 1) ** 2
    sh = torch.zeros(n, 3, k, dtype=dtype)
    sh[..., 0] = rgb_to_sh_dc(torch.as_tensor(cols, dtype=dtype))
    scales = torch.as_tensor(np.repeat(sigma[:, None], 3, 1), dtype=dtype)
    rot = torch.zeros(n, 4, dtype=dtype)
    rot[:, 3] = 1.0
    cov = torch.diag_embed(scales**2)
    return Gaussians(torch.as_tensor(means, dtype=dtype), scales, rot, torch.as_tensor(op, dtype=dtype), sh, cov)
