"""Raw Gaussian-head channels + point map -> 3D Gaussians (official "unified" pose-free adapter)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from noposplat_ros.types import covariances_from_scales_rotations


def sh_mask(sh_degree: int) -> torch.Tensor:
    """(d_sh,) per-coefficient SH damping: 1 for degree 0, 0.1 * 0.25**l for degree l >= 1."""
    vals = [1.0] + [0.1 * 0.25**l for l in range(1, sh_degree + 1) for _ in range(2 * l + 1)]
    return torch.tensor(vals, dtype=torch.float32)


@dataclasses.dataclass
class GaussianParams:
    """Per-batch Gaussians, G = V*H*W with index g = v*H*W + y*W + x.

    means (B, G, 3), covariances (B, G, 3, 3), harmonics (B, G, 3, d_sh), opacities (B, G),
    scales (B, G, 3), rotations_xyzw (B, G, 4). All float32.
    """

    means: torch.Tensor
    covariances: torch.Tensor
    harmonics: torch.Tensor
    opacities: torch.Tensor
    scales: torch.Tensor
    rotations_xyzw: torch.Tensor


class GaussianAdapter(nn.Module):
    def __init__(self, sh_degree: int = 4, scale_multiplier: float = 0.001, scale_max: float = 0.3) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        self.scale_multiplier = scale_multiplier
        self.scale_max = scale_max
        # not in the official checkpoints: rebuilt from sh_degree
        self.register_buffer("sh_mask", sh_mask(sh_degree), persistent=False)

    def rebuild_buffers(self, device: torch.device | str) -> None:
        """Recreate non-persistent buffers (after building on the meta device)."""
        self.sh_mask = sh_mask(self.sh_degree).to(device)

    def forward(self, gs_raw: torch.Tensor, pts3d: torch.Tensor) -> GaussianParams:
        """gs_raw (B, V, C, H, W) raw head output, pts3d (B, V, H, W, 3) point maps."""
        B, V, C, H, W = gs_raw.shape
        d_sh = self.sh_mask.shape[0]
        raw = gs_raw.float().permute(0, 1, 3, 4, 2).reshape(B, V * H * W, C)
        opacities = torch.sigmoid(raw[..., 0])
        scales = (self.scale_multiplier * F.softplus(raw[..., 1:4])).clamp(max=self.scale_max)
        q = raw[..., 4:8]
        rotations = q / (q.norm(dim=-1, keepdim=True) + 1e-8)
        harmonics = raw[..., 8 : 8 + 3 * d_sh].reshape(B, V * H * W, 3, d_sh) * self.sh_mask
        means = pts3d.float().reshape(B, V * H * W, 3)
        cov = covariances_from_scales_rotations(scales, rotations)
        return GaussianParams(means, cov, harmonics, opacities, scales, rotations)
