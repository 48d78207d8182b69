"""Render Gaussians seen by a pinhole camera: RGB, depth and alpha, differentiable w.r.t. the pose.

``render(gaussians, K_px, T_cam_from_world, height, width)`` uses gsplat's CUDA ``rasterization`` for
CUDA tensors and the pure-PyTorch tiled rasterizer (``cpu_rasterizer``) otherwise. Both follow the
NoPoSplat / 3DGS conventions: colour = SH(dir) + 0.5 clamped at 0 with SH bands 0..3 (band 4 ignored
as in the official renderer), black background by default, 0.3 px^2 low-pass, alpha capped at 0.99,
alpha < 1/255 skipped, Gaussians with camera z <= near_m culled. Unlike the official renderer we use
the real principal point of ``K_px`` (the official one builds a symmetric frustum); see
docs/readme_pose_render.md for every difference.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from noposplat_ros.render import cpu_rasterizer
from noposplat_ros.render.sh import MAX_DEGREE, sh_to_rgb
from noposplat_ros.types import Gaussians

DEFAULT_NEAR_M = 0.01


@dataclasses.dataclass
class RenderOutput:
    """rgb (H, W, 3) float, depth (H, W) expected camera z of the composited Gaussians (sum w z / alpha,
    0 where alpha < 1e-4), alpha (H, W) accumulated opacity. dtype = the Gaussians' dtype (float32)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


def _as_tensor(x, dtype: torch.dtype, device: torch.device, shape: tuple[int, ...], name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if tuple(t.shape) != shape:
        raise ValueError(f"render: {name} must have shape {shape}, got {tuple(t.shape)}")
    return t.to(device=device, dtype=dtype)


def effective_sh_degree(gaussians: Gaussians, sh_degree: int | None) -> int:
    """min(requested, available, 3)."""
    d = gaussians.sh_degree if sh_degree is None else int(sh_degree)
    if d < 0:
        raise ValueError(f"render: sh_degree must be >= 0, got {d}")
    return min(d, gaussians.sh_degree, MAX_DEGREE)


def render(
    gaussians: Gaussians,
    K_px,
    T_cam_from_world,
    height: int,
    width: int,
    *,
    sh_degree: int | None = None,
    background: Sequence[float] = (0.0, 0.0, 0.0),
    near_m: float = DEFAULT_NEAR_M,
    backend: str = "auto",
    tile_px: int = 4,
) -> RenderOutput:
    """Render ``gaussians`` (in the world frame) from a pinhole camera.

    K_px: (3, 3) pixel intrinsics, OpenCV convention (pixel (u, v) centred at (u, v)).
    T_cam_from_world: (4, 4) tensor or array; gradients flow through it when it requires grad.
    height, width: output size in px. sh_degree: cap on the SH bands (default: all available, max 3).
    background: RGB added with weight (1 - alpha). near_m: cull Gaussians with camera z <= near_m.
    backend: "auto" (gsplat for CUDA tensors, else "cpu"), "gsplat" or "cpu".
    Returns RenderOutput(rgb (H, W, 3), depth (H, W), alpha (H, W)).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"render: image size must be positive, got {height}x{width}")
    if gaussians.means.ndim != 2 or gaussians.means.shape[1] != 3:
        raise ValueError(f"render: gaussians.means must be (N, 3), got {tuple(gaussians.means.shape)}")
    device, dtype = gaussians.means.device, gaussians.means.dtype
    K = _as_tensor(K_px, dtype, device, (3, 3), "K_px")
    T = _as_tensor(T_cam_from_world, dtype, device, (4, 4), "T_cam_from_world")
    bg = torch.as_tensor(background, dtype=dtype, device=device).reshape(3)
    degree = effective_sh_degree(gaussians, sh_degree)
    if backend == "auto":
        backend = "gsplat" if device.type == "cuda" else "cpu"
    if backend == "gsplat":
        from noposplat_ros.render.gsplat_backend import render_gsplat

        return render_gsplat(gaussians, K, T, height, width, degree, bg, near_m)
    if backend != "cpu":
        raise ValueError(f"render: unknown backend {backend!r} (auto, cpu, gsplat)")
    return render_cpu(gaussians, K, T, height, width, degree, bg, near_m, tile_px=tile_px)


def render_cpu(
    gaussians: Gaussians,
    K: torch.Tensor,
    T: torch.Tensor,
    height: int,
    width: int,
    degree: int,
    bg: torch.Tensor,
    near_m: float,
    *,
    tile_px: int = 4,
) -> RenderOutput:
    """The pure-PyTorch path of ``render`` (tensors already validated and on one device/dtype)."""
    mean2d, cov2d, conic, z, valid = cpu_rasterizer.project(
        gaussians.means, gaussians.covariances, T, K, width, height, near_m
    )
    # Viewing direction in the world frame from the camera centre -R^T t (the SH live in world axes).
    cam_center = -T[:3, :3].T @ T[:3, 3]
    d = gaussians.means - cam_center
    dirs = d / torch.clamp_min(torch.linalg.norm(d, dim=-1, keepdim=True), 1e-12)
    colours = sh_to_rgb(gaussians.harmonics, dirs, degree)
    rgb, dsum, alpha = cpu_rasterizer.rasterize(
        mean2d, conic, cov2d, z, gaussians.opacities, colours, valid, height, width, tile_px=tile_px
    )
    rgb = rgb + (1.0 - alpha)[..., None] * bg
    has = alpha > 1e-4
    depth = torch.where(has, dsum / torch.where(has, alpha, torch.ones_like(alpha)), torch.zeros_like(dsum))
    return RenderOutput(rgb=rgb, depth=depth, alpha=alpha)


__all__ = ["RenderOutput", "render", "render_cpu", "effective_sh_degree", "DEFAULT_NEAR_M"]
