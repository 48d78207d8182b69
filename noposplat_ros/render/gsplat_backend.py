"""CUDA path of ``render``: gsplat's ``rasterization`` with the NoPoSplat conventions.

Mapping (gsplat 1.5):
- covariances are passed directly (``covars``), so quaternions/scales are not re-derived;
- SH: our harmonics (N, 3, K) colour-major -> gsplat's (N, K, 3); ``sh_degree`` capped at 3; gsplat adds
  0.5 and clamps at 0 like 3DGS;
- pixel centres: gsplat samples pixel (u, v) at (u + 0.5, v + 0.5), our K_px is OpenCV (centre at
  (u, v)), so cx and cy are shifted by +0.5;
- eps2d = 0.3 (the 3DGS low-pass), rasterize_mode "classic", render_mode "RGB+ED" (expected depth),
  near_plane = near_m, background added by gsplat as (1 - alpha) * background.
gsplat differs from ours in the support radius (3 sigma, ours is exact at the 1/255 cut) — see
docs/readme_pose_render.md.
"""
from __future__ import annotations

import torch

from noposplat_ros.types import Gaussians


def render_gsplat(
    gaussians: Gaussians,
    K: torch.Tensor,
    T: torch.Tensor,
    height: int,
    width: int,
    degree: int,
    bg: torch.Tensor,
    near_m: float,
):
    """gaussians on CUDA; K (3, 3), T (4, 4) on the same device. Returns RenderOutput."""
    if gaussians.means.device.type != "cuda":
        raise ValueError("render: the gsplat backend needs CUDA tensors (use backend='cpu')")
    from gsplat import rasterization  # CUDA JIT build at first use

    from noposplat_ros.render import RenderOutput
    K_g = K.clone()
    K_g[0, 2] = K[0, 2] + 0.5
    K_g[1, 2] = K[1, 2] + 0.5
    k = (degree + 1) ** 2
    sh = gaussians.harmonics[..., :k].transpose(1, 2).contiguous()  # (N, K, 3)
    quats_wxyz = gaussians.rotations_xyzw[:, [3, 0, 1, 2]]
    colors, alphas, _meta = rasterization(
        means=gaussians.means,
        quats=quats_wxyz,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=sh,
        viewmats=T[None],
        Ks=K_g[None],
        width=int(width),
        height=int(height),
        near_plane=float(near_m),
        sh_degree=degree,
        backgrounds=bg[None],
        render_mode="RGB+ED",
        rasterize_mode="classic",
        eps2d=0.3,
        packed=False,
        covars=gaussians.covariances,
    )
    out = colors[0]
    return RenderOutput(rgb=out[..., :3], depth=out[..., 3], alpha=alphas[0, ..., 0])
