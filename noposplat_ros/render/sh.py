"""Real spherical-harmonics colour, degree 0..3 (the 3DGS / NoPoSplat basis and sign convention).

colour = sum_k c_k Y_k(dir) + 0.5, clamped at 0. Written out because the basis must match the
official rasterizer exactly and the CPU path cannot call gsplat's CUDA kernels.
"""
from __future__ import annotations

import torch

from noposplat_ros.types import SH_C0

SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)
MAX_DEGREE = 3  # the official renderer evaluates bands 0..3 only


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """dirs (N, 3) unit vectors -> (N, (degree + 1)^2) basis values."""
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_DEGREE}, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(harmonics: torch.Tensor, dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """harmonics (N, 3, K) colour-major, dirs (N, 3) unit viewing directions -> (N, 3) colour >= 0."""
    k = (degree + 1) ** 2
    if harmonics.shape[-1] < k:
        raise ValueError(f"harmonics have {harmonics.shape[-1]} coefficients, degree {degree} needs {k}")
    basis = sh_basis(dirs, degree)
    rgb = torch.einsum("nck,nk->nc", harmonics[..., :k], basis)
    return torch.clamp_min(rgb + 0.5, 0.0)
